// Open-file state between SFTP requests. Clients pipeline 32 KiB READs/WRITEs (OpenSSH: 64 in flight), so the
// adapter coalesces writes into large vfs calls and serves reads from read-ahead blocks: one vfs call per request
// is what made the naive ssh2 server 5x slower than OpenSSH.
import { AtrestError } from "../../errors.ts";
import type { FileStat, ReadHandle, WriteHandle } from "../../vfs/types.ts";

/** Contiguous bytes gathered before one vfs write. */
const WRITE_CHUNK = 1024 * 1024;
/** Unconfirmed bytes handed to the vfs before WRITE replies wait (backpressure on the client). */
const WRITE_HIGH_WATER = 8 * 1024 * 1024;
/** Out-of-order WRITEs held until the gap fills (pipelined clients may reorder slightly). */
const REORDER_LIMIT = 16 * 1024 * 1024;
const READ_BLOCK = 256 * 1024;
const READ_AHEAD = 4;
const READ_BLOCKS_KEPT = 16;

function unsupported(message: string): AtrestError {
  return new AtrestError("UNSUPPORTED", message);
}

export class WriteFile {
  readonly path: string;
  private readonly handle: WriteHandle;
  private readonly append: boolean;
  /** Offset the next contiguous byte will have (what the client sees as the file size). */
  private end: number;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private reorder = new Map<number, Buffer>();
  private reorderBytes = 0;
  private chain: Promise<void> = Promise.resolve();
  private inflight = 0;
  private error: unknown;
  private finished = false;
  /** mtime from FSETSTAT, applied after commit (the version does not exist before close). */
  mtime: number | undefined;

  constructor(path: string, handle: WriteHandle, append: boolean) {
    this.path = path;
    this.handle = handle;
    this.append = append;
    this.end = handle.size;
  }

  get size(): number {
    return this.end;
  }

  /**
   * Accepts one WRITE. Returns undefined when the data is buffered and the client may be told OK now; a promise when
   * the reply must wait for the vfs to catch up. A failure of earlier buffered data is thrown here or at close.
   */
  write(offset: number, parts: Buffer[]): Promise<void> | undefined {
    let length = 0;
    for (const p of parts) length += p.length;
    if (this.error) throw this.error;
    if (this.finished) throw new AtrestError("INVALID_INPUT", "handle closed");
    if (this.append) offset = this.end;
    if (offset === this.end) {
      for (const p of parts) this.push(p);
      while (this.reorder.size > 0) {
        const next = this.reorder.get(this.end);
        if (!next) break;
        this.reorder.delete(this.end);
        this.reorderBytes -= next.length;
        this.push(next);
      }
    } else if (offset > this.end) {
      if (this.reorderBytes + length > REORDER_LIMIT || this.reorder.has(offset)) {
        throw unsupported("non-sequential write not supported (encrypted files are append-only)");
      }
      this.reorder.set(offset, parts.length === 1 ? parts[0] : Buffer.concat(parts, length));
      this.reorderBytes += length;
    } else {
      throw unsupported("overwriting written data is not supported (encrypted files are append-only)");
    }
    if (this.pendingBytes >= WRITE_CHUNK) this.flush();
    if (this.inflight > WRITE_HIGH_WATER) return this.chain.then(() => this.check());
    return undefined;
  }

  private push(data: Buffer): void {
    this.pending.push(data);
    this.pendingBytes += data.length;
    this.end += data.length;
  }

  private check(): void {
    if (this.error) throw this.error;
  }

  private flush(): void {
    if (this.pendingBytes === 0) return;
    const data = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending, this.pendingBytes);
    const offset = this.end - this.pendingBytes;
    this.pending = [];
    this.pendingBytes = 0;
    this.inflight += data.length;
    this.chain = this.chain.then(async () => {
      try {
        if (!this.error) await this.handle.write(offset, data);
      } catch (err) {
        this.error ??= err;
      } finally {
        this.inflight -= data.length;
      }
    });
  }

  /** Commit. On any buffered failure the partial is kept (resumable) and the failure is thrown. */
  async close(): Promise<FileStat> {
    this.finished = true;
    this.flush();
    await this.chain;
    if (!this.error && this.reorder.size > 0) this.error = unsupported("write left a gap in the file");
    if (this.error) {
      await this.handle.abort(true).catch(() => {});
      throw this.error;
    }
    return this.handle.close();
  }

  /** Connection lost: store what was acknowledged so `reput` can resume, then abort keeping the partial. */
  async abort(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    this.flush();
    await this.chain;
    await this.handle.abort(true);
  }
}

export class ReadFile {
  readonly path: string;
  private readonly handle: ReadHandle;
  private blocks = new Map<number, Promise<Buffer>>();

  constructor(path: string, handle: ReadHandle) {
    this.path = path;
    this.handle = handle;
  }

  get size(): number {
    return this.handle.size;
  }

  private block(index: number): Promise<Buffer> {
    let p = this.blocks.get(index);
    if (!p) {
      p = this.handle.read(index * READ_BLOCK, READ_BLOCK);
      // A failed prefetch must not become an unhandled rejection; the request that needs it sees the error.
      p.catch(() => {});
      this.blocks.set(index, p);
      if (this.blocks.size > READ_BLOCKS_KEPT) {
        const oldest = this.blocks.keys().next().value as number;
        this.blocks.delete(oldest);
      }
    }
    return p;
  }

  /** Up to `length` bytes at `offset`; empty at or past the end. */
  async read(offset: number, length: number): Promise<Buffer> {
    if (offset >= this.handle.size || length === 0) return Buffer.alloc(0);
    const last = Math.min(offset + length, this.handle.size);
    const first = Math.floor(offset / READ_BLOCK);
    const lastBlock = Math.floor((last - 1) / READ_BLOCK);
    for (let i = 1; i <= READ_AHEAD; i++) {
      if ((lastBlock + i) * READ_BLOCK < this.handle.size) this.block(lastBlock + i);
    }
    for (const k of this.blocks.keys()) if (k < first - 1) this.blocks.delete(k);
    const parts: Buffer[] = [];
    for (let k = first; k <= lastBlock; k++) {
      const b = await this.block(k);
      const start = Math.max(offset - k * READ_BLOCK, 0);
      const stop = Math.min(last - k * READ_BLOCK, b.length);
      if (stop <= start) break;
      parts.push(b.subarray(start, stop));
      if (b.length < READ_BLOCK) break;
    }
    const out = parts.length === 1 ? parts[0] : Buffer.concat(parts);
    return out;
  }

  close(): Promise<void> {
    this.blocks.clear();
    return this.handle.close();
  }
}
