import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { reencrypt } from "../../src/keys/reencrypt.ts";
import { ROOT_ID } from "../../src/vfs/tree.ts";
import type { VfsSession } from "../../src/vfs/types.ts";
import { type Fixture, fixture, get, info, put, sha } from "./helpers.ts";

async function blobCount(dir: string): Promise<number> {
  let n = 0;
  for (const shard of await readdir(join(dir, "blobs"))) n += (await readdir(join(dir, "blobs", shard))).length;
  return n;
}

describe("keys reencrypt", () => {
  let f: Fixture;
  let s: VfsSession;
  const files = new Map<string, Buffer>();
  const deps = () => ({
    store: f.app.store,
    blobs: f.app.vfs.blobs,
    keys: f.app.keys,
    dir: f.app.paths.keys,
    vfs: f.app.vfs,
  });
  const node = (p: string) => f.app.vfs.tree.resolve(ROOT_ID, p);

  before(async () => {
    f = await fixture();
    await f.app.keys.createKey("tenant");
    await f.app.addUser({ name: "alice", password: "correct horse", home: "/", kek: "tenant" });
    s = await f.app.openSession("alice", info);
    for (let i = 0; i < 40; i++) {
      // a few multi-segment files, the rest small
      const data = randomBytes(i % 10 === 0 ? 300_000 + i : 1000 + i);
      files.set(`/d/f${i}`, data);
    }
    await s.mkdir("/d");
    for (const [p, data] of files) await put(s, p, data);
  });
  after(async () => {
    await s.close();
    await f.close();
  });

  it("gives every file under the old version a new DEK and blob; data unchanged; old blobs gone", async () => {
    await f.app.keys.rotateKey("tenant"); // the compromise response: rotate, then reencrypt what v1 protected
    const before = new Map<string, { blobId: string | null; contentId: string | null }>();
    for (const p of files.keys()) {
      const n = await node(p);
      assert.equal(n.keyRef, "kek:tenant:v1");
      before.set(p, { blobId: n.blobId, contentId: n.contentId });
    }
    const blobsBefore = await blobCount(f.dir);
    // Meanwhile, a user overwrites some files and deletes one: they must end up as the user left them.
    const changed = ["/d/f1", "/d/f2", "/d/f10"];
    let raced = false;
    const report = await reencrypt(deps(), {
      key: "tenant",
      onProgress: (p) => {
        if (!raced && p.done >= 5) {
          raced = true;
          void (async () => {
            for (const p2 of changed) {
              const data = Buffer.from(`rewritten ${p2}`);
              files.set(p2, data);
              await put(s, p2, data);
            }
            await s.remove("/d/f39");
            files.delete("/d/f39");
          })();
        }
      },
    });
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(report.failed, 0, JSON.stringify(report.failures));
    assert.ok(report.done >= 35, `done ${report.done}`);
    for (const [p, data] of files) {
      assert.equal(sha(await get(s, p)), sha(data), p);
      const n = await node(p);
      assert.equal(n.keyRef, "kek:tenant:v2", p);
      assert.notEqual(n.blobId, before.get(p)?.blobId, `${p} has a new blob`);
      assert.notEqual(n.contentId, before.get(p)?.contentId, `${p} has a new content id`);
    }
    await assert.rejects(s.stat("/d/f39"), { code: "NOT_FOUND" });
    assert.equal(await blobCount(f.dir), blobsBefore - 1, "old blobs removed, no copies left behind");
    assert.deepEqual(await f.app.store.pendingBlobs(""), []);
    // Nothing left on v1: destroying it would lose nothing.
    const counts = await f.app.store.keyRefCounts();
    assert.deepEqual(
      counts.filter((c) => c.keyRef?.startsWith("kek:tenant")),
      [{ keyRef: "kek:tenant:v2", files: files.size }],
    );
  });

  it("--to moves files to another key; a rerun has nothing to do", async () => {
    await f.app.keys.createKey("archive");
    const r = await reencrypt(deps(), { key: "tenant", allVersions: true, to: "archive" });
    assert.equal(r.done, files.size);
    for (const [p, data] of files) {
      assert.equal((await node(p)).keyRef, "kek:archive:v1");
      assert.equal(sha(await get(s, p)), sha(data));
    }
    const again = await reencrypt(deps(), { key: "tenant", allVersions: true, to: "archive" });
    assert.equal(again.done, 0);
    assert.equal(again.total, 0);
  });
});
