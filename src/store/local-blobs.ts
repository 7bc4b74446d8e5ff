import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, fdatasyncSync, openSync, readSync, writeSync } from "node:fs";
import { constants, copyFile, type FileHandle, mkdir, open, readdir, rename, rm, truncate } from "node:fs/promises";
import { join } from "node:path";
import { NotFoundError, noSpaceOr } from "../errors.ts";
import type { BlobReader, BlobStore, BlobWriter, HeadAccess } from "./blobs.ts";

const ID = /^[0-9a-f]{32}$/;
const BACKGROUND_SYNC_BYTES = 32 << 20;

/**
 * The 256 shard directories, created once and kept open: every commit fsyncs its shard directory so the rename is
 * durable before the metadata that references the blob; reopening it each time cost three extra syscalls per file.
 */
class ShardDirs {
  readonly #root: string;
  readonly #open = new Map<string, Promise<FileHandle>>();

  constructor(root: string) {
    this.#root = root;
  }

  path(shard: string): string {
    return join(this.#root, shard);
  }

  #handle(shard: string): Promise<FileHandle> {
    let fh = this.#open.get(shard);
    if (!fh) {
      fh = mkdir(this.path(shard), { recursive: true, mode: 0o700 }).then(() => open(this.path(shard), "r"));
      fh.catch(() => this.#open.delete(shard));
      this.#open.set(shard, fh);
    }
    return fh;
  }

  /** Ensures the shard exists (before a rename into it). */
  async ensure(shard: string): Promise<void> {
    await this.#handle(shard);
  }

  async sync(shard: string): Promise<void> {
    await (await this.#handle(shard)).sync();
  }

  async close(): Promise<void> {
    const handles = [...this.#open.values()];
    this.#open.clear();
    await Promise.allSettled(handles.map(async (fh) => (await fh).close()));
  }
}

/**
 * Blobs as files `blobs/<aa>/<id>` with random ids (names and sizes of users' files never appear on disk).
 * Writes go to `tmp/` first: temp → fsync → rename → fsync(dir), so a crash leaves the old blob or the new one.
 */
export class LocalBlobStore implements BlobStore {
  readonly #root: string;
  readonly #tmp: string;
  readonly #shards: ShardDirs;

  constructor(dir: string) {
    this.#root = join(dir, "blobs");
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
    const tmp = join(this.#tmp, id);
    let length = 0;
    if (copyFrom) {
      // Reflink where the filesystem can; a plain copy otherwise. The old blob stays untouched until commit.
      await copyFile(this.#path(copyFrom.id), tmp, constants.COPYFILE_FICLONE);
      await truncate(tmp, copyFrom.length);
      length = copyFrom.length;
    }
    const fh = await open(tmp, copyFrom ? "r+" : "wx", 0o600);
    return new LocalWriter(id, tmp, this.#path(id), fh, length, this.#shards);
  }

  async open(id: string): Promise<BlobReader> {
    let fh: FileHandle;
    try {
      fh = await open(this.#path(id), "r");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new NotFoundError(`blob ${id}`);
      throw err;
    }
    const { size } = await fh.stat();
    const readInto = async (position: number, out: Buffer): Promise<number> => {
      let done = 0;
      while (done < out.length) {
        const { bytesRead } = await fh.read(out, done, out.length - done, position + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return done;
    };
    return {
      size,
      readInto,
      async read(position: number, length: number): Promise<Buffer> {
        const out = Buffer.allocUnsafe(Math.max(0, Math.min(length, size - position)));
        const done = await readInto(position, out);
        return done === out.length ? out : out.subarray(0, done);
      },
      close: () => fh.close(),
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
        if (!keep.has(name)) {
          await rm(join(this.#root, shard, name), { force: true });
          orphans++;
        }
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
  readonly #tmp: string;
  readonly #final: string;
  readonly #fh: FileHandle;
  readonly #shards: ShardDirs;
  #closed = false;
  #unsynced = 0;
  #syncing: Promise<void> | undefined;
  #syncError: unknown;

  constructor(id: string, tmp: string, final: string, fh: FileHandle, length: number, shards: ShardDirs) {
    this.id = id;
    this.#tmp = tmp;
    this.#final = final;
    this.#fh = fh;
    this.length = length;
    this.#shards = shards;
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
    let position = this.length;
    let pending = chunks;
    while (pending.length > 0) {
      // writev may write partially; continue with what remains.
      const { bytesWritten } = await this.#fh.writev(pending, position);
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
    this.#unsynced += position - this.length;
    this.length = position;
    // Flush to disk while the upload is still arriving, so the fsync at commit has little left: a 1 GiB upload
    // otherwise waited seconds at close for the whole file to reach the disk.
    if (this.#unsynced >= BACKGROUND_SYNC_BYTES && !this.#syncing) {
      this.#unsynced = 0;
      this.#syncing = this.#fh
        .datasync()
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
    await this.#fh.sync();
    this.#closed = true;
    const shard = this.id.slice(0, 2);
    // The close and the rename run side by side on the thread pool (a small upload waits for each step in turn).
    await Promise.all([this.#fh.close(), this.#shards.ensure(shard).then(() => rename(this.#tmp, this.#final))]);
    await this.#shards.sync(shard);
  }

  async abort(): Promise<void> {
    await this.#syncing;
    if (!this.#closed) {
      this.#closed = true;
      await this.#fh.close().catch(() => undefined);
    }
    await rm(this.#tmp, { force: true });
  }
}
