// Open-file state between SFTP requests. Clients pipeline 32 KiB READs/WRITEs (OpenSSH: 64 in flight); batching
// them into large segment jobs and reading ahead is container-io's job (encrypted-writer.ts, encrypted-reader.ts), so
// every door gets it. What is SFTP's own stays here: WRITEs may arrive slightly out of order, and each handle's writes
// reach the vfs one at a time, in offset order.
import { AtrestError, HandleClosedError } from "../../errors.ts";
import type { FileStat, ReadHandle, WriteHandle } from "../../vfs/types.ts";

/** Out-of-order WRITEs held until the gap fills (pipelined clients may reorder slightly). */
const REORDER_LIMIT = 16 * 1024 * 1024;

function unsupported(message: string): AtrestError {
  return new AtrestError("UNSUPPORTED", message);
}

export class WriteFile {
  readonly path: string;
  private readonly handle: WriteHandle;
  private readonly append: boolean;
  /** Offset the next contiguous byte will have (what the client sees as the file size). */
  private end: number;
  private reorder = new Map<number, Buffer>();
  private reorderBytes = 0;
  /** The last write handed to the vfs; the next one starts when it settles (the vfs takes writes one at a time). */
  private chain: Promise<void> = Promise.resolve();
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
   * Accepts one WRITE. Returns undefined when the data is held for reordering and the client may be told OK now; a
   * promise, settled once the vfs has taken this write (it applies backpressure), otherwise. A failure of earlier data
   * is thrown here or at close.
   */
  write(offset: number, parts: Buffer[]): Promise<void> | undefined {
    let length = 0;
    for (const p of parts) length += p.length;
    if (this.error) throw this.error;
    if (this.finished) throw new HandleClosedError("handle closed");
    if (this.append) offset = this.end;
    const data = parts.length === 1 ? parts[0] : Buffer.concat(parts, length);
    if (offset === this.end) {
      this.push(data);
      while (this.reorder.size > 0) {
        const next = this.reorder.get(this.end);
        if (!next) break;
        this.reorder.delete(this.end);
        this.reorderBytes -= next.length;
        this.push(next);
      }
      return this.chain.then(() => this.check());
    }
    if (offset > this.end) {
      if (this.reorderBytes + length > REORDER_LIMIT || this.reorder.has(offset)) {
        throw unsupported("non-sequential write not supported (encrypted files are append-only)");
      }
      this.reorder.set(offset, data);
      this.reorderBytes += length;
      return undefined;
    }
    throw unsupported("overwriting written data is not supported (encrypted files are append-only)");
  }

  /** Queues `data` at the current end, after the writes before it. */
  private push(data: Buffer): void {
    const offset = this.end;
    this.end += data.length;
    this.chain = this.chain.then(async () => {
      if (this.error) return;
      try {
        await this.handle.write(offset, data);
      } catch (err) {
        this.error ??= err;
      }
    });
  }

  private check(): void {
    if (this.error) throw this.error;
  }

  /** Commit. On any failure the partial is kept (resumable) and the failure is thrown. */
  async close(): Promise<FileStat> {
    this.finished = true;
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
    await this.chain;
    await this.handle.abort(true);
  }
}

export class ReadFile {
  readonly path: string;
  private readonly handle: ReadHandle;

  constructor(path: string, handle: ReadHandle) {
    this.path = path;
    this.handle = handle;
  }

  get size(): number {
    return this.handle.size;
  }

  /** Up to `length` bytes at `offset`; empty at or past the end. The vfs reader reads ahead for sequential clients. */
  read(offset: number, length: number): Promise<Buffer> {
    return this.handle.read(offset, length);
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}
