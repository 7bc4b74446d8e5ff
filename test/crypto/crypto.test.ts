import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { aeadKey, open, seal } from "../../src/crypto/aead.ts";
import { constantTimeEqual, zero } from "../../src/crypto/bytes.ts";
import { hkdfSha256 } from "../../src/crypto/hkdf.ts";
import { hmacSha256 } from "../../src/crypto/hmac.ts";
import { publicRandomBytes, randomBytes } from "../../src/crypto/random.ts";
import { IntegrityError } from "../../src/errors.ts";

const hex = (s: string) => Buffer.from(s, "hex");

describe("crypto wrappers", () => {
  it("AES-256-GCM matches a NIST GCM vector (test case 16, 256-bit key) in nonce‖ct‖tag form", () => {
    const key = hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
    const nonce = hex("cafebabefacedbaddecaf888");
    const pt = hex(
      "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
    );
    const aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    const sealed = seal(key, nonce, pt, aad);
    assert.equal(
      sealed.subarray(12).toString("hex"),
      "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662" +
        "76fc6ece0f4e1768cddf8853bb2d551b",
    );
    assert.deepEqual(open(aeadKey(key), sealed, aad), pt);
  });

  it("open rejects any change and never returns plaintext", () => {
    const key = randomBytes(32);
    const sealed = seal(key, publicRandomBytes(12), Buffer.from("secret"), Buffer.from("ctx"));
    for (let i = 0; i < sealed.length; i++) {
      const bad = Buffer.from(sealed);
      bad[i] ^= 1;
      assert.throws(() => open(key, bad, Buffer.from("ctx")), IntegrityError);
    }
    assert.throws(() => open(key, sealed, Buffer.from("other")), IntegrityError);
    assert.throws(() => open(key, sealed.subarray(0, 27), Buffer.alloc(0)), IntegrityError);
    assert.throws(() => seal(Buffer.alloc(16), publicRandomBytes(12), Buffer.alloc(1), Buffer.alloc(0)), RangeError);
  });

  it("HKDF-SHA256 matches RFC 5869 test case 1", () => {
    const okm = hkdfSha256(
      hex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"),
      hex("000102030405060708090a0b0c"),
      hex("f0f1f2f3f4f5f6f7f8f9"),
      42,
    );
    assert.equal(
      okm.toString("hex"),
      "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    );
  });

  it("HMAC-SHA256 matches RFC 4231 test case 2, parts fed in order", () => {
    const mac = hmacSha256(Buffer.from("Jefe"), Buffer.from("what do ya want "), Buffer.from("for nothing?"));
    assert.equal(mac.toString("hex"), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  });

  it("constant-time equality, zeroing, random sources", () => {
    assert.ok(constantTimeEqual(Buffer.from("abc"), Buffer.from("abc")));
    assert.ok(!constantTimeEqual(Buffer.from("abc"), Buffer.from("abd")));
    assert.ok(!constantTimeEqual(Buffer.from("abc"), Buffer.from("abcd")));
    const k = randomBytes(32);
    zero(k);
    assert.ok(k.every((b) => b === 0));
    const seen = new Set<string>();
    for (let i = 0; i < 5000; i++) seen.add(publicRandomBytes(12).toString("hex"));
    assert.equal(seen.size, 5000);
    const held = publicRandomBytes(12);
    const copy = Buffer.from(held);
    for (let i = 0; i < 2000; i++) publicRandomBytes(12);
    assert.deepEqual(held, copy, "pooled bytes never change after they are handed out");
  });
});
