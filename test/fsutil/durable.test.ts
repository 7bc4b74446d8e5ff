import assert from "node:assert/strict";
import { mkdirSync, readdirSync, readFileSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { App, initData } from "../../src/app.ts";
import {
  STALE_TEMP_MS,
  sweepTempFiles,
  writeDurable,
  writeFileDurable,
  writeFileDurableSync,
} from "../../src/fsutil/durable.ts";
import { alive } from "../../src/fsutil/process.ts";
import { removeDir, tempDir } from "../helpers/atrest.ts";

let dir: string;
before(async () => {
  dir = await tempDir("atrest-durable-");
});
after(() => removeDir(dir));

const mode = (path: string) => statSync(path).mode & 0o777;

describe("durable writes", () => {
  it("writes the content with mode 0600 and leaves no temp file", async () => {
    const path = join(dir, "a.json");
    assert.equal(await writeFileDurable(path, "one\n"), true);
    assert.equal(readFileSync(path, "utf8"), "one\n");
    assert.equal(mode(path), 0o600);
    assert.equal(writeFileDurableSync(path, Buffer.from("two\n"), { sync: false }), true);
    assert.equal(readFileSync(path, "utf8"), "two\n");
    assert.deepEqual(readdirSync(dir), ["a.json"]);
  });

  it("sets the mode asked for, replacing the old file's", async () => {
    const path = join(dir, "cert.pem");
    writeFileSync(path, "old", { mode: 0o600 });
    await writeFileDurable(path, "new", { mode: 0o644 });
    assert.equal(mode(path), 0o644);
    assert.equal(readFileSync(path, "utf8"), "new");
  });

  it("exclusive never replaces an existing file", async () => {
    const path = join(dir, "master.key");
    assert.equal(await writeFileDurable(path, "first", { exclusive: true }), true);
    assert.equal(await writeFileDurable(path, "second", { exclusive: true }), false);
    assert.equal(writeFileDurableSync(path, "third", { exclusive: true }), false);
    assert.equal(readFileSync(path, "utf8"), "first");
    assert.ok(!readdirSync(dir).some((n) => n.endsWith(".tmp")));
  });

  it("a failing writer leaves the old file and no temp file", async () => {
    const path = join(dir, "bundle");
    await writeFileDurable(path, "intact");
    await assert.rejects(
      writeDurable(path, async (fh) => {
        await fh.write("half");
        throw new Error("disk full");
      }),
      /disk full/,
    );
    assert.equal(readFileSync(path, "utf8"), "intact");
    assert.ok(!readdirSync(dir).some((n) => n.endsWith(".tmp")));
  });

  it("a missing directory fails without leaving anything", async () => {
    await assert.rejects(writeFileDurable(join(dir, "no", "such"), "x"), { code: "ENOENT" });
    assert.throws(() => writeFileDurableSync(join(dir, "no", "such"), "x"), { code: "ENOENT" });
  });

  it("streams several writes into one file", async () => {
    const path = join(dir, "streamed");
    await writeDurable(path, async (fh) => {
      await fh.write("a");
      await fh.write("b");
    });
    assert.equal(readFileSync(path, "utf8"), "ab");
  });
});

describe("alive", () => {
  it("knows this process and a pid that does not exist", () => {
    assert.equal(alive(process.pid), true);
    assert.equal(alive(2 ** 22 + 12345), false);
  });
});

describe("sweepTempFiles", () => {
  it("removes only stale temp files of durable writes, never a write in progress or anything else", async () => {
    const d = join(dir, "sweep");
    mkdirSync(d);
    const stale = ".cursor.json.0b7e2f4c-9d1a-4c3e-8f6b-2a5d7c9e1f30.tmp";
    const fresh = ".cursor.json.1c8f3a5d-0e2b-4d4f-9a7c-3b6e8d0f2a41.tmp";
    const keep = ["cursor.json", ".hidden", "x.tmp", ".a.not-a-uuid.tmp"];
    for (const name of [stale, fresh, ...keep]) writeFileSync(join(d, name), "x");
    const old = (Date.now() - STALE_TEMP_MS - 60_000) / 1000;
    utimesSync(join(d, stale), old, old);
    for (const name of keep) utimesSync(join(d, name), old, old);
    assert.equal(await sweepTempFiles(d), 1);
    assert.deepEqual(readdirSync(d).sort(), [fresh, ...keep].sort());
    assert.equal(await sweepTempFiles(join(d, "missing")), 0);
  });
});

describe("the server's start sweeps temp files a crash left", () => {
  it("in the data dir, the audit spool and the key manager's directory; never in blobs/ or fresh ones", async () => {
    const data = join(dir, "data");
    await initData(data);
    await (await App.open(data)).close();
    const uuid = (n: number) => `${String(n).repeat(8)}-1111-4111-8111-${String(n).repeat(12)}`;
    const spool = join(data, "audit", "spool", "siem");
    mkdirSync(spool, { recursive: true });
    const old = (Date.now() - STALE_TEMP_MS - 60_000) / 1000;
    const plant = (d: string, n: number, stale = true) => {
      const path = join(d, `.cursor.json.${uuid(n)}.tmp`);
      writeFileSync(path, "x");
      if (stale) utimesSync(path, old, old);
      return path;
    };
    const gone = [plant(data, 1), plant(spool, 2), plant(join(data, "kms"), 3)];
    const kept = [plant(spool, 4, false), plant(join(data, "blobs"), 5)];
    await (await App.open(data)).close(); // an admin command: sweeps nothing
    for (const p of gone) assert.ok(statSync(p), `${p} swept by a command that is not the server`);
    await (await App.open(data, { sweep: true })).close(); // what `atrest server` opens
    for (const p of gone) assert.throws(() => statSync(p), { code: "ENOENT" }, p);
    for (const p of kept) assert.ok(statSync(p).isFile(), p);
  });
});
