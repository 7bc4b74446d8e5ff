import type { KeyObject } from "node:crypto";
import {
  accessSync,
  closeSync,
  constants,
  fdatasync,
  fdatasyncSync,
  fstatSync,
  ftruncateSync,
  linkSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  statfsSync,
  statSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { readFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { aeadKey, NONCE_LENGTH, open, seal } from "../crypto/aead.ts";
import { zero } from "../crypto/bytes.ts";
import { publicRandomBytes } from "../crypto/random.ts";
import { AtrestError, IntegrityError, noSpaceOr } from "../errors.ts";
import { chainHash, checkpointBody, readChainHead, recordAad, recordBody, type Signer } from "./chain.ts";
import type { AuditEvent, AuditRecord, AuditSink } from "./types.ts";

export type { AuditRecord } from "./types.ts";

const V1_PREFIX = "v1:";
const V1_AAD = Buffer.from("atrest audit v1");
export const DEFAULT_CHECKPOINT_EVERY = 1000;

export interface AuditLogOptions {
  /** Signs checkpoints; without one the log is chained but unsigned. */
  signer?: Signer;
  /** Records between checkpoints (default 1000); a checkpoint is also written on close. */
  checkpointEvery?: number;
  /** Refuse operations (`admit` throws) while the file cannot be written. */
  failClosed?: boolean;
  /**
   * Group commit (the file server): `record` queues and returns; one locked write per event-loop turn. Without it
   * (the default, and the key manager's log) every `record` is written before it returns and throws if it cannot be.
   */
  groupCommit?: boolean;
  /** This server node's id (several nodes on one store): written into every record as `node`. */
  node?: string;
}

/** Told when writes start failing (with the cause) and when they work again (undefined). */
export type FailureListener = (failure: string | undefined) => void;

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** Records per group commit; a producer that queues this many in one tick triggers a write at once. */
export const MAX_BATCH = 4096;
/** Records kept in memory while the file cannot be written; beyond this the oldest are lost (and counted). */
export const MAX_PENDING = 1_000_000;

export type RecordListener = (record: AuditRecord, seq: number) => void;

/** Told after a signed checkpoint is in the file: its sequence number and chain hash (hex). */
export type CheckpointListener = (seq: number, hash: string) => void;

/** Free space the audit file system must have for fail-closed `admit` to let an operation start. */
export const ADMIT_RESERVE_BYTES = 64 * 1024;

interface Waiter {
  resolve(): void;
  reject(err: Error): void;
}

/** A queued record; `waiter` when its producer waits for it to be durable (commit). */
interface Pending {
  record: AuditRecord;
  waiter?: Waiter;
  retract?: boolean;
}

/** The audit log cannot be written and `failClosed` is on: the operation is refused. */
export class AuditUnavailableError extends AtrestError {
  constructor(cause: string, refused = false) {
    super(
      "AUDIT_UNAVAILABLE",
      `audit log cannot be written (${cause})${refused ? ": operation refused (audit.failClosed)" : ""}`,
    );
  }
}

/**
 * Append-only audit file, one hash-chained entry per line (layout: see chain.ts and docs/audit.md). Records name paths
 * and users, which a disk thief must not read, so each record is AES-256-GCM sealed under the audit key (itself
 * wrapped by the key manager); the chain and the Ed25519-signed checkpoints cover the sealed bytes.
 *
 * Group commit: `record` queues the event and returns; everything queued in one turn of the event loop (or 4096
 * records, whichever first) is sealed, chained and written with one write(2) under one acquisition of
 * `<file>.lock` (holder's pid inside; see #lock). A CLI command and a running server may append to the same file: each
 * re-reads the chain head when the file grew under it, so the chain never forks. The chain continues across restarts
 * from the last line's hash. `flush()` writes now; `close()` flushes and signs a checkpoint.
 *
 * A failed write is undone (the file is cut back to its last complete line) and the records stay queued and are
 * retried; with `failClosed`, `admit()` then refuses new operations until a write succeeds again.
 */
export class AuditLog implements AuditSink {
  readonly #path: string;
  readonly #lockPath: string;
  /**
   * This log's own file holding its pid, hard-linked to `#lockPath` to take the lock (link(2) fails with EEXIST like
   * O_EXCL does): created once, so taking and dropping the lock allocates and frees no inode. Undefined until first
   * needed, and for good once the file system refused a hard link (then the lock is created with O_EXCL each time).
   */
  #pidPath: string | undefined;
  #linkLocks = true;
  readonly #fd: number;
  readonly #key: KeyObject;
  readonly #signer: Signer | undefined;
  readonly #every: number;
  readonly #listeners = new Set<RecordListener>();
  readonly #checkpointListeners = new Set<CheckpointListener>();
  /** The last checkpoint in the lines being written (announced once the write succeeded). */
  #newCheckpoint: { seq: number; hash: string } | undefined;
  readonly #gates = new Set<() => Promise<void> | undefined>();
  #pending: Pending[] = [];
  /** Written, waiting for the next fdatasync. */
  #unsynced: Waiter[] = [];
  #syncing: Promise<void> | undefined;
  #scheduled: NodeJS.Immediate | undefined;
  #retry: NodeJS.Timeout | undefined;
  #failure: string | undefined;
  #failClosed = false;
  readonly #groupCommit: boolean;
  readonly #node: string | undefined;
  #onFailure: FailureListener | undefined;
  #lost = 0;
  #seq: number;
  #hash: Buffer;
  #size: number;
  #since = 0;
  #closed = false;

  /** Takes ownership of `key` (zeroed once imported). */
  constructor(path: string, key: Buffer, opts: AuditLogOptions = {}) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    this.#path = path;
    this.#lockPath = `${path}.lock`;
    this.#key = aeadKey(key);
    zero(key);
    this.#signer = opts.signer;
    this.#every = Math.max(1, opts.checkpointEvery ?? DEFAULT_CHECKPOINT_EVERY);
    this.#failClosed = opts.failClosed ?? false;
    this.#groupCommit = opts.groupCommit ?? false;
    this.#node = opts.node;
    const head = readChainHead(path);
    this.#seq = head.seq;
    this.#hash = head.hash;
    this.#size = head.bytes;
    this.#fd = openSync(path, "a", 0o600);
    removeDeadPidFiles(path);
  }

  get path(): string {
    return this.#path;
  }

  /** Sequence number of the last entry written by anyone (as of this process's last write or sync). */
  get headSeq(): number {
    return this.#seq;
  }

  /** Why the last write failed, while it keeps failing. */
  get failure(): string | undefined {
    return this.#failure;
  }

  /** Records dropped because the file could not be written for too long (only without failClosed). */
  get lost(): number {
    return this.#lost;
  }

  setFailClosed(on: boolean): void {
    this.#failClosed = on;
  }

  /** Reports a change of writability (once per change, not per failed write). */
  onFailure(listener: FailureListener): void {
    this.#onFailure = listener;
  }

  get failClosed(): boolean {
    return this.#failClosed;
  }

  record(event: AuditEvent): void {
    if (this.#closed) throw new Error("audit log is closed");
    this.#pending.push({
      record: { time: new Date().toISOString(), ...(this.#node ? { node: this.#node } : {}), ...event },
    });
    if (!this.#groupCommit) {
      this.flush();
      if (this.#failure !== undefined) {
        // write-through: the caller learns it now, and owns the retry (the record is not kept)
        this.#pending.pop();
        throw new AuditUnavailableError(this.#failure);
      }
      return;
    }
    if (this.#pending.length >= MAX_BATCH && this.#failure === undefined) this.flush();
    else this.#scheduled ??= setImmediate(() => this.flush());
  }

  /**
   * Group commit with durability (fail-closed): queues the record like `record`, and resolves once the write that
   * carried it and a later fdatasync have both completed. Producers that commit in the same event-loop turn share one
   * write; those that commit while an fdatasync runs share the next one. Rejects with AuditUnavailableError (refused)
   * when the write or the sync fails; the record is then retried later, or dropped with `retract`. Without failClosed
   * this is `record` (nothing to wait for).
   */
  commit(event: AuditEvent, options: { retract?: boolean } = {}): Promise<void> | undefined {
    if (!this.#failClosed || !this.#groupCommit) {
      this.record(event);
      return undefined;
    }
    if (this.#closed) throw new Error("audit log is closed");
    return new Promise<void>((resolve, reject) => {
      this.#pending.push({
        record: { time: new Date().toISOString(), ...event },
        waiter: { resolve, reject },
        retract: options.retract,
      });
      if (this.#pending.length >= MAX_BATCH && this.#failure === undefined) this.flush();
      else this.#scheduled ??= setImmediate(() => this.flush());
    });
  }

  /**
   * Called before an operation (and before accepting a login): with failClosed, writes what is queued and throws
   * AuditUnavailableError if that fails, or if the file cannot take a record now (its file system is read-only or has
   * less than ADMIT_RESERVE_BYTES free), so nothing is changed or served that could not be audited; then waits on the
   * gates (a SIEM destination whose backlog is over its bound slows producers down instead of dropping).
   */
  admit(): Promise<void> | undefined {
    if (this.#failClosed) {
      this.flush();
      if (this.#failure !== undefined) throw new AuditUnavailableError(this.#failure, true);
      const unwritable = this.#probe();
      if (unwritable !== undefined) throw new AuditUnavailableError(unwritable, true);
    }
    if (this.#gates.size === 0) return undefined;
    return Promise.all([...this.#gates].map((g) => g())).then(() => undefined);
  }

  /** Adds a gate that `admit` awaits (returns undefined when the producer may go on at once). */
  addGate(gate: () => Promise<void> | undefined): () => void {
    this.#gates.add(gate);
    return () => this.#gates.delete(gate);
  }

  /** Called after each signed checkpoint reaches the file (for the high-water mark, audit/high-water.ts). */
  onCheckpoint(listener: CheckpointListener): () => void {
    this.#checkpointListeners.add(listener);
    return () => this.#checkpointListeners.delete(listener);
  }

  #announceCheckpoint(): void {
    const cp = this.#newCheckpoint;
    this.#newCheckpoint = undefined;
    if (!cp) return;
    for (const listener of this.#checkpointListeners) {
      try {
        listener(cp.seq, cp.hash);
      } catch (err) {
        process.emitWarning(
          `audit checkpoint listener failed: ${(err as Error)?.message ?? err}`,
          "AuditListenerWarning",
        );
      }
    }
  }

  /** Called with each record once it is in the file, in sequence order. */
  onRecord(listener: RecordListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Writes every queued record now (one locked write). Never throws: a failure is kept in `failure` and retried. */
  flush(): void {
    if (this.#scheduled) {
      clearImmediate(this.#scheduled);
      this.#scheduled = undefined;
    }
    if (this.#pending.length === 0 || this.#closed) return;
    const entries = this.#pending;
    this.#pending = [];
    const batch = entries.map((e) => e.record);
    let written: number[] = [];
    try {
      this.#locked(() => {
        written = this.#appendRecords(batch);
      });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const was = this.#failure;
      this.#failure = e.code ?? e.message;
      // Producers waiting for durability learn it now (and refuse); their records stay queued unless retracted.
      const refused = new AuditUnavailableError(this.#failure, true);
      const kept: Pending[] = [];
      for (const entry of entries) {
        entry.waiter?.reject(refused);
        if (!entry.retract) kept.push({ record: entry.record });
      }
      this.#pending = kept.concat(this.#pending);
      if (was === undefined) this.#onFailure?.(this.#failure);
      if (this.#pending.length > MAX_PENDING && !this.#failClosed) {
        const drop = this.#pending.length - MAX_PENDING;
        this.#pending.splice(0, drop);
        this.#lost += drop;
      }
      this.#retry ??= setTimeout(() => {
        this.#retry = undefined;
        this.flush();
      }, 1000).unref();
      return;
    }
    if (this.#failure !== undefined) {
      this.#failure = undefined;
      this.#onFailure?.(undefined);
    }
    this.#announceCheckpoint();
    for (const entry of entries) if (entry.waiter) this.#unsynced.push(entry.waiter);
    if (this.#unsynced.length > 0) this.#sync();
    if (this.#listeners.size > 0) {
      for (let i = 0; i < batch.length; i++) {
        for (const listener of this.#listeners) {
          try {
            listener(batch[i] as AuditRecord, written[i] as number);
          } catch (err) {
            // The records are written; a subscriber's bug must neither reach whoever flushed (often a timer, where it
            // would crash the server) nor stop the other subscribers.
            process.emitWarning(
              `audit log subscriber failed: ${(err as Error)?.message ?? err}`,
              "AuditListenerWarning",
            );
          }
        }
      }
    }
  }

  /** Writes a signed checkpoint now if records were added since the last one. */
  checkpoint(): void {
    const signer = this.#signer;
    this.flush();
    if (!signer || this.#since === 0 || this.#closed) return;
    this.#locked(() => {
      const start = { seq: this.#seq, hash: this.#hash, since: this.#since };
      try {
        this.#write([this.#checkpointLine(signer)], this.#size);
      } catch {
        // Not fatal: the next checkpoint signs these records too.
        this.#seq = start.seq;
        this.#hash = start.hash;
        this.#since = start.since;
        this.#newCheckpoint = undefined;
      }
    });
    this.#announceCheckpoint();
  }

  /** Written and synced: resolves once everything written so far is on disk (for tests and shutdown). */
  async durable(): Promise<void> {
    while (this.#syncing || this.#unsynced.length > 0) await (this.#syncing ?? this.#sync());
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    try {
      this.checkpoint();
    } finally {
      this.#closed = true;
      if (this.#retry) clearTimeout(this.#retry);
      if (this.#scheduled) clearImmediate(this.#scheduled);
      // an fdatasync in flight must finish before the descriptor goes (its number could be reused)
      await this.#syncing;
      try {
        fdatasyncSync(this.#fd);
        for (const w of this.#unsynced.splice(0)) w.resolve();
      } catch (err) {
        const refused = new AuditUnavailableError((err as NodeJS.ErrnoException).code ?? String(err), true);
        for (const w of this.#unsynced.splice(0)) w.reject(refused);
      }
      const refused = new AuditUnavailableError("audit log is closed", true);
      for (const entry of this.#pending) entry.waiter?.reject(refused);
      closeSync(this.#fd);
      if (this.#pidPath) {
        try {
          unlinkSync(this.#pidPath);
        } catch {}
      }
    }
  }

  /**
   * One fdatasync for every producer written since the last one started; producers written while it runs wait for the
   * next. The write itself stays synchronous (one write(2) under the cross-process lock), the sync runs off the event
   * loop on libuv's pool.
   */
  #sync(): Promise<void> {
    if (this.#syncing) return this.#syncing;
    const waiters = this.#unsynced;
    this.#unsynced = [];
    this.#syncing = new Promise<void>((done) => {
      fdatasync(this.#fd, (err) => {
        this.#syncing = undefined;
        if (err) {
          const refused = new AuditUnavailableError(err.code ?? err.message, true);
          for (const w of waiters) w.reject(refused);
        } else {
          for (const w of waiters) w.resolve();
        }
        done();
        if (this.#unsynced.length > 0 && !this.#closed) void this.#sync();
      });
    });
    return this.#syncing;
  }

  /** Why a record could not be written now, without writing one: a read-only file or file system, or no space. */
  #probe(): string | undefined {
    try {
      accessSync(this.#path, constants.W_OK);
      const fs = statfsSync(dirname(this.#path));
      if (fs.bavail * fs.bsize < ADMIT_RESERVE_BYTES) return "ENOSPC";
      return undefined;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code ?? String(err);
    }
  }

  /** Seals and chains `batch` (plus the checkpoints that fall due) and writes it with one write(2). */
  #appendRecords(batch: AuditRecord[]): number[] {
    const seqs: number[] = [];
    const lines: Buffer[] = [];
    const start = { seq: this.#seq, hash: this.#hash, since: this.#since };
    for (const record of batch) {
      const seq = this.#seq + 1;
      const json = Buffer.from(JSON.stringify(record));
      lines.push(this.#chain(recordBody(seq, seal(this.#key, publicRandomBytes(NONCE_LENGTH), json, recordAad(seq)))));
      seqs.push(seq);
      this.#since++;
      if (this.#signer && this.#since >= this.#every) lines.push(this.#checkpointLine(this.#signer));
    }
    try {
      this.#write(lines, this.#size);
    } catch (err) {
      this.#seq = start.seq;
      this.#hash = start.hash;
      this.#since = start.since;
      this.#newCheckpoint = undefined;
      throw err;
    }
    return seqs;
  }

  /** Next entry's line for `body`; advances seq and hash (the caller restores them if the write fails). */
  #chain(body: string): Buffer {
    const hash = chainHash(this.#hash, body);
    this.#seq++;
    this.#hash = hash;
    return Buffer.from(`${body} ${hash.toString("hex")}\n`, "latin1");
  }

  #checkpointLine(signer: Signer): Buffer {
    const line = this.#chain(checkpointBody(this.#seq + 1, this.#hash, signer));
    this.#since = 0;
    this.#newCheckpoint = { seq: this.#seq, hash: this.#hash.toString("hex") };
    return line;
  }

  /** One write(2) of whole lines; on failure the file is cut back to `before` so it never ends mid-line. */
  #write(lines: Buffer[], before: number): void {
    const buf = lines.length === 1 ? (lines[0] as Buffer) : Buffer.concat(lines);
    try {
      let off = 0;
      while (off < buf.length) off += writeSync(this.#fd, buf, off, buf.length - off);
    } catch (err) {
      try {
        ftruncateSync(this.#fd, before);
      } catch {}
      throw err;
    }
    this.#size = before + buf.length;
  }

  #locked(fn: () => void): void {
    this.#lock();
    try {
      if (fstatSync(this.#fd).size !== this.#size) {
        // another process appended: continue its chain
        const head = readChainHead(this.#path);
        this.#seq = head.seq;
        this.#hash = head.hash;
        this.#size = head.bytes;
      }
      fn();
    } finally {
      try {
        unlinkSync(this.#lockPath);
      } catch {}
    }
  }

  /**
   * Takes `<file>.lock`. The lock is a name that exists while held, with the holder's pid inside (so a crashed holder's
   * lock is recognised as stale), shared with every process appending to the log, older versions included. It is taken
   * by hard-linking this log's pid file to that name: creating and deleting a lock file on every group commit instead
   * made ext4 allocate and free an inode per upload, and on a file system without a journal each new inode (a blob,
   * the next lock) is then searched for past every inode freed in the last 30 s (ext4 `recently_deleted`): 1.5-3 ms per
   * small upload measured, growing with the rate.
   */
  #lock(): void {
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (this.#tryLock()) return;
      if (this.#staleLock() || Date.now() > deadline) {
        if (Date.now() > deadline && !this.#staleLock()) {
          throw new Error(`audit log ${this.#lockPath} is held by another process for over 10 s`);
        }
        try {
          unlinkSync(this.#lockPath);
        } catch {}
        continue;
      }
      Atomics.wait(sleeper, 0, 0, 1);
    }
  }

  /** One attempt at the lock: true when taken, false when someone holds it. */
  #tryLock(): boolean {
    if (this.#linkLocks) {
      try {
        linkSync(this.#ownPidFile(), this.#lockPath);
        return true;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "EEXIST") return false;
        if (code === "ENOENT" && this.#pidPath) {
          // our pid file went (someone cleaned the directory): make it again
          this.#pidPath = undefined;
          return this.#tryLock();
        }
        if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP" && code !== "EMLINK") throw noSpaceOr(err);
        // no hard links on this file system: a lock file of its own each time
        this.#linkLocks = false;
      }
    }
    try {
      const fd = openSync(this.#lockPath, "wx", 0o600);
      try {
        writeSync(fd, String(process.pid));
      } catch (err) {
        // a full disk takes the lock file but not the pid in it: an empty lock would look held for 10 s to
        // everyone (each write attempt blocking that long), so it goes at once
        closeSync(fd);
        try {
          unlinkSync(this.#lockPath);
        } catch {}
        throw noSpaceOr(err);
      }
      closeSync(fd);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw noSpaceOr(err);
      return false;
    }
  }

  /** This log's pid file (`<file>.lock.<pid>-<random>`), written once and kept until close. */
  #ownPidFile(): string {
    if (this.#pidPath) return this.#pidPath;
    const path = `${this.#lockPath}.${process.pid}-${publicRandomBytes(6).toString("hex")}`;
    const fd = openSync(path, "wx", 0o600);
    try {
      writeSync(fd, String(process.pid));
    } catch (err) {
      closeSync(fd);
      try {
        unlinkSync(path);
      } catch {}
      throw noSpaceOr(err);
    }
    closeSync(fd);
    this.#pidPath = path;
    return path;
  }

  /** The lock is stale when its holder is gone (crash), or when it is unreadable and older than 10 s. */
  #staleLock(): boolean {
    try {
      const pid = Number(readFileSync(this.#lockPath, "latin1"));
      if (Number.isInteger(pid) && pid > 0) {
        try {
          process.kill(pid, 0);
          return false;
        } catch (err) {
          return (err as NodeJS.ErrnoException).code === "ESRCH";
        }
      }
      return Date.now() - statSync(this.#lockPath).mtimeMs > 10_000;
    } catch {
      return false;
    }
  }
}

/** Removes the pid files (`<file>.lock.<pid>-<random>`, see AuditLog#lock) of processes that are gone. */
function removeDeadPidFiles(path: string): void {
  const prefix = `${basename(path)}.lock.`;
  let names: string[];
  try {
    names = readdirSync(dirname(path));
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(/^(\d+)-[0-9a-f]+$/.exec(name.slice(prefix.length))?.[1]);
    if (!Number.isInteger(pid) || pid <= 0) continue;
    try {
      process.kill(pid, 0);
      continue;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ESRCH") continue;
    }
    try {
      unlinkSync(join(dirname(path), name));
    } catch {}
  }
}

/**
 * Decrypts an audit file written by AuditLog: v2 records (checkpoints skipped) and a legacy v1 prefix. A line that
 * fails to decrypt yields an `integrity` marker, not an exception. This does not check the chain: `verifyChain` does.
 */
export async function readAuditLog(
  path: string,
  key: Buffer,
): Promise<(AuditRecord | { integrity: "failed"; line: number })[]> {
  const text = await readFile(path, "latin1").catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return "";
    throw err;
  });
  const k = aeadKey(key);
  const out: (AuditRecord | { integrity: "failed"; line: number })[] = [];
  text.split("\n").forEach((line, i) => {
    if (!line || line.startsWith("v2:c:")) return;
    try {
      out.push(JSON.parse(decryptLine(k, line).toString()) as AuditRecord);
    } catch {
      out.push({ integrity: "failed" as const, line: i + 1 });
    }
  });
  return out;
}

function decryptLine(key: KeyObject, line: string): Buffer {
  if (line.startsWith(V1_PREFIX)) return open(key, Buffer.from(line.slice(V1_PREFIX.length), "base64"), V1_AAD);
  const m = /^v2:r:(\d+):([A-Za-z0-9+/=]+) [0-9a-f]{64}$/.exec(line);
  if (!m) throw new IntegrityError("unknown record version");
  return open(key, Buffer.from(m[2] as string, "base64"), recordAad(Number(m[1])));
}

/** Opens one sealed v2 record (for `audit verify --decrypt`). */
export function openRecord(key: KeyObject, seq: number, sealed: Buffer): AuditRecord {
  return JSON.parse(open(key, sealed, recordAad(seq)).toString()) as AuditRecord;
}
