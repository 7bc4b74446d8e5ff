// Sealed cookies (share unlocks, OIDC login state): what one server seals, another with the same key opens; a cookie
// of another purpose, another key, expired or changed in one byte opens to nothing; the same payload never seals to
// the same value (a fresh nonce each time).
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import { SealedCookies } from "../../../src/protocols/http/sealed-cookie.ts";

test("sealed cookies open on any server with the key, and only for their purpose, unchanged and unexpired", () => {
  const key = randomBytes(32);
  const a = new SealedCookies(Buffer.from(key));
  const b = new SealedCookies(Buffer.from(key));
  const other = new SealedCookies(randomBytes(32));
  const now = 1_800_000_000_000;
  const v = a.seal("share-unlock", { id: "abc" }, 60_000, now);
  assert.equal(b.open("share-unlock", v, now + 59_999)?.id, "abc");
  assert.equal(b.open("share-unlock", v, now + 60_000), undefined, "expired");
  assert.equal(b.open("oidc-login", v, now), undefined, "another purpose");
  assert.equal(other.open("share-unlock", v, now), undefined, "another key");
  const raw = Buffer.from(v, "base64url");
  for (const i of [0, 12, raw.length - 1]) {
    const bad = Buffer.from(raw);
    bad[i] = (bad[i] as number) ^ 1;
    assert.equal(b.open("share-unlock", bad.toString("base64url"), now), undefined, `byte ${i} changed`);
  }
  for (const junk of [undefined, "", "x", "!!!", "A".repeat(5000)])
    assert.equal(b.open("share-unlock", junk, now), undefined);
  assert.notEqual(a.seal("share-unlock", { id: "abc" }, 60_000, now), v, "a fresh nonce per cookie");
  a.close();
  assert.throws(() => new SealedCookies(Buffer.alloc(16)));
});
