// Pieced files (a version whose content is a sequence of containers: an S3 multipart object kept as its staged parts,
// store FilePiece): Complete takes the parts over without re-encrypting; every door's read (the vfs session, as SFTP
// and HTTPS use it) stitches them, ranges included; the startup sweep keeps the pieces; overwrite, delete and
// rename-over remove every piece; reencrypt makes one container of them; rewrap rewraps every piece's header;
// a reordered manifest row fails the read; a PGP-free folder is where this applies.
import "../keys/threadpool.ts";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { after, before, it } from "node:test";
import { HEADER_PROBE_BYTES, parseHeader } from "../../src/format/header.ts";
import { filesAtStake } from "../../src/keys/destroy-guard.ts";
import { reencrypt } from "../../src/keys/reencrypt.ts";
import { rewrap } from "../../src/keys/rewrap.ts";
import { ROOT_ID } from "../../src/vfs/tree.ts";
import type { VfsSession } from "../../src/vfs/types.ts";
import { type Fixture, fixture, get, put } from "../keys/helpers.ts";

const info = { protocol: "s3" as const, sessionId: "pieced" };
let f: Fixture;
let s: VfsSession;

async function blobFiles(): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (e.isDirectory()) await walk(join(d, e.name));
      else out.push(e.name);
    }
  };
  await walk(join(f.dir, "blobs"));
  return out;
}

/** A completed multipart object at `path` from `parts` (part i + 1 = parts[i]). */
async function multipart(path: string, parts: Buffer[]): Promise<void> {
  const up = await s.createMultipart?.(path, {});
  assert.ok(up);
  for (let i = 0; i < parts.length; i++) {
    const p = await s.uploadPart?.(path, up.id, i + 1);
    assert.ok(p);
    await p.write(parts[i] as Buffer);
    await p.close(`e${i + 1}`);
  }
  await s.completeMultipart?.(
    path,
    up.id,
    parts.map((_, i) => i + 1),
    { etag: `x-${parts.length}` },
  );
}

/** The node of the session's `path` (the session's paths are under the user's home). */
function node(path: string) {
  const global = (s as unknown as { globalPath(p: string): string }).globalPath(path);
  return f.app.vfs.tree.resolve(ROOT_ID, global);
}

async function range(path: string, offset: number, length: number): Promise<Buffer> {
  const h = await s.openRead(path);
  try {
    return await h.read(offset, length);
  } finally {
    await h.close();
  }
}

before(async () => {
  f = await fixture();
  await f.app.addUser({ name: "alice", password: "correct horse" });
  s = await f.app.openSession("alice", info);
  await s.mkdir("/b");
});
after(async () => {
  await s.close();
  await f.close();
});

it("Complete keeps the parts as the object's pieces: reads, ranges across part edges, sweep, overwrite", async () => {
  const start = (await blobFiles()).length;
  const parts = [randomBytes(200_000), randomBytes(70_000), randomBytes(1), randomBytes(131_072)];
  const whole = Buffer.concat(parts);
  await multipart("/b/a.bin", parts);
  assert.equal((await blobFiles()).length, start + 4, "one blob per part, no re-encrypted copy");
  assert.equal((await s.stat("/b/a.bin")).size, whole.length);
  assert.equal((await s.stat("/b/a.bin")).object?.etag, "x-4");
  assert.deepEqual(await get(s, "/b/a.bin"), whole);
  for (const [o, n] of [
    [199_990, 20],
    [0, whole.length],
    [269_999, 3],
    [270_000, 1],
    [270_001, 131_072],
    [whole.length - 5, 100],
  ] as const) {
    assert.deepEqual(await range("/b/a.bin", o, n), whole.subarray(o, o + n), `range ${o}+${n}`);
  }
  // the startup sweep keeps every piece (they are in the store's file_pieces, not in a pending job)
  await s.close();
  await f.reopen();
  s = await f.app.openSession("alice", info);
  assert.equal((await blobFiles()).length, start + 4);
  assert.deepEqual(await get(s, "/b/a.bin"), whole);
  assert.equal((await s.quota()).usedBytes, whole.length, "charged once, as the object");
  // appending to it (SFTP resume) is refused; overwriting it removes every piece
  await assert.rejects(s.openWrite("/b/a.bin", { truncate: false }), { code: "UNSUPPORTED" });
  await put(s, "/b/a.bin", Buffer.from("plain now"));
  assert.equal((await blobFiles()).length, start + 1);
  assert.deepEqual(await get(s, "/b/a.bin"), Buffer.from("plain now"));
});

it("delete and rename-over remove every piece; a multipart object overwriting one replaces its pieces", async () => {
  const start = (await blobFiles()).length;
  await multipart("/b/d.bin", [randomBytes(100_000), randomBytes(100)]);
  await multipart("/b/d.bin", [randomBytes(70_000), randomBytes(70_000), randomBytes(5)]);
  assert.equal((await blobFiles()).length, start + 3, "the first object's two pieces went");
  await s.remove("/b/d.bin");
  assert.equal((await blobFiles()).length, start);
  await multipart("/b/e.bin", [randomBytes(90_000), randomBytes(10)]);
  await put(s, "/b/f.bin", Buffer.from("f"));
  await s.rename("/b/f.bin", "/b/e.bin", true);
  assert.equal((await blobFiles()).length, start + 1);
  assert.deepEqual(await get(s, "/b/e.bin"), Buffer.from("f"));
  await s.remove("/b/e.bin");
});

it("a manifest row swapped in the store fails the read (the order is sealed in the attributes)", async () => {
  const parts = [randomBytes(70_000), randomBytes(70_000)];
  await multipart("/b/t.bin", parts);
  const cid = (await node("/b/t.bin")).contentId as string;
  const pieces = await f.app.store.filePieces(cid);
  assert.equal(pieces.length, 2);
  await f.app.store.transaction(async (tx) => {
    await tx.deleteFilePieces(cid);
    await tx.insertFilePieces(cid, [pieces[1], pieces[0]] as typeof pieces);
  });
  await assert.rejects(get(s, "/b/t.bin"), { code: "INTEGRITY" });
  // the blobs swapped under the right content ids: the key commitment fails
  await f.app.store.transaction(async (tx) => {
    await tx.deleteFilePieces(cid);
    const [a, b] = pieces as [(typeof pieces)[0], (typeof pieces)[0]];
    await tx.insertFilePieces(cid, [
      { blobId: b.blobId, contentId: a.contentId },
      { blobId: a.blobId, contentId: b.contentId },
    ]);
  });
  await assert.rejects(get(s, "/b/t.bin"), { code: "INTEGRITY" });
  await f.app.store.transaction(async (tx) => {
    await tx.deleteFilePieces(cid);
    await tx.insertFilePieces(cid, pieces);
  });
  assert.deepEqual(await get(s, "/b/t.bin"), Buffer.concat(parts));
  await s.remove("/b/t.bin");
});

it("rewrap rewraps every piece's header; reencrypt makes one container of the pieces", async () => {
  const parts = [randomBytes(100_000), randomBytes(100_000), randomBytes(3)];
  const whole = Buffer.concat(parts);
  await multipart("/b/k.bin", parts);
  await f.app.keys.rotateKey("default");
  await f.app.embeddedKms.setMinDecryptionVersion("default", 2);
  await assert.rejects(get(s, "/b/k.bin"), { code: "KEY_UNAVAILABLE" });
  const deps = { store: f.app.store, blobs: f.app.vfs.blobs, keys: f.app.keys, dir: f.app.paths.keys };
  const report = await rewrap(deps, { key: "default" });
  assert.equal(report.keys.find((k) => k.key === "default")?.failed, 0);
  const k = await node("/b/k.bin");
  assert.equal(k.keyRef, "kek:default:v2");
  for (const p of await f.app.store.filePieces(k.contentId as string)) {
    const blob = await f.app.vfs.blobs.open(p.blobId);
    const header = parseHeader(await blob.read(0, Math.min(blob.size, HEADER_PROBE_BYTES)));
    await blob.close();
    assert.equal(f.app.keys.keyRefOf(header.wrappedDek), "kek:default:v2");
  }
  assert.deepEqual(await get(s, "/b/k.bin"), whole);

  await f.app.keys.rotateKey("default");
  const before = (await blobFiles()).length;
  const r = await reencrypt({ ...deps, vfs: f.app.vfs }, { key: "default" });
  assert.equal(r.failed, 0);
  assert.equal((await blobFiles()).length, before - 2, "three pieces became one container");
  const after = await node("/b/k.bin");
  assert.deepEqual(await f.app.store.filePieces(after.contentId as string), []);
  assert.deepEqual(await get(s, "/b/k.bin"), whole);
});

it("parts made under two KEK versions (a rotation during the upload) become one container the destroy guard counts", async () => {
  const start = (await blobFiles()).length;
  const parts = [randomBytes(100_000), randomBytes(100_000)];
  const up = await s.createMultipart?.("/b/span.bin", {});
  assert.ok(up);
  for (let i = 0; i < parts.length; i++) {
    // part 1 under the current version, part 2 under the next one
    if (i === 1) await f.app.keys.rotateKey("default");
    const p = await s.uploadPart?.("/b/span.bin", up.id, i + 1);
    assert.ok(p);
    await p.write(parts[i] as Buffer);
    await p.close(`e${i + 1}`);
  }
  const current = (await f.app.keys.listKeys()).find((k) => k.name === "default")?.currentVersion as number;
  await s.completeMultipart?.("/b/span.bin", up.id, [1, 2], { etag: "x-2" });
  await f.app.keys.rotateKey("default");
  assert.deepEqual(await get(s, "/b/span.bin"), Buffer.concat(parts));
  // a node records one key ref: pieces under two versions would leave one of them uncounted (and unlisted by the
  // shred report), so destroying it would lose that piece with the guard's "nothing at stake"
  const n = await node("/b/span.bin");
  const refs = new Set<string>();
  for (const p of await f.app.store.filePieces(n.contentId as string)) {
    const blob = await f.app.vfs.blobs.open(p.blobId);
    refs.add(f.app.keys.keyRefOf(parseHeader(await blob.read(0, Math.min(blob.size, HEADER_PROBE_BYTES))).wrappedDek));
    await blob.close();
  }
  if (refs.size === 0 && n.blobId) {
    const blob = await f.app.vfs.blobs.open(n.blobId);
    refs.add(f.app.keys.keyRefOf(parseHeader(await blob.read(0, Math.min(blob.size, HEADER_PROBE_BYTES))).wrappedDek));
    await blob.close();
  }
  assert.deepEqual([...refs], [n.keyRef], "every piece is under the version the file records");
  const stake = await filesAtStake(
    {
      store: f.app.store,
      versionsOf: async (key) => (await f.app.keys.listKeys()).find((k) => k.name === key)?.versions ?? [],
    },
    "default",
    [current],
  );
  assert.ok(
    stake.files.some((c) => c.keyRef === `kek:default:v${current}`),
    `destroying v${current} counts the object: ${JSON.stringify(stake.files)}`,
  );
  assert.equal((await blobFiles()).length, start + 1, "the parts' blobs went with the Complete");
  await s.remove("/b/span.bin");
});

it("a read open across an overwrite gets the old version to the end; its pieces go when it closes", async () => {
  const start = (await blobFiles()).length;
  const parts = [randomBytes(100_000), randomBytes(100_000), randomBytes(100_000)];
  const whole = Buffer.concat(parts);
  await multipart("/b/r.bin", parts);
  const h = await s.openRead("/b/r.bin");
  const first = await h.read(0, 1000);
  await put(s, "/b/r.bin", Buffer.from("new"));
  assert.equal((await blobFiles()).length, start + 4, "the old pieces wait for the open reader");
  const rest = await h.read(1000, whole.length);
  assert.deepEqual(Buffer.concat([first, rest]), whole);
  await h.close();
  for (let i = 0; i < 50 && (await blobFiles()).length > start + 1; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal((await blobFiles()).length, start + 1);
  assert.deepEqual(await get(s, "/b/r.bin"), Buffer.from("new"));
});

it("a Range's end opens no piece past it; readView hands out views of each piece's windows", async () => {
  const parts = [randomBytes(100_000), randomBytes(100_000), randomBytes(100_000)];
  const whole = Buffer.concat(parts);
  await multipart("/b/v.bin", parts);
  const keys = f.app.keys; // the key manager itself (the fixture has no DEK cache): every unwrap reaches it
  const unwrap = keys.unwrap.bind(keys);
  let unwraps = 0;
  keys.unwrap = (...args: Parameters<typeof keys.unwrap>) => {
    unwraps++;
    return unwrap(...args);
  };
  try {
    const readPart0 = async (end?: number) => {
      unwraps = 0;
      const h = await s.openRead("/b/v.bin", end === undefined ? {} : { end });
      const got: Buffer[] = [];
      for (let o = 0; o < 100_000; o += 10_000) got.push(await h.read(o, 10_000));
      await h.close();
      assert.deepEqual(Buffer.concat(got), parts[0]);
      return unwraps;
    };
    assert.equal(await readPart0(), 2, "read on its own, the next part is opened ahead");
    assert.equal(await readPart0(100_000), 1, "a Range ending with part 1 unwraps part 1's key only");
  } finally {
    keys.unwrap = unwrap;
  }
  const h = await s.openRead("/b/v.bin");
  assert.ok(h.readView);
  const views: Buffer[] = [];
  for (let o = 0; o < h.size; ) {
    const v = await h.readView(o, 64 * 1024);
    assert.ok(v.data.length > 0);
    views.push(Buffer.from(v.data));
    v.release();
    o += v.data.length;
  }
  await h.close();
  assert.deepEqual(Buffer.concat(views), whole);
  await s.remove("/b/v.bin");
});
