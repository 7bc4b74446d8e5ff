// The KMS's own audit log, end to end: real AuditLog file in the KMS directory, decrypted with keys held under the
// master key, chain verified with `atrest audit verify`, scanned for key bytes.
import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { AuditRecord } from "../../src/audit/types.ts";
import { KmsDb } from "../../src/kms/db.ts";
import { initEmbeddedKms, openEmbeddedKms } from "../../src/kms/embedded.ts";
import { Keyring } from "../../src/kms/keyring.ts";
import { KMS_AUDIT_PUBLIC_KEY_FILE, KmsAudit, readKmsAudit } from "../../src/kms/kms-audit.ts";
import { KmsService } from "../../src/kms/service.ts";
import { cli, removeDir, tempDir } from "../helpers/atrest.ts";
import { alice, bob, operator, server } from "./fixture.ts";

const ctx = { fileId: "0190-aaaa", owner: "alice", folder: "/hr-payroll-archive" };

describe("KMS audit log", () => {
  it("records every operation with identity, role, key, version, op, context and outcome; no key bytes", async () => {
    const dir = await tempDir("atrest-kmsaudit-");
    try {
      await initEmbeddedKms(dir);
      const kms = await openEmbeddedKms(dir, { schedulerIntervalMs: 0 });
      const dk = await kms.generateDataKey("default", ctx);
      await kms.unwrap(dk.wrapped, ctx);
      await assert.rejects(kms.unwrap(dk.wrapped, { ...ctx, fileId: "other" }));
      const svc = kms.service;
      svc.createKey(operator, "finance");
      const req = svc.requestDestroy(operator, "finance", { waitingDays: 7, reason: "test" });
      svc.approve(alice, req.id, "ok");
      svc.approve(bob, req.id, "ok too");
      assert.throws(() => svc.unwrap(operator, dk.wrapped, ctx));
      const kek = svc.keyring.exportMaterial("default", 1);
      const records = (await readKmsAudit(dir, svc.keyring, kms.kmsAudit)) as AuditRecord[];
      await kms.close();

      assert.ok(records.every((r) => !("integrity" in r)));
      const gen = records.find((r) => r.action === "key.wrap");
      assert.equal(gen?.user, "embedded");
      assert.equal(gen?.role, "server");
      assert.equal(gen?.protocol, "kms");
      assert.equal(gen?.keyRef, "kek:default:v1");
      assert.equal(gen?.outcome, "success");
      assert.deepEqual(JSON.parse(gen?.detail ?? "{}"), { context: ctx, op: "generate-data-key" });
      const bad = records.find((r) => r.action === "key.unwrap" && r.outcome === "failure" && r.user === "embedded");
      assert.match(bad?.reason ?? "", /wrong encryption context/);
      assert.equal(JSON.parse(bad?.detail ?? "{}").context.fileId, "other");
      const denied = records.find((r) => r.user === "olga" && r.action === "key.unwrap");
      assert.match(denied?.reason ?? "", /permission denied/);
      assert.equal(denied?.userId, "ab".repeat(32)); // certificate fingerprint
      const approvals = records.filter((r) => r.action === "key.approve").map((r) => [r.user, r.role, r.target]);
      assert.deepEqual(approvals, [
        ["alice", "custodian", req.id],
        ["bob", "custodian", req.id],
      ]);
      assert.ok(records.some((r) => r.action === "key.destroy" && /"op":"schedule"/.test(r.detail ?? "")));

      // the log file holds neither plaintext contexts nor key bytes; the decrypted records hold no key bytes either
      const files = (await readdir(join(dir, "audit"))).map((n) => join(dir, "audit", n));
      const decrypted = Buffer.from(JSON.stringify(records));
      for (const secret of [dk.plaintext, kek]) {
        for (const enc of ["hex", "base64", "base64url"] as const) {
          assert.equal(decrypted.indexOf(secret.toString(enc)), -1);
        }
        assert.equal(decrypted.indexOf(secret), -1);
        for (const file of files) assert.equal((await readFile(file)).indexOf(secret), -1);
      }
      const raw = await readFile(join(dir, "audit", "kms-audit.log"), "latin1");
      // long needles: short ones (e.g. "/hr") turn up by chance in base64 of the sealed records
      assert.ok(!raw.includes("0190-aaaa") && !raw.includes("/hr-payroll-archive"));

      // the chain and signed checkpoints verify with the standard tool and the published key
      const pub = (await readFile(join(dir, KMS_AUDIT_PUBLIC_KEY_FILE), "utf8")).trim();
      const v = await cli(["audit", "verify", "--file", join(dir, "audit", "kms-audit.log"), "--public-key", pub]);
      assert.match(v.stdout, new RegExp(`${records.length} record\\(s\\), 1 checkpoint\\(s\\) verified[\\s\\S]*OK`));
    } finally {
      await removeDir(dir);
    }
  });

  it("buffers events while sealed and writes them, in order, at unseal; fail-closed refuses when unwritable", async () => {
    const dir = await tempDir("atrest-kmsaudit-");
    try {
      await initEmbeddedKms(dir);
      const audit = new KmsAudit(dir);
      audit.record({ action: "kms.unseal", outcome: "failure", user: "carol", protocol: "kms", reason: "bad share" });
      audit.record({ action: "kms.unseal", outcome: "success", user: "dave", protocol: "kms", detail: "2/2" });
      assert.equal(audit.sealed, true);
      const master = (await readFile(join(dir, "master.key"))).subarray(5, 37);
      const db = new KmsDb(join(dir, "kms.db"));
      const ring = new Keyring(db, Buffer.from(master));
      audit.unseal(ring);
      const svc = new KmsService(ring, { auditLog: audit, failClosed: true });
      svc.generateDataKey(server, "default", ctx);
      const recs = (await readKmsAudit(dir, ring, audit)) as AuditRecord[];
      assert.deepEqual(
        recs.map((r) => [r.action, r.user]),
        [
          ["kms.unseal", "carol"],
          ["kms.unseal", "dave"],
          ["key.wrap", "fs1"],
        ],
      );
      assert.ok(Date.parse(recs[0]?.time ?? "") <= Date.parse(recs[2]?.time ?? ""));
      await audit.close();
      // a closed log cannot be written: with failClosed, operations are refused
      const broken = new KmsService(new Keyring(db, Buffer.from(master)), {
        failClosed: true,
        auditLog: {
          record() {
            throw new Error("EIO");
          },
        },
      });
      assert.throws(() => broken.generateDataKey(server, "default", ctx), /fail closed/);
      broken.close();
      svc.close();
      db.close();
    } finally {
      await removeDir(dir);
    }
  });
});
