import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { loadOrCreateHostKeys } from "../../../src/protocols/sftp/hostkeys.ts";

const execFileP = promisify(execFile);

test("host keys: ed25519 + RSA 3072, mode 0600, persisted, fingerprints match ssh-keygen -lf", async () => {
  const dir = await mkdtemp(join(tmpdir(), "atrest-hostkeys-"));
  try {
    const first = await loadOrCreateHostKeys(dir);
    assert.equal(first.keys.length, 2);
    assert.match(first.fingerprints[0], /^ED25519 SHA256:[A-Za-z0-9+/]{43}$/);
    assert.match(first.fingerprints[1], /^RSA SHA256:[A-Za-z0-9+/]{43}$/);
    for (const [i, file] of ["ssh_host_ed25519_key", "ssh_host_rsa_key"].entries()) {
      const path = join(dir, file);
      assert.equal((await stat(path)).mode & 0o777, 0o600);
      assert.match(await readFile(path, "utf8"), /^-----BEGIN OPENSSH PRIVATE KEY-----/);
      const { stdout } = await execFileP("ssh-keygen", ["-lf", path]);
      // "256 SHA256:... comment (ED25519)" / "3072 SHA256:... comment (RSA)"
      const [bits, fp] = stdout.trim().split(/\s+/);
      assert.equal(bits, i === 0 ? "256" : "3072");
      assert.equal(first.fingerprints[i].split(" ")[1], fp);
    }
    const second = await loadOrCreateHostKeys(dir);
    assert.deepEqual(second.fingerprints, first.fingerprints);
    assert.deepEqual(second.keys, first.keys);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
