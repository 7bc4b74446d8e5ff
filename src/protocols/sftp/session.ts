// One SFTP v3 session over an SSH subsystem channel: frame, dispatch to the vfs, map errors, batch replies.
// File operations are audited by the vfs itself; the adapter audits only logins (auth.ts, server.ts).

import { AtrestError, HandleClosedError, InvalidPathError } from "../../errors.ts";
import type { Logger } from "../../logger.ts";
import type { FileStat, SetAttrs, VfsSession } from "../../vfs/types.ts";
import { toStatus } from "./errors.ts";
import { ReadFile, WriteFile } from "./handles.ts";
import { type ConnectionBudget, type FileSlots, limitError } from "./limits.ts";
import {
  type Attrs,
  BadMessage,
  ByteQueue,
  dataHeader,
  FXP,
  MAX_PACKET,
  PFLAG,
  Reader,
  STATUS,
  sliceParts,
  statusPacket,
  Writer,
} from "./protocol/packets.ts";

/** The part of an ssh2 channel we use; a plain Duplex in tests. */
export interface SftpChannel {
  on(event: "data", fn: (d: Buffer) => void): unknown;
  on(event: "end" | "close" | "drain", fn: () => void): unknown;
  on(event: "error", fn: (err: Error) => void): unknown;
  write(b: Buffer): boolean;
  /** Bytes the channel still holds from earlier writes (ssh2 keeps a write it could not send for lack of window). */
  readonly writableLength?: number;
  end(): unknown;
  /** Sends exit-status (ssh2's server channel); OpenSSH's scp fails a transfer whose ssh saw none. */
  exit?(status: number): unknown;
  pause(): unknown;
  resume(): unknown;
}

export interface SessionContext {
  vfs: VfsSession;
  logger: Logger;
  user: string;
  sessionId: string;
  sourceIp?: string;
  /** Called on every request, so the connection's idle timer can be reset. */
  onActivity?: () => void;
  /** The TCP socket under the SSH connection, corked while a batch is written and paused while input is held. */
  socket?: { cork(): void; uncork(): void; pause?(): unknown; resume?(): unknown };
  /** Buffered WRITE bytes of the connection (limits.ts); without it only the per-handle bound applies. */
  budget?: ConnectionBudget;
  /** Open files of the user over all connections and the fd reserve, checked before a file is opened. */
  files?: FileSlots;
  /** Open handles of this session. Default 256. */
  maxHandles?: number;
}

const MAX_HANDLES = 256;
/**
 * Replies are copied into one staging buffer of this size and written from it (8 OpenSSH packets of 32 KiB), which
 * is reused while the channel takes each write at once (ssh2 copies into its packets); a batch of replies was joined
 * into a new buffer of up to several MiB before, per flush, most of a download's garbage.
 */
const STAGE_BYTES = 256 * 1024;
/**
 * The staging buffer, shared by every session of the process (one per session was 25 MiB over 100 uploading
 * sessions, whose batched status replies went through it). Only the filled part of it is ever written.
 */
let sharedStage: Buffer | undefined;
/** Sessions holding their input, per TCP socket (a connection may carry several SFTP channels). */
const socketHolds = new WeakMap<object, number>();
const DIR_PAGE = 128;

type Handle =
  | { kind: "read"; file: ReadFile; release: () => void }
  | { kind: "write"; file: WriteFile; release: () => void }
  | { kind: "dir"; path: string; entries?: { name: string; stat: FileStat }[]; pos: number };

/** Resolves a client path against the home '/', clamping `..` at the root so a path can never escape it. */
export function normalizePath(input: string): string {
  if (input.includes("\0")) throw new InvalidPathError("NUL in path");
  const parts: string[] = [];
  for (const seg of input.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") parts.pop();
    else parts.push(seg);
  }
  return `/${parts.join("/")}`;
}

function fileAttrs(st: FileStat): Attrs {
  const t = Math.floor(st.mtime / 1000);
  return {
    size: st.size,
    uid: 0,
    gid: 0,
    mode: (st.kind === "dir" ? 0o040000 : 0o100000) | (st.mode & 0o7777),
    atime: t,
    mtime: t,
  };
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** `ls -l` style line as OpenSSH's sftp-server prints it; lftp parses it for listings. */
export function longname(name: string, st: FileStat, owner: string, now = Date.now()): string {
  const m = st.mode & 0o777;
  let perms = st.kind === "dir" ? "d" : "-";
  for (let shift = 6; shift >= 0; shift -= 3) {
    const bits = (m >> shift) & 7;
    perms += (bits & 4 ? "r" : "-") + (bits & 2 ? "w" : "-") + (bits & 1 ? "x" : "-");
  }
  const d = new Date(st.mtime);
  const recent = Math.abs(now - st.mtime) < 182 * 24 * 3600 * 1000;
  const day = String(d.getUTCDate()).padStart(2, " ");
  const when = recent
    ? `${String(d.getUTCHours()).padStart(2, "0")}:${String(d.getUTCMinutes()).padStart(2, "0")}`
    : ` ${d.getUTCFullYear()}`;
  const o = owner.slice(0, 8).padEnd(8, " ");
  return `${perms}    1 ${o} ${o} ${String(st.size).padStart(8, " ")} ${MONTHS[d.getUTCMonth()]} ${day} ${when} ${name}`;
}

export class SftpSession {
  private readonly ch: SftpChannel;
  private readonly ctx: SessionContext;
  private inbound = new ByteQueue();
  private out: Buffer[] = [];
  private outBytes = 0;
  private flushScheduled = false;
  /** Releases of reader windows whose bytes are in `out`: called once the flush has copied them. */
  private afterFlush: (() => void)[] = [];
  private paused = false;
  /** Not reading the channel because the connection's or the server's queued WRITE bytes are at their bound. */
  private inputHeld = false;
  private handles = new Map<number, Handle>();
  private nextHandle = 1;
  private initialized = false;
  private closed = false;
  private pending = 0;
  private readonly done: Promise<void>;
  private resolveDone!: () => void;

  constructor(ch: SftpChannel, ctx: SessionContext) {
    this.ch = ch;
    this.ctx = ctx;
    this.done = new Promise((r) => {
      this.resolveDone = r;
    });
    ch.on("data", (d) => this.onData(d));
    // The OpenSSH client waits for our side of the channel to end before it exits.
    ch.on("end", () => {
      this.flush();
      // As sshd does when sftp-server exits normally: ssh then exits 0, which scp (SFTP mode) requires.
      if (!this.closed) ch.exit?.(0);
      ch.end();
      void this.shutdown();
    });
    ch.on("close", () => void this.shutdown());
    ch.on("error", (err) => {
      this.ctx.logger.debug({ err, sessionId: ctx.sessionId }, "sftp channel error");
      void this.shutdown();
    });
    ch.on("drain", () => {
      if (this.paused) {
        this.paused = false;
        if (!this.inputHeld) ch.resume();
      }
    });
  }

  /** Requests currently being served (the idle timer does not fire while one is running). */
  get busy(): boolean {
    return this.pending > 0;
  }

  /** An open file or a running request: close() lets these finish before ending the connection. */
  get active(): boolean {
    return this.pending > 0 || [...this.handles.values()].some((h) => h.kind !== "dir");
  }

  /** Resolves once every handle is released and the vfs session closed. */
  finished(): Promise<void> {
    return this.done;
  }

  private onData(d: Buffer): void {
    if (this.closed) return;
    const q = this.inbound;
    q.push(d);
    while (q.length >= 4) {
      const len = q.peekU32();
      if (len < 1 || len > MAX_PACKET) {
        // No way to resynchronise a byte stream after a bad length: end the session, keep the server up.
        this.ctx.logger.warn({ sessionId: this.ctx.sessionId, len }, "sftp: bad packet length, closing channel");
        q.clear();
        this.ch.end();
        void this.shutdown();
        return;
      }
      if (q.length < 4 + len) break;
      const packet = q.takeWhole(4 + len);
      if (packet !== undefined) {
        this.request(packet[4], new Reader(packet, 5));
        continue;
      }
      const parts = q.take(4 + len);
      // Straddling packet: a WRITE keeps its payload as slices; anything else is small and simply joined.
      const head = parts[0].length >= 5 ? parts[0] : Buffer.concat(parts.slice(0, 2));
      if (head[4] === FXP.WRITE) {
        const header = Buffer.concat(sliceParts(parts, 0, Math.min(4 + len, 512)));
        this.request(FXP.WRITE, new Reader(header, 5), parts);
      } else {
        const packet = Buffer.concat(parts, 4 + len);
        this.request(packet[4], new Reader(packet, 5));
      }
    }
    this.ctx.onActivity?.();
  }

  private send(b: Buffer): void {
    this.out.push(b);
    this.outBytes += b.length;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  // One channel write per batch: ssh2 turns each write into at least one SSH packet, so small DATA headers written
  // alone would double the packet count of downloads.
  private flush(): void {
    this.flushScheduled = false;
    if (this.outBytes === 0) return;
    const parts = this.out;
    const bytes = this.outBytes;
    this.out = [];
    this.outBytes = 0;
    const releases = this.afterFlush;
    this.afterFlush = [];
    try {
      if (!this.closed) this.writeOut(parts, bytes);
    } finally {
      // every part has been copied (staged) or written by now: views of a reader's windows may go back
      for (const release of releases) release();
    }
  }

  private writeOut(parts: Buffer[], bytes: number): void {
    // ssh2 issues three socket writes per SSH packet (length, ciphertext, tag); corking turns a batch into one writev.
    this.ctx.socket?.cork();
    let ok = true;
    if (parts.length === 1 && bytes < 1024) {
      // a lone small reply (the request/response pattern of metadata operations): no staging
      ok = this.ch.write(parts[0] as Buffer);
    } else {
      // Taken out of the shared slot while in use: the flush is synchronous, but a write could re-enter another one.
      let stage = sharedStage ?? Buffer.allocUnsafe(STAGE_BYTES);
      sharedStage = undefined;
      let fill = 0;
      const emit = () => {
        ok = this.ch.write(fill === stage.length ? stage : stage.subarray(0, fill)) && ok;
        fill = 0;
        // Still held by the channel (no window): it keeps that buffer, the next bytes go into a new one.
        if (this.ch.writableLength !== 0) stage = Buffer.allocUnsafe(STAGE_BYTES);
      };
      for (const part of parts) {
        for (let at = 0; at < part.length; ) {
          const n = part.copy(stage, fill, at);
          fill += n;
          at += n;
          if (fill === stage.length) emit();
        }
      }
      if (fill > 0) emit();
      sharedStage = stage;
    }
    this.ctx.socket?.uncork();
    if (!ok && !this.paused) {
      this.paused = true;
      this.ch.pause();
    }
  }

  private status(id: number, code: number, message = ""): void {
    this.send(statusPacket(id, code as 0, message));
  }

  private fail(id: number, err: unknown, op: string): void {
    const st = toStatus(err);
    if (st.internal) this.ctx.logger.error({ err, op, sessionId: this.ctx.sessionId }, "sftp request failed");
    else this.ctx.logger.debug({ code: (err as AtrestError).code, op, sessionId: this.ctx.sessionId }, "sftp error");
    this.status(id, st.code, st.message);
  }

  /** `parts`: the whole packet as slices when it straddled chunks (WRITE only); `r` then covers its header. */
  private request(type: number, r: Reader, parts?: Buffer[]): void {
    if (type === FXP.INIT) {
      this.initialized = true;
      const w = new Writer(FXP.VERSION).u32(3);
      w.string("posix-rename@openssh.com").string("1");
      w.string("statvfs@openssh.com").string("2");
      this.send(w.finish());
      return;
    }
    let id = 0;
    try {
      id = r.u32();
    } catch {
      this.ctx.logger.warn({ sessionId: this.ctx.sessionId, type }, "sftp: packet without request id");
      return;
    }
    if (!this.initialized) {
      this.status(id, STATUS.BAD_MESSAGE, "init expected");
      return;
    }
    // WRITE and READ are the hot path: handled without an async frame per request where possible.
    if (type === FXP.WRITE || type === FXP.READ) {
      try {
        if (type === FXP.WRITE) this.write(id, r, parts);
        else this.read(id, r);
      } catch (err) {
        this.fail(id, err, type === FXP.WRITE ? "write" : "read");
      }
      return;
    }
    this.pending++;
    this.dispatch(type, id, r)
      .catch((err) => this.fail(id, err, String(type)))
      .finally(() => {
        this.pending--;
        this.ctx.onActivity?.();
      });
  }

  private handleOf(r: Reader): { key: number; h: Handle } {
    const hb = r.bytes();
    const key = hb.length === 4 ? hb.readUInt32BE(0) : -1;
    const h = this.handles.get(key);
    if (!h) throw new HandleClosedError("invalid handle");
    return { key, h };
  }

  private checkHandles(): void {
    const max = this.ctx.maxHandles ?? MAX_HANDLES;
    if (this.handles.size >= max) throw limitError(`too many open handles (${max} per session)`);
  }

  /**
   * A slot for one more open file (session, user and fd bounds), taken before the vfs opens anything: `settled` once
   * the open is done, `release` once the file is closed or the open failed.
   */
  private takeFile(): { settled: () => void; release: () => void } {
    this.checkHandles();
    const files = this.ctx.files;
    if (!files) return { settled() {}, release() {} };
    const settled = files.acquire();
    let held = true;
    return {
      settled,
      release: () => {
        if (held) files.release();
        held = false;
      },
    };
  }

  /** Stops reading the channel while queued WRITE bytes are at a bound; reading resumes once they drain. */
  private holdInput(): void {
    const queued = this.ctx.budget?.queued;
    if (!queued || this.inputHeld || !queued.full) return;
    this.inputHeld = true;
    this.ch.pause();
    // A paused channel still takes everything the client may send within its SSH window (2 MiB or more), decrypted:
    // 100 held uploads kept 58 MB in their channels. Not reading the socket leaves it in the kernel's buffers (and
    // stops the client by TCP flow control), as sshd does. The queue drains into the disk, not from this socket.
    const socket = this.ctx.socket;
    if (socket?.pause && socket.resume) {
      const holds = socketHolds.get(socket) ?? 0;
      socketHolds.set(socket, holds + 1);
      if (holds === 0) socket.pause();
    }
    queued.whenBelow(() => {
      this.inputHeld = false;
      if (socket?.pause && socket.resume) {
        const holds = (socketHolds.get(socket) ?? 1) - 1;
        socketHolds.set(socket, holds);
        if (holds === 0) socket.resume();
      }
      if (!this.paused && !this.closed) this.ch.resume();
    });
  }

  private newHandle(h: Handle): Buffer {
    this.checkHandles();
    const key = this.nextHandle++;
    this.handles.set(key, h);
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32BE(key >>> 0, 0);
    return b;
  }

  private write(id: number, r: Reader, parts?: Buffer[]): void {
    const { h } = this.handleOf(r);
    const offset = r.u64();
    let data: Buffer[];
    if (parts) {
      const n = r.u32();
      const total = parts.reduce((sum, p) => sum + p.length, 0);
      // Trailing bytes after the data are ignored, as OpenSSH does: rclone (pkg/sftp) sends WRITEs whose packet is
      // longer than their data.
      if (r.pos + n > total) throw new BadMessage("bad write length");
      data = sliceParts(parts, r.pos, r.pos + n);
    } else data = [r.bytes()];
    if (h.kind !== "write") throw new AtrestError("PERMISSION_DENIED", "handle not open for writing");
    const wait = h.file.write(offset, data);
    this.holdInput();
    if (!wait) {
      this.status(id, STATUS.OK);
      return;
    }
    this.pending++;
    wait
      .then(
        () => this.status(id, STATUS.OK),
        (err) => this.fail(id, err, "write"),
      )
      .finally(() => this.pending--);
  }

  private read(id: number, r: Reader): void {
    const { h } = this.handleOf(r);
    const offset = r.u64();
    const length = Math.min(r.u32(), 256 * 1024);
    if (h.kind !== "read") throw new AtrestError("PERMISSION_DENIED", "handle not open for reading");
    // Read-ahead usually has the bytes decrypted already: answered without a promise per READ.
    const now = h.file.readViewNow(offset, length);
    if (now !== undefined) {
      this.send(dataHeader(id, now.data.length));
      this.send(now.data);
      this.afterFlush.push(now.release);
      return;
    }
    this.pending++;
    // A view of the reader's decrypted window, copied once into the staging buffer at the next flush and released
    // then: a fresh 32 KiB Buffer per READ was the largest share of a download's malloc churn (peak RSS).
    h.file
      .readView(offset, length)
      .then(
        ({ data, release }) => {
          if (data.length === 0) {
            release();
            return this.status(id, STATUS.EOF, "end of file");
          }
          this.send(dataHeader(id, data.length));
          this.send(data);
          this.afterFlush.push(release);
        },
        (err) => this.fail(id, err, "read"),
      )
      .finally(() => this.pending--);
  }

  private async dispatch(type: number, id: number, r: Reader): Promise<void> {
    const vfs = this.ctx.vfs;
    switch (type) {
      case FXP.OPEN:
        return this.open(id, normalizePath(r.path()), r.u32());
      case FXP.CLOSE:
        return this.close(id, r);
      case FXP.STAT:
      case FXP.LSTAT: {
        const st = await vfs.stat(normalizePath(r.path()));
        return this.send(new Writer(FXP.ATTRS).u32(id).attrs(fileAttrs(st)).finish());
      }
      case FXP.FSTAT: {
        const { h } = this.handleOf(r);
        const attrs = await this.handleAttrs(h);
        return this.send(new Writer(FXP.ATTRS).u32(id).attrs(attrs).finish());
      }
      case FXP.SETSTAT: {
        const path = normalizePath(r.path());
        return this.setstat(id, r.attrs(), await vfs.stat(path), (set) => vfs.setAttrs(path, set));
      }
      case FXP.FSETSTAT: {
        const { h } = this.handleOf(r);
        const a = r.attrs();
        if (h.kind === "write") {
          if (a.size !== undefined) h.file.setSize(a.size);
          const size = h.file.size;
          // Applied with the commit at CLOSE: the version does not exist before.
          return this.setstat(id, a, { kind: "file", size, mtime: 0, mode: 0o644 }, async (set) => {
            h.file.attrs = { ...h.file.attrs, ...set };
          });
        }
        const path = h.kind === "dir" ? h.path : h.file.path;
        return this.setstat(id, a, await vfs.stat(path), (set) => vfs.setAttrs(path, set));
      }
      case FXP.OPENDIR: {
        const path = normalizePath(r.path());
        const st = await vfs.stat(path);
        if (st.kind !== "dir") throw new AtrestError("NOT_A_DIRECTORY", "not a directory");
        return this.send(
          new Writer(FXP.HANDLE)
            .u32(id)
            .bytes(this.newHandle({ kind: "dir", path, pos: 0 }))
            .finish(),
        );
      }
      case FXP.READDIR:
        return this.readdir(id, r);
      case FXP.REMOVE: {
        const path = normalizePath(r.path());
        return this.ok(id, () => vfs.remove(path));
      }
      case FXP.MKDIR: {
        const path = normalizePath(r.path());
        return this.ok(id, () => vfs.mkdir(path));
      }
      case FXP.RMDIR: {
        const path = normalizePath(r.path());
        return this.ok(id, () => vfs.rmdir(path));
      }
      case FXP.REALPATH: {
        const path = normalizePath(r.path());
        const w = new Writer(FXP.NAME).u32(id).u32(1).string(path).string(path).attrs({});
        return this.send(w.finish());
      }
      case FXP.RENAME: {
        const from = normalizePath(r.path());
        const to = normalizePath(r.path());
        return this.ok(id, () => vfs.rename(from, to, false));
      }
      case FXP.READLINK:
        return this.status(id, STATUS.OP_UNSUPPORTED, "symbolic links are not supported");
      case FXP.SYMLINK: {
        // OpenSSH's sftp-server takes (linkpath, targetpath) in this order; refused either way, and audited
        const link = normalizePath(r.string());
        const target = r.string();
        return this.ok(id, () => vfs.symlink(target, link));
      }
      case FXP.EXTENDED:
        return this.extended(id, r);
      default:
        return this.status(id, STATUS.OP_UNSUPPORTED, "operation not supported");
    }
  }

  private async ok(id: number, op: () => Promise<void>): Promise<void> {
    await op();
    this.status(id, STATUS.OK);
  }

  private async handleAttrs(h: Handle): Promise<Attrs> {
    if (h.kind === "write") return fileAttrs({ kind: "file", size: h.file.size, mtime: Date.now(), mode: 0o644 });
    if (h.kind === "read") {
      const st = await this.ctx.vfs.stat(h.file.path).catch(() => undefined);
      return fileAttrs({ kind: "file", mode: 0o644, mtime: Date.now(), ...st, size: h.file.size });
    }
    return fileAttrs(await this.ctx.vfs.stat(h.path));
  }

  private async setstat(
    id: number,
    a: Attrs,
    current: FileStat,
    setAttrs: (set: SetAttrs) => Promise<void>,
  ): Promise<void> {
    // Truncation would rewrite encrypted content; a size equal to the current one is a no-op some clients send.
    if (a.size !== undefined && a.size !== current.size) {
      return this.status(id, STATUS.OP_UNSUPPORTED, "changing the size is not supported");
    }
    if (a.uid !== undefined) return this.status(id, STATUS.OP_UNSUPPORTED, "changing the owner is not supported");
    // Modes are presentation only (atrest's permissions decide access), stored so `put -p` and mirrors round-trip.
    const set: SetAttrs = {};
    if (a.mtime !== undefined) set.mtime = a.mtime * 1000;
    if (a.mode !== undefined) set.mode = a.mode & 0o7777;
    if (set.mtime !== undefined || set.mode !== undefined) await setAttrs(set);
    this.status(id, STATUS.OK);
  }

  private async open(id: number, path: string, pflags: number): Promise<void> {
    const slot = this.takeFile();
    try {
      await this.openFile(id, path, pflags, slot.release);
    } catch (err) {
      slot.release();
      throw err;
    } finally {
      slot.settled();
    }
  }

  private async openFile(id: number, path: string, pflags: number, release: () => void): Promise<void> {
    const vfs = this.ctx.vfs;
    if (!(pflags & (PFLAG.WRITE | PFLAG.APPEND))) {
      const rh = await vfs.openRead(path);
      let handle: Buffer;
      try {
        handle = this.newHandle({ kind: "read", file: new ReadFile(path, rh), release });
      } catch (err) {
        await rh.close().catch(() => {});
        throw err;
      }
      return this.send(new Writer(FXP.HANDLE).u32(id).bytes(handle).finish());
    }
    const create = (pflags & PFLAG.CREAT) !== 0;
    const exclusive = create && (pflags & PFLAG.EXCL) !== 0;
    const truncate = (pflags & PFLAG.TRUNC) !== 0 || exclusive;
    const append = (pflags & PFLAG.APPEND) !== 0;
    // A create that truncates (every client's plain put) needs nothing of the current file here: openWrite looks the
    // name up itself and refuses a directory or, for EXCL, an existing file. One path lookup less per upload.
    const existing =
      create && truncate
        ? undefined
        : await vfs.stat(path).catch((err) => {
            if (!create) throw err;
            return undefined;
          });
    if (existing?.kind === "dir") throw new AtrestError("IS_A_DIRECTORY", "is a directory");
    if (existing && existing.size > 0 && !truncate && !append) {
      // Overwrite in place (scp) or continue at the end (reput): the first WRITE tells which (handles.ts).
      const file = WriteFile.deferred(path, existing.size, (t) => vfs.openWrite(path, { truncate: t }));
      file.withBudget(this.ctx.budget);
      return this.send(
        new Writer(FXP.HANDLE)
          .u32(id)
          .bytes(this.newHandle({ kind: "write", file, release }))
          .finish(),
      );
    }
    const wh = await vfs.openWrite(path, { truncate, exclusive });
    let handle: Buffer;
    try {
      const file = new WriteFile(path, wh, append).withBudget(this.ctx.budget);
      handle = this.newHandle({ kind: "write", file, release });
    } catch (err) {
      await wh.abort(false).catch(() => {});
      throw err;
    }
    this.send(new Writer(FXP.HANDLE).u32(id).bytes(handle).finish());
  }

  private async close(id: number, r: Reader): Promise<void> {
    const { key, h } = this.handleOf(r);
    this.handles.delete(key);
    if (h.kind === "dir") return this.status(id, STATUS.OK);
    if (h.kind === "read") {
      await h.file.close().finally(h.release);
      return this.status(id, STATUS.OK);
    }
    const committed = await h.file.close().finally(h.release);
    // A handle no WRITE decided left the file as it was; attributes set on it still apply (as to the file).
    if (!committed && h.file.attrs) await this.ctx.vfs.setAttrs(h.file.path, h.file.attrs);
    this.status(id, STATUS.OK);
  }

  private async readdir(id: number, r: Reader): Promise<void> {
    const { h } = this.handleOf(r);
    if (h.kind !== "dir") throw new AtrestError("INVALID_INPUT", "not a directory handle");
    h.entries ??= await this.ctx.vfs.list(h.path);
    if (h.pos >= h.entries.length) return this.status(id, STATUS.EOF, "end of directory");
    const page = h.entries.slice(h.pos, h.pos + DIR_PAGE);
    h.pos += page.length;
    const w = new Writer(FXP.NAME, 16 * 1024).u32(id).u32(page.length);
    const now = Date.now();
    for (const e of page)
      w.string(e.name)
        .string(longname(e.name, e.stat, this.ctx.user, now))
        .attrs(fileAttrs(e.stat));
    this.send(w.finish());
  }

  private async extended(id: number, r: Reader): Promise<void> {
    const name = r.string(256);
    if (name === "posix-rename@openssh.com") {
      const from = normalizePath(r.path());
      const to = normalizePath(r.path());
      return this.ok(id, () => this.ctx.vfs.rename(from, to, true));
    }
    if (name === "statvfs@openssh.com") {
      normalizePath(r.path());
      const q = await this.ctx.vfs.quota();
      const bsize = 4096;
      // Unlimited quota: report a large, stable capacity so `df` and rclone `about` show something sensible.
      const total = q.maxBytes > 0 ? q.maxBytes : 2 ** 50;
      const free = Math.max(total - q.usedBytes, 0);
      const files = q.maxFiles > 0 ? q.maxFiles : 2 ** 32;
      const ffree = Math.max(files - q.usedFiles, 0);
      const w = new Writer(FXP.EXTENDED_REPLY).u32(id);
      w.u64(bsize)
        .u64(bsize)
        .u64(Math.floor(total / bsize))
        .u64(Math.floor(free / bsize))
        .u64(Math.floor(free / bsize));
      w.u64(files).u64(ffree).u64(ffree).u64(0).u64(0).u64(255);
      return this.send(w.finish());
    }
    this.status(id, STATUS.OP_UNSUPPORTED, `extension not supported: ${name.slice(0, 64)}`);
  }

  /** Releases everything: open uploads keep their partial (resumable), downloads close, then the vfs session ends. */
  async shutdown(): Promise<void> {
    if (this.closed) return this.done;
    this.closed = true;
    const handles = [...this.handles.values()];
    this.handles.clear();
    await Promise.all(
      handles.map(async (h) => {
        try {
          if (h.kind === "write") {
            await h.file.abort();
          } else if (h.kind === "read") await h.file.close();
        } catch (err) {
          this.ctx.logger.warn({ err, sessionId: this.ctx.sessionId }, "sftp: releasing handle failed");
        } finally {
          if (h.kind !== "dir") h.release();
        }
      }),
    );
    await this.ctx.vfs.close().catch((err) => this.ctx.logger.warn({ err }, "sftp: closing vfs session failed"));
    this.resolveDone();
  }
}
