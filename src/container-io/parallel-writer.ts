// ParallelSegmentWriter writes the same container layout as SegmentWriter (same segments, indices, last flags and
// padding; fresh random nonces), but the main thread only copies plaintext into batch buffers; a SealPool's workers
// seal batches of full segments, and results come back in order. With SealPool.inline (atrest's GCM binding) the
// writer seals each batch itself as it fills: cheaper than the two messages a worker costs per batch.
import { zero } from "../crypto/bytes.ts";
import { AtrestError, HandleClosedError } from "../errors.ts";
import type { ContainerKeys } from "../format/container.ts";
import type { SegmentWriterOptions } from "../format/writer.ts";
import { DISK_BACKLOG_BYTES, SEALING_BACKLOG_BYTES, type SealPool } from "./seal-pool.ts";

const MAX_BATCH_BYTES = 2 ** 30;
/**
 * Returned plaintext buffers a writer keeps for refilling (no zeroing: they held this file's plaintext). One covers
 * the steady state (a batch comes back as the next one fills); more go zeroed to the pool's shared free list, and so
 * does the one while the pool is crowded (SealPool.crowded). With 4 kept per writer, 100 concurrent uploads held up
 * to 500 MiB of idle batches (RSS 776 MB at the peak).
 */
const MAX_SPARE_BUFFERS = 1;
const DEFAULT_BATCH_SEGMENTS = 16;

export interface ParallelSegmentWriterOptions extends SegmentWriterOptions {
  /**
   * Full segments per batch sent to a worker. Default: 16 (1 MiB at 64 KiB segments), fewer while many containers
   * are open on the pool (SealPool.batchSegments), chosen again for each batch.
   */
  batchSegments?: number;
}

interface Job {
  bytes: number;
  promise: Promise<Buffer>;
  resolve: (sealed: Buffer) => void;
  reject: (err: Error) => void;
}

/**
 * SegmentWriter's output, sealed on a SealPool. push() only copies; sealed batches come back through next() in
 * order; finish() seals the final padded segment here and returns everything left. Keep `inflightBytes` bounded by
 * calling next(). The container layout is identical to SegmentWriter's; nonces are random per segment either way
 * (an injected RandomSource, for test vectors, applies only to the final segment).
 */
export class ParallelSegmentWriter {
  readonly #pool: SealPool;
  readonly #keys: ContainerKeys;
  /** This writer's key registration on the pool; undefined once released. */
  #keysId: number | undefined;
  readonly #segmentSize: number;
  readonly #sealedSegmentSize: number;
  /** Segments per batch asked for, or undefined: the pool's choice for each batch. */
  readonly #fixedSegments: number | undefined;
  /** Plaintext bytes of the current batch when full. */
  #batchBytes = 0;
  #batch: Buffer | undefined;
  #fill = 0;
  /**
   * Leading bytes of #batch that may hold plaintext: all of a recycled one, what was filled of one fresh from the pool
   * (which hands out zeroed buffers). #release zeroes only these: a 4 KiB upload zeroed a whole 1 MiB batch before.
   */
  #dirty = 0;
  /** Index of the first segment in #batch. */
  #index: number;
  /** Dispatched, not yet handed out, in segment order. */
  readonly #jobs: Job[] = [];
  /** Taken off #jobs by a next() that still waits for them. */
  readonly #taken = new Set<Job>();
  #inflight = 0;
  readonly #spare: ArrayBuffer[] = [];
  /** Output buffers handed out by next()/finish() and not recycled yet: recycle() accepts only these. */
  readonly #handedOut = new WeakSet<ArrayBuffer>();
  #plaintextLength: number;
  #bytesWritten = 0;
  #finished = false;
  #destroyed = false;
  #error: Error | undefined;

  constructor(pool: SealPool, keys: ContainerKeys, options: ParallelSegmentWriterOptions = {}) {
    const { startIndex = 0, pending, batchSegments } = options;
    const params = keys.sealWorkerParams();
    const size = params.layout.segmentSize;
    if (!Number.isSafeInteger(startIndex) || startIndex < 0) throw new AtrestError("INVALID_INPUT", "bad startIndex");
    if (pending && pending.length >= size) throw new AtrestError("INVALID_INPUT", "pending data must be < segmentSize");
    if (
      batchSegments !== undefined &&
      (!Number.isInteger(batchSegments) || batchSegments < 1 || batchSegments * size > MAX_BATCH_BYTES)
    ) {
      throw new AtrestError("INVALID_INPUT", "batchSegments must be >= 1 and a batch at most 1 GiB");
    }
    this.#pool = pool;
    this.#keys = keys;
    this.#segmentSize = size;
    this.#sealedSegmentSize = params.layout.sealedSegmentSize;
    this.#fixedSegments = batchSegments;
    this.#batch = this.#newBatch();
    this.#index = startIndex;
    if (pending) this.#fill = pending.copy(this.#batch);
    this.#dirty = Math.max(this.#dirty, this.#fill);
    this.#plaintextLength = startIndex * size + this.#fill;
    this.#keysId = pool.register(params);
  }

  /** Plaintext bytes of the whole file so far (including what preceded a resume). */
  get plaintextLength(): number {
    return this.#plaintextLength;
  }

  /** Sealed bytes handed out so far by next() and finish() (segments only, not the header). */
  get bytesWritten(): number {
    return this.#bytesWritten;
  }

  /**
   * The pool's sealing backlog over all writers is above its bound: a writer with batches in flight should wait for
   * them (next()) before handing over more, so many concurrent uploads share the queue instead of each filling it.
   */
  get congested(): boolean {
    return this.#pool.sealBacklog > SEALING_BACKLOG_BYTES;
  }

  /** Sealed bytes of all writers waiting for the disk: EncryptedWriter adds and removes its own. */
  diskBacklog(delta: number): void {
    this.#pool.diskBacklog += delta;
  }

  /** The disk backlog over all writers is above its bound: a writer with writes in flight should wait for them. */
  get diskCongested(): boolean {
    return this.#pool.diskBacklog > DISK_BACKLOG_BYTES;
  }

  /** Plaintext bytes dispatched to the pool whose sealed output next()/finish() has not handed out yet. */
  get inflightBytes(): number {
    return this.#inflight;
  }

  /** Accepts more plaintext (copied; the caller may reuse `chunk`). Dispatches each batch as it fills. */
  push(chunk: Buffer): void {
    const batch = this.#usable();
    let at = 0;
    let target = batch;
    while (at < chunk.length) {
      const n = chunk.copy(target, this.#fill, at);
      this.#fill += n;
      at += n;
      if (this.#fill > this.#dirty) this.#dirty = this.#fill;
      if (this.#fill === this.#batchBytes) target = this.#dispatch(this.#batchBytes);
    }
    this.#plaintextLength += chunk.length;
  }

  /** The next sealed batch in segment order (whole segments, concatenated), or undefined when nothing is in flight. */
  async next(): Promise<Buffer | undefined> {
    if (this.#error) throw this.#error;
    const job = this.#jobs.shift();
    if (job === undefined) return undefined;
    this.#taken.add(job);
    try {
      const sealed = await job.promise;
      this.#bytesWritten += sealed.length;
      return sealed;
    } finally {
      this.#taken.delete(job);
      if (!this.#destroyed) {
        this.#inflight -= job.bytes;
        this.#pool.sealBacklog -= job.bytes;
      }
    }
  }

  /**
   * Dispatches the remaining full segments, seals the final (padded) segment and returns all output not yet handed
   * out, in order. The writer cannot be used afterwards.
   */
  async finish(): Promise<Buffer[]> {
    const batch = this.#usable();
    this.#finished = true;
    const full = this.#fill - (this.#fill % this.#segmentSize);
    const rest = Buffer.from(batch.subarray(full, this.#fill));
    let final: Buffer;
    // The tail is kept in `rest`; clear it here because only the whole segments before it travel to the worker.
    zero(batch.subarray(full, this.#fill));
    try {
      if (full > 0) this.#dispatch(full, true);
      final = this.#keys.seal(this.#index, rest, true);
    } finally {
      zero(rest);
      this.#release();
    }
    const out: Buffer[] = [];
    for (let sealed = await this.next(); sealed !== undefined; sealed = await this.next()) out.push(sealed);
    this.#bytesWritten += final.length;
    out.push(final);
    return out;
  }

  /**
   * Hands a buffer returned by next() or finish() back for reuse as sealing output, once the caller is completely done
   * with it (e.g. its disk write has completed): it is later transferred to the worker and overwritten. Buffers this
   * writer did not hand out, and anything after finish/destroy, are ignored.
   */
  recycle(sealed: Buffer): void {
    const buffer = sealed.buffer as ArrayBuffer;
    if (!this.#handedOut.has(buffer)) return;
    this.#handedOut.delete(buffer);
    // also after finish or destroy: the pool's list serves the next writer or reader (or frees it), where dropping it
    // left each multipart part's last outputs as garbage
    this.#pool.returnOutput(buffer);
  }

  /** Abandons the writer: in-flight work is dropped (pending next()/finish() reject), buffers are zeroed. */
  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    const err = new HandleClosedError("ParallelSegmentWriter was destroyed");
    for (const job of [...this.#taken, ...this.#jobs.splice(0)]) job.reject(err);
    this.#taken.clear();
    this.#pool.sealBacklog -= this.#inflight;
    this.#inflight = 0;
    if (this.#batch) zero(this.#batch.subarray(0, this.#fill));
    this.#release();
  }

  #usable(): Buffer {
    if (this.#error) throw this.#error;
    if (this.#destroyed) throw new AtrestError("INVALID_INPUT", "ParallelSegmentWriter was destroyed");
    if (this.#finished || this.#batch === undefined) {
      throw new HandleClosedError("ParallelSegmentWriter already finished");
    }
    return this.#batch;
  }

  /**
   * A batch buffer over its own ArrayBuffer, so it can be transferred to a worker rather than copied. Its size is
   * chosen now: 100 uploads each filling a 1 MiB batch held 100 MiB while they waited for the disk.
   */
  #newBatch(): Buffer {
    // The constructor takes the first batch before registering this writer's keys: count it.
    const open = this.#pool.registeredKeys + (this.#keysId === undefined ? 1 : 0);
    const segments = this.#fixedSegments ?? this.#pool.batchSegments(DEFAULT_BATCH_SEGMENTS, this.#segmentSize, open);
    this.#batchBytes = segments * this.#segmentSize;
    let spare = this.#spare.pop();
    if (spare !== undefined && spare.byteLength !== this.#batchBytes) {
      zero(Buffer.from(spare));
      this.#pool.returnBatch(spare);
      spare = undefined;
    }
    this.#dirty = spare ? spare.byteLength : 0;
    return Buffer.from(spare ?? this.#pool.borrowBatch(this.#batchBytes));
  }

  /** Sends the first `bytes` (whole segments) of the current batch to the pool; returns the next batch buffer. */
  #dispatch(bytes: number, last = false): Buffer {
    const keys = this.#keysId;
    const batch = this.#batch;
    if (keys === undefined || batch === undefined) throw new HandleClosedError("writer is closed");
    // Only the filled, whole segments travel (the tail of a last partial batch stays here).
    const whole = batch.buffer as ArrayBuffer; // from #newBatch: its own ArrayBuffer, offset 0
    const plaintext = bytes === whole.byteLength ? whole : whole.transfer(bytes);
    const startIndex = this.#index;
    this.#index += bytes / this.#segmentSize;
    const { promise, resolve, reject } = Promise.withResolvers<Buffer>();
    const job: Job = { bytes, promise, resolve, reject };
    promise.catch((err: Error) => this.#fail(err));
    this.#jobs.push(job);
    this.#inflight += bytes;
    this.#pool.sealBacklog += bytes;
    const output = this.#pool.borrowOutput((bytes / this.#segmentSize) * this.#sealedSegmentSize);
    if (this.#pool.inline) this.#sealHere(job, startIndex, plaintext, output);
    else {
      this.#pool.seal({ keys, startIndex, plaintext, output }).then(
        (result) => {
          this.#recycle(result.plaintext);
          this.#handedOut.add(result.sealed);
          job.resolve(Buffer.from(result.sealed, 0, result.length));
        },
        (err: Error) => job.reject(err),
      );
    }
    this.#fill = 0;
    // inline, the batch just sealed is this writer's spare again: the next batch is the same buffer
    this.#batch = last ? undefined : this.#newBatch();
    return this.#batch ?? batch;
  }

  /** Seals a dispatched batch on this thread (SealPool.inline), as the worker would, and settles its job. */
  #sealHere(job: Job, startIndex: number, plaintext: ArrayBuffer, output: ArrayBuffer | undefined): void {
    const length = (plaintext.byteLength / this.#segmentSize) * this.#sealedSegmentSize;
    // never Node's shared pool: the buffer is recycled through the pool's free list like a worker's output
    const sealed = output ?? (Buffer.allocUnsafeSlow(length).buffer as ArrayBuffer);
    try {
      this.#keys.sealSegmentsInto(startIndex, Buffer.from(plaintext), Buffer.from(sealed, 0, length));
    } catch (err) {
      zero(Buffer.from(plaintext));
      job.reject(err as Error);
      return;
    }
    this.#recycle(plaintext);
    this.#handedOut.add(sealed);
    job.resolve(Buffer.from(sealed, 0, length));
  }

  #recycle(plaintext: ArrayBuffer | undefined): void {
    if (plaintext === undefined) return;
    const reusable = this.#batch !== undefined && !this.#destroyed && plaintext.byteLength === this.#batchBytes;
    if (reusable && this.#spare.length < MAX_SPARE_BUFFERS && !this.#pool.crowded) {
      this.#spare.push(plaintext);
      return;
    }
    zero(Buffer.from(plaintext));
    this.#pool.returnBatch(plaintext);
  }

  #fail(err: Error): void {
    if (this.#destroyed || this.#error) return;
    this.#error = err;
  }

  /** Releases the key registration and every plaintext and output buffer this writer still holds. */
  #release(): void {
    // Jobs already dispatched still complete: the worker drops the key after them.
    if (this.#keysId !== undefined) this.#pool.release(this.#keysId);
    this.#keysId = undefined;
    // A batch reused from a spare may hold an older batch's plaintext past the fill point: #dirty covers it.
    const batch = this.#batch?.buffer as ArrayBuffer | undefined;
    this.#batch = undefined;
    if (batch && !batch.detached) {
      zero(Buffer.from(batch, 0, Math.min(this.#dirty, batch.byteLength)));
      this.#pool.returnBatch(batch);
    }
    this.#dirty = 0;
    for (const spare of this.#spare.splice(0)) {
      zero(Buffer.from(spare));
      this.#pool.returnBatch(spare);
    }
  }
}
