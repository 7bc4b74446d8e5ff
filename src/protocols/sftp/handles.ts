// Open-file state between SFTP requests. Clients pipeline 32 KiB READs/WRITEs (OpenSSH: 64 in flight); batching
// them into large segment jobs and reading ahead is container-io's job (encrypted-writer.ts, encrypted-reader.ts), so
// every door gets it. What is SFTP's own stays here: WRITEs may arrive slightly out of order, and each handle's writes
// reach the vfs one at a time, in offset order.
import { AtrestError, HandleClosedError } from "../../errors.ts";
import type { FileStat, ReadHandle, SetAttrs, WriteHandle } from "../../vfs/types.ts";
import { limitError, type WriteBudget } from "./limits.ts";

/** Out-of-order WRITEs held until the gap fills (pipelined clients may reorder slightly), without a budget. */
const REORDER_LIMIT = 16 * 1024 * 1024;

/** No connection or server bound: only the per-handle one. */
const UNBOUNDED: WriteBudget = {
  holdReorder: () => true,
  releaseReorder() {},
  queue() {},
  dequeue() {},
  reorderPerHandle: REORDER_LIMIT,
};

function unsupported(message: string): AtrestError {
  return new AtrestError("UNSUPPORTED", message);
}

/** Opens the vfs write of a handle whose first WRITE decided it: a new version (truncate) or an append (resume). */
export type OpenVersion = (truncate: boolean) => Promise<WriteHandle>;

export class WriteFile {
  readonly path: string;
  /** Undefined until decided (see `deferred`). */
  private handle: WriteHandle | undefined;
  private opener: OpenVersion | undefined;
  private readonly append: boolean;
  /** What this handle's buffered bytes are charged to (its connection and the server); see withBudget. */
  private budget: WriteBudget = UNBOUNDED;
  /** Offset the next contiguous byte will have (what the client sees as the file size). */
  private end: number;
  /** Held out-of-order WRITEs by offset: their data as the session sliced it, and its length. */
  private reorder = new Map<number, { parts: Buffer[]; length: number }>();
  private reorderBytes = 0;
  /** The last write handed to the vfs; the next one starts when it settles (the vfs takes writes one at a time). */
  private chain: Promise<void> = Promise.resolve();
  /** Links of `chain` not settled yet: at 0 a write may go to the vfs at once (WriteHandle.writeNow). */
  private links = 0;
  private error: unknown;
  private finished = false;
  /** mtime and mode from FSETSTAT, committed with the version at close (it does not exist before). */
  attrs: SetAttrs | undefined;

  constructor(path: string, handle: WriteHandle | undefined, append: boolean, size = handle?.size ?? 0) {
    this.path = path;
    this.handle = handle;
    this.append = append;
    this.end = size;
  }

  /**
   * An existing file of `size` bytes opened for writing without TRUNC or APPEND. OpenSSH's scp (SFTP mode) does that to
   * overwrite: it writes from offset 0 and finally sets the size to what it wrote; `reput`-style clients write on at
   * the end. The first WRITE decides: offset 0 starts a new version (replacing the old one at commit), offset `size`
   * appends. Until then nothing is opened, and a CLOSE without any write leaves the file as it was.
   */
  static deferred(path: string, size: number, open: OpenVersion): WriteFile {
    const file = new WriteFile(path, undefined, false, size);
    file.opener = open;
    return file;
  }

  /** Decides a deferred handle: queues the vfs open before any write. */
  private decide(truncate: boolean): void {
    const open = this.opener;
    if (!open) return;
    this.opener = undefined;
    if (truncate) this.end = 0;
    this.link(async () => {
      try {
        this.handle = await open(truncate);
      } catch (err) {
        this.error ??= err;
      }
    });
  }

  /** Runs `task` after the writes before it; `task` never rejects (it records failures in `error`). */
  private link(task: () => Promise<void>): void {
    this.links++;
    this.chain = this.chain.then(async () => {
      try {
        await task();
      } finally {
        this.links--;
      }
    });
  }

  /**
   * FSETSTAT with a size: the size the client has written is accepted (scp sets it after writing in place), and 0
   * on a handle no WRITE has decided yet (an empty file replacing this one). Anything else would rewrite encrypted
   * content.
   */
  setSize(size: number): void {
    if (this.error) throw this.error;
    if (this.opener && size === 0) this.decide(true);
    if (size !== this.end) throw unsupported("changing the size is not supported");
  }

  /** Charges this handle's buffered bytes to `budget` (set before the first write). */
  withBudget(budget: WriteBudget | undefined): this {
    if (budget) this.budget = budget;
    return this;
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
    if (this.opener && (offset === 0 || offset === this.end)) this.decide(offset === 0);
    if (offset === this.end) {
      this.push(parts, length);
      while (this.reorder.size > 0) {
        const next = this.reorder.get(this.end);
        if (!next) break;
        this.reorder.delete(this.end);
        this.reorderBytes -= next.length;
        this.budget.releaseReorder(next.length);
        this.push(next.parts, next.length);
      }
      if (this.links === 0) {
        this.check();
        return undefined;
      }
      return this.chain.then(() => this.check());
    }
    if (offset > this.end) {
      if (this.reorderBytes + length > this.budget.reorderPerHandle || this.reorder.has(offset)) {
        throw unsupported("non-sequential write not supported (encrypted files are append-only)");
      }
      // Held data is acknowledged at once, so nothing else bounds it: the connection's and the server's budgets do.
      if (!this.budget.holdReorder(length)) throw limitError("server busy: too much out-of-order write data buffered");
      this.reorder.set(offset, { parts, length });
      this.reorderBytes += length;
      return undefined;
    }
    throw unsupported("overwriting written data is not supported (encrypted files are append-only)");
  }

  /**
   * Queues `parts` (`length` bytes) at the current end, after the writes before it. A WRITE that straddled SSH channel
   * messages arrives as slices; the vfs copies them once into its batch (writeParts) rather than after a join here.
   */
  private push(parts: Buffer[], length: number): void {
    const offset = this.end;
    this.end += length;
    this.budget.queue(length);
    const handle = this.handle;
    if (this.links === 0 && handle?.writeNow && !this.error) {
      // Nothing queued before it: straight to the vfs, with promises only when it applies backpressure.
      let wait: Promise<void> | undefined;
      try {
        wait = handle.writeNow(offset, parts);
      } catch (err) {
        this.error ??= err;
      }
      if (wait === undefined) {
        this.budget.dequeue(length);
        return;
      }
      const pending = wait;
      this.link(async () => {
        try {
          await pending;
        } catch (err) {
          this.error ??= err;
        } finally {
          this.budget.dequeue(length);
        }
      });
      return;
    }
    this.link(async () => {
      try {
        if (this.error) return;
        const handle = this.handle as WriteHandle;
        if (parts.length === 1) await handle.write(offset, parts[0] as Buffer);
        else if (handle.writeParts) await handle.writeParts(offset, parts);
        else await handle.write(offset, Buffer.concat(parts, length));
      } catch (err) {
        this.error ??= err;
      } finally {
        this.budget.dequeue(length);
      }
    });
  }

  private check(): void {
    if (this.error) throw this.error;
  }

  /** Gives back what out-of-order data is still held (the handle is finished: it can never be written). */
  private dropReorder(): void {
    if (this.reorderBytes > 0) this.budget.releaseReorder(this.reorderBytes);
    this.reorder.clear();
    this.reorderBytes = 0;
  }

  /**
   * Commit. On any failure nothing is committed (the previous version, if any, stays) and the failure is thrown.
   * Undefined when the handle was never decided: nothing was written, the file is unchanged.
   */
  async close(): Promise<FileStat | undefined> {
    this.finished = true;
    await this.chain;
    if (!this.error && this.reorder.size > 0) this.error = unsupported("write left a gap in the file");
    this.dropReorder();
    if (this.error) {
      await this.handle?.abort(false).catch(() => {});
      throw this.error;
    }
    return this.handle?.close(this.attrs);
  }

  /**
   * Connection lost: offer what was acknowledged as a partial so `reput` can resume (the vfs keeps it only where it
   * replaces nothing: a new file, or an append to the version it started from).
   */
  async abort(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    this.dropReorder();
    await this.chain;
    await this.handle?.abort(!this.error);
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

  /**
   * What read() returns, as a view of the reader's window (no copy, no allocation) where the vfs offers one; see
   * ReadHandle. A request that crosses a window's end is read (copied) whole instead: a short reply would make the
   * client ask again for the rest.
   */
  /** readView's result at once when the vfs has the bytes in memory already (ReadHandle.readViewNow). */
  readViewNow(offset: number, length: number): { data: Buffer; release(): void } | undefined {
    const view = this.handle.readViewNow?.(offset, length);
    if (view === undefined || view.data.length >= Math.min(length, this.handle.size - offset)) return view;
    view.release();
    return undefined;
  }

  async readView(offset: number, length: number): Promise<{ data: Buffer; release(): void }> {
    const handle = this.handle;
    if (handle.readView) {
      const view = await handle.readView(offset, length);
      if (view.data.length >= Math.min(length, handle.size - offset)) return view;
      view.release();
    }
    return { data: await handle.read(offset, length), release: () => {} };
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}
