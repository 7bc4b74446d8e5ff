// Sealed node names and attributes (src/vfs/meta-crypto.ts, docs/format.md §9): v2 names are padded to buckets and
// v2 attributes are a fixed-width record; v1 records written before (unpadded name, JSON attributes) still open, also a
// v1 name whose ciphertext happens to have a bucket's length; tampered records do not.
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { aeadKey, seal } from "../../src/crypto/aead.ts";
import { hkdfSha256 } from "../../src/crypto/hkdf.ts";
import { MetaCrypto } from "../../src/vfs/meta-crypto.ts";

const metaKey = Buffer.alloc(32, 0x33);
const v1Key = aeadKey(hkdfSha256(metaKey, Buffer.alloc(0), Buffer.from("atrest v1 metadata aead")));
const v1 = (plain: string, aad: string) => seal(v1Key, randomBytes(12), Buffer.from(plain), Buffer.from(aad));

describe("MetaCrypto v2 names and attributes", () => {
  const c = new MetaCrypto(Buffer.from(metaKey));
  const id = randomUUID();

  it("pads names to 32/64/128… byte buckets and reads them back", () => {
    for (const [name, len] of [
      ["", 60],
      ["a.txt", 60],
      ["x".repeat(31), 60],
      ["x".repeat(32), 92],
      ["é".repeat(40), 156],
    ] as const) {
      const ct = c.sealName(id, name);
      assert.equal(ct.length, len, name);
      assert.equal(c.openName(id, ct), name);
      assert.equal(c.isLegacyName(id, ct), false);
      assert.throws(() => c.openName(randomUUID(), ct), { name: "IntegrityError" });
    }
  });

  it("seals every attribute record without S3 metadata in 100 bytes, whatever the size", () => {
    const lengths = new Set<number>();
    for (const size of [0, 7, 123_456, 9_876_543_210, Number.MAX_SAFE_INTEGER]) {
      const attrs = { size, mtime: 1_764_742_000_123.5, mode: 0o100644 };
      const ct = c.sealAttrs(id, "b", "c", attrs);
      lengths.add(ct.length);
      assert.deepEqual(c.openAttrs(id, "b", "c", ct), attrs);
      assert.equal(c.isLegacyAttrs(id, "b", "c", ct), false);
    }
    assert.deepEqual([...lengths], [100]);
    const ssec = { salt: randomBytes(16).toString("base64"), mac: randomBytes(32).toString("base64") };
    const object = { etag: "d41d8cd98f00b204e9800998ecf8427e", headers: { "content-type": "text/csv" } };
    const full = { size: 5, mtime: 1, mode: 0o644, ssec, object };
    const ct = c.sealAttrs(id, "b", "c", full);
    assert.deepEqual(c.openAttrs(id, "b", "c", ct), full);
    assert.equal(ct.length, 100 + 128, "object metadata (66 bytes of JSON) padded to a bucket after the fixed head");
    assert.throws(() => c.openAttrs(id, "other-blob", "c", ct), { name: "IntegrityError" });
  });

  it("opens v1 records (also a v1 name of a bucket's length) and tells them apart for the re-seal", () => {
    for (const name of ["report.pdf", "y".repeat(32), "z".repeat(64)]) {
      const ct = v1(name, `name\0${id}`);
      assert.equal(c.openName(id, ct), name);
      assert.equal(c.isLegacyName(id, ct), true);
    }
    const aad = `attrs\0${id}\0b\0c`;
    assert.deepEqual(c.openAttrs(id, "b", "c", v1("[42,1000,420]", aad)), { size: 42, mtime: 1000, mode: 420 });
    assert.deepEqual(c.openAttrs(id, "b", "c", v1('[1,2,3,null,{"e":"abc","h":{"x-amz-meta-a":"b"}}]', aad)), {
      size: 1,
      mtime: 2,
      mode: 3,
      object: { etag: "abc", headers: { "x-amz-meta-a": "b" } },
    });
    assert.deepEqual(c.openAttrs(id, "b", "c", v1('[1,2,3,{"s":"c2FsdA==","m":"bWFj"}]', aad)).ssec, {
      salt: "c2FsdA==",
      mac: "bWFj",
    });
    assert.equal(c.isLegacyAttrs(id, "b", "c", v1("[42,1000,420]", aad)), true);
  });
});
