// The sync client's state directory: private keys sealed under argon2id (mode 0600, a wrong passphrase refused, the
// file holds no key in clear), and one client per state directory (a live holder refuses, a dead one is taken over).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { StateDir } from "../../src/sync/client/state.ts";
import { generateDeviceKeys } from "../../src/sync/core/keys.ts";
import { removeDir, tempDir } from "../helpers/atrest.ts";

describe("sync client state", () => {
  let dir: string;
  before(async () => {
    dir = await tempDir("atrest-sync-state-");
  });
  after(async () => removeDir(dir));

  test("keys sealed under the passphrase: 0600, wrong passphrase refused, nothing in clear", async () => {
    const s = new StateDir(dir);
    await s.init();
    const { secrets } = generateDeviceKeys();
    await s.seal(
      "correct horse battery",
      "dev1",
      { ...secrets, token: "atr_secret-token-value" },
      { m: 8192, t: 1, p: 1 },
    );
    const file = join(dir, "keys.sealed");
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const text = await readFile(file, "utf8");
    assert.doesNotMatch(text, /secret-token-value/);
    assert.equal(text.includes(secrets.sign.toString("base64url")), false);
    assert.deepEqual((await s.unseal("correct horse battery", "dev1")).sign, secrets.sign);
    await assert.rejects(s.unseal("wrong horse battery", "dev1"), /wrong passphrase/);
    await assert.rejects(s.unseal("correct horse battery", "dev2"), /wrong passphrase/);
    await assert.rejects(s.seal("short", "dev1", { ...secrets, token: "t" }), /at least 8/);
  });

  test("one client per state directory", async () => {
    const s = new StateDir(dir);
    const release = await s.lock();
    await release();
    const holder = spawn("sleep", ["30"]);
    await writeFile(join(dir, "run.lock"), String(holder.pid));
    await assert.rejects(s.lock(), new RegExp(`another atrest sync \\(pid ${holder.pid}\\)`));
    holder.kill("SIGKILL");
    await new Promise((r) => holder.once("exit", r));
    const again = await s.lock();
    assert.equal((await readFile(join(dir, "run.lock"), "utf8")).trim(), String(process.pid));
    await again();
  });
});
