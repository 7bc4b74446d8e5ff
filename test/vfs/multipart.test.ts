// The vfs side of S3 multipart uploads (src/vfs/multipart.ts): parts survive a restart (the startup sweep keeps
// them), expire() removes an abandoned upload with every part blob (and its bytes from the owner's usage), another user's upload is NOT_FOUND, and
// Complete makes one file whose pieces are the parts' containers (test/vfs/pieced.test.ts).
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, it } from "node:test";
import { App, initData } from "../../src/app.ts";
import type { VfsSession } from "../../src/vfs/types.ts";
import { get } from "../helpers/vfs.ts";

let dir: string;
let app: App;
let s: VfsSession;
const info = { protocol: "s3" as const, sessionId: "mp" };

async function blobs(): Promise<number> {
  const walk = async (d: string): Promise<number> => {
    let n = 0;
    for (const e of await readdir(d, { withFileTypes: true })) {
      n += e.isDirectory() ? await walk(join(d, e.name)) : 1;
    }
    return n;
  };
  return walk(join(dir, "blobs"));
}

async function part(id: string, n: number, data: Buffer): Promise<void> {
  const p = await s.uploadPart?.("/b/obj.bin", id, n);
  assert.ok(p);
  await p.write(data);
  await p.close(`etag${n}`);
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "atrest-vfs-mp-"));
  await initData(dir);
  app = await App.open(dir, { sweep: true });
  await app.addUser({ name: "alice", password: "correct horse" });
  await app.addUser({ name: "bob", password: "battery staple" });
  s = await app.openSession("alice", info);
  await s.mkdir("/b");
});
after(async () => {
  await app.close();
  await rm(dir, { recursive: true, force: true });
});

it("keeps staged parts across a restart, completes them into one file of their containers, and drops the rest", async () => {
  const start = await blobs();
  const up = await s.createMultipart?.("/b/obj.bin", {});
  assert.ok(up);
  const a = randomBytes(300_000);
  const b = randomBytes(1234);
  await part(up.id, 2, b);
  await part(up.id, 1, a);
  assert.equal(await blobs(), start + 2);
  await app.close();
  app = await App.open(dir, { sweep: true });
  s = await app.openSession("alice", info);
  assert.equal(await blobs(), start + 2, "the startup sweep kept the parts");
  const bob = await app.openSession("bob", info);
  await assert.rejects(bob.listParts?.("/b/obj.bin", up.id) ?? Promise.reject(), { code: "NOT_FOUND" });
  const listed = await s.listParts?.("/b/obj.bin", up.id);
  assert.deepEqual(
    listed?.parts.map((p) => [p.partNumber, p.size, p.etag]),
    [
      [1, a.length, "etag1"],
      [2, b.length, "etag2"],
    ],
  );
  await assert.rejects(s.completeMultipart?.("/b/obj.bin", up.id, [2, 1], { etag: "x-2" }) ?? Promise.reject(), {
    code: "INVALID_INPUT",
  });
  const st = await s.completeMultipart?.("/b/obj.bin", up.id, [1, 2], { etag: "abc-2" });
  assert.equal(st?.size, a.length + b.length);
  assert.equal((await s.stat("/b/obj.bin")).object?.etag, "abc-2");
  assert.deepEqual(await get(s, "/b/obj.bin"), Buffer.concat([a, b]));
  assert.equal(await blobs(), start + 2, "the parts' containers are the object's pieces (nothing re-encrypted)");
  assert.deepEqual(await s.listMultipart?.("/b"), []);
});

it("expire() removes an abandoned upload and every part blob, and gives the parts' bytes back to the quota", async () => {
  const start = await blobs();
  const used = async () => (await s.quota()).usedBytes;
  const usedBefore = await used();
  const up = await s.createMultipart?.("/b/obj.bin", {});
  assert.ok(up);
  await part(up.id, 1, randomBytes(1000));
  await part(up.id, 1, randomBytes(1000)); // replaced: the first blob goes at once
  await part(up.id, 2, randomBytes(1000));
  assert.equal(await blobs(), start + 2);
  assert.equal(await used(), usedBefore + 2000, "the staged parts, charged once each");
  assert.equal(await app.vfs.multipart.expire(up.initiated), 0, "not older than the cut-off");
  assert.equal(await app.vfs.multipart.expire(Date.now() + 1), 1);
  assert.equal(await blobs(), start);
  assert.equal(await used(), usedBefore);
  assert.deepEqual(await s.listMultipart?.("/b"), []);
  await assert.rejects(s.uploadPart?.("/b/obj.bin", up.id, 3) ?? Promise.reject(), { code: "NOT_FOUND" });
});
