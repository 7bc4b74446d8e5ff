import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { cp, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { App } from "../../src/app.ts";
import { serviceKey } from "../../src/keys/service-keys.ts";
import { META_KEY_SETTING } from "../../src/vfs/vfs.ts";
import { cli } from "../helpers/atrest.ts";
import { storeBytes } from "../helpers/store.ts";
import { type Fixture, fixture, get, info, put } from "./helpers.ts";

describe("atrest backup / restore of the file server's metadata", () => {
  let f: Fixture;
  const canaryName = `canary-${randomBytes(6).toString("hex")}.txt`;
  const canary = Buffer.from(`CANARY-${randomBytes(8).toString("hex")}`);
  let bundle: string;
  let metaKey: Buffer;

  before(async () => {
    f = await fixture();
    await f.app.addUser({ name: "alicebackup", password: "correct horse" });
    const s = await f.app.openSession("alicebackup", info);
    await put(s, `/${canaryName}`, canary);
    await s.close();
    metaKey = await serviceKey(f.app.store, f.app.keys, META_KEY_SETTING, "default", { purpose: "metadata" });
    await f.app.close();
    bundle = join(f.dir, "..", `${f.dir.split("/").at(-1)}.bundle`);
  });
  after(async () => {
    metaKey?.fill(0);
    await f.close();
    await import("node:fs/promises").then((fs) => fs.rm(bundle, { force: true }));
  });

  it("writes a bundle with nothing readable in it: no names, no users, no SQLite file, no key in the clear", async () => {
    const out = (await cli(["backup", "--out", bundle, "--data", f.dir])).stdout;
    assert.match(out, /wrote .*meta\.db \(\d+ bytes\)/);
    const bytes = await readFile(bundle);
    for (const needle of [
      Buffer.from("alicebackup"),
      Buffer.from(canaryName),
      canary,
      Buffer.from("SQLite format 3"),
      Buffer.from("CREATE TABLE"),
      metaKey,
    ]) {
      assert.equal(bytes.indexOf(needle), -1, `found ${needle.toString("latin1").slice(0, 20)}… in the bundle`);
    }
    // The raw meta.db holds the user only sealed (docs/threat-model.md); the bundle's own layer hides the rest.
    assert.equal((await storeBytes(f.dir)).indexOf(Buffer.from("alicebackup")), -1);
    const list = (await cli(["restore", "--list", "--in", bundle])).stdout;
    assert.match(list, /^meta\.db\t\d+\t[0-9a-f]{64}$/m);
  });

  it("restores into a new data directory next to the same key manager; files read again", async () => {
    const target = `${f.dir}-restored`;
    await cp(join(f.dir, "kms"), join(target, "kms"), { recursive: true }); // the key manager, restored separately
    await cp(join(f.dir, "blobs"), join(target, "blobs"), { recursive: true });
    await cli(["restore", "--in", bundle, "--data", target]);
    const app = await App.open(target);
    try {
      const s = await app.openSession("alicebackup", info);
      assert.deepEqual(await get(s, `/${canaryName}`), canary);
      await s.close();
    } finally {
      await app.close();
    }
    await assert.rejects(cli(["restore", "--in", bundle, "--data", target]), /exists: restore into an empty/);
    await import("node:fs/promises").then((fs) => fs.rm(target, { recursive: true, force: true }));
  });

  it("refuses a tampered bundle and a foreign key manager, installing nothing", async () => {
    const bytes = await readFile(bundle);
    bytes[bytes.length - 100] ^= 1;
    const tampered = `${bundle}.bad`;
    await writeFile(tampered, bytes);
    const t1 = `${f.dir}-t1`;
    await cp(join(f.dir, "kms"), join(t1, "kms"), { recursive: true });
    await assert.rejects(cli(["restore", "--in", tampered, "--data", t1]), /integrity|authentication|does not match/i);
    await assert.rejects(stat(join(t1, "meta.db")), { code: "ENOENT" });
    // Another data directory's (fresh) key manager cannot open it.
    const t2 = `${f.dir}-t2`;
    await cli(["init", "--data", t2]);
    await assert.rejects(cli(["restore", "--in", bundle, "--data", t2]), /cannot open the backup's key/);
    await assert.rejects(stat(join(t2, "meta.db")), { code: "ENOENT" });
    const fs = await import("node:fs/promises");
    for (const d of [t1, t2, tampered]) await fs.rm(d, { recursive: true, force: true });
  });
});
