// Segment sealing and opening on worker threads (seal-worker.ts): the RPC side. A container's keys are sent to a
// worker once (register), jobs name them by id; buffers move by transfer both ways so callers can recycle them
// (steady-state streaming allocates nothing per batch). ParallelSegmentWriter (parallel-writer.ts) and
// EncryptedReader (encrypted-reader.ts) are its two users.
import { Worker } from "node:worker_threads";
import { containerCrypto } from "../crypto/gcm-native.ts";
import { AtrestError, IntegrityError } from "../errors.ts";
import type { SealWorkerParams } from "../format/container.ts";
import type { KeysMessage, OpenJob, WorkerReply, WorkerRequest } from "./seal-messages.ts";

export type { OpenJob } from "./seal-messages.ts";

const WORKER_URL = new URL("./seal-worker.ts", import.meta.url);
const MAX_THREADS = 64;

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
  /**
   * Writers seal their batches and readers open their windows on the calling thread instead of a worker, when
   * atrest's GCM binding is loaded (with node:crypto's fallback the workers still do it). Default false. Through the
   * binding AES-GCM costs the main thread about what handing a batch to a worker and taking it back did, and the
   * worker's own CPU goes: 512 MiB over HTTPS, server CPU s/GiB PUT h2 3.38-7.42 -> 2.18-6.98, PUT HTTP/1.1
   * 2.58-3.36 -> 1.74-3.02, warm GET 1.46-1.68 -> 1.00-1.46, main thread unchanged within the noise (interleaved,
   * load 16-24); no worker started, RSS 15-20 MiB lower.
   */
  inline?: boolean;
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

const MAX_FREE_BATCHES = 8;
/** Sealing backlog (all writers) above which writers wait for their own batches before queueing more. */
export const SEALING_BACKLOG_BYTES = 8 * 1024 * 1024;
/**
 * Sealed data waiting for the disk (all writers) above which writers wait for their own writes first. 32 MiB keeps
 * the disk busy (each upload may still have 4 MiB on its way); 64 MiB let 100 concurrent uploads peak higher.
 */
export const DISK_BACKLOG_BYTES = 32 * 1024 * 1024;
const MAX_FREE_OUTPUTS = 16;
/**
 * The free lists are emptied once no job has been pending for this long: between transfers they held 24 MiB that the
 * next transfer (a GET after a multipart PUT) started from.
 */
const IDLE_TRIM_MS = 1000;

/**
 * Frees a buffer no one uses any more now (detaching releases its memory), not at some later GC: one the seal worker
 * allocated counts only as external memory, which the server's GC pacing does not watch, so such garbage piled up
 * until V8's own external-memory limit (tens of MB during a multipart GET). Only for buffers no view is used of.
 */
export function discardBuffer(buffer: ArrayBuffer): void {
  if (!buffer.detached) buffer.transfer(0);
}
/**
 * Plaintext batch memory the writers' default batch size aims at over all open containers: up to 32 open, each
 * gets 16 segments (1 MiB), up to 64 8, and so on (powers of two, at least one segment). Larger batches cost less
 * per byte (one worker round trip each); many uploads at once are bound by the disk, not by that cost. 100
 * concurrent 50 MB uploads: peak RSS 557 MB with 1 MiB batches, 468 MB with these (load 7-10, same CPU within noise).
 */
const BATCH_MEMORY_BYTES = 32 * 1024 * 1024;
/** Open containers above which writers keep no spare batch of their own (the pool's free list serves them). */
const CROWDED_CONTAINERS = 16;

/**
 * Worker threads that seal and open segment batches; one pool serves every writer and reader of the process. Workers
 * start lazily, are referenced only while they have work (an idle pool never keeps the process alive), and a worker
 * that crashes fails its jobs and is replaced on the next job.
 */
export class SealPool {
  readonly threads: number;
  /** Writers and readers seal and open on their own thread (SealPoolOptions.inline, with the binding loaded). */
  readonly inline: boolean;
  readonly #slots: Slot[] = [];
  readonly #pending = new Map<number, Pending>();
  readonly #keys = new Map<number, Registration>();
  #nextId = 1;
  #nextKeys = 1;
  #closed = false;
  #sealingBytes = 0;
  // Zeroed batch buffers lent to writers: without it every upload, even of 4 KiB, allocated a fresh 1 MiB batch.
  readonly #freeBatches: ArrayBuffer[] = [];
  // Sealed-output buffers shared by all writers: kept per writer (8 each), 100 uploads held 800 MiB of spares.
  readonly #freeOutputs: ArrayBuffer[] = [];
  #trimTimer: NodeJS.Timeout | undefined;

  constructor(options: SealPoolOptions = {}) {
    const { threads = 1, inline = false } = options;
    if (!Number.isInteger(threads) || threads < 1 || threads > MAX_THREADS) {
      throw new AtrestError("INVALID_INPUT", `threads must be 1..${MAX_THREADS}`);
    }
    this.threads = threads;
    this.inline = inline && containerCrypto().native;
  }

  /** A zero-filled batch buffer of `bytes`, reused from an earlier writer when one is free. */
  borrowBatch(bytes: number): ArrayBuffer {
    return this.takeFreeBatch(bytes) ?? new ArrayBuffer(bytes);
  }

  /** A zero-filled buffer of `bytes` from the free list, or undefined (nothing is allocated). */
  takeFreeBatch(bytes: number): ArrayBuffer | undefined {
    const i = this.#freeBatches.findIndex((b) => b.byteLength === bytes && !b.detached);
    return i >= 0 ? this.#freeBatches.splice(i, 1)[0] : undefined;
  }

  /** Takes back a batch buffer the caller has zeroed (and no longer uses: one the list has no room for is freed). */
  returnBatch(buffer: ArrayBuffer): void {
    if (buffer.detached) return;
    if (this.#freeBatches.length < MAX_FREE_BATCHES && !this.#closed) {
      this.#freeBatches.push(buffer);
      this.#trimWhenIdle();
    } else discardBuffer(buffer);
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

  /** Segments for a writer's next batch, at most `max`, while `open` containers share BATCH_MEMORY_BYTES. */
  batchSegments(max: number, segmentSize: number, open = this.#keys.size): number {
    const share = Math.floor(BATCH_MEMORY_BYTES / Math.max(1, open) / segmentSize);
    // Powers of two only, so that batch and output buffers of different writers stay interchangeable in the free lists.
    let segments = max;
    while (segments > 1 && segments > share) segments = Math.ceil(segments / 2);
    return segments;
  }

  /** So many containers are open that writers should not keep spare batch buffers of their own. */
  get crowded(): boolean {
    return this.#keys.size > CROWDED_CONTAINERS;
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

  /** Plaintext bytes submitted for sealing and not sealed yet, over every writer. */
  get sealingBytes(): number {
    return this.#sealingBytes;
  }

  /**
   * Plaintext bytes dispatched by writers whose sealed output they have not taken yet (queued, being sealed, or
   * sealed and waiting for the writer's next()), over every writer; ParallelSegmentWriter counts them in and out.
   * Writers hold back while it is above SEALING_BACKLOG_BYTES (ParallelSegmentWriter.congested): with one worker and
   * 100 uploads each keeping 4 MiB queued, the queue alone held 400 MiB; counting only what was not sealed yet, the
   * sealed batches an upload had not taken (up to 4 MiB each, until its next write) were 60 MB of 295 MB live.
   */
  sealBacklog = 0;

  /**
   * Sealed bytes handed to writers and not yet on their way to disk, over every writer (EncryptedWriter counts them
   * in and out); writers hold back while it is above DISK_BACKLOG_BYTES. With the disk as the bottleneck (100
   * uploads fsyncing), each upload's own 4 MiB bound let 400 MiB of sealed data wait in memory.
   */
  diskBacklog = 0;

  /** Windows EncryptedReaders loaded ahead of their reads and have not read yet, over every reader. */
  readAheadWindows = 0;

  /** A recycled sealed-output buffer of `bytes` (shared by all writers), or undefined. */
  borrowOutput(bytes: number): ArrayBuffer | undefined {
    const i = this.#freeOutputs.findIndex((b) => b.byteLength === bytes && !b.detached);
    return i >= 0 ? this.#freeOutputs.splice(i, 1)[0] : undefined;
  }

  /**
   * Keeps a sealed-output buffer the caller is done with for the next batch of any writer, or the next window of any
   * reader (at most 16 kept; one more is freed).
   */
  returnOutput(buffer: ArrayBuffer): void {
    if (buffer.detached) return;
    if (this.#freeOutputs.length < MAX_FREE_OUTPUTS && !this.#closed) {
      this.#freeOutputs.push(buffer);
      this.#trimWhenIdle();
    } else discardBuffer(buffer);
  }

  /** Bytes held in the free lists (for tests and diagnostics). */
  get freeBytes(): number {
    let n = 0;
    for (const b of this.#freeBatches) n += b.byteLength;
    for (const b of this.#freeOutputs) n += b.byteLength;
    return n;
  }

  /** Frees the free lists' buffers (the pool stays usable: later batches allocate again). */
  trim(): void {
    for (const b of this.#freeBatches.splice(0)) discardBuffer(b);
    for (const b of this.#freeOutputs.splice(0)) discardBuffer(b);
  }

  /** Seals one batch on a worker (used by ParallelSegmentWriter). */
  async seal(job: SealJob): Promise<SealResult> {
    const transfer = job.output === undefined ? [job.plaintext] : [job.plaintext, job.output];
    const bytes = job.plaintext.byteLength;
    this.#sealingBytes += bytes;
    try {
      const reply = await this.#submit(job.keys, (id) => ({ type: "seal", id, ...job }), transfer);
      if (reply.type !== "seal") throw new SealWorkerError("seal worker sent a wrong reply");
      return { sealed: reply.sealed, length: reply.length, plaintext: reply.plaintext };
    } finally {
      this.#sealingBytes -= bytes;
    }
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
    clearTimeout(this.#trimTimer);
    this.trim();
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
    if (this.#pending.size === 0) this.#trimWhenIdle();
    return pending;
  }

  /**
   * Trims the free lists IDLE_TRIM_MS after the last job or buffer returned (inline, no job goes through the pool),
   * unless jobs are pending again by then.
   */
  #trimWhenIdle(): void {
    if (this.#trimTimer) {
      this.#trimTimer.refresh();
      return;
    }
    this.#trimTimer = setTimeout(() => {
      this.#trimTimer = undefined;
      if (this.#pending.size === 0) this.trim();
    }, IDLE_TRIM_MS);
    this.#trimTimer.unref();
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
