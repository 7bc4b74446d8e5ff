import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  close,
  closeSync,
  fdatasync,
  fdatasyncSync,
  fstatSync,
  fsync,
  open as openFd,
  openSync,
  read,
  readSync,
  writeSync,
  writev,
  writevSync,
} from "node:fs";
import { constants, copyFile, mkdir, open, readdir, rm, truncate } from "node:fs/promises";
import { join } from "node:path";
import { NotFoundError, noSpaceOr } from "../errors.ts";
import type { BlobReader, BlobStore, BlobWriter, HeadAccess } from "./blobs.ts";
import { DIRECT_FROM_BYTES, DirectTail } from "./direct-io.ts";

const ID = /^[0-9a-f]{32}$/;
const BACKGROUND_SYNC_BYTES = 32 << 20;
/** Writes up to this size are made synchronously (page cache only: no fsync on the event loop). */
const SYNC_WRITE_BYTES = 64 << 10;

// A blob being written uses a plain descriptor with these: a FileHandle adds its own promise and bookkeeping to every
// call, and cannot be made from the descriptor a synchronous open returns.
function fdWritev(fd: number, chunks: Buffer[], position: number): Promise<number> {
  return new Promise((resolve, reject) => writev(fd, chunks, position, (err, n) => (err ? reject(err) : resolve(n))));
}
function fdRead(fd: number, buffer: Buffer, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) =>
    read(fd, buffer, offset, length, position, (err, n) => (err ? reject(err) : resolve(n))),
  );
}
function fdDone(
  call: (fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => void,
  fd: number,
): Promise<void> {
  return new Promise((resolve, reject) => call(fd, (err) => (err ? reject(err) : resolve())));
}

function byteLength(chunks: readonly Buffer[]): number {
  let n = 0;
  for (const c of chunks) n += c.length;
  return n;
}

/** Directory fsyncs (each holding a descriptor) running at once. */
const MAX_DIR_SYNCS = 8;

/**
 * The 256 shard directories, created once: a new blob's name in its shard must be on stable storage before the
 * metadata commit that references the blob. A directory is opened only for its fsync and closed after it: kept open,
 * the 256 of them held a quarter of a 1024-descriptor limit that the doors' descriptor reserve does not see.
 */
class ShardDirs {
  readonly #root: string;
  readonly #made = new Map<string, Promise<void>>();
  #syncing = 0;
  readonly #waiting: (() => void)[] = [];
  /** Per shard: the directory fsync running now, and the one queued behind it. */
  readonly #syncs = new Map<string, { running?: Promise<void>; next?: Promise<void> }>();

  constructor(root: string) {
    this.#root = root;
  }

  path(shard: string): string {
    return join(this.#root, shard);
  }

  #mkdir(shard: string): Promise<void> {
    let made = this.#made.get(shard);
    if (!made) {
      made = mkdir(this.path(shard), { recursive: true, mode: 0o700 }).then(() => undefined);
      made.catch(() => this.#made.delete(shard));
      this.#made.set(shard, made);
    }
    return made;
  }

  async #fsync(shard: string): Promise<void> {
    await this.#mkdir(shard);
    // At most MAX_DIR_SYNCS directories open at once: a burst of uploads over every shard would otherwise open 256
    // descriptors that no door's reserve accounts for (the fd-limit test saw 736 in use against a reserve of 524).
    while (this.#syncing >= MAX_DIR_SYNCS) await new Promise<void>((r) => this.#waiting.push(r));
    this.#syncing++;
    try {
      const fh = await open(this.path(shard), "r");
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    } finally {
      this.#syncing--;
      this.#waiting.shift()?.();
    }
  }

  /** Ensures the shard exists (before a file is created in it). */
  async ensure(shard: string): Promise<void> {
    await this.#mkdir(shard);
  }

  /**
   * Resolves once every name created in `shard` before the call is on stable storage. Group sync: one fsync covers
   * every caller that arrived before it started; callers arriving while one runs share the next.
   */
  sync(shard: string): Promise<void> {
    let s = this.#syncs.get(shard);
    if (!s) {
      s = {};
      this.#syncs.set(shard, s);
    }
    const state = s;
    if (!state.running) {
      const running = this.#fsync(shard).finally(() => {
        if (state.running === running) state.running = undefined;
      });
      state.running = running;
      return running;
    }
    state.next ??= state.running
      .catch(() => undefined)
      .then(() => {
        state.next = undefined;
        return this.sync(shard);
      });
    return state.next;
  }

  async close(): Promise<void> {
    // nothing is kept open; a sync still running finishes on its own
    await Promise.allSettled([...this.#syncs.values()].flatMap((x) => [x.running, x.next]));
  }
}

/**
 * Blobs as files `blobs/<aa>/<id>` with random ids (names and sizes of users' files never appear on disk). A new blob is
 * created under its final name at once and its shard directory fsynced then, while the client is still sending; its
 * commit is one fsync of the file. Until then nothing references it: open() refuses it in this process, no metadata in
 * any process names it, and after a crash it is an orphan that the sweep at the next start removes. (It was written
 * in `tmp/` and renamed at commit: a rename and a directory fsync, two more waits on every upload's CLOSE.)
 */
export class LocalBlobStore implements BlobStore {
  readonly #root: string;
  readonly #tmp: string;
  readonly #shards: ShardDirs;
  /** Blobs of this process being written: not visible before their commit. */
  readonly #writing = new Set<string>();

  constructor(dir: string) {
    this.#root = join(dir, "blobs");
    // Where blobs in progress were written before: only swept now (leftovers of an older version's crash).
    this.#tmp = join(dir, "tmp");
    this.#shards = new ShardDirs(this.#root);
  }

  close(): Promise<void> {
    return this.#shards.close();
  }

  async init(): Promise<void> {
    await mkdir(this.#root, { recursive: true, mode: 0o700 });
    await mkdir(this.#tmp, { recursive: true, mode: 0o700 });
  }

  #path(id: string): string {
    if (!ID.test(id)) throw new NotFoundError(`blob ${id}`);
    return join(this.#root, id.slice(0, 2), id);
  }

  async create(copyFrom?: { id: string; length: number }): Promise<BlobWriter> {
    try {
      return await this.#create(copyFrom);
    } catch (err) {
      throw noSpaceOr(err);
    }
  }

  async #create(copyFrom?: { id: string; length: number }): Promise<BlobWriter> {
    const id = randomBytes(16).toString("hex");
    const path = this.#path(id);
    const shard = id.slice(0, 2);
    await this.#shards.ensure(shard);
    this.#writing.add(id);
    try {
      let length = 0;
      if (copyFrom) {
        // Reflink where the filesystem can; a plain copy otherwise. The old blob stays untouched.
        await copyFile(this.#path(copyFrom.id), path, constants.COPYFILE_FICLONE | constants.COPYFILE_EXCL);
        await truncate(path, copyFrom.length);
        length = copyFrom.length;
      }
      // A new file is created on this thread (a metadata update in the page cache, tens of microseconds): a trip
      // through libuv's pool costs the event loop a wake-up, which on a busy machine waits for a core.
      const fd = copyFrom
        ? await new Promise<number>((resolve, reject) =>
            openFd(path, "r+", 0o600, (err, f) => (err ? reject(err) : resolve(f))),
          )
        : openSync(path, "wx+", 0o600); // read-write: a switch to direct writes reads its last partial block back
      // The new name goes to stable storage now, beside the upload, so that the commit only syncs the file.
      const named = this.#shards.sync(shard);
      named.catch(() => undefined);
      return new LocalWriter(id, path, fd, length, named, () => this.#writing.delete(id));
    } catch (err) {
      this.#writing.delete(id);
      await rm(path, { force: true }).catch(() => undefined);
      throw err;
    }
  }

  async open(id: string): Promise<BlobReader> {
    if (this.#writing.has(id)) throw new NotFoundError(`blob ${id}`);
    // Opened, sized and closed on this thread (cached metadata: microseconds); only the reads go through libuv's pool.
    // Through a FileHandle a small download waited for three more pool round trips (open, stat, close), each an
    // event-loop wake-up that on a busy machine waits for a core.
    let fd: number;
    try {
      fd = openSync(this.#path(id), "r");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new NotFoundError(`blob ${id}`);
      throw err;
    }
    let size: number;
    try {
      size = fstatSync(fd).size;
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    // A plain descriptor has no FileHandle guard: reads check that it is still open, and close waits for the reads in
    // flight (a number closed under a pending read could be reused by another open, which the read would then read).
    let closed = false;
    let inFlight = 0;
    let drained: (() => void) | undefined;
    const readInto = async (position: number, out: Buffer): Promise<number> => {
      if (closed) throw new Error(`blob ${id} read after close`);
      inFlight++;
      try {
        let done = 0;
        while (done < out.length) {
          const n = await fdRead(fd, out, done, out.length - done, position + done);
          if (n === 0) break;
          done += n;
        }
        return done;
      } finally {
        if (--inFlight === 0) drained?.();
      }
    };
    return {
      size,
      readInto,
      async read(position: number, length: number): Promise<Buffer> {
        const out = Buffer.allocUnsafe(Math.max(0, Math.min(length, size - position)));
        const done = await readInto(position, out);
        return done === out.length ? out : out.subarray(0, done);
      },
      async close() {
        if (closed) return;
        closed = true;
        if (inFlight > 0) await new Promise<void>((r) => (drained = r));
        closeSync(fd);
      },
    };
  }

  heads(): HeadAccess {
    const written = new Set<string>();
    const openOrMissing = (id: string, flags: string): number | undefined => {
      try {
        return openSync(this.#path(id), flags);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT" || err instanceof NotFoundError) return undefined;
        throw err;
      }
    };
    return {
      read: (id, length) => {
        const fd = openOrMissing(id, "r");
        if (fd === undefined) return undefined;
        try {
          const out = Buffer.allocUnsafe(length);
          const n = readSync(fd, out, 0, length, 0);
          return n === length ? out : out.subarray(0, n);
        } finally {
          closeSync(fd);
        }
      },
      write: (id, bytes, position) => {
        const fd = openOrMissing(id, "r+");
        if (fd === undefined) return false;
        try {
          let done = 0;
          while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done, position + done);
        } finally {
          closeSync(fd);
        }
        written.add(id);
        return true;
      },
      flush: async () => {
        if (written.size === 0) return;
        const ids = [...written];
        written.clear();
        // One syncfs(2) (coreutils `sync --file-system`) flushes a batch of thousands of headers in one go; an
        // fdatasync per file costs ~0.5 ms each on this class of disk (measured), i.e. a 2k files/s ceiling.
        if (await syncFileSystem(this.#root)) return;
        for (const id of ids) {
          const fd = openOrMissing(id, "r");
          if (fd === undefined) continue;
          try {
            fdatasyncSync(fd);
          } finally {
            closeSync(fd);
          }
        }
      },
    };
  }

  async remove(id: string): Promise<void> {
    await rm(this.#path(id), { force: true });
  }

  async sweep(keep: Set<string>): Promise<{ temp: number; orphans: number }> {
    let temp = 0;
    for (const name of await readdir(this.#tmp)) {
      await rm(join(this.#tmp, name), { force: true, recursive: true });
      temp++;
    }
    let orphans = 0;
    for (const entry of await readdir(this.#root, { withFileTypes: true })) {
      // only shard directories hold blobs; a stray file here is not ours to judge and must not stop the server
      if (!entry.isDirectory()) continue;
      const shard = entry.name;
      for (const name of await readdir(join(this.#root, shard))) {
        if (keep.has(name)) continue;
        await rm(join(this.#root, shard, name), { force: true });
        // an upload of this process still being written counts as unfinished; any other unreferenced file is an
        // orphan (a crash's unfinished upload looks the same on disk)
        if (this.#writing.has(name)) temp++;
        else orphans++;
      }
    }
    return { temp, orphans };
  }
}

/** syncfs(2) on the file system holding `dir`, through coreutils; false if that is not available. */
function syncFileSystem(dir: string): Promise<boolean> {
  return new Promise((resolve) => {
    execFile("sync", ["--file-system", dir], (err) => resolve(!err));
  });
}

class LocalWriter implements BlobWriter {
  readonly id: string;
  length: number;
  readonly #path: string;
  readonly #fd: number;
  /** The fsync of the shard directory that makes this blob's name durable (started at create). */
  readonly #named: Promise<void>;
  readonly #done: () => void;
  #closed = false;
  #unsynced = 0;
  #syncing: Promise<void> | undefined;
  #syncError: unknown;
  /** Past DIRECT_FROM_BYTES the data goes around the page cache (direct-io.ts). */
  #direct: DirectTail | undefined;
  #directTried = false;

  constructor(id: string, path: string, fd: number, length: number, named: Promise<void>, done: () => void) {
    this.id = id;
    this.#path = path;
    this.#fd = fd;
    this.length = length;
    this.#named = named;
    this.#done = done;
  }

  async write(chunks: Buffer[]): Promise<void> {
    try {
      await this.#write(chunks);
    } catch (err) {
      throw noSpaceOr(err);
    }
  }

  async #write(chunks: Buffer[]): Promise<void> {
    if (this.#syncError) throw this.#syncError;
    const bytes = byteLength(chunks);
    if (!this.#directTried && this.length + bytes >= DIRECT_FROM_BYTES) {
      this.#directTried = true;
      this.#direct = DirectTail.start(this.#path, this.#fd, this.length);
    }
    if (this.#direct) {
      await this.#direct.write(chunks);
      if (this.#direct.refused) this.#endDirect();
      this.#wrote(this.length + bytes);
      return;
    }
    let position = this.length;
    let pending = chunks;
    // A small write (a small file's one write at CLOSE) goes to the page cache on this thread: that takes microseconds,
    // a trip through libuv's pool costs a wake-up of the event loop, which on a busy machine waits for a core.
    const small = byteLength(pending) <= SYNC_WRITE_BYTES;
    while (pending.length > 0) {
      // writev may write partially; continue with what remains.
      const bytesWritten = small
        ? writevSync(this.#fd, pending, position)
        : await fdWritev(this.#fd, pending, position);
      position += bytesWritten;
      let skip = bytesWritten;
      const rest: Buffer[] = [];
      for (const c of pending) {
        if (skip >= c.length) skip -= c.length;
        else {
          rest.push(skip > 0 ? c.subarray(skip) : c);
          skip = 0;
        }
      }
      pending = rest;
    }
    this.#wrote(position);
  }

  #endDirect(): void {
    this.#direct?.close();
    this.#direct = undefined;
  }

  /** The blob is `position` bytes long now. */
  #wrote(position: number): void {
    this.#unsynced += position - this.length;
    this.length = position;
    // Flush to disk while the upload is still arriving, so the fsync at commit has little left: a 1 GiB upload
    // otherwise waited seconds at close for the whole file to reach the disk.
    if (this.#unsynced >= BACKGROUND_SYNC_BYTES && !this.#syncing) {
      this.#unsynced = 0;
      this.#syncing = fdDone(fdatasync, this.#fd)
        .catch((err: unknown) => {
          this.#syncError = err;
        })
        .finally(() => {
          this.#syncing = undefined;
        });
    }
  }

  async commit(): Promise<void> {
    try {
      await this.#commit();
    } catch (err) {
      throw noSpaceOr(err);
    }
  }

  async #commit(): Promise<void> {
    await this.#syncing;
    if (this.#syncError) throw this.#syncError;
    if (this.#direct) {
      await this.#direct.finish();
      this.#endDirect();
    }
    // The data and the name (synced since create; normally long done) are both durable before this returns.
    await Promise.all([fdDone(fsync, this.#fd), this.#named]);
    // Removed meanwhile (another process's start sweeping what no metadata references yet): fail as a rename of a
    // vanished temp file did, so that no commit can point at it.
    if (fstatSync(this.#fd).nlink === 0) throw new Error(`blob ${this.id} was removed while being written`);
    this.#closed = true;
    this.#done();
    // Nothing rides on the close once the file is synced: the commit does not wait for it.
    close(this.#fd, () => undefined);
  }

  async abort(): Promise<void> {
    await this.#syncing;
    this.#endDirect();
    if (!this.#closed) {
      this.#closed = true;
      await fdDone(close, this.#fd).catch(() => undefined);
    }
    await rm(this.#path, { force: true });
    this.#done();
  }
}
