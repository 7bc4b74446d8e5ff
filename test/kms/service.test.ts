import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { parseWrapped } from "../../src/kms/api/wrapped.ts";
import { problemOf } from "../../src/kms/server/problem.ts";
import { admin, alice, auditor, type Fixture, isErr, openFixture, operator, server } from "./fixture.ts";

const ctx = { fileId: "f-1", owner: "alice", folder: "/hr" };
const other = { fileId: "f-2", owner: "alice", folder: "/hr" };

describe("KmsService data-key operations", () => {
  let f: Fixture;
  before(async () => {
    f = await openFixture();
  });
  after(() => f.close());

  it("generate → unwrap round trip; the blob names key and version; context is the AAD", () => {
    const dk = f.kms.generateDataKey(server, "default", ctx);
    assert.equal(dk.keyRef, "kek:default:v1");
    const p = parseWrapped(dk.wrapped);
    assert.deepEqual([p.name, p.version], ["default", 1]);
    const un = f.kms.unwrap(server, dk.wrapped, ctx);
    assert.deepEqual(un.plaintext, dk.plaintext);
    assert.equal(un.keyRef, "kek:default:v1");
    assert.throws(() => f.kms.unwrap(server, dk.wrapped, other), isErr("INTEGRITY", /wrong encryption context/));
  });

  it("wrap of a caller key, batch forms keep order and isolate failures", () => {
    const key = Buffer.alloc(32, 7);
    const w = f.kms.wrap(server, "default", key, ctx);
    assert.deepEqual(f.kms.unwrap(server, w.wrapped, ctx).plaintext, key);
    assert.throws(() => f.kms.wrap(server, "default", Buffer.alloc(16), ctx), isErr("INVALID_INPUT", /32-byte/));
    const [d0, d1] = f.kms.generateDataKeys(server, "default", [ctx, other]);
    assert.ok(d0 && d1);
    const res = f.kms.unwrapBatch(server, [
      { wrapped: d0.wrapped, context: ctx },
      { wrapped: d1.wrapped, context: ctx },
      { wrapped: Buffer.from("junk"), context: ctx },
      { wrapped: d1.wrapped, context: other },
    ]);
    assert.deepEqual((res[0] as { plaintext: Buffer }).plaintext, d0.plaintext);
    assert.equal((res[1] as { error: { code: string } }).error.code, "INTEGRITY");
    assert.equal((res[2] as { error: { code: string } }).error.code, "INTEGRITY");
    assert.deepEqual((res[3] as { plaintext: Buffer }).plaintext, d1.plaintext);
  });

  it("rotation: old wraps still unwrap, new on the new version; min decryption version; rewrap", () => {
    f.kms.createKey(operator, "rot");
    const old = f.kms.generateDataKey(server, "rot", ctx);
    const info = f.kms.rotateKey(operator, "rot");
    assert.equal(info.currentVersion, 2);
    const fresh = f.kms.generateDataKey(server, "rot", ctx);
    assert.equal(fresh.keyRef, "kek:rot:v2");
    assert.deepEqual(f.kms.unwrap(server, old.wrapped, ctx).plaintext, old.plaintext);
    f.kms.setKeyPolicy(operator, "rot", { minDecryptionVersion: 2 });
    assert.throws(
      () => f.kms.unwrap(server, old.wrapped, ctx),
      isErr("KEY_UNAVAILABLE", /kek:rot:v1 is below the minimum decryption version v2/),
    );
    // rewrap still reads the retired version (the DEK never leaves the KMS): that is how stragglers move up
    const rw = f.kms.rewrap(server, old.wrapped, ctx);
    assert.equal(rw.keyRef, "kek:rot:v2");
    assert.deepEqual(f.kms.unwrap(server, rw.wrapped, ctx).plaintext, old.plaintext);
    assert.throws(
      () => f.kms.setKeyPolicy(operator, "rot", { minDecryptionVersion: 3 }),
      isErr("INVALID_INPUT", /1 to 2/),
    );
  });

  it("min encryption version bounds a requested version", () => {
    f.kms.createKey(operator, "pin");
    f.kms.rotateKey(operator, "pin");
    assert.equal(f.kms.generateDataKey(server, "pin", ctx, 1).keyRef, "kek:pin:v1");
    f.kms.setKeyPolicy(operator, "pin", { minEncryptionVersion: 2 });
    assert.throws(
      () => f.kms.generateDataKey(server, "pin", ctx, 1),
      isErr("KEY_UNAVAILABLE", /kek:pin:v1 cannot encrypt: versions v2 to v2/),
    );
    assert.equal(f.kms.generateDataKey(server, "pin", ctx).keyRef, "kek:pin:v2");
  });

  it("states: pre-active unusable until activated; deactivated and compromised decrypt only; no way back", () => {
    const k = f.kms.createKey(operator, "states", { preActive: true });
    assert.equal(k.versions[0]?.state, "pre-active");
    assert.throws(() => f.kms.generateDataKey(server, "states", ctx), isErr("KEY_UNAVAILABLE", /pre-active/));
    f.kms.setVersionState(operator, "states", 1, "active");
    const dk = f.kms.generateDataKey(server, "states", ctx);
    f.kms.setVersionState(operator, "states", 1, "deactivated");
    assert.throws(() => f.kms.generateDataKey(server, "states", ctx), isErr("KEY_UNAVAILABLE", /deactivated/));
    assert.deepEqual(f.kms.unwrap(server, dk.wrapped, ctx).plaintext, dk.plaintext);
    assert.throws(
      () => f.kms.setVersionState(operator, "states", 1, "active"),
      isErr("INVALID_INPUT", /deactivated: it can become compromised/),
    );
    const c = f.kms.setVersionState(operator, "states", 1, "compromised");
    assert.equal(c.compromised, true);
    assert.equal(f.kms.getKey(auditor, "states").compromised, true);
    assert.deepEqual(f.kms.unwrap(server, dk.wrapped, ctx).plaintext, dk.plaintext);
    const flagged = f.events.filter((e) => e.action === "key.state" && e.detail?.includes('"compromised"'));
    assert.equal(flagged.length, 1);
    const use = f.events.filter((e) => e.action === "key.unwrap" && e.keyRef === "kek:states:v1").at(-1);
    assert.match(use?.detail ?? "", /"compromised":"kek:states:v1"/);
    // a rotation gives the key an active version again
    assert.equal(f.kms.rotateKey(operator, "states").versions[1]?.state, "active");
  });

  it("rotation policy none refuses rotation; auto needs a cryptoperiod", () => {
    f.kms.createKey(operator, "fixed", { rotation: "none" });
    assert.throws(() => f.kms.rotateKey(operator, "fixed"), isErr("INVALID_INPUT", /rotation policy none/));
    assert.throws(
      () => f.kms.setKeyPolicy(operator, "fixed", { rotation: "auto" }),
      isErr("INVALID_INPUT", /cryptoperiod/),
    );
    const k = f.kms.setKeyPolicy(operator, "fixed", { rotation: "auto", rotationDays: 90 });
    assert.equal(k.rotation.policy, "auto");
    assert.equal(k.rotation.nextRotationAt, "2030-04-01T00:00:00.000Z");
  });
});

describe("KmsService roles and client policies", () => {
  let f: Fixture;
  before(async () => {
    f = await openFixture();
    f.kms.createKey(operator, "tenant-a");
    f.kms.createKey(operator, "tenant-b");
    f.kms.createKey(operator, "payroll");
  });
  after(() => f.close());

  it("a role outside its duties is refused with client, op and key named", () => {
    assert.throws(
      () => f.kms.generateDataKey(operator, "default", ctx),
      isErr("PERMISSION_DENIED", /client olga \(role operator\) may not generate-data-key on kek:default: its role/),
    );
    assert.throws(
      () => f.kms.createKey(server, "x"),
      isErr("PERMISSION_DENIED", /client fs1 \(role server\) may not create/),
    );
    assert.throws(() => f.kms.rotateKey(alice, "default"), isErr("PERMISSION_DENIED"));
    assert.throws(() => f.kms.setKeyPolicy(auditor, "default", { rotation: "none" }), isErr("PERMISSION_DENIED"));
    assert.throws(
      () => f.kms.unwrap(admin, f.kms.generateDataKey(server, "default", ctx).wrapped, ctx),
      isErr("PERMISSION_DENIED"),
    );
    const denied = f.events.filter((e) => e.outcome === "failure" && /permission denied/.test(e.reason ?? ""));
    assert.ok(denied.length >= 5);
    assert.equal(denied[0]?.user, "olga");
  });

  it("a server with a policy uses only the keys its globs allow", () => {
    const tenantServer = { name: "fs-tenants", role: "server" as const };
    f.kms.policies.set(
      "fs-tenants",
      { rules: [{ keys: ["tenant-*"], ops: ["generate-data-key", "unwrap", "rewrap", "read"] }] },
      "test",
      new Date(),
    );
    const dk = f.kms.generateDataKey(tenantServer, "tenant-a", ctx);
    assert.deepEqual(f.kms.unwrap(tenantServer, dk.wrapped, ctx).plaintext, dk.plaintext);
    assert.throws(
      () => f.kms.generateDataKey(tenantServer, "payroll", ctx),
      isErr("PERMISSION_DENIED", /fs-tenants .* may not generate-data-key on kek:payroll: its key policy/),
    );
    const payroll = f.kms.generateDataKey(server, "payroll", ctx);
    assert.throws(
      () => f.kms.unwrap(tenantServer, payroll.wrapped, ctx),
      isErr("PERMISSION_DENIED", /unwrap on kek:payroll/),
    );
    assert.throws(
      () => f.kms.wrap(tenantServer, "tenant-a", Buffer.alloc(32), ctx),
      isErr("PERMISSION_DENIED", /wrap/),
    );
    assert.deepEqual(
      f.kms.listKeys(tenantServer).map((k) => k.name),
      ["tenant-a", "tenant-b"],
    );
  });
});

describe("KmsService audit", () => {
  it("records caller, role, key, version, op and canonical context; never key bytes", async () => {
    const f = await openFixture();
    try {
      const dk = f.kms.generateDataKey(server, "default", { z: "1", a: "2" });
      f.kms.unwrap(server, dk.wrapped, { z: "1", a: "2" });
      const [gen, un] = f.events;
      assert.equal(gen?.action, "key.wrap");
      assert.equal(gen?.user, "fs1");
      assert.equal(gen?.role, "server");
      assert.equal(gen?.sourceIp, "127.0.0.1");
      assert.equal(gen?.keyRef, "kek:default:v1");
      assert.equal(gen?.detail, '{"context":{"a":"2","z":"1"},"op":"generate-data-key"}');
      assert.equal(un?.action, "key.unwrap");
      assert.equal(un?.outcome, "success");
      const all = JSON.stringify(f.events);
      for (const secret of [dk.plaintext, f.master]) {
        assert.ok(!all.includes(secret.toString("hex")) && !all.includes(secret.toString("base64")));
      }
    } finally {
      await f.close();
    }
  });

  it("fail closed: an unwritable audit refuses the operation and scrubs the key", async () => {
    const f = await openFixture({
      failClosed: true,
      auditLog: {
        record() {
          throw new Error("disk full");
        },
      },
    });
    try {
      assert.throws(() => f.kms.generateDataKey(server, "default", ctx), isErr("KEY_UNAVAILABLE", /fail closed/));
    } finally {
      await f.close();
    }
  });
});

describe("KmsService batch errors", () => {
  it("an unexpected failure of one item is logged server-side, never echoed to the client", async () => {
    const logged: { err: unknown; op: string }[] = [];
    const f = await openFixture({ onInternalError: (err, op) => logged.push({ err, op }) });
    try {
      const dk = f.kms.generateDataKey(server, "default", ctx);
      const boom = new Error("disk I/O error near 'secret-material-0123'");
      const ring = f.kms.keyring;
      const realUnwrap = ring.unwrap.bind(ring);
      ring.unwrap = (wrapped, context) => {
        if (context.fileId === "boom") throw boom;
        return realUnwrap(wrapped, context);
      };
      const res = f.kms.unwrapBatch(server, [
        { wrapped: dk.wrapped, context: ctx },
        { wrapped: dk.wrapped, context: { fileId: "boom" } },
      ]);
      assert.deepEqual((res[0] as { plaintext: Buffer }).plaintext, dk.plaintext);
      const item = res[1] as { error: { code: string; message: string } };
      // The same words a single request's problem+json gives for an internal error.
      assert.deepEqual(item.error, { code: "INTERNAL", message: problemOf(boom).detail });
      assert.doesNotMatch(JSON.stringify(res[1]), /secret-material|disk I\/O/);
      assert.deepEqual(logged, [{ err: boom, op: "unwrap" }]);
      // An AtrestError keeps its message: it is written for the client.
      const bad = f.kms.unwrapBatch(server, [{ wrapped: dk.wrapped, context: other }])[0] as {
        error: { code: string; message: string };
      };
      assert.equal(bad.error.code, "INTEGRITY");
      assert.match(bad.error.message, /wrong encryption context/);
      assert.equal(logged.length, 1);
    } finally {
      await f.close();
    }
  });
});
