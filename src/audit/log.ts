import type { KeyObject } from "node:crypto";
import { closeSync, fstatSync, mkdirSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname } from "node:path";
import { aeadKey, NONCE_LENGTH, open, seal } from "../crypto/aead.ts";
import { zero } from "../crypto/bytes.ts";
import { randomBytes } from "../crypto/random.ts";
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
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/**
 * Append-only audit file, one hash-chained entry per line (layout: see chain.ts and docs/audit.md). Records name paths
 * and users, which a disk thief must not read, so each record is AES-256-GCM sealed under the audit key (itself
 * wrapped by the key manager); the chain and the Ed25519-signed checkpoints cover the sealed bytes.
 *
 * Writes are synchronous, one write(2) per line, under `<file>.lock` (O_EXCL, holder's pid inside): a CLI command
 * and a running server may append to the same file, and each re-reads the chain head when the file grew under it, so
 * the chain never forks. The chain continues across restarts from the last line's hash.
 */
export class AuditLog implements AuditSink {
  readonly #path: string;
  readonly #lockPath: string;
  readonly #fd: number;
  readonly #key: KeyObject;
  readonly #signer: Signer | undefined;
  readonly #every: number;
  readonly #listeners = new Set<(e: AuditRecord) => void>();
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
    const head = readChainHead(path);
    this.#seq = head.seq;
    this.#hash = head.hash;
    this.#size = head.bytes;
    this.#fd = openSync(path, "a", 0o600);
  }

  record(event: AuditEvent): void {
    if (this.#closed) throw new Error("audit log is closed");
    const record: AuditRecord = { time: new Date().toISOString(), ...event };
    const json = Buffer.from(JSON.stringify(record));
    this.#locked(() => {
      const seq = this.#seq + 1;
      this.#append(recordBody(seq, seal(this.#key, randomBytes(NONCE_LENGTH), json, recordAad(seq))));
      this.#since++;
      if (this.#signer && this.#since >= this.#every) this.#checkpoint(this.#signer);
    });
    for (const listener of this.#listeners) listener(record);
  }

  onRecord(listener: (e: AuditRecord) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Writes a signed checkpoint now if records were added since the last one. */
  checkpoint(): void {
    const signer = this.#signer;
    if (!signer || this.#since === 0 || this.#closed) return;
    this.#locked(() => this.#checkpoint(signer));
  }

  close(): Promise<void> {
    if (!this.#closed) {
      try {
        this.checkpoint();
      } finally {
        this.#closed = true;
        closeSync(this.#fd);
      }
    }
    return Promise.resolve();
  }

  #checkpoint(signer: Signer): void {
    this.#append(checkpointBody(this.#seq + 1, this.#hash, signer));
    this.#since = 0;
  }

  /** Appends one entry; caller holds the lock and has synced the head. */
  #append(body: string): void {
    const hash = chainHash(this.#hash, body);
    const line = Buffer.from(`${body} ${hash.toString("hex")}\n`, "latin1");
    writeSync(this.#fd, line);
    this.#seq++;
    this.#hash = hash;
    this.#size += line.length;
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

  #lock(): void {
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        const fd = openSync(this.#lockPath, "wx", 0o600);
        writeSync(fd, String(process.pid));
        closeSync(fd);
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      }
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
  if (!m) throw new Error("unknown record version");
  return open(key, Buffer.from(m[2] as string, "base64"), recordAad(Number(m[1])));
}

/** Opens one sealed v2 record (for `audit verify --decrypt`). */
export function openRecord(key: KeyObject, seq: number, sealed: Buffer): AuditRecord {
  return JSON.parse(open(key, sealed, recordAad(seq)).toString()) as AuditRecord;
}
