// The BlobStore contract against every backend: local disk, S3 on s3rver (an npm S3 implementation, multipart) and
// S3 on atrest's own S3 door (single PutObject: the door has no multipart yet, so blobs stay under one part there).
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readdirSync, statfsSync } from "node:fs";
import { rm } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { CreateBucketCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import { pageOffset } from "../../src/crypto/gcm-native.ts";
import type { BlobStore } from "../../src/store/blobs.ts";
import { DIRECT_FROM_BYTES } from "../../src/store/direct-io.ts";
import { LocalBlobStore } from "../../src/store/local-blobs.ts";
import { S3BlobStore } from "../../src/store/s3-blobs.ts";
import { tempDir } from "../helpers/atrest.ts";
import { type S3Server, startS3 } from "../helpers/s3.ts";
import { type RunningS3rver, startS3rver } from "../helpers/s3rver.ts";

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

async function readAll(store: BlobStore, id: string): Promise<Buffer> {
  const r = await store.open(id);
  try {
    return await r.read(0, r.size);
  } finally {
    await r.close();
  }
}

async function put(store: BlobStore, data: Buffer, chunk = 64 * 1024): Promise<string> {
  const w = await store.create();
  for (let at = 0; at < data.length; at += chunk) await w.write([data.subarray(at, at + chunk)]);
  await w.commit();
  return w.id;
}

interface Backend {
  name: string;
  store: () => BlobStore;
  /** Largest blob the backend takes here (atrest's door: one PutObject). */
  large: number;
  /** Multipart uploads visible, for the abort check; undefined where the server cannot list them. */
  objectCount?: () => Promise<number>;
}

function blobContract(b: Backend): void {
  describe(`blob store contract: ${b.name}`, () => {
    it("makes a blob visible only after commit; reads any range", async () => {
      const s = b.store();
      const data = randomBytes(300_000);
      const w = await s.create();
      await w.write([data.subarray(0, 1000), data.subarray(1000)]);
      assert.equal(w.length, data.length);
      await assert.rejects(s.open(w.id), { code: "NOT_FOUND" });
      await w.commit();
      const r = await s.open(w.id);
      assert.equal(r.size, data.length);
      for (const [at, n] of [
        [0, 10],
        [123_456, 70_000],
        [299_990, 100],
        [5, 0],
      ] as const) {
        assert.deepEqual(await r.read(at, n), data.subarray(at, Math.min(data.length, at + n)));
      }
      const into = Buffer.alloc(4096);
      assert.equal(await r.readInto(296_000, into), 4000);
      assert.deepEqual(into.subarray(0, 4000), data.subarray(296_000));
      await r.close();
    });

    it(`streams a large blob (${b.large / MiB} MiB in 64 KiB writes) and reads it back whole and sequentially`, async () => {
      const s = b.store();
      const data = randomBytes(b.large);
      const id = await put(s, data);
      assert.equal(sha(await readAll(s, id)), sha(data));
      const r = await s.open(id);
      const parts: Buffer[] = [];
      for (let at = 0; at < r.size; at += 65_536 + 28) parts.push(await r.read(at, 65_536 + 28));
      await r.close();
      assert.equal(sha(Buffer.concat(parts)), sha(data));
    });

    it("resumes: a new blob starts with a prefix of an old one, which stays as it was", async () => {
      const s = b.store();
      const data = randomBytes(b.large);
      const src = await put(s, data);
      for (const keep of [40_000, Math.floor(b.large * 0.75)]) {
        const w = await s.create({ id: src, length: keep });
        assert.equal(w.length, keep);
        await w.write([Buffer.from("tail")]);
        await w.commit();
        assert.equal(sha(await readAll(s, w.id)), sha(Buffer.concat([data.subarray(0, keep), Buffer.from("tail")])));
      }
      assert.equal(sha(await readAll(s, src)), sha(data));
    });

    it("abort leaves nothing; remove deletes; sweep keeps what is referenced", async () => {
      const s = b.store();
      const w = await s.create();
      await w.write([randomBytes(Math.min(b.large, 12 * MiB))]);
      await w.abort();
      await assert.rejects(s.open(w.id), { code: "NOT_FOUND" });
      const keep = await put(s, Buffer.from("keep"));
      const orphan = await put(s, Buffer.from("orphan"));
      const gone = await put(s, Buffer.from("gone"));
      await s.remove(gone);
      await assert.rejects(s.open(gone), { code: "NOT_FOUND" });
      const swept = await s.sweep(new Set([keep]));
      assert.ok(swept.orphans >= 1, JSON.stringify(swept));
      await assert.rejects(s.open(orphan), { code: "NOT_FOUND" });
      assert.equal((await readAll(s, keep)).toString(), "keep");
      if (b.objectCount) assert.equal(await b.objectCount(), 1);
    });
  });
}

const dirs: string[] = [];
after(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

let local: LocalBlobStore;
before(async () => {
  const dir = await tempDir();
  dirs.push(dir);
  local = new LocalBlobStore(dir);
  await local.init();
});
blobContract({ name: "local disk", store: () => local, large: 20 * MiB });

describe("local disk readers (plain descriptors)", () => {
  const openFds = () => readdirSync("/proc/self/fd").length;

  it("close waits for reads in flight, a read after close is refused, and no descriptor is left open", async () => {
    const data = randomBytes(3 * MiB);
    const id = await put(local, data);
    await new Promise((r) => setTimeout(r, 100)); // the shard directory's fsync (after commit) lets go of its descriptor
    const before = openFds();
    const readers = await Promise.all(Array.from({ length: 50 }, () => local.open(id)));
    assert.ok(openFds() >= before + 50);
    for (const r of readers) {
      // a read still running when close is called completes with the right bytes before the descriptor goes
      const pending = r.read(MiB, 2 * MiB);
      const closing = r.close();
      assert.equal(sha(await pending), sha(data.subarray(MiB)));
      await closing;
      await assert.rejects(r.read(0, 10), /read after close/);
      await r.close(); // twice is harmless
    }
    assert.ok(openFds() <= before, `${openFds()} descriptors open, ${before} before`);
    await assert.rejects(local.open("0".repeat(32)), { code: "NOT_FOUND" });
    assert.ok(openFds() <= before);
  });
});

describe("S3 backends", () => {
  let s3rver: RunningS3rver;
  let door: S3Server;
  let onS3rver: S3BlobStore;
  let onDoor: S3BlobStore;
  before(async () => {
    s3rver = await startS3rver(["atrest-blobs"]);
    dirs.push(s3rver.dir);
    // small parts so that the multipart path (and part copy's fallback) is exercised without large test data
    onS3rver = new S3BlobStore({
      url: "s3://atrest-blobs/node-blobs/",
      endpoint: s3rver.endpoint,
      credentials: s3rver.credentials,
      partSize: 5 * MiB,
      staleMs: 0,
    });
    await onS3rver.init();
    door = await startS3("atrest-s3door-blobs-");
    dirs.push(door.dir);
    const user = door.users[0];
    assert.ok(user);
    await door.client().send(new CreateBucketCommand({ Bucket: "blobs" }));
    onDoor = new S3BlobStore({
      url: "s3://blobs/p",
      endpoint: door.endpoint,
      credentials: { accessKeyId: user.id, secretAccessKey: user.secret },
      partSize: 16 * MiB,
      staleMs: 0,
    });
    await onDoor.init();
  });
  after(async () => {
    await onS3rver?.close();
    await onDoor?.close();
    await s3rver?.close();
    await door?.server.stop();
  });

  blobContract({
    name: "S3 on s3rver (multipart)",
    store: () => onS3rver,
    large: 20 * MiB,
    objectCount: async () =>
      (await onS3rver.client.send(new ListObjectsV2Command({ Bucket: "atrest-blobs", Prefix: "node-blobs/" })))
        .KeyCount ?? 0,
  });
  blobContract({ name: "S3 on atrest's own S3 door", store: () => onDoor, large: 6 * MiB });

  it("refuses a bucket it cannot reach, naming it", async () => {
    const bad = new S3BlobStore({
      url: "s3://no-such-bucket/x",
      endpoint: s3rver.endpoint,
      credentials: s3rver.credentials,
    });
    await assert.rejects(bad.init(), /no-such-bucket/);
    await bad.close();
  });
});

const TMPFS_MAGIC = 0x01021994;

describe("local disk: large blobs are written around the page cache (O_DIRECT)", () => {
  // fincore (util-linux) counts a file's pages in the page cache: a blob past DIRECT_FROM_BYTES written directly
  // leaves only its buffered start and last partial block there
  const cached = async (id: string, dir: string) => {
    const { execFileSync } = await import("node:child_process");
    const path = `${dir}/blobs/${id.slice(0, 2)}/${id}`;
    return Number(execFileSync("fincore", ["--bytes", "--noheadings", "--output", "RES", path]).toString().trim());
  };
  it("writes unaligned batches, resumes at an unaligned offset, and reads back every byte", async (t) => {
    if (pageOffset(Buffer.alloc(1)) === undefined) return t.skip("atrest's native binding is not built");
    const dir = await tempDir();
    dirs.push(dir);
    const s = new LocalBlobStore(dir);
    await s.init();
    // sealed batches are 16 x (64 KiB + 28) bytes; a header of 321 bytes first, a short final segment last
    const data = randomBytes(321 + 24 * (16 * (65_536 + 28)) + 777);
    const w = await s.create();
    await w.write([data.subarray(0, 321), data.subarray(321, 321 + 16 * 65_564)]);
    for (let at = 321 + 16 * 65_564; at < data.length; at += 16 * 65_564) {
      await w.write([
        data.subarray(at, Math.min(data.length, at + 8 * 65_564)),
        data.subarray(at + 8 * 65_564, at + 16 * 65_564),
      ]);
    }
    assert.equal(w.length, data.length);
    await w.commit();
    // what stays cached is what went through the page cache: the blob's first DIRECT_FROM_BYTES and its last block;
    // on tmpfs (a TMPDIR there) every file lives in the page cache, O_DIRECT or not (refused before Linux 6.6)
    const inCache = await cached(w.id, dir);
    if (statfsSync(dir).type !== TMPFS_MAGIC) {
      assert.ok(inCache <= DIRECT_FROM_BYTES + 2 * 4096, `${inCache} bytes of ${data.length} in the page cache`);
    }
    assert.equal(sha(await readAll(s, w.id)), sha(data));
    // resume from an unaligned length past the threshold: the partial block is read back and rewritten whole
    const keep = 20 * MiB + 1234;
    const r = await s.create({ id: w.id, length: keep });
    const tail = randomBytes(3 * MiB + 5);
    await r.write([tail.subarray(0, 100)]);
    await r.write([tail.subarray(100)]);
    await r.commit();
    assert.equal(sha(await readAll(s, r.id)), sha(Buffer.concat([data.subarray(0, keep), tail])));
    assert.equal(sha(await readAll(s, w.id)), sha(data));
    // an aborted direct upload leaves nothing
    const a = await s.create();
    await a.write([randomBytes(6 * MiB + 3)]);
    await a.abort();
    await assert.rejects(s.open(a.id), { code: "NOT_FOUND" });
  });
});
