// atrest's AES-256-GCM binding (native/gcm, built by scripts/build-gcm-binding.ts at npm ci): it is loaded where it
// is expected (CI), it writes exactly node:crypto's bytes, and it refuses and cleans up as aead.open does. The
// node:crypto fallback (ATREST_CONTAINER_CRYPTO=js) runs the same format tests (test/format, test/container-io).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createCipheriv, createSecretKey, randomBytes } from "node:crypto";
import { test } from "node:test";
import { open, openInto, SEAL_OVERHEAD, seal, sealInto } from "../../src/crypto/aead.ts";
import { containerCrypto, gcmBinding, gcmHandle, pageOffset } from "../../src/crypto/gcm-native.ts";
import { IntegrityError } from "../../src/errors.ts";

const expectNative = process.env.ATREST_EXPECT_NATIVE_GCM === "1" || process.env.CI === "true";
const skip = !gcmBinding && "atrest's GCM binding not built here (node scripts/build-gcm-binding.ts)";

test("the GCM binding is built and in use when it is expected (CI: npm ci builds it)", {
  skip: !expectNative && !gcmBinding && "not built here and not expected (set ATREST_EXPECT_NATIVE_GCM=1)",
}, () => {
  const c = containerCrypto();
  assert.equal(c.native, true, `container crypto: ${c.describe}`);
  assert.match(c.describe, /^native/);
});

function nodeSeal(key: Buffer, nonce: Buffer, plain: Buffer, aad: Buffer): Buffer {
  const cipher = createCipheriv("aes-256-gcm", key, nonce, { authTagLength: 16 });
  cipher.setAAD(aad);
  return Buffer.concat([nonce, cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
}

test("sealInto and openInto through the binding give node:crypto's bytes, at any offset", { skip }, () => {
  const raw = randomBytes(32);
  const key = createSecretKey(raw);
  for (const length of [0, 1, 15, 16, 17, 255, 4096, 65536, 65536 + 7]) {
    const nonce = randomBytes(12);
    const aad = randomBytes(length % 97);
    const plain = randomBytes(length);
    const expected = nodeSeal(raw, nonce, plain, aad);
    const out = Buffer.alloc(length + SEAL_OVERHEAD + 11, 0xee);
    sealInto(key, nonce, plain, aad, out, 7);
    assert.ok(out.subarray(7, 7 + expected.length).equals(expected), `seal of ${length} bytes`);
    assert.ok(
      out.subarray(0, 7).every((b) => b === 0xee) && out.subarray(7 + expected.length).every((b) => b === 0xee),
    );
    const back = Buffer.alloc(length + 3, 0xee);
    assert.equal(openInto(key, expected, aad, back, 3), length);
    assert.ok(back.subarray(3).equals(plain));
    // and what node:crypto's open makes of the binding's output
    assert.ok(open(key, out.subarray(7, 7 + expected.length), aad).equals(plain));
  }
});

test("openInto through the binding refuses any flipped bit, a wrong AAD or key, and zeroes what it wrote", {
  skip,
}, () => {
  const key = createSecretKey(randomBytes(32));
  const aad = Buffer.from("atrest v1 segment\0\x03abc");
  const plain = randomBytes(300);
  const sealed = seal(key, randomBytes(12), plain, aad);
  const out = Buffer.alloc(plain.length);
  for (const at of [0, 5, 12, 12 + 150, sealed.length - 16, sealed.length - 1]) {
    const bad = Buffer.from(sealed);
    bad[at] ^= 0x01;
    out.fill(0xaa);
    assert.throws(() => openInto(key, bad, aad, out, 0), IntegrityError, `flip at ${at}`);
    assert.ok(
      out.every((b) => b === 0),
      `output zeroed after the flip at ${at}`,
    );
  }
  assert.throws(() => openInto(key, sealed, Buffer.from("other"), out, 0), IntegrityError);
  assert.throws(() => openInto(createSecretKey(randomBytes(32)), sealed, aad, out, 0), IntegrityError);
  assert.throws(() => openInto(key, sealed.subarray(0, 27), aad, out, 0), IntegrityError);
  assert.equal(openInto(key, sealed, aad, out, 0), plain.length);
  assert.ok(out.equals(plain));
});

test("the binding refuses bad arguments instead of writing out of bounds", { skip }, () => {
  const key = createSecretKey(randomBytes(32));
  const plain = randomBytes(100);
  const aad = Buffer.alloc(0);
  assert.throws(() => sealInto(key, randomBytes(12), plain, aad, Buffer.alloc(127), 0), RangeError);
  assert.throws(() => sealInto(key, randomBytes(12), plain, aad, Buffer.alloc(200), 73), RangeError);
  assert.throws(() => sealInto(key, randomBytes(11), plain, aad, Buffer.alloc(200), 0), RangeError);
  const sealed = seal(key, randomBytes(12), plain, aad);
  assert.throws(() => openInto(key, sealed, aad, Buffer.alloc(99), 0), RangeError);
  const binding = gcmBinding;
  const handle = gcmHandle(key);
  assert.ok(binding && handle);
  // below aead.ts's checks: the binding's own bounds checks
  assert.throws(() => binding.seal(handle, randomBytes(12), aad, plain, Buffer.alloc(128), 1), /output too small/);
  assert.throws(() => binding.seal(handle, randomBytes(12), aad, plain, Buffer.alloc(128), -1), /bad arguments/);
  assert.throws(() => binding.open(handle, sealed, aad, Buffer.alloc(100), 1), /output too small/);
  assert.throws(() => binding.create(Buffer.alloc(16)), /32 bytes/);
  // the ciphertext may not land on top of the plaintext it is reading (in place exactly is what OpenSSL allows)
  const shared = Buffer.alloc(400);
  assert.throws(() => binding.seal(handle, randomBytes(12), aad, shared.subarray(0, 100), shared, 0), /overlaps/);
});

test("pageOffset tells where a view starts within its page (O_DIRECT staging, store/direct-io.ts)", { skip }, () => {
  const whole = Buffer.allocUnsafeSlow(3 * 4096);
  const at = pageOffset(whole);
  assert.ok(
    at !== undefined,
    "the binding has no pageOffset: built before it was added, rebuild it (npm run postinstall)",
  );
  assert.ok(at >= 0 && at < 4096);
  // views move the address with their byteOffset; the first aligned view is at offset 0 of its page
  assert.equal(pageOffset(whole.subarray(5)), (at + 5) % 4096);
  assert.equal(pageOffset(whole.subarray((4096 - at) % 4096)), 0);
  assert.throws(() => gcmBinding?.pageOffset?.({} as Uint8Array), /Uint8Array/);
});

test("ATREST_CONTAINER_CRYPTO=js switches the binding off", () => {
  const r = spawnSync(
    process.execPath,
    [
      "--input-type=module",
      "-e",
      `import { containerCrypto } from ${JSON.stringify(new URL("../../src/crypto/gcm-native.ts", import.meta.url).pathname)}; console.log(JSON.stringify(containerCrypto()));`,
    ],
    { encoding: "utf8", env: { ...process.env, ATREST_CONTAINER_CRYPTO: "js" } },
  );
  assert.equal(r.status, 0, r.stderr);
  const c = JSON.parse(r.stdout) as { native: boolean; describe: string };
  assert.equal(c.native, false);
  assert.match(c.describe, /node:crypto .*ATREST_CONTAINER_CRYPTO=js/);
});
