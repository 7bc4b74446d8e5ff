// The SSE-C key derivation and check (src/vfs/sse-c.ts): both halves are needed, the check refuses other keys.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import { customerDek, customerKeyCheck, verifyCustomerKey } from "../../src/vfs/sse-c.ts";

test("the DEK needs the data key and the customer key (fixed test vector)", () => {
  const d = Buffer.alloc(32, 0x11);
  const k = Buffer.alloc(32, 0x22);
  const dek = customerDek(d, k, "00000000-0000-4000-8000-000000000000");
  // fixed vector: changing the derivation makes every SSE-C object unreadable (docs/format.md)
  assert.equal(dek.toString("hex"), "1ccf8d44678639dec3eee09576450729b07116daf4618ff3fc41ee76e6b57b79");
  assert.notDeepEqual(dek, customerDek(d, Buffer.alloc(32, 0x23), "00000000-0000-4000-8000-000000000000"));
  assert.notDeepEqual(dek, customerDek(Buffer.alloc(32, 0x12), k, "00000000-0000-4000-8000-000000000000"));
  assert.notDeepEqual(dek, customerDek(d, k, "00000000-0000-4000-8000-000000000001"));
  assert.ok(!dek.equals(d) && !dek.equals(k));
  assert.equal(d[0], 0x11); // the inputs stay the caller's
  assert.throws(() => customerDek(d, Buffer.alloc(16), "x"), { code: "INVALID_INPUT" });
});

test("the salted check: the right key passes, another, none, or one for a plain object is refused", () => {
  const k = randomBytes(32);
  const a = customerKeyCheck(k);
  const b = customerKeyCheck(k);
  assert.notEqual(a.salt, b.salt); // random salt: two versions under one key do not match each other
  assert.notEqual(a.mac, b.mac);
  verifyCustomerKey(a, k);
  assert.throws(() => verifyCustomerKey(a, randomBytes(32)), { code: "KEY_REQUIRED" });
  assert.throws(() => verifyCustomerKey(a, Buffer.alloc(31)), { code: "KEY_REQUIRED" });
  assert.throws(() => verifyCustomerKey(a, undefined), { code: "KEY_REQUIRED" });
  assert.throws(() => verifyCustomerKey(undefined, k), { code: "INVALID_INPUT" });
  verifyCustomerKey(undefined, undefined);
  assert.ok(!JSON.stringify(a).includes(k.toString("base64")));
});
