import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { KMS_ROLES } from "../../src/kms/api/caller.ts";
import { globToRegExp, KEY_OPERATIONS, parseClientPolicy, roleAllows } from "../../src/kms/policy.ts";
import { isErr } from "./fixture.ts";

describe("roles", () => {
  it("no role can both read data and destroy or export keys (separation of duties)", () => {
    for (const role of KMS_ROLES) {
      const reads = roleAllows(role, "unwrap") || roleAllows(role, "rewrap");
      const destroys = roleAllows(role, "request-destroy") || roleAllows(role, "decide-request");
      const exports = roleAllows(role, "request-export");
      assert.ok(!(reads && (destroys || exports)), `${role} can read data and destroy/export`);
    }
    assert.ok(roleAllows("server", "unwrap"));
    assert.ok(!roleAllows("server", "create"));
    assert.ok(roleAllows("custodian", "decide-request"));
    assert.ok(!roleAllows("custodian", "request-destroy")); // custodians approve, they do not ask
    assert.ok(!roleAllows("auditor", "rotate"));
    assert.ok(!roleAllows("admin", "unwrap"));
    assert.ok(!roleAllows("operator", "decide-request"));
  });
});

describe("client policies", () => {
  it("globs match whole key names; dots are literal; ? is one character", () => {
    const t = globToRegExp("tenant-*");
    assert.ok(t.test("tenant-a") && t.test("tenant-") && !t.test("tenant") && !t.test("xtenant-a"));
    const d = globToRegExp("app.v?");
    assert.ok(d.test("app.v1") && !d.test("appxv1") && !d.test("app.v10"));
    assert.ok(globToRegExp("*").test("anything.at-all"));
  });

  it("validation gives one clear line", () => {
    assert.deepEqual(parseClientPolicy({ rules: [{ keys: ["a*"], ops: ["unwrap"] }] }).rules[0]?.ops, ["unwrap"]);
    assert.throws(
      () => parseClientPolicy({ rules: [{ keys: [], ops: ["unwrap"] }] }),
      isErr("INVALID_INPUT", /rules.0.keys/),
    );
    assert.throws(
      () => parseClientPolicy({ rules: [{ keys: ["a"], ops: ["destroy"] }] }),
      isErr("INVALID_INPUT", /invalid client policy at rules.0.ops.0/),
    );
    assert.throws(() => parseClientPolicy({ rules: [], extra: 1 }), isErr("INVALID_INPUT"));
    assert.throws(() => parseClientPolicy("nope"), isErr("INVALID_INPUT"));
    assert.equal(KEY_OPERATIONS.includes("unwrap"), true);
  });
});
