// In-process fixtures for the key jobs: an App on a temp data dir, fast file generation through the vfs.
import { createHash } from "node:crypto";
import { App, initData } from "../../src/app.ts";
import type { VfsSession } from "../../src/vfs/types.ts";
import { removeDir, tempDir } from "../helpers/atrest.ts";

export const info = { protocol: "cli" as const, sessionId: "keys-test" };

export async function put(s: VfsSession, path: string, data: Buffer): Promise<void> {
  const h = await s.openWrite(path, { truncate: true });
  for (let o = 0; o < data.length; o += 1 << 20) await h.write(o, data.subarray(o, o + (1 << 20)));
  await h.close();
}

export async function get(s: VfsSession, path: string): Promise<Buffer> {
  const h = await s.openRead(path);
  try {
    const parts: Buffer[] = [];
    for (let o = 0; o < h.size; o += 1 << 20) parts.push(await h.read(o, 1 << 20));
    return Buffer.concat(parts);
  } finally {
    await h.close();
  }
}

export function content(i: number): Buffer {
  return Buffer.from(`file ${i} ${"x".repeat(i % 97)}`);
}

export function sha(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

/** `count` small files /<dir>/f<i> written `concurrency` at a time. */
export async function makeFiles(s: VfsSession, dir: string, count: number, concurrency = 16): Promise<void> {
  await s.mkdir(dir).catch(() => undefined);
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const i = next++;
        await put(s, `${dir}/f${i}`, content(i));
      }
    }),
  );
}

export interface Fixture {
  dir: string;
  app: App;
  close(): Promise<void>;
  reopen(): Promise<App>;
}

export async function fixture(options: { dekCacheSeconds?: number } = {}): Promise<Fixture> {
  const dir = await tempDir("atrest-keys-");
  await initData(dir);
  const f: Fixture = {
    dir,
    app: await App.open(dir, { dekCacheSeconds: options.dekCacheSeconds ?? 0 }),
    async close() {
      await f.app.close().catch(() => undefined);
      await removeDir(dir);
    },
    async reopen() {
      await f.app.close();
      f.app = await App.open(dir, { dekCacheSeconds: options.dekCacheSeconds ?? 0 });
      return f.app;
    },
  };
  return f;
}
