import { AtrestError, IntegrityError, QuotaExceededError } from "../errors.ts";
import type { ContainerKeys } from "../format/container.ts";
import { HEADER_PROBE_BYTES, parseHeader } from "../format/header.ts";
import { type Layout, segmentCount, segmentOffset } from "../format/layout.ts";
import type { ParallelSegmentWriter } from "../format/seal-pool.ts";
import type { BlobReader, BlobWriter } from "../store/blobs.ts";
import type { FileStat, ReadHandle, WriteHandle } from "./types.ts";

// Sealed segments are gathered into one vectored write of about this size.
const FLUSH_BYTES = 1 << 20;
// Writes stop being acknowledged immediately once this much sealed data waits for the disk (backpressure).
const MAX_INFLIGHT_BYTES = 8 << 20;
// ...or once this much plaintext waits for the sealing worker.
const MAX_SEALING_BYTES = 4 << 20;
// Sequential readers get this many segments per disk read.
const READ_AHEAD_SEGMENTS = 16;

/** Reads the header slot and the container's layout from a blob. */
export async function readHeader(blob: BlobReader) {
  const probe = await blob.read(0, Math.min(blob.size, HEADER_PROBE_BYTES));
  const header = parseHeader(probe);
  return { header, count: segmentCount(header.layout, blob.size) };
}

export interface WriteCommit {
  size: number;
  blob: BlobWriter;
}

export interface EncryptedWriterOptions {
  blob: BlobWriter;
  keys: ContainerKeys;
  /** Seals segments on a worker thread, so the event loop only copies plaintext. */
  writer: ParallelSegmentWriter;
  /** Plaintext length already in the container (resume), 0 for a new version. */
  startSize: number;
  /** Checked before every write: may this many more bytes be stored? */
  quotaLeft: () => number;
  /** Commits the finished blob into metadata; called once, from close() or abort(true). */
  commit: (result: WriteCommit) => Promise<void>;
  /** Removes the temporary blob; called when the write is abandoned. */
  discard: () => Promise<void>;
}

/** Streams plaintext into a new container: seal segment by segment, batch to disk, commit atomically at the end. */
export class EncryptedWriter implements WriteHandle {
  size: number;
  readonly #o: EncryptedWriterOptions;
  #batch: Buffer[] = [];
  #batchBytes = 0;
  #inflight = 0;
  #flushing: Promise<void> = Promise.resolve();
  #failure: unknown;
  #done = false;

  constructor(options: EncryptedWriterOptions) {
    this.#o = options;
    this.size = options.startSize;
  }

  async write(offset: number, data: Buffer): Promise<void> {
    if (this.#done) throw new AtrestError("INVALID_INPUT", "handle is closed");
    if (this.#failure) throw this.#failure;
    if (offset !== this.size) {
      throw new AtrestError(
        "UNSUPPORTED",
        `non-sequential write at ${offset} (file length ${this.size}); encrypted storage accepts appends only`,
      );
    }
    if (data.length > this.#o.quotaLeft() - (this.size - this.#o.startSize)) {
      throw new QuotaExceededError("quota exceeded");
    }
    const writer = this.#o.writer;
    writer.push(data);
    this.size += data.length;
    while (writer.inflightBytes > MAX_SEALING_BYTES) {
      const sealed = await writer.next();
      if (sealed) this.#queue(sealed);
    }
    if (this.#batchBytes >= FLUSH_BYTES) this.#flush();
    if (this.#inflight > MAX_INFLIGHT_BYTES) await this.#flushing;
    if (this.#failure) throw this.#failure;
  }

  #queue(sealed: Buffer): void {
    this.#batch.push(sealed);
    this.#batchBytes += sealed.length;
  }

  #flush(): void {
    if (this.#batch.length === 0) return;
    const batch = this.#batch;
    const bytes = this.#batchBytes;
    this.#batch = [];
    this.#batchBytes = 0;
    this.#inflight += bytes;
    this.#flushing = this.#flushing.then(async () => {
      if (this.#failure) return;
      try {
        await this.#o.blob.write(batch);
      } catch (err) {
        this.#failure = err;
      } finally {
        this.#inflight -= bytes;
      }
    });
  }

  async close(): Promise<FileStat> {
    await this.#finish(true);
    return { kind: "file", size: this.size, mtime: Date.now(), mode: 0o644 };
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
      await this.#o.commit({ size: this.size, blob: this.#o.blob });
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

/** Random-access reads of a container: decrypts whole segments, with read-ahead for sequential readers. */
export class EncryptedReader implements ReadHandle {
  readonly size: number;
  readonly #blob: BlobReader;
  readonly #keys: ContainerKeys;
  readonly #layout: Layout;
  readonly #count: number;
  readonly #onClose: (bytesRead: number) => void;
  // Window index → its segments' plaintext; a few windows are kept so out-of-order pipelined reads hit the cache.
  readonly #windows = new Map<number, Promise<Buffer[]>>();
  #bytesRead = 0;
  #closed = false;

  constructor(
    blob: BlobReader,
    keys: ContainerKeys,
    layout: Layout,
    count: number,
    size: number,
    onClose: (n: number) => void,
  ) {
    this.#blob = blob;
    this.#keys = keys;
    this.#layout = layout;
    this.#count = count;
    this.size = size;
    this.#onClose = onClose;
    const expected = Math.floor(size / layout.segmentSize) + 1;
    if (expected !== count) throw new IntegrityError("container length does not match the recorded file size");
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (this.#closed) throw new AtrestError("INVALID_INPUT", "handle is closed");
    if (offset >= this.size || length <= 0) return Buffer.alloc(0);
    const end = Math.min(this.size, offset + length);
    const seg = this.#layout.segmentSize;
    const parts: Buffer[] = [];
    for (let i = Math.floor(offset / seg); i * seg < end; i++) {
      const plain = await this.#segment(i);
      const from = Math.max(0, offset - i * seg);
      const to = Math.min(plain.length, end - i * seg);
      parts.push(plain.subarray(from, to));
    }
    const out = parts.length === 1 ? parts[0] : Buffer.concat(parts);
    this.#bytesRead += out.length;
    return out;
  }

  async #segment(index: number): Promise<Buffer> {
    const w = Math.floor(index / READ_AHEAD_SEGMENTS);
    let window = this.#windows.get(w);
    if (!window) {
      window = this.#loadWindow(w);
      this.#windows.set(w, window);
      window.catch(() => this.#windows.delete(w));
      // Keep the current window and the next; start reading the next one ahead of the client.
      for (const k of this.#windows.keys()) if (k < w - 1) this.#windows.delete(k);
      if ((w + 1) * READ_AHEAD_SEGMENTS < this.#count && !this.#windows.has(w + 1)) {
        const next = this.#loadWindow(w + 1);
        next.catch(() => this.#windows.delete(w + 1));
        this.#windows.set(w + 1, next);
      }
    }
    return (await window)[index - w * READ_AHEAD_SEGMENTS];
  }

  async #loadWindow(w: number): Promise<Buffer[]> {
    const first = w * READ_AHEAD_SEGMENTS;
    const last = Math.min(this.#count, first + READ_AHEAD_SEGMENTS) - 1;
    const start = segmentOffset(this.#layout, first);
    const end = last === this.#count - 1 ? this.#blob.size : segmentOffset(this.#layout, last + 1);
    const bytes = await this.#blob.read(start, end - start);
    if (bytes.length !== end - start) throw new IntegrityError("container shorter than expected");
    const out: Buffer[] = [];
    const full = this.#layout.sealedSegmentSize;
    for (let i = first; i <= last; i++) {
      const at = (i - first) * full;
      const isLast = i === this.#count - 1;
      const plain = this.#keys.open(i, bytes.subarray(at, isLast ? bytes.length : at + full), isLast);
      if (isLast && plain.length !== this.size - i * this.#layout.segmentSize) {
        throw new IntegrityError("final segment does not match the recorded file size");
      }
      out.push(plain);
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#windows.clear();
    this.#keys.destroy();
    await this.#blob.close();
    this.#onClose(this.#bytesRead);
  }
}
