// Host keys are sealed under the key manager: nothing in the data directory is a private key; the public halves in
// hostkeys/ match what ssh-keygen computes; keys of older versions (clear files) are sealed once and removed with
// their fingerprints unchanged, so the clients' known_hosts keep working.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import ssh2 from "ssh2";
import { App, initData } from "../../../src/app.ts";
import { sealedSecrets } from "../../../src/keys/sealed-secrets.ts";
import { loadOrCreateHostKeys } from "../../../src/protocols/sftp/hostkeys.ts";
import { removeDir, tempDir } from "../../helpers/atrest.ts";

const execFileP = promisify(execFile);

/** Every file under `dir` that holds a private key in PEM or OpenSSH form. */
async function privateKeyFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue;
    const path = join(e.parentPath, e.name);
    const body = await readFile(path);
    // the base64 of "openssh-key-v1" starts with b3BlbnNzaC1rZXktdjE, also inside a PEM armour
    if (/PRIVATE KEY|openssh-key-v1|b3BlbnNzaC1rZXktdjE/.test(body.toString("latin1"))) out.push(path);
  }
  return out;
}

async function withApp<T>(data: string, fn: (app: App) => Promise<T>): Promise<T> {
  const app = await App.open(data);
  try {
    return await fn(app);
  } finally {
    await app.close();
  }
}

const load = (data: string) =>
  withApp(data, async (app) => loadOrCreateHostKeys(app.paths.hostKeys, await sealedSecrets(app.store, app.keys)));

test("host keys: ed25519 + RSA 3072, sealed in the store, public halves match ssh-keygen -lf, stable", async () => {
  const dir = await tempDir("atrest-hostkeys-");
  const data = join(dir, "data");
  try {
    await initData(data);
    const first = await load(data);
    assert.equal(first.keys.length, 2);
    assert.deepEqual(first.migrated, []);
    assert.match(first.fingerprints[0], /^ED25519 SHA256:[A-Za-z0-9+/]{43}$/);
    assert.match(first.fingerprints[1], /^RSA SHA256:[A-Za-z0-9+/]{43}$/);
    assert.match(first.keys[0].toString(), /^-----BEGIN OPENSSH PRIVATE KEY-----/);
    for (const [i, file] of ["ssh_host_ed25519_key", "ssh_host_rsa_key"].entries()) {
      await assert.rejects(stat(join(data, "hostkeys", file)), { code: "ENOENT" });
      const { stdout } = await execFileP("ssh-keygen", ["-lf", join(data, "hostkeys", `${file}.pub`)]);
      const [bits, fp] = stdout.trim().split(/\s+/);
      assert.equal(bits, i === 0 ? "256" : "3072");
      assert.equal(first.fingerprints[i].split(" ")[1], fp);
    }
    assert.deepEqual(await privateKeyFiles(data), [], "no private key anywhere in the data directory");
    const second = await load(data);
    assert.deepEqual(second.fingerprints, first.fingerprints);
    assert.deepEqual(second.keys, first.keys);
  } finally {
    await removeDir(dir);
  }
});

test("clear host keys of an older version are sealed and removed; fingerprints unchanged", async () => {
  const dir = await tempDir("atrest-hostkeys-");
  const data = join(dir, "data");
  const hk = join(data, "hostkeys");
  try {
    await initData(data);
    await execFileP("mkdir", ["-p", hk]);
    const before: string[] = [];
    for (const [file, type] of [
      ["ssh_host_ed25519_key", "ed25519"],
      ["ssh_host_rsa_key", "rsa"],
    ]) {
      await execFileP("ssh-keygen", [
        "-q",
        "-t",
        type,
        "-N",
        "",
        "-f",
        join(hk, file),
        ...(type === "rsa" ? ["-b", "3072"] : []),
      ]);
      before.push((await execFileP("ssh-keygen", ["-lf", join(hk, file)])).stdout.trim().split(/\s+/)[1]);
    }
    const clearPem = await readFile(join(hk, "ssh_host_ed25519_key"));
    const loaded = await load(data);
    assert.deepEqual(loaded.migrated, ["ssh_host_ed25519_key", "ssh_host_rsa_key"]);
    assert.deepEqual(
      loaded.fingerprints.map((f) => f.split(" ")[1]),
      before,
    );
    assert.ok(loaded.keys[0].equals(clearPem), "the same key, byte for byte");
    assert.deepEqual(await privateKeyFiles(data), [], "clear files removed");
    assert.deepEqual((await readdir(hk)).sort(), ["ssh_host_ed25519_key.pub", "ssh_host_rsa_key.pub"]);
    const again = await load(data);
    assert.deepEqual(again.fingerprints, loaded.fingerprints);
    assert.deepEqual(again.migrated, []);
    // what ssh2 serves is the sealed key
    const parsed = ssh2.utils.parseKey(again.keys[1]);
    assert.ok(!(parsed instanceof Error));
  } finally {
    await removeDir(dir);
  }
});
