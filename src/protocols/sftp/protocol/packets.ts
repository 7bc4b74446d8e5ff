// SFTP v3 wire format (draft-ietf-secsh-filexfer-02) plus the OpenSSH extensions we serve.
// We parse the subsystem byte stream ourselves: ssh2's SFTP class builds objects and replies per request, which
// measured slower, and owning the stream lets us batch replies into full 32 KiB SSH packets.
import { isUtf8 } from "node:buffer";
import { InvalidPathError } from "../../../errors.ts";

export const FXP = {
  INIT: 1,
  VERSION: 2,
  OPEN: 3,
  CLOSE: 4,
  READ: 5,
  WRITE: 6,
  LSTAT: 7,
  FSTAT: 8,
  SETSTAT: 9,
  FSETSTAT: 10,
  OPENDIR: 11,
  READDIR: 12,
  REMOVE: 13,
  MKDIR: 14,
  RMDIR: 15,
  REALPATH: 16,
  STAT: 17,
  RENAME: 18,
  READLINK: 19,
  SYMLINK: 20,
  STATUS: 101,
  HANDLE: 102,
  DATA: 103,
  NAME: 104,
  ATTRS: 105,
  EXTENDED: 200,
  EXTENDED_REPLY: 201,
} as const;

export const STATUS = {
  OK: 0,
  EOF: 1,
  NO_SUCH_FILE: 2,
  PERMISSION_DENIED: 3,
  FAILURE: 4,
  BAD_MESSAGE: 5,
  OP_UNSUPPORTED: 8,
} as const;
export type StatusCode = (typeof STATUS)[keyof typeof STATUS];

export const PFLAG = { READ: 1, WRITE: 2, APPEND: 4, CREAT: 8, TRUNC: 0x10, EXCL: 0x20 } as const;
export const ATTR = { SIZE: 1, UIDGID: 2, PERMISSIONS: 4, ACMODTIME: 8, EXTENDED: 0x80000000 } as const;

/** Largest SFTP packet we accept: a 256 KiB WRITE plus headers; OpenSSH's own limit is 256 KiB too. */
export const MAX_PACKET = 256 * 1024 + 1024;
/** Longest path or name accepted; a 64 KiB name must fail cleanly, not allocate or reach the vfs. */
export const MAX_PATH = 4096;

export interface Attrs {
  size?: number;
  uid?: number;
  gid?: number;
  mode?: number;
  atime?: number;
  mtime?: number;
}

export class BadMessage extends Error {}

/** Cursor over one packet's payload; every read is bounds-checked so truncated packets become BadMessage. */
export class Reader {
  readonly buf: Buffer;
  pos: number;
  constructor(buf: Buffer, pos = 0) {
    this.buf = buf;
    this.pos = pos;
  }
  private need(n: number): void {
    if (this.pos + n > this.buf.length) throw new BadMessage("truncated packet");
  }
  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  u64(): number {
    this.need(8);
    const hi = this.buf.readUInt32BE(this.pos);
    const lo = this.buf.readUInt32BE(this.pos + 4);
    this.pos += 8;
    if (hi >= 0x200000) throw new BadMessage("offset too large");
    return hi * 0x100000000 + lo;
  }
  bytes(): Buffer {
    const n = this.u32();
    this.need(n);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  string(max = MAX_PATH): string {
    const b = this.bytes();
    if (b.length > max) throw new BadMessage("string too long");
    return b.toString("utf8");
  }
  /**
   * A file name or path. Bytes that are not UTF-8 are refused, not decoded lossily: two distinct names would both
   * become U+FFFD and one would silently replace the other.
   */
  path(): string {
    const b = this.bytes();
    if (b.length > MAX_PATH) throw new BadMessage("string too long");
    if (!isUtf8(b)) throw new InvalidPathError("file name is not valid UTF-8 (atrest stores names as UTF-8)");
    return b.toString("utf8");
  }
  attrs(): Attrs {
    const flags = this.u32();
    const a: Attrs = {};
    if (flags & ATTR.SIZE) a.size = this.u64();
    if (flags & ATTR.UIDGID) {
      a.uid = this.u32();
      a.gid = this.u32();
    }
    if (flags & ATTR.PERMISSIONS) a.mode = this.u32();
    if (flags & ATTR.ACMODTIME) {
      a.atime = this.u32();
      a.mtime = this.u32();
    }
    if (flags & ATTR.EXTENDED) {
      const n = this.u32();
      for (let i = 0; i < n; i++) {
        this.bytes();
        this.bytes();
      }
    }
    return a;
  }
}

/** Growable writer for one reply packet: u32 length and type are filled in by `finish`. */
export class Writer {
  buf: Buffer;
  pos = 5;
  constructor(type: number, size = 256) {
    this.buf = Buffer.allocUnsafe(size);
    this.buf[4] = type;
  }
  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }
  u32(v: number): this {
    this.room(4);
    this.buf.writeUInt32BE(v >>> 0, this.pos);
    this.pos += 4;
    return this;
  }
  u64(v: number): this {
    this.room(8);
    this.buf.writeUInt32BE(Math.floor(v / 0x100000000), this.pos);
    this.buf.writeUInt32BE(v >>> 0, this.pos + 4);
    this.pos += 8;
    return this;
  }
  bytes(b: Buffer): this {
    this.u32(b.length);
    this.room(b.length);
    b.copy(this.buf, this.pos);
    this.pos += b.length;
    return this;
  }
  string(s: string): this {
    return this.bytes(Buffer.from(s, "utf8"));
  }
  attrs(a: Attrs): this {
    let flags = 0;
    if (a.size !== undefined) flags |= ATTR.SIZE;
    if (a.uid !== undefined) flags |= ATTR.UIDGID;
    if (a.mode !== undefined) flags |= ATTR.PERMISSIONS;
    if (a.mtime !== undefined) flags |= ATTR.ACMODTIME;
    this.u32(flags);
    if (a.size !== undefined) this.u64(a.size);
    if (a.uid !== undefined) this.u32(a.uid).u32(a.gid ?? 0);
    if (a.mode !== undefined) this.u32(a.mode);
    if (a.mtime !== undefined) this.u32(a.atime ?? a.mtime).u32(a.mtime);
    return this;
  }
  finish(): Buffer {
    this.buf.writeUInt32BE(this.pos - 4, 0);
    return this.buf.subarray(0, this.pos);
  }
}

export function statusPacket(id: number, code: StatusCode, message: string): Buffer {
  return new Writer(FXP.STATUS, 64 + message.length * 3).u32(id).u32(code).string(message).string("en").finish();
}

/** DATA header only; the payload is appended by the caller without copying it into a Writer. */
export function dataHeader(id: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(13);
  b.writeUInt32BE(9 + length, 0);
  b[4] = FXP.DATA;
  b.writeUInt32BE(id, 5);
  b.writeUInt32BE(length, 9);
  return b;
}

/**
 * Inbound byte stream as a list of chunks. Writes arrive as 32 KiB SSH packets, so every SFTP WRITE straddles two
 * chunks; `take` hands out slices so the payload is copied once (when coalesced), not once per reassembly.
 */
export class ByteQueue {
  private parts: Buffer[] = [];
  length = 0;

  push(b: Buffer): void {
    if (b.length === 0) return;
    this.parts.push(b);
    this.length += b.length;
  }

  /** The first `n` bytes (n <= length) as one buffer; copies only when they span chunks. */
  peek(n: number): Buffer {
    const first = this.parts[0];
    if (first.length >= n) return first.subarray(0, n);
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    for (const p of this.parts) {
      at += p.copy(out, at, 0, Math.min(p.length, n - at));
      if (at === n) break;
    }
    return out;
  }

  /** The big-endian uint32 at the front (length >= 4), read in place: a packet's length, no view allocated. */
  peekU32(): number {
    const first = this.parts[0];
    if (first.length >= 4) return first.readUInt32BE(0);
    return this.peek(4).readUInt32BE(0);
  }

  /** The first `n` bytes (n <= length) when they lie in one chunk, removed; undefined (nothing removed) otherwise. */
  takeWhole(n: number): Buffer | undefined {
    const p = this.parts[0];
    if (p.length < n) return undefined;
    this.length -= n;
    if (p.length === n) this.parts.shift();
    else this.parts[0] = p.subarray(n);
    return p.length === n ? p : p.subarray(0, n);
  }

  /** Removes and returns the first `n` bytes (n <= length) as slices of the received chunks. */
  take(n: number): Buffer[] {
    const out: Buffer[] = [];
    this.length -= n;
    while (n > 0) {
      const p = this.parts[0];
      if (p.length <= n) {
        out.push(p);
        this.parts.shift();
        n -= p.length;
      } else {
        out.push(p.subarray(0, n));
        this.parts[0] = p.subarray(n);
        n = 0;
      }
    }
    return out;
  }

  clear(): void {
    this.parts = [];
    this.length = 0;
  }
}

/** Bytes [start, end) of a list of slices, as slices. */
export function sliceParts(parts: Buffer[], start: number, end: number): Buffer[] {
  const out: Buffer[] = [];
  let base = 0;
  for (const p of parts) {
    const s = Math.max(start - base, 0);
    const e = Math.min(end - base, p.length);
    if (e > s) out.push(p.subarray(s, e));
    base += p.length;
    if (base >= end) break;
  }
  return out;
}
