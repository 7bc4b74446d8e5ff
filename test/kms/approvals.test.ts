import assert from "node:assert/strict";
import { constants, createDecipheriv, generateKeyPairSync, privateDecrypt } from "node:crypto";
import { describe, it } from "node:test";
import { writeQuorum } from "../../src/kms/approvals.ts";
import { admin, alice, auditor, bob, carol, isErr, openFixture, operator, server } from "./fixture.ts";

const ctx = { fileId: "f-1", owner: "alice" };

describe("dual control: destroy", () => {
  it("one custodian cannot destroy; two approve → scheduled → due → destroyed", async () => {
    const f = await openFixture();
    try {
      f.kms.createKey(operator, "hr");
      const dk = f.kms.generateDataKey(server, "hr", ctx);
      const other = f.kms.generateDataKey(server, "default", ctx);
      const req = f.kms.requestDestroy(operator, "hr", { waitingDays: 7, reason: "project closed" });
      assert.equal(req.status, "pending");
      assert.equal(req.quorum, 2);
      assert.deepEqual(req.params, { versions: [1], waitingDays: 7 });
      // nobody but custodians may decide; the requester may not either
      assert.throws(() => f.kms.approve(operator, req.id), isErr("PERMISSION_DENIED", /may not decide-request/));
      assert.throws(() => f.kms.approve(server, req.id), isErr("PERMISSION_DENIED"));
      const one = f.kms.approve(alice, req.id, "checked ticket 42");
      assert.equal(one.status, "pending");
      assert.throws(() => f.kms.approve(alice, req.id), isErr("EXISTS", /alice already decided/));
      // one approval changes nothing
      assert.equal(f.kms.getKey(operator, "hr").versions[0]?.destroyAt, undefined);
      assert.deepEqual(f.kms.unwrap(server, dk.wrapped, ctx).plaintext, dk.plaintext);
      const two = f.kms.approve(bob, req.id);
      assert.equal(two.status, "executed");
      assert.match(two.result ?? "", /destruction scheduled for 2030-01-08T00:00:00.000Z/);
      const scheduled = f.kms.getKey(auditor, "hr").versions[0];
      assert.equal(scheduled?.destroyAt, "2030-01-08T00:00:00.000Z");
      assert.equal(scheduled?.destroyRequest, req.id);
      // still usable during the waiting period
      assert.deepEqual(f.kms.unwrap(server, dk.wrapped, ctx).plaintext, dk.plaintext);
      f.clock.advanceDays(6);
      assert.deepEqual(f.kms.runScheduled().destroyed, []);
      f.clock.advanceDays(1);
      assert.deepEqual(f.kms.runScheduled().destroyed, ["kek:hr:v1"]);
      assert.throws(
        () => f.kms.unwrap(server, dk.wrapped, ctx),
        isErr("KEY_UNAVAILABLE", /kek:hr:v1 is destroyed: data keys wrapped under it can never be unwrapped/),
      );
      assert.throws(() => f.kms.generateDataKey(server, "hr", ctx), isErr("KEY_UNAVAILABLE", /destroyed/));
      // nothing else is affected
      assert.deepEqual(f.kms.unwrap(server, other.wrapped, ctx).plaintext, other.plaintext);
      // the material is gone from the database
      const row = f.db.getVersion("hr", 1);
      assert.equal(row?.state, "destroyed");
      assert.equal(row?.sealed, null);
      const actions = f.events.map((e) => `${e.action}:${e.outcome}:${e.user}`);
      for (const a of [
        "key.request:success:olga",
        "key.approve:success:alice",
        "key.approve:success:bob",
        "key.destroy:success:bob",
        "key.destroy:success:kms-scheduler",
      ]) {
        assert.ok(actions.includes(a), `${a} in audit`);
      }
    } finally {
      await f.close();
    }
  });

  it("cancel during the waiting period keeps the key; the waiting period is bounded 7–30 days", async () => {
    const f = await openFixture();
    try {
      f.kms.createKey(operator, "keep");
      assert.throws(
        () => f.kms.requestDestroy(operator, "keep", { waitingDays: 3 }),
        isErr("INVALID_INPUT", /7 to 30/),
      );
      const req = f.kms.requestDestroy(operator, "keep");
      f.kms.approve(alice, req.id);
      const done = f.kms.approve(bob, req.id);
      assert.match(done.result ?? "", /2030-01-31/); // default 30 days
      const k = f.kms.cancelDestroy(alice, "keep");
      assert.equal(k.versions[0]?.destroyAt, undefined);
      assert.throws(() => f.kms.cancelDestroy(operator, "keep"), isErr("INVALID_INPUT", /no destruction is scheduled/));
      f.clock.advanceDays(31);
      assert.deepEqual(f.kms.runScheduled().destroyed, []);
      assert.equal(f.kms.generateDataKey(server, "keep", ctx).keyRef, "kek:keep:v1");
    } finally {
      await f.close();
    }
  });

  it("the current version alone cannot be destroyed while others live; one version can", async () => {
    const f = await openFixture();
    try {
      f.kms.createKey(operator, "multi");
      const old = f.kms.generateDataKey(server, "multi", ctx);
      f.kms.rotateKey(operator, "multi");
      const fresh = f.kms.generateDataKey(server, "multi", ctx);
      assert.throws(
        () => f.kms.requestDestroy(operator, "multi", { version: 2 }),
        isErr("INVALID_INPUT", /rotate first/),
      );
      const req = f.kms.requestDestroy(admin, "multi", { version: 1, waitingDays: 7 });
      f.kms.approve(alice, req.id);
      f.kms.approve(carol, req.id);
      f.clock.advanceDays(7);
      f.kms.runScheduled();
      assert.throws(
        () => f.kms.unwrap(server, old.wrapped, ctx),
        isErr("KEY_UNAVAILABLE", /kek:multi:v1 is destroyed/),
      );
      assert.deepEqual(f.kms.unwrap(server, fresh.wrapped, ctx).plaintext, fresh.plaintext);
    } finally {
      await f.close();
    }
  });

  it("requests expire; a rejection ends them; the quorum comes from init", async () => {
    const f = await openFixture();
    try {
      f.kms.createKey(operator, "exp");
      const r1 = f.kms.requestDestroy(operator, "exp");
      f.kms.approve(alice, r1.id);
      f.clock.t += 24 * 3_600_000;
      assert.equal(f.kms.getRequest(auditor, r1.id).status, "expired");
      assert.throws(() => f.kms.approve(bob, r1.id), isErr("CONFLICT", /expired at 2030-01-02T00:00:00.000Z/));
      const r2 = f.kms.requestDestroy(operator, "exp");
      const rejected = f.kms.reject(carol, r2.id, "not agreed");
      assert.equal(rejected.status, "rejected");
      assert.match(rejected.result ?? "", /rejected by carol: not agreed/);
      assert.throws(() => f.kms.approve(alice, r2.id), isErr("CONFLICT", /already rejected/));
      assert.deepEqual(
        f.kms.listRequests(auditor).map((r) => r.status),
        ["expired", "rejected"],
      );
      // a file server reads requests (its destroy guard counts what one would take) but decides none
      assert.equal(f.kms.listRequests(server).length, 2);
      assert.throws(() => f.kms.approve(server, r2.id), isErr("PERMISSION_DENIED"));
      writeQuorum(f.db, 3);
      const r3 = f.kms.requestDestroy(operator, "exp");
      assert.equal(r3.quorum, 3);
      f.kms.approve(alice, r3.id);
      assert.equal(f.kms.approve(bob, r3.id).status, "pending");
      assert.equal(f.kms.approve(carol, r3.id).status, "executed");
    } finally {
      await f.close();
    }
  });

  it("an approval whose execution was interrupted is completed once by the scheduler", async () => {
    const f = await openFixture();
    try {
      f.kms.createKey(operator, "crash");
      const req = f.kms.requestDestroy(operator, "crash", { waitingDays: 7 });
      f.kms.approve(alice, req.id);
      // bob's approval committed, then the process died before running the request
      f.db
        .prepare(
          "INSERT INTO approvals (request_id, custodian, decision, reason, at) VALUES (?, 'bob', 'approve', '', ?)",
        )
        .run(req.id, f.clock.now().toISOString());
      assert.equal(f.kms.getRequest(auditor, req.id).status, "pending");
      assert.deepEqual(f.kms.runScheduled().executed, [req.id]);
      assert.equal(f.kms.getRequest(auditor, req.id).status, "executed");
      assert.deepEqual(f.kms.runScheduled().executed, []);
      assert.equal(f.events.filter((e) => e.action === "key.destroy" && e.target === req.id).length, 1);
      assert.equal(f.kms.getKey(auditor, "crash").versions[0]?.destroyAt, "2030-01-08T00:00:00.000Z");
    } finally {
      await f.close();
    }
  });

  it("separation of duties: no role both unwraps and destroys or exports", async () => {
    const f = await openFixture();
    try {
      const dk = f.kms.generateDataKey(server, "default", ctx);
      assert.throws(() => f.kms.requestDestroy(server, "default"), isErr("PERMISSION_DENIED", /request-destroy/));
      const pem = generateKeyPairSync("rsa", { modulusLength: 2048 }).publicKey.export({ type: "spki", format: "pem" });
      assert.throws(
        () => f.kms.exportKey(server, "default", { publicKeyPem: String(pem) }),
        isErr("PERMISSION_DENIED"),
      );
      for (const who of [operator, alice, auditor, admin]) {
        assert.throws(() => f.kms.unwrap(who, dk.wrapped, ctx), isErr("PERMISSION_DENIED"));
      }
      assert.throws(() => f.kms.requestDestroy(alice, "default"), isErr("PERMISSION_DENIED"));
    } finally {
      await f.close();
    }
  });
});

describe("dual control: export, client policy, master rotation", () => {
  it("export runs after two approvals and only the requester fetches the wrapped material", async () => {
    const f = await openFixture();
    try {
      const dk = f.kms.generateDataKey(server, "default", ctx);
      const { publicKey, privateKey } = generateKeyPairSync("rsa", { modulusLength: 3072 });
      const pem = String(publicKey.export({ type: "spki", format: "pem" }));
      const req = f.kms.exportKey(operator, "default", { publicKeyPem: pem, reason: "escrow" });
      assert.throws(() => f.kms.fetchExport(operator, req.id), isErr("INVALID_INPUT", /pending \(needs approvals\)/));
      f.kms.approve(alice, req.id);
      assert.equal(f.kms.approve(bob, req.id).status, "executed");
      assert.throws(() => f.kms.fetchExport(admin, req.id), isErr("PERMISSION_DENIED", /only olga/));
      const out = f.kms.fetchExport(operator, req.id);
      assert.equal(out.keyRef, "kek:default:v1");
      // unwrap it as the receiving side would and use it on a DEK the KMS wrapped
      const eph = privateDecrypt(
        { key: privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" },
        out.wrapped.subarray(0, 384),
      );
      const d = createDecipheriv("id-aes256-wrap-pad", eph, Buffer.from("A65959A6", "hex"));
      const kek = Buffer.concat([d.update(out.wrapped.subarray(384)), d.final()]);
      assert.equal(kek.length, 32);
      const w = dk.wrapped;
      const n = w.readUInt8(4);
      const h = 9 + n;
      const { encodeContext } = await import("../../src/kms/api/wrapped.ts");
      const g = createDecipheriv("aes-256-gcm", kek, w.subarray(h, h + 12));
      g.setAAD(Buffer.concat([w.subarray(0, h), encodeContext(ctx)]));
      g.setAuthTag(w.subarray(h + 44));
      assert.deepEqual(Buffer.concat([g.update(w.subarray(h + 12, h + 44)), g.final()]), dk.plaintext);
      const exported = f.events.find((e) => e.action === "key.export" && e.user === "bob");
      assert.equal(exported?.outcome, "success");
      assert.ok(!JSON.stringify(f.events).includes("BEGIN PUBLIC KEY"));
    } finally {
      await f.close();
    }
  });

  it("a client policy change needs the quorum, then binds the client", async () => {
    const f = await openFixture();
    try {
      f.kms.createKey(operator, "tenant-a");
      const fs2 = { name: "fs2", role: "server" as const };
      const dk = f.kms.generateDataKey(fs2, "default", ctx);
      assert.throws(
        () => f.kms.setClientPolicy(operator, "fs2", { rules: [] }),
        isErr("PERMISSION_DENIED", /request-client-policy/),
      );
      assert.throws(
        () => f.kms.setClientPolicy(admin, "fs2", { rules: [{ keys: ["Tenant/*"], ops: ["unwrap"] }] } as never),
        isErr("INVALID_INPUT", /invalid client policy at rules.0.keys.0/),
      );
      const req = f.kms.setClientPolicy(admin, "fs2", {
        rules: [{ keys: ["tenant-*"], ops: ["generate-data-key", "unwrap"] }],
      });
      f.kms.approve(alice, req.id);
      // still unrestricted with one approval
      assert.deepEqual(f.kms.unwrap(fs2, dk.wrapped, ctx).plaintext, dk.plaintext);
      f.kms.approve(bob, req.id);
      assert.throws(
        () => f.kms.unwrap(fs2, dk.wrapped, ctx),
        isErr("PERMISSION_DENIED", /fs2 .* unwrap on kek:default/),
      );
      assert.equal(f.kms.generateDataKey(fs2, "tenant-a", ctx).keyRef, "kek:tenant-a:v1");
      assert.equal(f.kms.getClientPolicy(auditor, "fs2")?.updatedBy, "adam");
      assert.ok(f.events.some((e) => e.action === "kms.policy" && e.outcome === "success"));
    } finally {
      await f.close();
    }
  });

  it("master rotation re-seals every KEK version under a new master in one go", async () => {
    let stored: Buffer | undefined;
    const f = await openFixture({
      persistMaster: (m) => {
        stored = Buffer.from(m as Buffer);
      },
    });
    try {
      f.kms.createKey(operator, "m1");
      f.kms.rotateKey(operator, "m1");
      const a = f.kms.generateDataKey(server, "m1", ctx);
      const before = f.db.getVersion("m1", 1)?.sealed;
      const mark = f.kms.raiseAuditMark(server, "audit", 7, "ab".repeat(32)).mark;
      const req = f.kms.requestMasterRotation(admin, "yearly");
      f.kms.approve(alice, req.id);
      const done = f.kms.approve(bob, req.id);
      assert.equal(done.status, "executed", done.result);
      assert.match(done.result ?? "", /master key rotated/);
      const audited = f.events.find((e) => e.action === "kms.master.rotate");
      assert.match(audited?.detail ?? "", /"resealed":3/); // default v1, m1 v1, m1 v2
      assert.ok(stored && !stored.equals(f.master));
      assert.notDeepEqual(f.db.getVersion("m1", 1)?.sealed, before);
      assert.deepEqual(f.kms.unwrap(server, a.wrapped, ctx).plaintext, a.plaintext);
      // a fresh keyring opens with the new master, not the old one
      const { Keyring } = await import("../../src/kms/keyring.ts");
      assert.throws(() => new Keyring(f.db, Buffer.from(f.master)), isErr("KEY_UNAVAILABLE", /does not match/));
      const k2 = new Keyring(f.db, Buffer.from(stored as Buffer));
      assert.deepEqual(k2.unwrap(a.wrapped, ctx).dek, a.plaintext);
      // the audit high-water mark was re-sealed with the rest
      const { AuditMarks } = await import("../../src/kms/audit-marks.ts");
      assert.deepEqual(new AuditMarks(k2).get(server.name, "audit"), mark);
      k2.close();
    } finally {
      await f.close();
    }
  });

  it("master rotation through the quorum with the real Shamir source: the same shares unseal the new master", async () => {
    const { initShamir, ShamirSource } = await import("../../src/kms/unseal.ts");
    const { KmsDb } = await import("../../src/kms/db.ts");
    const { Keyring } = await import("../../src/kms/keyring.ts");
    const { KmsService } = await import("../../src/kms/service.ts");
    const { tempDir, removeDir } = await import("../helpers/atrest.ts");
    const { join } = await import("node:path");
    const dir = await tempDir("atrest-mrot-");
    const db = new KmsDb(join(dir, "kms.db"));
    try {
      const { shares, config } = await initShamir(db, dir, 3, 2);
      const unseal = async (picked: string[]) => {
        const source = new ShamirSource(db, config);
        let master: Buffer | undefined;
        for (const s of picked) master = (await source.submitShare(s)).master ?? master;
        assert.ok(master);
        return { source, master };
      };
      const first = await unseal([shares[0] as string, shares[1] as string]);
      const before = first.master.toString("hex");
      const kms = new KmsService(new Keyring(db, first.master), {
        persistMaster: (m) => first.source.storeMaster(m),
      });
      const dk = kms.generateDataKey(server, "default", ctx);
      const req = kms.requestMasterRotation(admin, "annual");
      kms.approve(alice, req.id);
      assert.equal(kms.approve(bob, req.id).status, "executed");
      kms.close();
      first.source.seal();
      const second = await unseal([shares[2] as string, shares[0] as string]);
      assert.notEqual(second.master.toString("hex"), before);
      const again = new KmsService(new Keyring(db, second.master));
      assert.deepEqual(again.unwrap(server, dk.wrapped, ctx).plaintext, dk.plaintext);
      again.close();
    } finally {
      db.close();
      await removeDir(dir);
    }
  });

  it("without a sealed-master store, master rotation is refused clearly", async () => {
    const f = await openFixture();
    try {
      assert.throws(() => f.kms.requestMasterRotation(admin), isErr("UNSUPPORTED", /sealed key manager/));
      assert.throws(() => f.kms.requestMasterRotation(operator), isErr("PERMISSION_DENIED"));
    } finally {
      await f.close();
    }
  });
});
