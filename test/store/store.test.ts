import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, before, describe, it } from "node:test";
import { LocalBlobStore } from "../../src/store/local-blobs.ts";
import { migrations } from "../../src/store/sql/migrations.ts";
import { openSqliteStore } from "../../src/store/sqlite/index.ts";
import { tempDir } from "../helpers/atrest.ts";

describe("local blob store", () => {
  let dir: string;
  let blobs: LocalBlobStore;
  before(async () => {
    dir = await tempDir();
    blobs = new LocalBlobStore(dir);
    await blobs.init();
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("makes a blob visible only after commit, under a random id", async () => {
    const w = await blobs.create();
    assert.match(w.id, /^[0-9a-f]{32}$/);
    await w.write([Buffer.from("abc"), Buffer.from("def")]);
    await assert.rejects(blobs.open(w.id), { code: "NOT_FOUND" });
    await w.commit();
    const r = await blobs.open(w.id);
    assert.equal(r.size, 6);
    assert.equal((await r.read(2, 3)).toString(), "cde");
    assert.equal((await r.read(4, 100)).toString(), "ef");
    await r.close();
  });

  it("writes a blob under its final name at once, and refuses to commit one removed meanwhile", async () => {
    const w = await blobs.create();
    await w.write([randomBytes(5000), randomBytes(200_000)]);
    const path = join(dir, "blobs", w.id.slice(0, 2), w.id);
    assert.equal((await stat(path)).size, 205_000, "written in place, not in tmp/");
    assert.deepEqual(await readdir(join(dir, "tmp")), []);
    // what another process's start does to a file no metadata references yet
    await rm(path);
    await assert.rejects(w.commit(), /removed while being written/);
    await w.abort();
    await assert.rejects(blobs.open(w.id), { code: "NOT_FOUND" });
  });

  it("copies a prefix for resume without touching the source", async () => {
    const src = await blobs.create();
    const data = randomBytes(100_000);
    await src.write([data]);
    await src.commit();
    const w = await blobs.create({ id: src.id, length: 40_000 });
    assert.equal(w.length, 40_000);
    await w.write([Buffer.from("tail")]);
    await w.commit();
    const r = await blobs.open(w.id);
    const got = await r.read(0, r.size);
    await r.close();
    assert.deepEqual(got, Buffer.concat([data.subarray(0, 40_000), Buffer.from("tail")]));
    const s = await blobs.open(src.id);
    assert.equal(s.size, 100_000);
    await s.close();
  });

  it("sweeps unfinished temp files and orphans, keeps referenced blobs", async () => {
    const keep = await blobs.create();
    await keep.write([Buffer.from("keep")]);
    await keep.commit();
    const orphan = await blobs.create();
    await orphan.write([Buffer.from("orphan")]);
    await orphan.commit();
    const unfinished = await blobs.create();
    await unfinished.write([Buffer.from("half")]);
    const swept = await blobs.sweep(new Set([keep.id]));
    assert.equal(swept.temp, 1);
    assert.ok(swept.orphans >= 1);
    assert.deepEqual(await readdir(join(dir, "tmp")), []);
    await assert.rejects(blobs.open(orphan.id), { code: "NOT_FOUND" });
    assert.equal((await stat(join(dir, "blobs", keep.id.slice(0, 2), keep.id))).size, 4);
  });

  it("refuses ids that are not blob ids (no path tricks)", async () => {
    await assert.rejects(blobs.open("../meta.db"), { code: "NOT_FOUND" });
  });
});

describe("sqlite metadata store", () => {
  let dir: string;
  before(async () => {
    dir = await tempDir();
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("migrates to the latest schema version and is idempotent", async () => {
    const path = join(dir, "meta.db");
    await openSqliteStore(path).close();
    await openSqliteStore(path).close();
    const db = new DatabaseSync(path);
    assert.equal(
      Number((db.prepare("PRAGMA user_version").get() as { user_version: number }).user_version),
      migrations.length,
    );
    db.close();
  });

  it("refuses a database from a newer atrest", async () => {
    const path = join(dir, "newer.db");
    const db = new DatabaseSync(path);
    db.exec(`PRAGMA user_version = ${migrations.length + 1}`);
    db.close();
    assert.throws(() => openSqliteStore(path), /newer than this atrest/);
  });

  it("rolls back a failed transaction", async () => {
    const store = openSqliteStore(join(dir, "tx.db"));
    await assert.rejects(
      store.transaction(async (tx) => {
        await tx.setSetting("k", Buffer.from("v"));
        throw new Error("boom");
      }),
      /boom/,
    );
    assert.equal(await store.getSetting("k"), undefined);
    await store.transaction((tx) => tx.setSetting("k", Buffer.from("v2")));
    assert.equal((await store.getSetting("k"))?.toString(), "v2");
    await store.close();
  });
});
