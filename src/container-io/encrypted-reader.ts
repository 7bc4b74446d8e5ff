// Random-access reads of a container in a BlobStore, decrypted on the SealPool. The data path's one read-ahead
// layer: doors call read() with whatever their clients ask for (SFTP: 32 KiB), windows of 16 segments are read and
// decrypted ahead of a sequential reader.
import { zero } from "../crypto/bytes.ts";
import { HandleClosedError, IntegrityError } from "../errors.ts";
import type { ContainerKeys } from "../format/container.ts";
import { HEADER_PROBE_BYTES, parseHeader } from "../format/header.ts";
import { type Layout, segmentCount, segmentOffset } from "../format/layout.ts";
import type { BlobReader } from "../store/blobs.ts";
import type { OpenJob, OpenResult, SealPool } from "./seal-pool.ts";

// Sequential readers get this many segments per disk read (one window, decrypted in one worker job)...
const READ_AHEAD_SEGMENTS = 16;
// ...and this many windows are loaded ahead of the one being read, so the worker always has the next job queued
// while the disk read for the one after runs (one window ahead left the worker idle during every disk read)...
const READ_AHEAD_WINDOWS = 2;
// ...unless the pool's workers already have this many jobs queued each (other readers', writers'): a window loaded
// ahead would only wait in the queue, holding its ciphertext and plaintext buffers (1 MiB each). awscli's multipart
// GET is 10 ranged GETs at once: 2 windows ahead each put up to 30 jobs (2 MiB each) in the one worker's queue.
const BUSY_JOBS_PER_THREAD = 4;
// ...and while the windows loaded ahead and not read yet, over every reader of the pool (SealPool.readAheadWindows),
// are fewer than this: one budget for the server instead of 2 per reader (10 ranged GETs held 20 such windows,
// plaintext and ciphertext, 40 MiB), which one sequential reader still has in full.
const READ_AHEAD_BUDGET_WINDOWS = 4;

/** Blobs up to this size are read whole by readHeader (a header slot and one 64 KiB segment, padding included). */
const WHOLE_BLOB_BYTES = 72 * 1024;

/**
 * Reads the header slot and the container's layout from a blob. A small blob is read whole in that one read and
 * handed back as `whole` (for EncryptedReader): a download of a small file then reads its blob once, not twice.
 */
export async function readHeader(blob: BlobReader) {
  const small = blob.size <= WHOLE_BLOB_BYTES;
  const probe = await blob.read(0, small ? blob.size : Math.min(blob.size, HEADER_PROBE_BYTES));
  const header = parseHeader(probe);
  return {
    header,
    count: segmentCount(header.layout, blob.size),
    whole: small && probe.length === blob.size ? probe : undefined,
  };
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
  /** Loaded ahead and not read yet: counted in SealPool.readAheadWindows. */
  ahead: boolean;
}

/**
 * Spare buffers a reader keeps per kind (ciphertext, plaintext); more go to the pool's free lists, which serve every
 * reader and writer (4 per reader, kept to its end, were 8 MiB per ranged GET).
 */
const MAX_SPARE_WINDOWS = 1;

/**
 * Random-access reads of a container: whole segments are decrypted a window (READ_AHEAD_SEGMENTS) at a time on the
 * SealPool's worker (or here, SealPool.inline), with read-ahead for sequential readers. Window buffers (ciphertext and
 * plaintext) are recycled, so read() copies out of them: the caller owns what it gets (the SFTP adapter keeps 256 KiB
 * blocks alive while it answers from them), and a returned block never pins a whole 1 MiB window.
 */
export class EncryptedReader {
  readonly size: number;
  readonly #blob: BlobReader;
  readonly #keys: ContainerKeys;
  readonly #pool: SealPool;
  readonly #keysId: number;
  readonly #layout: Layout;
  readonly #count: number;
  readonly #onClose: (bytesRead: number) => void;
  /** The whole blob when readHeader read it (a small file): the one-segment load uses it instead of reading again. */
  #whole: Buffer | undefined;
  // Window index → its segments' plaintext; a few windows are kept so out-of-order pipelined reads hit the cache.
  readonly #windows = new Map<number, Window>();
  readonly #spareSealed: ArrayBuffer[] = [];
  readonly #sparePlain: ArrayBuffer[] = [];
  /** Windows at or past this index are never read ahead (OpenReadOptions.end: a Range read stops at its end). */
  readonly #windowLimit: number;
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
    whole?: Buffer,
    end?: number,
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
    this.#whole = whole !== undefined && whole.length === blob.size ? whole : undefined;
    this.#keysId = pool.register(keys.sealWorkerParams());
    const span = READ_AHEAD_SEGMENTS * layout.segmentSize;
    const stop = end === undefined ? size : Math.max(0, Math.min(size, end));
    this.#windowLimit = Math.max(1, Math.ceil(stop / span));
  }

  /**
   * Bytes at `offset` as a view of the window holding them (up to its end, at most `length`): no copy. The window
   * stays out of the spares until release(), so the bytes cannot change under a socket still sending them.
   */
  async readView(offset: number, length: number): Promise<{ data: Buffer; release(): void }> {
    if (this.#closed) throw new HandleClosedError();
    if (offset >= this.size || length <= 0) return { data: Buffer.alloc(0), release: () => {} };
    const span = READ_AHEAD_SEGMENTS * this.#layout.segmentSize;
    const w = Math.floor(offset / span);
    const end = Math.min(this.size, offset + length, (w + 1) * span);
    const window = this.#window(w);
    window.users++;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      window.users--;
      if (window.evicted) this.#recycle(window);
    };
    try {
      const plain = await window.promise;
      if (end - w * span > plain.length) throw new IntegrityError("container shorter than expected");
      this.#bytesRead += end - offset;
      return { data: plain.subarray(offset - w * span, end - w * span), release };
    } catch (err) {
      release();
      throw err;
    }
  }

  /** readView's result when the window holding `offset` is already decrypted (ReadHandle.readViewNow). */
  readViewNow(offset: number, length: number): { data: Buffer; release(): void } | undefined {
    if (this.#closed || offset >= this.size || length <= 0) return undefined;
    const span = READ_AHEAD_SEGMENTS * this.#layout.segmentSize;
    const w = Math.floor(offset / span);
    const end = Math.min(this.size, offset + length, (w + 1) * span);
    // Looked up as readView would: the next windows' read-ahead starts here too.
    const window = this.#window(w);
    const plain = window.plain;
    if (plain === undefined || end - w * span > plain.length) return undefined;
    window.users++;
    let released = false;
    this.#bytesRead += end - offset;
    return {
      data: plain.subarray(offset - w * span, end - w * span),
      release: () => {
        if (released) return;
        released = true;
        window.users--;
        if (window.evicted) this.#recycle(window);
      },
    };
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (this.#closed) throw new HandleClosedError();
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
    if (window) {
      this.#notAhead(window);
      return window;
    }
    window = this.#load(w);
    // Keep the previous window, this one and those ahead; start reading ahead of the client.
    for (const k of this.#windows.keys()) if (k < w - 1) this.#evict(k);
    const limit = Math.max(this.#windowLimit, w + 1);
    const ahead = this.#pool.pendingJobs >= BUSY_JOBS_PER_THREAD * this.#pool.threads ? 0 : READ_AHEAD_WINDOWS;
    for (let k = w + 1; k <= w + ahead && k < limit && k * READ_AHEAD_SEGMENTS < this.#count; k++) {
      if (this.#windows.has(k)) continue;
      if (this.#pool.readAheadWindows >= READ_AHEAD_BUDGET_WINDOWS) break;
      this.#load(k).ahead = true;
      this.#pool.readAheadWindows++;
    }
    return window;
  }

  #notAhead(window: Window): void {
    if (!window.ahead) return;
    window.ahead = false;
    this.#pool.readAheadWindows--;
  }

  #load(w: number): Window {
    const inline = this.#count === 1;
    const window: Window = {
      promise: inline ? this.#loadInline() : this.#loadWindow(w),
      users: 0,
      evicted: false,
      recyclable: !inline,
      ahead: false,
    };
    this.#windows.set(w, window);
    window.promise.then(
      (plain) => {
        window.plain = plain;
        if (window.evicted) this.#recycle(window);
      },
      () => {
        if (this.#windows.get(w) === window) this.#windows.delete(w);
        this.#notAhead(window);
      },
    );
    return window;
  }

  #evict(w: number): void {
    const window = this.#windows.get(w);
    if (window === undefined) return;
    this.#windows.delete(w);
    this.#notAhead(window);
    window.evicted = true;
    this.#recycle(window);
  }

  /** Returns an evicted window's plaintext buffer to the spares once it is loaded and no read() copies from it. */
  #recycle(window: Window): void {
    const plain = window.plain;
    if (plain === undefined || window.users > 0 || !window.recyclable) return;
    window.plain = undefined;
    const buffer = plain.buffer as ArrayBuffer;
    if (!this.#closed && this.#sparePlain.length < MAX_SPARE_WINDOWS) this.#sparePlain.push(buffer);
    else this.#toPool(buffer);
  }

  /** A plaintext window buffer no view is used of any more goes zeroed to the pool's free list (which frees extras). */
  #toPool(plain: ArrayBuffer): void {
    zero(Buffer.from(plain));
    this.#pool.returnBatch(plain);
  }

  /**
   * A one-segment container (a file under 64 KiB) is opened here: a worker round trip costs more than decrypting a
   * few KiB, and small files are where per-file latency shows.
   */
  async #loadInline(): Promise<Buffer> {
    const start = segmentOffset(this.#layout, 0);
    const whole = this.#whole;
    this.#whole = undefined;
    const sealed = whole ? whole.subarray(start) : await this.#blob.read(start, this.#blob.size - start);
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
    const job = {
      keys: this.#keysId,
      startIndex: first,
      sealed,
      sealedLength: length,
      last: isFinal,
      // a window of a reader before (one 8 MiB ranged GET after another) rather than a fresh one
      output: this.#sparePlain.pop() ?? this.#pool.takeFreeBatch(READ_AHEAD_SEGMENTS * this.#layout.segmentSize),
    };
    const result = this.#pool.inline ? this.#openHere(job, last + 1 - first) : await this.#pool.open(job);
    if (!this.#closed && this.#spareSealed.length < MAX_SPARE_WINDOWS) this.#spareSealed.push(result.sealed);
    else this.#pool.returnOutput(result.sealed);
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

  /** Opens a window on this thread (SealPool.inline) as the worker would: IntegrityError and nothing back on a bad tag. */
  #openHere(job: OpenJob, segments: number): OpenResult {
    const bytes = segments * this.#layout.segmentSize;
    const offered = job.output;
    const plaintext = offered !== undefined && offered.byteLength >= bytes ? offered : new ArrayBuffer(bytes);
    const sealed = Buffer.from(job.sealed, 0, job.sealedLength);
    const length = this.#keys.openSegmentsInto(job.startIndex, sealed, job.last, Buffer.from(plaintext, 0, bytes));
    return { plaintext, length, sealed: job.sealed };
  }

  /** `length` sealed bytes at `start`, in a buffer of its own (recycled when possible) that can be transferred. */
  async #readSealed(start: number, length: number): Promise<ArrayBuffer> {
    const blob = this.#blob;
    const spare = this.#spareSealed.pop() ?? this.#pool.borrowOutput(length);
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
    // Its windows to the pool too (zeroed), now or when the last view of one is released or its load ends: dropped,
    // they were 2-3 MiB of garbage per ranged GET, old enough by then to wait for a full GC.
    for (const window of this.#windows.values()) {
      this.#notAhead(window);
      window.evicted = true;
      this.#recycle(window);
    }
    this.#windows.clear();
    this.#pool.release(this.#keysId);
    this.#keys.destroy();
    // spares to the pool, for the next reader or writer: each ranged GET of a multipart download is a reader of its
    // own, and dropping them made ~1 GiB of garbage per GiB downloaded
    for (const spare of this.#sparePlain.splice(0)) this.#toPool(spare);
    for (const spare of this.#spareSealed.splice(0)) this.#pool.returnOutput(spare);
    await this.#blob.close();
    this.#onClose(this.#bytesRead);
  }
}
