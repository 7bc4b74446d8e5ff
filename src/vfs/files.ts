import { zero } from "../crypto/bytes.ts";
import { AtrestError, IntegrityError, QuotaExceededError } from "../errors.ts";
import type { ContainerKeys } from "../format/container.ts";
import { HEADER_PROBE_BYTES, parseHeader } from "../format/header.ts";
import { type Layout, segmentCount, segmentOffset } from "../format/layout.ts";
import type { ParallelSegmentWriter, SealPool } from "../format/seal-pool.ts";
import type { BlobReader, BlobWriter } from "../store/blobs.ts";
import type { FileStat, ReadHandle, WriteHandle } from "./types.ts";

// Sealed segments are gathered into one vectored write of about this size.
const FLUSH_BYTES = 1 << 20;
// Writes stop being acknowledged immediately once this much sealed data waits for the disk (backpressure).
const MAX_INFLIGHT_BYTES = 8 << 20;
// ...or once this much plaintext waits for the sealing worker.
const MAX_SEALING_BYTES = 4 << 20;
// Sequential readers get this many segments per disk read (one window, decrypted in one worker job)...
const READ_AHEAD_SEGMENTS = 16;
// ...and this many windows are loaded ahead of the one being read, so the worker always has the next job queued
// while the disk read for the one after runs (one window ahead left the worker idle during every disk read).
const READ_AHEAD_WINDOWS = 2;

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
        // The vectored write has settled: nothing references these buffers any more, so the writer may seal into
        // them again (it ignores buffers that are not its own, like the final segment, and any after finish).
        for (const sealed of batch) this.#o.writer.recycle(sealed);
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

/** Decrypted segments READ_AHEAD_SEGMENTS * w .. of one window, while some read() or the cache holds it. */
interface Window {
  /** Plaintext of the window's segments, segment i at (i - first) * segmentSize. */
  promise: Promise<Buffer>;
  plain?: Buffer;
  /** read() calls copying out of it right now. */
  users: number;
  evicted: boolean;
  /** False when `plain` is not a buffer of ours to recycle (decrypted inline by node:crypto). */
  recyclable: boolean;
}

/** Spare buffers a reader keeps per kind (ciphertext, plaintext): enough for the windows it has loading or cached. */
const MAX_SPARE_WINDOWS = READ_AHEAD_WINDOWS + 2;

/**
 * Random-access reads of a container: whole segments are decrypted a window (READ_AHEAD_SEGMENTS) at a time on the
 * SealPool's worker, with read-ahead for sequential readers. Window buffers (ciphertext and plaintext) are recycled,
 * so read() copies out of them: the caller owns what it gets (the SFTP adapter keeps 256 KiB blocks alive while it
 * answers from them), and a returned block never pins a whole 1 MiB window.
 */
export class EncryptedReader implements ReadHandle {
  readonly size: number;
  readonly #blob: BlobReader;
  readonly #keys: ContainerKeys;
  readonly #pool: SealPool;
  readonly #keysId: number;
  readonly #layout: Layout;
  readonly #count: number;
  readonly #onClose: (bytesRead: number) => void;
  // Window index → its segments' plaintext; a few windows are kept so out-of-order pipelined reads hit the cache.
  readonly #windows = new Map<number, Window>();
  readonly #spareSealed: ArrayBuffer[] = [];
  readonly #sparePlain: ArrayBuffer[] = [];
  #bytesRead = 0;
  #closed = false;

  constructor(
    blob: BlobReader,
    keys: ContainerKeys,
    layout: Layout,
    count: number,
    size: number,
    onClose: (n: number) => void,
    pool: SealPool,
  ) {
    const expected = Math.floor(size / layout.segmentSize) + 1;
    if (expected !== count) throw new IntegrityError("container length does not match the recorded file size");
    this.#blob = blob;
    this.#keys = keys;
    this.#layout = layout;
    this.#count = count;
    this.size = size;
    this.#onClose = onClose;
    this.#pool = pool;
    this.#keysId = pool.register(keys.sealWorkerParams());
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (this.#closed) throw new AtrestError("INVALID_INPUT", "handle is closed");
    if (offset >= this.size || length <= 0) return Buffer.alloc(0);
    const end = Math.min(this.size, offset + length);
    const span = READ_AHEAD_SEGMENTS * this.#layout.segmentSize;
    const out = Buffer.allocUnsafe(end - offset);
    for (let w = Math.floor(offset / span); w * span < end; w++) {
      const window = this.#window(w);
      window.users++;
      try {
        const plain = await window.promise;
        const from = Math.max(offset, w * span);
        const to = Math.min(end, (w + 1) * span);
        if (to - w * span > plain.length) throw new IntegrityError("container shorter than expected");
        plain.copy(out, from - offset, from - w * span, to - w * span);
      } finally {
        window.users--;
        if (window.evicted) this.#recycle(window);
      }
    }
    this.#bytesRead += out.length;
    return out;
  }

  /** Window `w`, loading it (and the next one, ahead of the client) if it is not cached. */
  #window(w: number): Window {
    let window = this.#windows.get(w);
    if (window) return window;
    window = this.#load(w);
    // Keep the previous window, this one and those ahead; start reading ahead of the client.
    for (const k of this.#windows.keys()) if (k < w - 1) this.#evict(k);
    for (let k = w + 1; k <= w + READ_AHEAD_WINDOWS && k * READ_AHEAD_SEGMENTS < this.#count; k++) {
      if (!this.#windows.has(k)) this.#load(k);
    }
    return window;
  }

  #load(w: number): Window {
    const inline = this.#count === 1;
    const window: Window = {
      promise: inline ? this.#loadInline() : this.#loadWindow(w),
      users: 0,
      evicted: false,
      recyclable: !inline,
    };
    this.#windows.set(w, window);
    window.promise.then(
      (plain) => {
        window.plain = plain;
        if (window.evicted) this.#recycle(window);
      },
      () => {
        if (this.#windows.get(w) === window) this.#windows.delete(w);
      },
    );
    return window;
  }

  #evict(w: number): void {
    const window = this.#windows.get(w);
    if (window === undefined) return;
    this.#windows.delete(w);
    window.evicted = true;
    this.#recycle(window);
  }

  /** Returns an evicted window's plaintext buffer to the spares once it is loaded and no read() copies from it. */
  #recycle(window: Window): void {
    const plain = window.plain;
    if (plain === undefined || window.users > 0 || this.#closed || !window.recyclable) return;
    window.plain = undefined;
    if (this.#sparePlain.length < MAX_SPARE_WINDOWS) this.#sparePlain.push(plain.buffer as ArrayBuffer);
  }

  /**
   * A one-segment container (a file under 64 KiB) is opened here: a worker round trip costs more than decrypting a
   * few KiB, and small files are where per-file latency shows.
   */
  async #loadInline(): Promise<Buffer> {
    const start = segmentOffset(this.#layout, 0);
    const sealed = await this.#blob.read(start, this.#blob.size - start);
    const plain = this.#keys.open(0, sealed, true);
    if (plain.length !== this.size) {
      zero(plain);
      throw new IntegrityError("final segment does not match the recorded file size");
    }
    return plain;
  }

  async #loadWindow(w: number): Promise<Buffer> {
    const first = w * READ_AHEAD_SEGMENTS;
    const last = Math.min(this.#count, first + READ_AHEAD_SEGMENTS) - 1;
    const start = segmentOffset(this.#layout, first);
    const isFinal = last === this.#count - 1;
    const end = isFinal ? this.#blob.size : segmentOffset(this.#layout, last + 1);
    const length = end - start;
    const sealed = await this.#readSealed(start, length);
    const result = await this.#pool.open({
      keys: this.#keysId,
      startIndex: first,
      sealed,
      sealedLength: length,
      last: isFinal,
      output: this.#sparePlain.pop(),
    });
    if (!this.#closed && this.#spareSealed.length < MAX_SPARE_WINDOWS) this.#spareSealed.push(result.sealed);
    const plain = Buffer.from(result.plaintext, 0, result.length);
    const expected = isFinal
      ? this.size - first * this.#layout.segmentSize
      : (last + 1 - first) * this.#layout.segmentSize;
    if (plain.length !== expected) {
      zero(plain);
      throw new IntegrityError("final segment does not match the recorded file size");
    }
    return plain;
  }

  /** `length` sealed bytes at `start`, in a buffer of its own (recycled when possible) that can be transferred. */
  async #readSealed(start: number, length: number): Promise<ArrayBuffer> {
    const blob = this.#blob;
    const spare = this.#spareSealed.pop();
    // Exactly `length` when new: a small file's only window is a few KiB, and a 1 MiB buffer per download was most of
    // the garbage (and GC time) when serving many small files.
    const buffer = spare !== undefined && spare.byteLength >= length ? spare : new ArrayBuffer(length);
    const n = await blob.readInto(start, Buffer.from(buffer, 0, length));
    if (n !== length) throw new IntegrityError("container shorter than expected");
    return buffer;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#windows.clear();
    this.#pool.release(this.#keysId);
    this.#keys.destroy();
    for (const spare of this.#sparePlain.splice(0)) zero(Buffer.from(spare));
    this.#spareSealed.length = 0;
    await this.#blob.close();
    this.#onClose(this.#bytesRead);
  }
}
