// `atrest kms backup` / `kms restore` through the real CLI against a running KMS: the bundle holds no key material in
// the clear (scanned for the master and unseal keys, every KEK, the CA, TLS and backup private keys in PEM, DER and
// raw form, the DEKs), tampering and wrong shares are refused without touching the target, and a restore into an
// empty directory unseals with the same shares and unwraps DEKs made before the backup.
import assert from "node:assert/strict";
import { createPrivateKey, type KeyObject } from "node:crypto";
import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { KmsRole } from "../../src/kms/api/caller.ts";
import { RemoteKms } from "../../src/kms/api/client.ts";
import type { DataKey } from "../../src/kms/api/types.ts";
import { BACKUP_PRIVATE_SEALED, openBackupPrivateKey } from "../../src/kms/backup-key.ts";
import { KmsDb } from "../../src/kms/db.ts";
import { initKmsDir, issueClient } from "../../src/kms/home.ts";
import { unsealKek } from "../../src/kms/seal.ts";
import { KmsServer } from "../../src/kms/server/server.ts";
import { combineShares, parseShare } from "../../src/kms/shares.ts";
import { readSealConfig, type ShamirConfig, ShamirSource } from "../../src/kms/unseal.ts";
import { cli, removeDir, tempDir } from "../helpers/atrest.ts";

function rawForms(key: KeyObject): Buffer[] {
  const jwk = key.export({ format: "jwk" });
  return [
    key.export({ format: "der", type: "pkcs8" }),
    Buffer.from(key.export({ format: "pem", type: "pkcs8" }) as string),
    Buffer.from(jwk.d ?? "", "base64url"),
  ];
}

describe("KMS backup and restore", () => {
  let root: string;
  let dir: string;
  let shares: string[];
  let config: ShamirConfig;
  let server: KmsServer | undefined;
  const certs: Record<string, string> = {};
  const remotes: RemoteKms[] = [];
  const dks: { dk: DataKey; context: Record<string, string> }[] = [];
  let bundle: string;

  const connect = async (name: string, port: number) => {
    const r = await RemoteKms.connect({ url: `https://127.0.0.1:${port}`, certDir: certs[name] });
    remotes.push(r);
    return r;
  };

  before(async () => {
    root = await tempDir("atrest-kms-backup-");
    dir = join(root, "kms");
    const init = await initKmsDir(dir, { shares: 3, threshold: 2 });
    assert.equal(init.mode, "shamir");
    if (init.mode === "shamir") ({ shares, config } = init);
    for (const [name, role] of Object.entries({ fs1: "server", olga: "operator", alice: "custodian" }) as [
      string,
      KmsRole,
    ][]) {
      certs[name] = join(root, "certs", name);
      await issueClient(dir, name, role, certs[name]);
    }
    server = await KmsServer.start({ dir, port: 0, schedulerIntervalMs: 0 });
    const alice = await connect("alice", server.port);
    await alice.unseal(shares[0]);
    await alice.unseal(shares[1]);
    const olga = await connect("olga", server.port);
    await olga.createKey("tenant-a");
    await olga.rotateKey("default");
    const fs1 = await connect("fs1", server.port);
    for (const key of ["default", "tenant-a"]) {
      for (let i = 0; i < 3; i++) {
        const context = { file: `${key}-${i}` };
        dks.push({ dk: await fs1.generateDataKey(key, context), context });
      }
    }
    bundle = join(root, "backups", "kms.bundle");
    // Taken while the KMS runs: the database snapshot is consistent (VACUUM INTO in one read transaction).
    const out = await cli(["kms", "backup", "--data", dir, "--out", bundle]);
    assert.match(out.stdout, /backed up kms\.db, ca\.key, ca\.crt, server\.key, server\.crt, audit\/kms-audit\.log/);
  });

  after(async () => {
    for (const r of remotes) await r.close();
    await server?.close();
    await removeDir(root);
  });

  test("the bundle holds no key material in the clear, nor the database's plaintext", async () => {
    const bytes = await readFile(bundle);
    assert.equal((await stat(bundle)).mode & 0o777, 0o600);
    const db = new KmsDb(join(dir, "kms.db"));
    const needles: [string, Buffer][] = [];
    try {
      const source = new ShamirSource(db, config);
      await source.submitShare(shares[2]);
      const master = (await source.submitShare(shares[0])).master;
      assert.ok(master);
      needles.push(["master key", master]);
      const sealId = Buffer.from(config.sealId, "hex");
      const unsealKey = await combineShares([parseShare(shares[0], sealId).bytes, parseShare(shares[1], sealId).bytes]);
      needles.push(["unseal key", unsealKey]);
      const versions = db.sealedVersions();
      assert.ok(versions.length >= 3, "default v1, v2 and tenant-a v1");
      for (const v of versions)
        needles.push([`KEK ${v.name} v${v.version}`, unsealKek(master, v.name, v.version, v.sealed)]);
      const sealedPrivate = db.getMeta(BACKUP_PRIVATE_SEALED);
      assert.ok(sealedPrivate);
      for (const f of rawForms(openBackupPrivateKey(Buffer.from(sealedPrivate), unsealKey, sealId))) {
        needles.push(["backup private key", f]);
      }
    } finally {
      db.close();
    }
    for (const file of ["ca.key", "server.key"]) {
      const pem = await readFile(join(dir, file), "utf8");
      for (const f of rawForms(createPrivateKey(pem))) needles.push([file, f]);
    }
    for (const { dk } of dks) needles.push(["DEK", dk.plaintext]);
    const expanded = needles.flatMap(([what, b]): [string, Buffer][] => [
      [what, b],
      [`${what} (hex)`, Buffer.from(b.toString("hex"))],
      [`${what} (base64)`, Buffer.from(b.toString("base64"))],
    ]);
    for (const text of ["PRIVATE KEY", "SQLite format 3", "tenant-a", "BEGIN CERTIFICATE", "kms.unseal"]) {
      expanded.push([text, Buffer.from(text)]);
    }
    assert.ok(expanded.length > 40);
    for (const [what, needle] of expanded) {
      assert.ok(needle.length >= 8, what);
      assert.equal(bytes.indexOf(needle), -1, `${what} found in the bundle`);
    }
  });

  test("a tampered or truncated bundle, too few shares and another KMS's shares are refused; nothing is written", async () => {
    const bytes = await readFile(bundle);
    const target = join(root, "never");
    const tampered = join(root, "tampered.bundle");
    const flipped = Buffer.from(bytes);
    flipped[flipped.length - 100] ^= 1;
    await writeFile(tampered, flipped);
    const input = `${shares[0]}\n${shares[1]}\n`;
    const refused = async (file: string, stdin: string, pattern: RegExp) => {
      await assert.rejects(
        cli(["kms", "restore", "--in", file, "--data", target], stdin),
        (e: Error & { stderr: string }) => {
          assert.match(e.stderr, pattern);
          return true;
        },
      );
      await assert.rejects(stat(target), { code: "ENOENT" });
    };
    await refused(tampered, input, /atrest: .*(authentication|integrity|tampered)/i);
    const truncated = join(root, "truncated.bundle");
    await writeFile(truncated, bytes.subarray(0, bytes.length - 5000));
    await refused(truncated, input, /atrest: .*(truncated|authentication|missing)/i);
    await refused(bundle, `${shares[0]}\n`, /1 distinct share\(s\) given; this KMS needs 2/);
    const otherDir = join(root, "other-kms");
    const other = await initKmsDir(otherDir, { shares: 3, threshold: 2 });
    assert.equal(other.mode, "shamir");
    if (other.mode === "shamir") {
      await refused(bundle, `${other.shares[0]}\n${other.shares[1]}\n`, /share 1: share checksum does not match/);
    }
  });

  test("restore into an empty directory: same shares unseal it, DEKs from before the backup unwrap", async () => {
    const restored = join(root, "restored");
    const out = await cli(["kms", "restore", "--in", bundle, "--data", restored], `${shares[2]}\n${shares[1]}\n`);
    assert.match(out.stdout, /restored the KMS backup of .* into /);
    for (const f of ["kms.db", "ca.key", "server.key", "ca.crt", "server.crt"]) {
      assert.equal((await stat(join(restored, f))).mode & 0o777, 0o600, f);
    }
    assert.equal((await stat(restored)).mode & 0o777, 0o700);
    await server?.close();
    server = undefined;
    const db = new KmsDb(join(restored, "kms.db"));
    try {
      assert.equal(readSealConfig(db, restored)?.kind, "shamir");
    } finally {
      db.close();
    }
    server = await KmsServer.start({ dir: restored, port: 0, schedulerIntervalMs: 0 });
    assert.equal(server.sealed, true);
    // The restored CA and clients table: the old client certificates work against the restored KMS.
    const alice = await connect("alice", server.port);
    await alice.unseal(shares[1]);
    assert.equal((await alice.unseal(shares[2])).sealed, false);
    const fs1 = await connect("fs1", server.port);
    for (const { dk, context } of dks) assert.deepEqual(await fs1.unwrap(dk.wrapped, context), dk.plaintext);
  });

  test("a dev-mode KMS is not backed up (its master key file is in the clear): clear refusal", async () => {
    const devDir = join(root, "dev-kms");
    await initKmsDir(devDir, { dev: true });
    await assert.rejects(
      cli(["kms", "backup", "--data", devDir, "--out", join(root, "dev.bundle")]),
      (e: Error & { stderr: string }) => {
        assert.match(e.stderr, /atrest: a dev-mode KMS keeps its master key in the clear/);
        return true;
      },
    );
  });
});
