// Durable atomic file writes: temp file in the same directory (0600 unless told, O_EXCL) → write → fsync → rename
// (or link when exclusive) → fsync the directory. A crash leaves the old file or the new one, never a torn one, and
// a failed write leaves no temp file behind; a crash mid-write can, and sweepTempFiles removes those at start.

import { randomUUID } from "node:crypto";
import {
  closeSync,
  constants,
  fchmodSync,
  fsyncSync,
  linkSync,
  openSync,
  renameSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { type FileHandle, link, lstat, open, readdir, rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

export interface DurableWriteOptions {
  /** Default 0600. Set on the open file too: the umask may only narrow it, and a mode the caller asked for is exact. */
  mode?: number;
  /**
   * Default true. false skips both fsyncs: still atomic for readers, but a crash may lose the write (advisory files
   * such as the audit stats, rewritten every second).
   */
  sync?: boolean;
  /** Never replace an existing file: link(2) instead of rename, and the write returns false if `path` existed. */
  exclusive?: boolean;
}

const EXCL_WRITE = constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY;

function tempPath(path: string): string {
  return join(dirname(path), `.${basename(path)}.${randomUUID()}.tmp`);
}

/** The names tempPath makes, and only those: `.<name>.<uuid>.tmp`. */
const TEMP_NAME = /^\..+\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.tmp$/;

/** A write in progress takes milliseconds; a temp file this old was left by a process that died mid-write. */
export const STALE_TEMP_MS = 10 * 60_000;

/**
 * Removes the temp files that a crash during a durable write left in `dir` (not recursive), if older than
 * `olderThanMs`, so that another process's write in progress is never touched. Returns how many went; a missing
 * directory is no error.
 */
export async function sweepTempFiles(dir: string, olderThanMs = STALE_TEMP_MS, now = Date.now()): Promise<number> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return 0;
    throw err;
  }
  let removed = 0;
  for (const name of names) {
    if (!TEMP_NAME.test(name)) continue;
    const path = join(dir, name);
    const st = await lstat(path).catch(() => undefined);
    if (!st?.isFile() || now - st.mtimeMs < olderThanMs) continue;
    await unlink(path).then(
      () => removed++,
      () => {},
    );
  }
  return removed;
}

function isExists(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === "EEXIST";
}

/** fsync a directory, so a rename or link in it survives a crash. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export function syncDirSync(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes whatever `write` puts into the open temp file (streams: memory stays flat), then makes it `path`.
 * Returns false only when `exclusive` and `path` already existed. The fsyncs run in libuv's pool, off the event loop.
 */
export async function writeDurable(
  path: string,
  write: (fh: FileHandle) => Promise<void>,
  options: DurableWriteOptions = {},
): Promise<boolean> {
  const mode = options.mode ?? 0o600;
  const sync = options.sync ?? true;
  const tmp = tempPath(path);
  try {
    const fh = await open(tmp, EXCL_WRITE, mode);
    try {
      await fh.chmod(mode);
      await write(fh);
      if (sync) await fh.sync();
    } finally {
      await fh.close();
    }
    if (options.exclusive) {
      try {
        await link(tmp, path);
      } catch (err) {
        if (isExists(err)) return false;
        throw err;
      }
    } else {
      await rename(tmp, path);
    }
    if (sync) await syncDir(dirname(path));
    return true;
  } finally {
    // After a rename there is nothing left to remove; after a link or a failure the temp name must go.
    await unlink(tmp).catch(() => {});
  }
}

export function writeFileDurable(
  path: string,
  data: string | Uint8Array,
  options: DurableWriteOptions = {},
): Promise<boolean> {
  return writeDurable(path, (fh) => fh.writeFile(data), options);
}

/** The same on the calling thread, for shutdown paths where nothing may be left pending. */
export function writeFileDurableSync(
  path: string,
  data: string | Uint8Array,
  options: DurableWriteOptions = {},
): boolean {
  const mode = options.mode ?? 0o600;
  const sync = options.sync ?? true;
  const tmp = tempPath(path);
  try {
    const fd = openSync(tmp, EXCL_WRITE, mode);
    try {
      fchmodSync(fd, mode);
      writeFileSync(fd, data);
      if (sync) fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    if (options.exclusive) {
      try {
        linkSync(tmp, path);
      } catch (err) {
        if (isExists(err)) return false;
        throw err;
      }
    } else {
      renameSync(tmp, path);
    }
    if (sync) syncDirSync(dirname(path));
    return true;
  } finally {
    try {
      unlinkSync(tmp);
    } catch {}
  }
}

/**
 * sweepTempFiles over `dir` and its subdirectories down to `depth` levels (0 = `dir` only), skipping the names in
 * `skip` (e.g. a blob directory with millions of entries). Returns how many went.
 */
export async function sweepTempTree(dir: string, depth: number, skip: readonly string[] = []): Promise<number> {
  let removed = await sweepTempFiles(dir);
  if (depth <= 0) return removed;
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    if (e.isDirectory() && !skip.includes(e.name)) removed += await sweepTempTree(join(dir, e.name), depth - 1, skip);
  }
  return removed;
}
