// Versioned folders through the vfs session (what every door calls): an overwrite keeps the earlier version, a delete
// leaves a marker, the quota counts every version, deleting a version credits it and removes its blob, the newest left
// becomes current, Suspended writes the version "null", a folder keeping versions cannot be removed; also with the
// metadata in PostgreSQL (scripts/test-postgres.ts).
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { App, initData } from "../../src/app.ts";
import type { VfsSession } from "../../src/vfs/types.ts";
import { get, put } from "../helpers/vfs.ts";

async function blobCount(dir: string): Promise<number> {
  let n = 0;
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (e.isDirectory()) await walk(join(d, e.name));
      else n++;
    }
  };
  await walk(join(dir, "blobs"));
  return n;
}

describe("versioned folders", () => {
  let dir: string;
  let app: App;
  let s: VfsSession;
  const info = { protocol: "sftp" as const, sessionId: "versions" };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "atrest-versions-"));
    await initData(dir);
    app = await App.open(dir);
    await app.addUser({ name: "vera", password: "pw-vera-0123456789", quotaBytes: 10_000, quotaFiles: 100 });
    s = await app.openSession("vera", info);
  });
  after(async () => {
    await app.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("keeps versions, counts them in the quota, and deletes them for good", async () => {
    await s.mkdir("/b");
    await s.setVersioning?.("/b", "Enabled");
    assert.equal(await s.getVersioning?.("/b"), "Enabled");
    await s.mkdir("/b/d");
    const one = randomBytes(3000);
    const two = randomBytes(4000);
    await put(s, "/b/d/f", one);
    const v1 = (await s.stat("/b/d/f")).versionId;
    await put(s, "/b/d/f", two);
    const v2 = (await s.stat("/b/d/f")).versionId;
    assert.ok(v1 && v2 && v1 !== v2);
    // the folder shows the current file only; both versions count
    assert.deepEqual(
      (await s.list("/b/d")).map((e) => e.name),
      ["f"],
    );
    assert.equal((await s.quota()).usedBytes, 7000);
    assert.ok((await get(s, "/b/d/f")).equals(two));
    const old = await s.openRead("/b/d/f", { versionId: v1 });
    assert.ok((await old.read(0, 5000)).equals(one));
    await old.close();
    // the quota holds versions: 3,001 more bytes do not fit
    await assert.rejects(put(s, "/b/d/f", randomBytes(3001)), { code: "QUOTA_EXCEEDED" });

    // a delete leaves a marker: no file, both versions kept
    const removed = await s.deleteVersioned?.("/b/d/f");
    assert.equal(removed?.deleteMarker, true);
    await assert.rejects(s.stat("/b/d/f"), { code: "NOT_FOUND" });
    assert.equal(await s.deleteMarkerOf?.("/b/d/f"), removed?.versionId);
    const kept = await s.listVersions?.("/b", "");
    assert.deepEqual(
      kept?.map((v) => [v.key, v.versionId, v.deleteMarker]).sort(),
      [
        ["d/f", removed?.versionId, true],
        ["d/f", v1, false],
        ["d/f", v2, false],
      ].sort(),
    );
    assert.equal((await s.quota()).usedBytes, 7000);

    // a folder that keeps versions cannot go
    await s.rmdir("/b/d");
    await assert.rejects(s.rmdir("/b"), { code: "NOT_EMPTY" });

    // deleting the marker makes v2 current again (its folder made anew)
    const blobs = await blobCount(dir);
    await s.removeVersion?.("/b/d/f", removed?.versionId as string);
    assert.ok((await get(s, "/b/d/f")).equals(two));
    assert.equal(await blobCount(dir), blobs);
    // deleting the current version for good: v1 becomes current, v2's bytes are credited and its blob goes
    await s.removeVersion?.("/b/d/f", v2 as string);
    assert.ok((await get(s, "/b/d/f")).equals(one));
    assert.equal((await s.stat("/b/d/f")).versionId, v1);
    assert.equal((await s.quota()).usedBytes, 3000);
    assert.equal(await blobCount(dir), blobs - 1);
    await assert.rejects(s.removeVersion?.("/b/d/f", v2 as string) as Promise<unknown>, { code: "NOT_FOUND" });
    await s.removeVersion?.("/b/d/f", v1 as string);
    assert.equal((await s.quota()).usedBytes, 0);
    assert.equal((await s.quota()).usedFiles, 0);
    assert.deepEqual(await s.listVersions?.("/b", ""), []);
    await s.rmdir("/b/d");
    await s.rmdir("/b");
  });

  it("writes the version null while suspended, replacing the earlier null one", async () => {
    await s.mkdir("/s");
    await put(s, "/s/f", Buffer.from("unversioned"));
    await s.setVersioning?.("/s", "Suspended");
    await put(s, "/s/f", Buffer.from("null one"));
    assert.equal((await s.stat("/s/f")).versionId, "null");
    assert.deepEqual(await s.listVersions?.("/s", ""), []);
    await s.setVersioning?.("/s", "Enabled");
    await put(s, "/s/f", Buffer.from("enabled"));
    await s.setVersioning?.("/s", "Suspended");
    await put(s, "/s/f", Buffer.from("null two"));
    // "null one" (kept when versioning was enabled) is replaced by "null two"; "enabled" stays
    const versions = (await s.listVersions?.("/s", ""))?.map((v) => v.versionId);
    assert.equal(versions?.length, 1);
    assert.notEqual(versions?.[0], "null");
    assert.equal((await s.quota()).usedBytes, "enabled".length + "null two".length);
    // a delete while suspended: the null version goes, the enabled one stays under a null marker
    const removed = await s.deleteVersioned?.("/s/f");
    assert.equal(removed?.versionId, "null");
    const left = await s.listVersions?.("/s", "");
    assert.deepEqual(left?.map((v) => [v.versionId === "null", v.deleteMarker]).sort(), [
      [false, false],
      [true, true],
    ]);
    assert.equal((await s.quota()).usedBytes, "enabled".length);
  });

  it("keeps the file a rename replaces as a noncurrent version", async () => {
    await s.mkdir("/r");
    await s.setVersioning?.("/r", "Enabled");
    await put(s, "/r/target", Buffer.from("target before"));
    const replaced = (await s.stat("/r/target")).versionId;
    await put(s, "/r/other", Buffer.from("moved over it"));
    await s.rename("/r/other", "/r/target", true);
    assert.equal((await get(s, "/r/target")).toString(), "moved over it");
    const kept = await s.listVersions?.("/r", "target");
    assert.deepEqual(
      kept?.map((v) => v.versionId),
      [replaced],
    );
    const h = await s.openRead("/r/target", { versionId: replaced });
    assert.equal((await h.read(0, 100)).toString(), "target before");
    await h.close();
  });
});
