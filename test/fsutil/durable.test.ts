import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { writeDurable, writeFileDurable, writeFileDurableSync } from "../../src/fsutil/durable.ts";
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
