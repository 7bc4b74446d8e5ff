// Durable, private file writes for the KMS directory (CA and TLS keys, certificates, backup bundles).

import { randomUUID } from "node:crypto";
import { constants } from "node:fs";
import { link, open, rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * temp (0600, O_EXCL) → fsync → rename (or link when `exclusive`, so an existing file is never replaced) → fsync dir.
 * A crash leaves the old file or the new one, never a torn one. Returns false if `exclusive` and `path` existed.
 */
export async function writePrivateFile(
  path: string,
  data: string | Uint8Array,
  options: { exclusive?: boolean; mode?: number } = {},
): Promise<boolean> {
  const mode = options.mode ?? 0o600;
  const tmp = join(dirname(path), `.${basename(path)}.${randomUUID()}.tmp`);
  try {
    const fh = await open(tmp, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, mode);
    try {
      await fh.writeFile(data);
      await fh.chmod(mode);
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (options.exclusive) {
      try {
        await link(tmp, path);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "EEXIST") return false;
        throw e;
      }
    } else {
      await rename(tmp, path);
    }
    await syncDir(dirname(path));
    return true;
  } finally {
    await unlink(tmp).catch(() => {});
  }
}
