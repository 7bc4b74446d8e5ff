import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { App, initData } from "../../src/app.ts";
import type { VfsSession } from "../../src/vfs/types.ts";
import { get, put } from "../helpers/vfs.ts";

async function* walk(dir: string): AsyncGenerator<string> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* walk(p);
    else yield p;
  }
}

describe("vfs over sqlite + local blobs + embedded KMS", () => {
  let dir: string;
  let app: App;
  let s: VfsSession;
  const info = { protocol: "cli" as const, sessionId: "t1" };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "atrest-vfs-"));
    await initData(dir);
    app = await App.open(dir);
    await app.addUser({ name: "alice", password: "correct horse" });
    s = await app.openSession("alice", info);
  });
  after(async () => {
    await app.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("round-trips files of awkward sizes and lists them", async () => {
    for (const size of [0, 1, 65535, 65536, 65537, 3 * 1024 * 1024 + 17]) {
      const data = randomBytes(size);
      await put(s, `/f${size}.bin`, data);
      assert.deepEqual(await get(s, `/f${size}.bin`), data, `size ${size}`);
      assert.equal((await s.stat(`/f${size}.bin`)).size, size);
    }
    const names = (await s.list("/")).map((e) => e.name);
    assert.deepEqual(names, ["f0.bin", "f1.bin", "f3145745.bin", "f65535.bin", "f65536.bin", "f65537.bin"]);
  });

  it("sorts a folder by name a page at a time, and a rename or removal shows at once (the name cache is per sealed name)", async () => {
    await s.mkdir("/sorted");
    for (const n of ["c", "a", "e", "b", "d"]) await put(s, `/sorted/${n}`, Buffer.from(n));
    const page = async (after?: string, limit = 2) => {
      const list = s.listSorted?.bind(s);
      assert.ok(list, "the vfs session sorts by name itself");
      const r = await list("/sorted", after, limit);
      return [r.entries.map((e) => `${e.name}:${e.stat.size}`), r.more] as const;
    };
    assert.deepEqual(await page(), [["a:1", "b:1"], true]);
    assert.deepEqual(await page("b"), [["c:1", "d:1"], true]);
    assert.deepEqual(await page("d"), [["e:1"], false]);
    await s.rename("/sorted/a", "/sorted/f", false);
    await s.remove("/sorted/c");
    assert.deepEqual(await page(undefined, 10), [["b:1", "d:1", "e:1", "f:1"], false]);
    // the sorted folder is reused while the store's digest of its names holds; a child replaced by another of the
    // same name keeps the digest (same name MAC) but not its id: seen, and sorted again
    assert.deepEqual(await page("b", 2), [["d:1", "e:1"], true]);
    await s.remove("/sorted/d");
    await put(s, "/sorted/d", Buffer.from("dd"));
    assert.deepEqual(await page("b", 2), [["d:2", "e:1"], true]);
    await s.remove("/sorted/e");
    await s.mkdir("/sorted/e");
    assert.deepEqual((await page("d", 1))[0], ["e:0"]);
    await put(s, "/sorted/a", Buffer.from("aaa"));
    assert.deepEqual(await page(undefined, 10), [["a:3", "b:1", "d:2", "e:0", "f:1"], false]);
    assert.deepEqual(await page("a", 10), [["b:1", "d:2", "e:0", "f:1"], false]);
    assert.deepEqual(await page("c", 10), [["d:2", "e:0", "f:1"], false], "a cursor name that is gone");
    assert.deepEqual(await page("f", 10), [[], false]);
  });

  it("a write with parents: its folders removed before the commit (a racing S3 delete) are made again; without, it fails", async () => {
    await s.mkdir("/p");
    await s.mkdir("/p/q");
    const w = await s.openWrite("/p/q/k", { truncate: true, parents: true });
    await w.write(0, Buffer.from("kept"));
    const plain = await s.openWrite("/p/q/plain", { truncate: true });
    await plain.write(0, Buffer.from("lost"));
    // the last object under p/q went, and with it the folders (as the S3 door prunes them)
    await s.rmdir("/p/q");
    await s.rmdir("/p");
    await assert.rejects(plain.close(), /NOT_FOUND|directory/);
    await w.close();
    assert.deepEqual(await get(s, "/p/q/k"), Buffer.from("kept"));
    assert.deepEqual(
      (await s.list("/p/q")).map((e) => e.name),
      ["k"],
    );
    // opened after the folders went: made again at open
    await s.remove("/p/q/k");
    await s.rmdir("/p/q");
    const again = await s.openWrite("/p/q/r", { truncate: true, parents: true });
    await again.write(0, Buffer.from("again"));
    await again.close();
    assert.deepEqual(await get(s, "/p/q/r"), Buffer.from("again"));
  });

  it("reads at arbitrary offsets", async () => {
    const data = randomBytes(500_000);
    await put(s, "/random.bin", data);
    const h = await s.openRead("/random.bin");
    for (const [o, n] of [
      [0, 10],
      [65530, 20],
      [131071, 70000],
      [499_990, 100],
      [600_000, 10],
    ]) {
      assert.deepEqual(await h.read(o, n), data.subarray(o, o + n));
    }
    await h.close();
  });

  it("resumes an upload, appending to the stored version", async () => {
    const data = randomBytes(200_000);
    await put(s, "/resume.bin", data.subarray(0, 70_001));
    const h = await s.openWrite("/resume.bin", { truncate: false });
    assert.equal(h.size, 70_001);
    await assert.rejects(h.write(5, Buffer.from("x")), { code: "UNSUPPORTED" });
    await h.write(70_001, data.subarray(70_001));
    await h.close();
    assert.deepEqual(await get(s, "/resume.bin"), data);
  });

  it("keeps S3 object metadata sealed with the version: stat/list show it, setAttrs keeps it, resume keeps the headers only, a new version starts without", async () => {
    const object = {
      etag: "0123456789abcdef0123456789abcdef",
      headers: { "content-type": "text/x-meta", "x-amz-meta-k": "v" },
    };
    const h = await s.openWrite("/meta.bin", { truncate: true });
    await h.write(0, Buffer.from("hello"));
    const st = await h.close(undefined, object);
    assert.deepEqual(st.object, object);
    assert.deepEqual((await s.stat("/meta.bin")).object, object);
    assert.deepEqual((await s.list("/")).find((e) => e.name === "meta.bin")?.stat.object, object);
    await s.setAttrs("/meta.bin", { mtime: 1_700_000_000_000, mode: 0o600 });
    assert.deepEqual((await s.stat("/meta.bin")).object, object);
    const r = await s.openWrite("/meta.bin", { truncate: false });
    await r.write(5, Buffer.from(" world"));
    await r.close();
    assert.deepEqual((await s.stat("/meta.bin")).object, { headers: object.headers });
    await put(s, "/meta.bin", Buffer.from("new"));
    assert.equal((await s.stat("/meta.bin")).object, undefined);
    assert.equal((await s.stat("/resume.bin")).object, undefined);
  });

  it("keeps a partial upload when the connection drops, and discards it on request", async () => {
    const h = await s.openWrite("/partial.bin", { truncate: true });
    await h.write(0, Buffer.alloc(1000, 7));
    await h.abort(true);
    assert.equal((await s.stat("/partial.bin")).size, 1000);
    const h2 = await s.openWrite("/gone.bin", { truncate: true });
    await h2.write(0, Buffer.alloc(10, 1));
    await h2.abort(false);
    await assert.rejects(s.stat("/gone.bin"), { code: "NOT_FOUND" });
  });

  it("renames, moves, removes and refuses the dangerous cases", async () => {
    await s.mkdir("/a");
    await s.mkdir("/a/b");
    await put(s, "/a/x.txt", Buffer.from("hello"));
    await s.rename("/a/x.txt", "/a/b/y.txt", false);
    assert.equal((await get(s, "/a/b/y.txt")).toString(), "hello");
    await put(s, "/a/z.txt", Buffer.from("zzz"));
    await assert.rejects(s.rename("/a/z.txt", "/a/b/y.txt", false), { code: "EXISTS" });
    await s.rename("/a/z.txt", "/a/b/y.txt", true);
    assert.equal((await get(s, "/a/b/y.txt")).toString(), "zzz");
    await assert.rejects(s.rename("/a", "/a/b/c", false), { code: "INVALID_INPUT" });
    await assert.rejects(s.rmdir("/a"), { code: "NOT_EMPTY" });
    await s.remove("/a/b/y.txt");
    await s.rmdir("/a/b");
    await s.rmdir("/a");
    await assert.rejects(s.stat("/a"), { code: "NOT_FOUND" });
    await assert.rejects(s.mkdir("/f1.bin"), { code: "EXISTS" });
  });

  it("keeps users inside their home and rejects bad names", async () => {
    assert.equal((await s.stat("/../../..")).kind, "dir");
    await put(s, "/../../escape.txt", Buffer.from("x"));
    assert.equal((await get(s, "/escape.txt")).toString(), "x");
    await assert.rejects(s.stat("/bad\0name"), { code: "INVALID_PATH" });
    await assert.rejects(s.mkdir(`/${"n".repeat(300)}`), { code: "INVALID_PATH" });
  });

  it("enforces per-path permissions", async () => {
    await app.addUser({
      name: "reader",
      password: "pw-reader",
      home: "/alice",
      permissions: { "/": ["list", "download"], "/drop": ["list", "upload"] },
    });
    const r = await app.openSession("reader", info);
    assert.ok((await r.list("/")).length > 0);
    assert.equal((await get(r, "/escape.txt")).toString(), "x");
    await assert.rejects(put(r, "/new.txt", Buffer.from("no")), { code: "PERMISSION_DENIED" });
    await assert.rejects(r.remove("/escape.txt"), { code: "PERMISSION_DENIED" });
    await s.mkdir("/drop");
    await put(r, "/drop/in.txt", Buffer.from("ok"));
    await assert.rejects(put(r, "/drop/in.txt", Buffer.from("again")), { code: "PERMISSION_DENIED" });
    await assert.rejects(r.openRead("/drop/in.txt"), { code: "PERMISSION_DENIED" });
  });

  it("enforces byte and file quotas", async () => {
    await app.addUser({ name: "small", password: "pw-small", quotaBytes: 100_000, quotaFiles: 2 });
    const q = await app.openSession("small", info);
    await put(q, "/one", randomBytes(60_000));
    await assert.rejects(put(q, "/two", randomBytes(60_000)), { code: "QUOTA_EXCEEDED" });
    await put(q, "/one", randomBytes(90_000));
    await put(q, "/two", randomBytes(10));
    await assert.rejects(put(q, "/three", randomBytes(1)), { code: "QUOTA_EXCEEDED" });
    const info2 = await q.quota();
    assert.equal(info2.usedFiles, 2);
    assert.equal(info2.usedBytes, 90_010);
    await q.remove("/one");
    assert.equal((await q.quota()).usedBytes, 10);
  });

  it("survives a key rotation between uploads", async () => {
    await put(s, "/before.txt", Buffer.from("before rotation"));
    await app.keys.rotateKey("default");
    await put(s, "/after.txt", Buffer.from("after rotation"));
    assert.equal((await get(s, "/before.txt")).toString(), "before rotation");
    assert.equal((await get(s, "/after.txt")).toString(), "after rotation");
  });

  it("leaves neither plaintext nor file names anywhere in the data dir", async () => {
    const canary = Buffer.from(`CANARY-${randomBytes(8).toString("hex")}`);
    const name = `secret-name-${randomBytes(4).toString("hex")}.txt`;
    await put(s, `/${name}`, Buffer.concat([canary, Buffer.alloc(100_000, 0x41), canary]));
    await app.close();
    for await (const file of walk(dir)) {
      const bytes = await readFile(file);
      assert.equal(bytes.indexOf(canary), -1, `plaintext found in ${file}`);
      assert.equal(bytes.indexOf(Buffer.from(name)), -1, `file name found in ${file}`);
      assert.equal(bytes.indexOf(Buffer.from(name, "utf16le")), -1);
    }
    assert.ok((await stat(join(dir, "blobs"))).isDirectory());
    app = await App.open(dir);
    s = await app.openSession("alice", info);
  });

  it("detects a tampered blob and returns no plaintext", async () => {
    const data = randomBytes(200_000);
    await put(s, "/tamper.bin", data);
    const blobs: string[] = [];
    for await (const f of walk(join(dir, "blobs"))) blobs.push(f);
    // Flip one byte in the middle of every blob: every read must fail with an integrity error, never return data.
    const { open } = await import("node:fs/promises");
    for (const f of blobs) {
      const fh = await open(f, "r+");
      const { size } = await fh.stat();
      const b = Buffer.alloc(1);
      await fh.read(b, 0, 1, Math.floor(size / 2));
      b[0] ^= 1;
      await fh.write(b, 0, 1, Math.floor(size / 2));
      await fh.close();
    }
    await assert.rejects(get(s, "/tamper.bin"), { code: "INTEGRITY" });
  });
});
