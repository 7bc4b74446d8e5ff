// Reads decrypted records out of the audit log from a byte offset on: the SIEM destinations' spool is a cursor into
// this file (see docs/audit.md "Delivery"), and the queries scan it. Only complete lines are returned, so a write in
// progress in another process is picked up on the next read.
import type { KeyObject } from "node:crypto";
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { open } from "../crypto/aead.ts";
import { readChainHead, recordAad } from "./chain.ts";
import type { AuditRecord } from "./types.ts";

/** A position in the log: the byte offset just after entry `seq` (0/0 = the start). */
export interface Cursor {
  seq: number;
  offset: number;
}

export interface ReadEntry {
  seq: number;
  /** Undefined when the entry does not decrypt under the audit key (tampering; `audit verify` reports it). */
  record: AuditRecord | undefined;
  /** Cursor just after this record. */
  end: Cursor;
}

export interface ReadBatch {
  entries: ReadEntry[];
  /** Where the next read starts (after the last complete line read, checkpoints included). */
  next: Cursor;
}

const NL = 0x0a;
const ENTRY = /^v2:([rc]):(\d+):(\S+) [0-9a-f]{64}$/;

/** Thrown when the entry at a cursor is not the one expected (the file was replaced or cut back). */
export class CursorMismatchError extends Error {}

export class LogReader {
  readonly #path: string;
  readonly #key: KeyObject;
  #fd: number | undefined;
  #buf = Buffer.allocUnsafe(1 << 20);

  readonly #cached: ((seq: number) => AuditRecord | undefined) | undefined;

  /** `cached`: records this process just wrote, by seq (saves decrypting them again). */
  constructor(path: string, key: KeyObject, cached?: (seq: number) => AuditRecord | undefined) {
    this.#path = path;
    this.#key = key;
    this.#cached = cached;
  }

  /** Current file size (0 when it does not exist yet). */
  size(): number {
    const fd = this.#open();
    return fd === undefined ? 0 : fstatSync(fd).size;
  }

  /**
   * Up to `max` records after `from` (about 1 MiB of log at most). Legacy v1 lines are skipped (they carry no
   * sequence number); an entry that does not decrypt comes back without a record, so delivery never stalls on it.
   */
  read(from: Cursor, max: number): ReadBatch {
    const fd = this.#open();
    const out: ReadEntry[] = [];
    const next: Cursor = { ...from };
    if (fd === undefined) return { entries: out, next };
    const n = readSync(fd, this.#buf, 0, this.#buf.length, from.offset);
    let s = 0;
    while (out.length < max) {
      const e = this.#buf.indexOf(NL, s);
      if (e < 0 || e >= n) break;
      const line = this.#buf.toString("latin1", s, e);
      const lineEnd = next.offset + (e + 1 - s);
      s = e + 1;
      const m = ENTRY.exec(line);
      if (!m) {
        next.offset = lineEnd; // legacy or foreign line: skip
        continue;
      }
      const seq = Number(m[2]);
      if (seq !== next.seq + 1) {
        throw new CursorMismatchError(`expected entry ${next.seq + 1} at byte ${next.offset}, found ${seq}`);
      }
      next.seq = seq;
      next.offset = lineEnd;
      if (m[1] === "c") continue;
      let record = this.#cached?.(seq);
      if (record === undefined) {
        try {
          record = JSON.parse(open(this.#key, Buffer.from(m[3] as string, "base64"), recordAad(seq)).toString());
        } catch {
          record = undefined;
        }
      }
      out.push({ seq, record, end: { ...next } });
    }
    if (s === 0 && n === this.#buf.length) {
      // one line longer than the buffer: grow and retry (records are small; this is a guard)
      this.#buf = Buffer.allocUnsafe(this.#buf.length * 2);
      return this.read(from, max);
    }
    return { entries: out, next };
  }

  /** Cursor at the end of the log (after its last complete entry). */
  end(): Cursor {
    const head = readChainHead(this.#path);
    return { seq: head.seq, offset: head.bytes };
  }

  /** Cursor just after entry `seq` (0 = start), found by scanning from the beginning. */
  seek(seq: number): Cursor {
    let at: Cursor = { seq: 0, offset: 0 };
    if (seq <= 0) return at;
    for (;;) {
      const batch = this.read(at, 100_000);
      for (const e of batch.entries) if (e.seq >= seq) return e.end;
      if (batch.next.offset === at.offset) return batch.next;
      at = batch.next;
      if (at.seq >= seq) return at;
    }
  }

  /** Whether `c` still points just after entry c.seq (the file was not replaced or cut). */
  valid(c: Cursor): boolean {
    if (c.offset === 0) return c.seq === 0;
    const fd = this.#open();
    if (fd === undefined || fstatSync(fd).size < c.offset) return false;
    const probe = Buffer.allocUnsafe(Math.min(c.offset, 64 * 1024));
    readSync(fd, probe, 0, probe.length, c.offset - probe.length);
    if (probe[probe.length - 1] !== NL) return false;
    const start = probe.lastIndexOf(NL, probe.length - 2) + 1;
    const m = ENTRY.exec(probe.toString("latin1", start, probe.length - 1));
    return m !== null && Number(m[2]) === c.seq;
  }

  close(): void {
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
  }

  #open(): number | undefined {
    if (this.#fd !== undefined) return this.#fd;
    try {
      this.#fd = openSync(this.#path, "r");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    return this.#fd;
  }
}
