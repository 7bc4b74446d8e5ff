// Whole-file helpers over a VfsSession for tests that drive the vfs directly (no protocol in between).
import type { VfsSession } from "../../src/vfs/types.ts";

/** Writes `data` as a new version of `path`, in `chunk`-sized sequential writes; a failed write abandons it. */
export async function put(s: VfsSession, path: string, data: Buffer, chunk = 65_536): Promise<void> {
  const h = await s.openWrite(path, { truncate: true });
  try {
    for (let o = 0; o < data.length; o += chunk) await h.write(o, data.subarray(o, o + chunk));
  } catch (err) {
    await h.abort(false);
    throw err;
  }
  await h.close();
}

/** Reads the whole file in `chunk`-sized reads. */
export async function get(s: VfsSession, path: string, chunk = 65_536): Promise<Buffer> {
  const h = await s.openRead(path);
  const parts: Buffer[] = [];
  for (let o = 0; o < h.size; o += chunk) parts.push(await h.read(o, chunk));
  await h.close();
  return Buffer.concat(parts);
}

export async function exists(s: VfsSession, path: string): Promise<boolean> {
  return s.stat(path).then(
    () => true,
    () => false,
  );
}
