// Streams plaintext into a new container in a BlobStore: sealed on the SealPool, written in order, committed at the end.
// The data path's one batching layer: writes of any size (an SFTP client's 32 KiB, a whole HTTP body chunk) are
// copied into ParallelSegmentWriter's batches of 16 segments (1 MiB), one worker job each, and each sealed batch goes
// to the blob store as one vectored write. Callers hand over writes one at a time, awaiting each.
import { AtrestError, HandleClosedError, QuotaExceededError } from "../errors.ts";
import type { ContainerKeys } from "../format/container.ts";
import type { BlobWriter } from "../store/blobs.ts";
import type { ParallelSegmentWriter } from "./parallel-writer.ts";

// Writes stop being acknowledged immediately once this much sealed data waits for the disk (backpressure).
const MAX_INFLIGHT_BYTES = 4 << 20;
// ...or once this much plaintext waits for the sealing worker.
const MAX_SEALING_BYTES = 4 << 20;

export interface WriteCommit {
  size: number;
  blob: BlobWriter;
}

export interface EncryptedWriterOptions<Committed> {
  blob: BlobWriter;
  keys: ContainerKeys;
  /** Seals segments on a worker thread, so the event loop only copies plaintext. */
  writer: ParallelSegmentWriter;
  /** Bytes that go before the first sealed data, in its write (a new container's header). */
  head?: Buffer;
  /** Plaintext length already in the container (resume), 0 for a new version. */
  startSize: number;
  /** Checked before every write: may this many more bytes be stored? */
  quotaLeft: () => number;
  /** Commits the finished blob into metadata; called once, from close() or abort(true). close() returns its result. */
  commit: (result: WriteCommit) => Promise<Committed>;
  /** Removes the temporary blob; called when the write is abandoned. */
  discard: () => Promise<void>;
}

/** Bytes in one buffer or in a list of parts. */
export function byteLength(data: Buffer | readonly Buffer[]): number {
  if (Buffer.isBuffer(data)) return data.length;
  let n = 0;
  for (const part of data) n += part.length;
  return n;
}

/** Streams plaintext into a new container: seal segment by segment, batch to disk, commit atomically at the end. */
export class EncryptedWriter<Committed = void> {
  size: number;
  readonly #o: EncryptedWriterOptions<Committed>;
  #batch: Buffer[] = [];
  #batchBytes = 0;
  #head: Buffer | undefined;
  #inflight = 0;
  #flushing: Promise<void> = Promise.resolve();
  #failure: unknown;
  #done = false;
  #committed: Committed | undefined;

  constructor(options: EncryptedWriterOptions<Committed>) {
    this.#o = options;
    this.size = options.startSize;
    this.#head = options.head;
  }

  /** Appends `data` (one buffer, or parts taken in order: each copied once into the sealing batch). */
  async write(offset: number, data: Buffer | readonly Buffer[]): Promise<void> {
    await this.writeNow(offset, data);
  }

  /**
   * write() without a promise when none is needed: the bytes are copied before it returns (the caller may reuse
   * `data` at once), and it returns undefined unless the writer must wait for the worker or the disk (backpressure),
   * then the promise of that wait. A door answering each SFTP WRITE saves several promises and closures per request
   * this way (a quarter of the JS-heap garbage of an upload, which paces the young-generation collections).
   */
  writeNow(offset: number, data: Buffer | readonly Buffer[]): Promise<void> | undefined {
    if (this.#done) throw new HandleClosedError();
    if (this.#failure) throw this.#failure;
    if (offset !== this.size) {
      throw new AtrestError(
        "UNSUPPORTED",
        `non-sequential write at ${offset} (file length ${this.size}); encrypted storage accepts appends only`,
      );
    }
    const length = byteLength(data);
    if (length > this.#o.quotaLeft() - (this.size - this.#o.startSize)) {
      throw new QuotaExceededError("quota exceeded");
    }
    const writer = this.#o.writer;
    if (Buffer.isBuffer(data)) writer.push(data);
    else for (const part of data) writer.push(part);
    this.size += length;
    if (this.#mustWait()) return this.#drain();
    return undefined;
  }

  #mustWait(): boolean {
    const writer = this.#o.writer;
    return (
      writer.inflightBytes > MAX_SEALING_BYTES ||
      (writer.inflightBytes > 0 && writer.congested) ||
      this.#batch.length > 0 ||
      this.#inflight > MAX_INFLIGHT_BYTES ||
      (this.#inflight > 0 && writer.diskCongested) ||
      this.#failure !== undefined
    );
  }

  async #drain(): Promise<void> {
    const writer = this.#o.writer;
    while (writer.inflightBytes > MAX_SEALING_BYTES || (writer.inflightBytes > 0 && writer.congested)) {
      const sealed = await writer.next();
      if (sealed) this.#queue(sealed);
    }
    this.#flush();
    if (this.#inflight > MAX_INFLIGHT_BYTES || (this.#inflight > 0 && writer.diskCongested)) await this.#flushing;
    if (this.#failure) throw this.#failure;
  }

  #queue(sealed: Buffer): void {
    this.#batch.push(sealed);
    this.#batchBytes += sealed.length;
  }

  #flush(): void {
    if (this.#batch.length === 0) return;
    if (this.#head) {
      this.#batch.unshift(this.#head);
      this.#batchBytes += this.#head.length;
      this.#head = undefined;
    }
    const batch = this.#batch;
    const bytes = this.#batchBytes;
    this.#batch = [];
    this.#batchBytes = 0;
    this.#inflight += bytes;
    this.#o.writer.diskBacklog(bytes);
    this.#flushing = this.#flushing.then(async () => {
      if (this.#failure) return;
      try {
        await this.#o.blob.write(batch);
      } catch (err) {
        this.#failure = err;
      } finally {
        this.#inflight -= bytes;
        this.#o.writer.diskBacklog(-bytes);
        // The vectored write has settled: nothing references these buffers any more, so the writer may seal into
        // them again (it ignores buffers that are not its own, like the final segment, and any after finish).
        for (const sealed of batch) this.#o.writer.recycle(sealed);
      }
    });
  }

  /** Finishes, commits and returns what `commit` returned (the same result again if already closed). */
  async close(): Promise<Committed> {
    await this.#finish(true);
    return this.#committed as Committed;
  }

  async abort(keepPartial: boolean): Promise<void> {
    await this.#finish(keepPartial).catch(() => undefined);
  }

  async #finish(keep: boolean): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    try {
      if (!keep) throw new AtrestError("INVALID_INPUT", "upload abandoned");
      for (const sealed of await this.#o.writer.finish()) this.#queue(sealed);
      this.#flush();
      await this.#flushing;
      if (this.#failure) throw this.#failure;
      await this.#o.blob.commit();
      this.#committed = await this.#o.commit({ size: this.size, blob: this.#o.blob });
    } catch (err) {
      this.#o.writer.destroy();
      await this.#flushing;
      await this.#o.discard().catch(() => undefined);
      if (keep) throw err;
    } finally {
      this.#o.keys.destroy();
    }
  }
}
