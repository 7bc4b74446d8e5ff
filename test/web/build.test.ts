// The committed web/dist is what web/src builds to (so `npm ci && npm start` serves the current app with no build
// step), and it stays small. Rebuild with `npm run build:web`.
import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { gzipSync } from "node:zlib";
import { buildWeb } from "../../scripts/build-web.ts";
import { ROOT, removeDir, tempDir } from "../helpers/atrest.ts";

async function tree(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const full = join(e.parentPath, e.name);
    out.set(full.slice(dir.length), await readFile(full));
  }
  return out;
}

test("web/dist is the build of web/src, and small", async () => {
  const tmp = await tempDir("atrest-webbuild-");
  try {
    await buildWeb(join(tmp, "dist"));
    const fresh = await tree(join(tmp, "dist"));
    const committed = await tree(join(ROOT, "web", "dist"));
    assert.deepEqual([...committed.keys()].sort(), [...fresh.keys()].sort(), "stale web/dist: run npm run build:web");
    for (const [name, body] of fresh) assert.ok(body.equals(committed.get(name) as Buffer), `stale ${name}`);
    const gz = [...fresh.values()].reduce((a, b) => a + gzipSync(b).length, 0);
    assert.ok(gz < 100_000, `the app is ${gz} bytes gzipped`);
  } finally {
    await removeDir(tmp);
  }
});
