// In-memory Accounts/VfsSession for protocol adapter tests and benchmarks: the interface's semantics (append-only
// writes, resume, EXISTS on rename without overwrite, keep-partial abort) without encryption or disk.
import { AtrestError, NotFoundError } from "../../src/errors.ts";
import type {
  Accounts,
  DirEntry,
  FileStat,
  OpenWriteOptions,
  QuotaInfo,
  ReadHandle,
  SessionInfo,
  UserAuth,
  VfsSession,
  WriteHandle,
} from "../../src/vfs/types.ts";

interface Node {
  kind: "file" | "dir";
  data: Buffer;
  mtime: number;
  mode: number;
}

export interface MemoryUser {
  password?: string;
  keys?: string[];
}

export interface MemoryAccountsOptions {
  users: Record<string, MemoryUser>;
  /** Quota per user in bytes (0 = unlimited). */
  maxBytes?: number;
  /** Fail every write/read with this error (error-mapping tests). */
  failWith?: () => Error;
}

function parent(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

function check(path: string): string {
  if (!path.startsWith("/") || path.includes("\0") || path.split("/").some((s) => s === "..")) {
    throw new AtrestError("INVALID_PATH", `invalid path: ${path.slice(0, 64)}`);
  }
  return path.length > 1 && path.endsWith("/") ? path.slice(0, -1) : path;
}

/** One user's tree. */
export class MemoryFs {
  readonly nodes = new Map<string, Node>([
    ["/", { kind: "dir", data: Buffer.alloc(0), mtime: Date.now(), mode: 0o755 }],
  ]);
  maxBytes = 0;
  failWith?: () => Error;
  openWrites = 0;

  get(path: string): Node {
    const n = this.nodes.get(check(path));
    if (!n) throw new NotFoundError(path);
    return n;
  }

  used(): number {
    let n = 0;
    for (const v of this.nodes.values()) n += v.data.length;
    return n;
  }
}

class MemoryWrite implements WriteHandle {
  private chunks: Buffer[];
  size: number;
  private done = false;
  private readonly fs: MemoryFs;
  private readonly path: string;

  constructor(fs: MemoryFs, path: string, initial: Buffer) {
    this.fs = fs;
    this.path = path;
    this.chunks = initial.length ? [initial] : [];
    this.size = initial.length;
    fs.openWrites++;
  }

  async write(offset: number, data: Buffer): Promise<void> {
    if (this.fs.failWith) throw this.fs.failWith();
    if (offset !== this.size) throw new AtrestError("INVALID_INPUT", `non-sequential write at ${offset}`);
    if (this.fs.maxBytes > 0 && this.fs.used() + this.size + data.length > this.fs.maxBytes) {
      throw new AtrestError("QUOTA_EXCEEDED", "quota exceeded");
    }
    this.chunks.push(data);
    this.size += data.length;
  }

  private commit(): FileStat {
    this.done = true;
    this.fs.openWrites--;
    const node: Node = { kind: "file", data: Buffer.concat(this.chunks), mtime: Date.now(), mode: 0o644 };
    this.fs.nodes.set(this.path, node);
    return { kind: "file", size: node.data.length, mtime: node.mtime, mode: node.mode };
  }

  async close(): Promise<FileStat> {
    if (this.done) throw new AtrestError("INVALID_INPUT", "closed");
    return this.commit();
  }

  async abort(keepPartial: boolean): Promise<void> {
    if (this.done) return;
    if (keepPartial) this.commit();
    else {
      this.done = true;
      this.fs.openWrites--;
    }
  }
}

export class MemorySession implements VfsSession {
  readonly username: string;
  readonly fs: MemoryFs;
  closed = false;

  constructor(username: string, fs: MemoryFs) {
    this.username = username;
    this.fs = fs;
  }

  async stat(path: string): Promise<FileStat> {
    const n = this.fs.get(path);
    return { kind: n.kind, size: n.data.length, mtime: n.mtime, mode: n.mode };
  }

  async list(path: string): Promise<DirEntry[]> {
    const dir = check(path);
    if (this.fs.get(dir).kind !== "dir") throw new AtrestError("NOT_A_DIRECTORY", path);
    const prefix = dir === "/" ? "/" : `${dir}/`;
    const out: DirEntry[] = [];
    for (const [p, n] of this.fs.nodes) {
      if (p !== "/" && p.startsWith(prefix) && !p.slice(prefix.length).includes("/")) {
        out.push({
          name: p.slice(prefix.length),
          stat: { kind: n.kind, size: n.data.length, mtime: n.mtime, mode: n.mode },
        });
      }
    }
    return out;
  }

  async mkdir(path: string): Promise<void> {
    const p = check(path);
    if (this.fs.nodes.has(p)) throw new AtrestError("EXISTS", path);
    if (this.fs.get(parent(p)).kind !== "dir") throw new AtrestError("NOT_A_DIRECTORY", path);
    this.fs.nodes.set(p, { kind: "dir", data: Buffer.alloc(0), mtime: Date.now(), mode: 0o755 });
  }

  async rmdir(path: string): Promise<void> {
    const p = check(path);
    if (this.fs.get(p).kind !== "dir") throw new AtrestError("NOT_A_DIRECTORY", path);
    if ((await this.list(p)).length > 0) throw new AtrestError("NOT_EMPTY", path);
    if (p === "/") throw new AtrestError("PERMISSION_DENIED", path);
    this.fs.nodes.delete(p);
  }

  async remove(path: string): Promise<void> {
    const p = check(path);
    if (this.fs.get(p).kind === "dir") throw new AtrestError("IS_A_DIRECTORY", path);
    this.fs.nodes.delete(p);
  }

  async rename(from: string, to: string, overwrite: boolean): Promise<void> {
    const f = check(from);
    const t = check(to);
    const n = this.fs.get(f);
    const target = this.fs.nodes.get(t);
    if (target && (!overwrite || target.kind === "dir" || n.kind === "dir")) throw new AtrestError("EXISTS", to);
    this.fs.get(parent(t));
    const moves = [...this.fs.nodes].filter(([p]) => p === f || p.startsWith(`${f}/`));
    for (const [p] of moves) this.fs.nodes.delete(p);
    for (const [p, m] of moves) this.fs.nodes.set(t + p.slice(f.length), m);
    this.fs.nodes.set(t, n);
  }

  async setMtime(path: string, mtime: number): Promise<void> {
    this.fs.get(path).mtime = mtime;
  }

  async openRead(path: string): Promise<ReadHandle> {
    const n = this.fs.get(path);
    if (n.kind !== "file") throw new AtrestError("IS_A_DIRECTORY", path);
    const data = n.data;
    const fs = this.fs;
    return {
      size: data.length,
      async read(offset: number, length: number) {
        if (fs.failWith) throw fs.failWith();
        return data.subarray(offset, offset + length);
      },
      async close() {},
    };
  }

  async openWrite(path: string, options: OpenWriteOptions): Promise<WriteHandle> {
    const p = check(path);
    if (this.fs.get(parent(p)).kind !== "dir") throw new AtrestError("NOT_A_DIRECTORY", path);
    const existing = this.fs.nodes.get(p);
    if (existing?.kind === "dir") throw new AtrestError("IS_A_DIRECTORY", path);
    if (existing && options.exclusive) throw new AtrestError("EXISTS", path);
    return new MemoryWrite(this.fs, p, options.truncate || !existing ? Buffer.alloc(0) : existing.data);
  }

  async quota(): Promise<QuotaInfo> {
    return { usedBytes: this.fs.used(), usedFiles: this.fs.nodes.size - 1, maxBytes: this.fs.maxBytes, maxFiles: 0 };
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

export class MemoryAccounts implements Accounts {
  readonly users: Record<string, MemoryUser>;
  readonly trees = new Map<string, MemoryFs>();
  readonly sessions: MemorySession[] = [];
  private readonly options: MemoryAccountsOptions;

  constructor(options: MemoryAccountsOptions) {
    this.options = options;
    this.users = options.users;
  }

  fs(username: string): MemoryFs {
    let t = this.trees.get(username);
    if (!t) {
      t = new MemoryFs();
      t.maxBytes = this.options.maxBytes ?? 0;
      t.failWith = this.options.failWith;
      this.trees.set(username, t);
    }
    return t;
  }

  async verifyPassword(username: string, password: string): Promise<UserAuth | undefined> {
    const u = this.users[username];
    return u?.password !== undefined && u.password === password ? { username } : undefined;
  }

  async authorizedKeys(username: string): Promise<string[]> {
    return this.users[username]?.keys ?? [];
  }

  async openSession(username: string, _info: SessionInfo): Promise<VfsSession> {
    if (!this.users[username]) throw new NotFoundError(username);
    const s = new MemorySession(username, this.fs(username));
    this.sessions.push(s);
    return s;
  }
}
