// Segment sealing and opening on worker threads. ParallelSegmentWriter writes the same container layout as
// SegmentWriter (same segments, indices, last flags and padding; fresh random nonces), but the main thread only copies
// plaintext into batch buffers; a SealPool's workers (seal-worker.ts) seal batches of full segments, and results come
// back in order. SealPool.open decrypts ranges of segments for readers (EncryptedReader) the same way.
// A container's keys are sent to a worker once (register), jobs name them by id; buffers move by transfer both ways
// so callers can recycle them (steady-state streaming allocates nothing per batch).
import { Worker } from "node:worker_threads";
import { zero } from "../crypto/bytes.ts";
import { AtrestError, IntegrityError } from "../errors.ts";
import type { ContainerKeys, SealWorkerParams } from "./container.ts";
import type { KeysMessage, WorkerReply, WorkerRequest } from "./seal-worker.ts";
import type { SegmentWriterOptions } from "./writer.ts";

const WORKER_URL = new URL("./seal-worker.ts", import.meta.url);
const MAX_THREADS = 64;
const MAX_BATCH_BYTES = 2 ** 30;
/** Returned plaintext buffers a writer keeps for refilling (avoids allocating and faulting in fresh memory). */
const MAX_SPARE_BUFFERS = 4;
/** Recycled sealed-output buffers a writer keeps: enough for everything an upload has in flight (see files.ts). */
const MAX_SPARE_OUTPUTS = 16;

/** A seal worker failed, exited, or its pool was closed; the writer's output is incomplete and must be discarded. */
export class SealWorkerError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SealWorkerError";
  }
}

export interface SealPoolOptions {
  /** Worker threads, created on demand. Default 1. */
  threads?: number;
}

/** A batch to seal under registered keys. `plaintext` (whole segments) and `output` are transferred. */
export interface SealJob {
  /** From SealPool.register. */
  keys: number;
  /** Index of the batch's first segment. */
  startIndex: number;
  plaintext: ArrayBuffer;
  /** A recycled buffer to seal into; ignored when too small. */
  output?: ArrayBuffer;
}

export interface SealResult {
  /** The batch's sealed segments, concatenated, in the first `length` bytes. */
  sealed: ArrayBuffer;
  length: number;
  /** The job's plaintext buffer, back from the worker for reuse. */
  plaintext: ArrayBuffer;
}

/** Consecutive sealed segments to open under registered keys. `sealed` and `output` are transferred. */
export interface OpenJob {
  /** From SealPool.register. */
  keys: number;
  /** Index of the first segment. */
  startIndex: number;
  /** The segments as on disk, in the first `sealedLength` bytes. */
  sealed: ArrayBuffer;
  sealedLength: number;
  /** Whether the range ends with the container's final segment. */
  last: boolean;
  /** A recycled buffer to decrypt into; ignored when too small. */
  output?: ArrayBuffer;
}

export interface OpenResult {
  /**
   * Plaintext of segment startIndex + i at i * segmentSize, `length` bytes in all: every segment is full except a
   * final one, whose padding has been checked and removed.
   */
  plaintext: ArrayBuffer;
  length: number;
  /** The job's sealed buffer, back from the worker for reuse. */
  sealed: ArrayBuffer;
}

interface Slot {
  worker: Worker;
  jobs: number;
  dead: boolean;
}

interface Pending {
  slot: Slot;
  resolve: (reply: WorkerReply) => void;
  reject: (err: Error) => void;
}

interface Registration {
  message: KeysMessage;
  /** Workers that have been sent `message`. */
  slots: Set<Slot>;
}

/**
 * Worker threads that seal and open segment batches; one pool serves every writer and reader of the process. Workers
 * start lazily, are referenced only while they have work (an idle pool never keeps the process alive), and a worker
 * that crashes fails its jobs and is replaced on the next job.
 */
const MAX_FREE_BATCHES = 8;

export class SealPool {
  readonly threads: number;
  readonly #slots: Slot[] = [];
  readonly #pending = new Map<number, Pending>();
  readonly #keys = new Map<number, Registration>();
  #nextId = 1;
  #nextKeys = 1;
  #closed = false;
  // Zeroed batch buffers lent to writers: without it every upload, even of 4 KiB, allocated a fresh 1 MiB batch.
  readonly #freeBatches: ArrayBuffer[] = [];

  constructor(options: SealPoolOptions = {}) {
    const { threads = 1 } = options;
    if (!Number.isInteger(threads) || threads < 1 || threads > MAX_THREADS) {
      throw new AtrestError("INVALID_INPUT", `threads must be 1..${MAX_THREADS}`);
    }
    this.threads = threads;
  }

  /** A zero-filled batch buffer of `bytes`, reused from an earlier writer when one is free. */
  borrowBatch(bytes: number): ArrayBuffer {
    const i = this.#freeBatches.findIndex((b) => b.byteLength === bytes && !b.detached);
    return i >= 0 ? this.#freeBatches.splice(i, 1)[0] : new ArrayBuffer(bytes);
  }

  /** Takes back a batch buffer the caller has zeroed. */
  returnBatch(buffer: ArrayBuffer): void {
    if (!buffer.detached && this.#freeBatches.length < MAX_FREE_BATCHES) this.#freeBatches.push(buffer);
  }

  /** Jobs sent to a worker and not answered yet (all writers and readers). */
  get pendingJobs(): number {
    return this.#pending.size;
  }

  /** Worker threads currently running. */
  get workers(): number {
    return this.#slots.length;
  }

  /** Key registrations not released yet. */
  get registeredKeys(): number {
    return this.#keys.size;
  }

  /**
   * Registers a container's segment key for later jobs and returns its id. The key reaches a worker once, with the
   * first job that worker gets for it; release(id) when done (jobs already submitted still complete).
   */
  register(params: SealWorkerParams): number {
    const keys = this.#nextKeys++;
    const { key, fileIdField, layout } = params;
    this.#keys.set(keys, { message: { type: "keys", keys, key, fileIdField, layout }, slots: new Set() });
    return keys;
  }

  /** Drops a registration on every worker that has it. Idempotent. */
  release(keys: number): void {
    const registration = this.#keys.get(keys);
    if (registration === undefined) return;
    this.#keys.delete(keys);
    const message: WorkerRequest = { type: "release", keys };
    for (const slot of registration.slots) {
      if (slot.dead) continue;
      try {
        slot.worker.postMessage(message);
      } catch {
        // A worker that cannot take messages is failing anyway; its key copy goes with it.
      }
    }
  }

  /** Seals one batch on a worker (used by ParallelSegmentWriter). */
  async seal(job: SealJob): Promise<SealResult> {
    const transfer = job.output === undefined ? [job.plaintext] : [job.plaintext, job.output];
    const reply = await this.#submit(job.keys, (id) => ({ type: "seal", id, ...job }), transfer);
    if (reply.type !== "seal") throw new SealWorkerError("seal worker sent a wrong reply");
    return { sealed: reply.sealed, length: reply.length, plaintext: reply.plaintext };
  }

  /**
   * Authenticates and decrypts consecutive segments on a worker (used by EncryptedReader), exactly as
   * ContainerKeys.open does. Authentication failure → IntegrityError, and no plaintext comes back.
   */
  async open(job: OpenJob): Promise<OpenResult> {
    const transfer = job.output === undefined ? [job.sealed] : [job.sealed, job.output];
    const reply = await this.#submit(job.keys, (id) => ({ type: "open", id, ...job }), transfer);
    if (reply.type !== "open") throw new SealWorkerError("seal worker sent a wrong reply");
    return { plaintext: reply.plaintext, length: reply.length, sealed: reply.sealed };
  }

  /** Terminates the workers; jobs still pending reject. The pool accepts no more jobs. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#keys.clear();
    const slots = this.#slots.splice(0);
    const exits = slots.map((slot) => {
      this.#fail(slot, new SealWorkerError("seal pool closed"));
      return slot.worker.terminate();
    });
    await Promise.all(exits);
  }

  #submit(keys: number, build: (id: number) => WorkerRequest, transfer: ArrayBuffer[]): Promise<WorkerReply> {
    if (this.#closed) return Promise.reject(new SealWorkerError("seal pool is closed"));
    const registration = this.#keys.get(keys);
    if (registration === undefined) {
      return Promise.reject(new AtrestError("INVALID_INPUT", `no keys registered under ${keys} (released?)`));
    }
    const id = this.#nextId++;
    return new Promise<WorkerReply>((resolve, reject) => {
      let slot: Slot;
      try {
        slot = this.#pick();
      } catch (err) {
        reject(new SealWorkerError("cannot start a seal worker", { cause: err }));
        return;
      }
      this.#pending.set(id, { slot, resolve, reject });
      if (slot.jobs++ === 0) slot.worker.ref();
      try {
        if (!registration.slots.has(slot)) {
          // Messages on one port arrive in order: the keys are there before this worker's first job needs them.
          slot.worker.postMessage(registration.message);
          registration.slots.add(slot);
        }
        slot.worker.postMessage(build(id), transfer);
      } catch (err) {
        this.#settle(id);
        reject(new SealWorkerError("cannot send a job to the seal worker", { cause: err }));
      }
    });
  }

  /** The least busy worker, starting another while every running one is busy and the limit allows. */
  #pick(): Slot {
    let best: Slot | undefined;
    for (const slot of this.#slots) if (best === undefined || slot.jobs < best.jobs) best = slot;
    if (best !== undefined && (best.jobs === 0 || this.#slots.length >= this.threads)) return best;
    const worker = new Worker(WORKER_URL, { name: "atrest-seal" });
    const slot: Slot = { worker, jobs: 0, dead: false };
    worker.unref();
    worker.on("message", (reply: WorkerReply) => this.#reply(reply));
    worker.on("error", (err) =>
      this.#fail(slot, new SealWorkerError(`seal worker failed: ${err.message}`, { cause: err })),
    );
    worker.on("messageerror", (err) =>
      this.#fail(slot, new SealWorkerError("seal worker message could not be read", { cause: err })),
    );
    worker.on("exit", (code) => this.#fail(slot, new SealWorkerError(`seal worker exited (code ${code})`)));
    this.#slots.push(slot);
    return slot;
  }

  #settle(id: number): Pending | undefined {
    const pending = this.#pending.get(id);
    if (pending === undefined) return undefined;
    this.#pending.delete(id);
    if (--pending.slot.jobs === 0 && !pending.slot.dead) pending.slot.worker.unref();
    return pending;
  }

  #reply(reply: WorkerReply): void {
    const pending = this.#settle(reply.id);
    if (pending === undefined) return;
    if (reply.type === "error") {
      // The error type crosses the thread boundary: authentication failures stay IntegrityErrors.
      pending.reject(
        reply.integrity ? new IntegrityError(reply.error) : new SealWorkerError(`seal worker failed: ${reply.error}`),
      );
    } else {
      pending.resolve(reply);
    }
  }

  /** Takes a worker out of service and rejects every job it had. */
  #fail(slot: Slot, err: SealWorkerError): void {
    if (slot.dead) return;
    slot.dead = true;
    const at = this.#slots.indexOf(slot);
    if (at >= 0) this.#slots.splice(at, 1);
    for (const registration of this.#keys.values()) registration.slots.delete(slot);
    for (const [id, pending] of this.#pending) {
      if (pending.slot !== slot) continue;
      this.#pending.delete(id);
      pending.reject(err);
    }
    slot.jobs = 0;
    slot.worker.unref();
    void slot.worker.terminate().catch(() => undefined);
  }
}

export interface ParallelSegmentWriterOptions extends SegmentWriterOptions {
  /** Full segments per batch sent to a worker. Default 16 (1 MiB at 64 KiB segments). */
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
  readonly #batchBytes: number;
  /** Sealed bytes of a full batch: the size of every recycled output buffer. */
  readonly #sealedBatchBytes: number;
  #batch: Buffer | undefined;
  #fill = 0;
  /** Index of the first segment in #batch. */
  #index: number;
  /** Dispatched, not yet handed out, in segment order. */
  readonly #jobs: Job[] = [];
  /** Taken off #jobs by a next() that still waits for them. */
  readonly #taken = new Set<Job>();
  #inflight = 0;
  readonly #spare: ArrayBuffer[] = [];
  /** Sealed-output buffers handed back through recycle(), sent to the worker with the next batches. */
  readonly #spareOutputs: ArrayBuffer[] = [];
  /** Output buffers handed out by next()/finish() and not recycled yet: recycle() accepts only these. */
  readonly #handedOut = new WeakSet<ArrayBuffer>();
  #plaintextLength: number;
  #bytesWritten = 0;
  #finished = false;
  #destroyed = false;
  #error: Error | undefined;

  constructor(pool: SealPool, keys: ContainerKeys, options: ParallelSegmentWriterOptions = {}) {
    const { startIndex = 0, pending, batchSegments = 16 } = options;
    const params = keys.sealWorkerParams();
    const size = params.layout.segmentSize;
    if (!Number.isSafeInteger(startIndex) || startIndex < 0) throw new AtrestError("INVALID_INPUT", "bad startIndex");
    if (pending && pending.length >= size) throw new AtrestError("INVALID_INPUT", "pending data must be < segmentSize");
    if (!Number.isInteger(batchSegments) || batchSegments < 1 || batchSegments * size > MAX_BATCH_BYTES) {
      throw new AtrestError("INVALID_INPUT", "batchSegments must be >= 1 and a batch at most 1 GiB");
    }
    this.#pool = pool;
    this.#keys = keys;
    this.#segmentSize = size;
    this.#batchBytes = batchSegments * size;
    this.#sealedBatchBytes = batchSegments * params.layout.sealedSegmentSize;
    this.#batch = this.#newBatch();
    this.#index = startIndex;
    if (pending) this.#fill = pending.copy(this.#batch);
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
      if (!this.#destroyed) this.#inflight -= job.bytes;
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
    if (this.#finished || this.#destroyed || buffer.byteLength !== this.#sealedBatchBytes) return;
    if (this.#spareOutputs.length < MAX_SPARE_OUTPUTS) this.#spareOutputs.push(buffer);
  }

  /** Abandons the writer: in-flight work is dropped (pending next()/finish() reject), buffers are zeroed. */
  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    const err = new AtrestError("INVALID_INPUT", "ParallelSegmentWriter was destroyed");
    for (const job of [...this.#taken, ...this.#jobs.splice(0)]) job.reject(err);
    this.#taken.clear();
    this.#inflight = 0;
    if (this.#batch) zero(this.#batch.subarray(0, this.#fill));
    this.#release();
  }

  #usable(): Buffer {
    if (this.#error) throw this.#error;
    if (this.#destroyed) throw new AtrestError("INVALID_INPUT", "ParallelSegmentWriter was destroyed");
    if (this.#finished || this.#batch === undefined) {
      throw new AtrestError("INVALID_INPUT", "ParallelSegmentWriter already finished");
    }
    return this.#batch;
  }

  /** A batch buffer over its own ArrayBuffer, so it can be transferred to a worker rather than copied. */
  #newBatch(): Buffer {
    return Buffer.from(this.#spare.pop() ?? this.#pool.borrowBatch(this.#batchBytes));
  }

  /** Sends the first `bytes` (whole segments) of the current batch to the pool; returns the next batch buffer. */
  #dispatch(bytes: number, last = false): Buffer {
    const keys = this.#keysId;
    const batch = this.#batch;
    if (keys === undefined || batch === undefined) throw new AtrestError("INVALID_INPUT", "writer is closed");
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
    this.#pool.seal({ keys, startIndex, plaintext, output: this.#spareOutputs.pop() }).then(
      (result) => {
        this.#recycle(result.plaintext);
        this.#handedOut.add(result.sealed);
        job.resolve(Buffer.from(result.sealed, 0, result.length));
      },
      (err: Error) => job.reject(err),
    );
    this.#fill = 0;
    this.#batch = last ? undefined : this.#newBatch();
    return this.#batch ?? batch;
  }

  #recycle(plaintext: ArrayBuffer | undefined): void {
    if (plaintext === undefined) return;
    if (this.#batch !== undefined && !this.#destroyed && this.#spare.length < MAX_SPARE_BUFFERS) {
      if (plaintext.byteLength === this.#batchBytes) this.#spare.push(plaintext);
    } else {
      zero(Buffer.from(plaintext));
    }
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
    this.#spareOutputs.length = 0;
    // A batch reused from a spare may hold an older batch's plaintext past the fill point: zero it all.
    const batch = this.#batch?.buffer as ArrayBuffer | undefined;
    this.#batch = undefined;
    if (batch && !batch.detached) {
      zero(Buffer.from(batch));
      this.#pool.returnBatch(batch);
    }
    for (const spare of this.#spare.splice(0)) {
      zero(Buffer.from(spare));
      this.#pool.returnBatch(spare);
    }
  }
}
