// BYOK with the real openssl command line doing the customer's side (as in the AWS / Vault import instructions).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { promisify } from "node:util";
import { admin, alice, bob, type Fixture, isErr, openFixture, operator, server } from "./fixture.ts";

const run = promisify(execFile);
const ctx = { fileId: "f-9", tenant: "acme" };

/** The customer's side: wrap `material` for the KMS's wrapping key with openssl only. */
async function opensslWrap(f: Fixture, publicKeyPem: string, material: Buffer, tag: string): Promise<Buffer> {
  const pub = join(f.dir, `${tag}.pub.pem`);
  const mat = join(f.dir, `${tag}.key.bin`);
  const eph = join(f.dir, `${tag}.eph.bin`);
  await writeFile(pub, publicKeyPem);
  await writeFile(mat, material);
  const ephHex = (await run("openssl", ["rand", "-hex", "32"])).stdout.trim();
  await writeFile(eph, Buffer.from(ephHex, "hex"));
  await run("openssl", [
    "pkeyutl",
    "-encrypt",
    "-pubin",
    "-inkey",
    pub,
    "-in",
    eph,
    "-out",
    `${eph}.rsa`,
    "-pkeyopt",
    "rsa_padding_mode:oaep",
    "-pkeyopt",
    "rsa_oaep_md:sha256",
    "-pkeyopt",
    "rsa_mgf1_md:sha256",
  ]);
  await run("openssl", [
    "enc",
    "-id-aes256-wrap-pad",
    "-K",
    ephHex,
    "-iv",
    "A65959A6",
    "-in",
    mat,
    "-out",
    `${mat}.kwp`,
  ]);
  return Buffer.concat([await readFile(`${eph}.rsa`), await readFile(`${mat}.kwp`)]);
}

describe("BYOK import (openssl wraps, the KMS unwraps)", () => {
  it("imports material wrapped RSA-OAEP-SHA256 + AES-KWP; the imported key wraps and unwraps", async () => {
    const f = await openFixture();
    try {
      const params = f.kms.importParams(operator, "customer");
      assert.equal(params.algorithm, "RSA_AES_KEY_WRAP_SHA_256");
      assert.match(params.publicKeyPem, /^-----BEGIN PUBLIC KEY-----/);
      assert.equal(params.expiresAt, "2030-01-02T00:00:00.000Z");
      const material = randomBytes(32);
      const wrapped = await opensslWrap(f, params.publicKeyPem, material, "a");
      assert.equal(wrapped.length, 384 + 40);
      const info = f.kms.importKey(operator, "customer", params.importToken, wrapped);
      assert.equal(info.origin, "imported");
      assert.equal(info.currentVersion, 1);
      const dk = f.kms.generateDataKey(server, "customer", ctx);
      assert.deepEqual(f.kms.unwrap(server, dk.wrapped, ctx).plaintext, dk.plaintext);
      // the KEK really is the imported material: an export under dual control returns the same bytes
      const exported = f.kms.keyring.exportMaterial("customer", 1);
      assert.deepEqual(exported, material);
      // the token is single use; imported keys rotate only by import; auto rotation refused
      assert.throws(
        () => f.kms.importKey(operator, "customer", params.importToken, wrapped),
        isErr("CONFLICT", /already used/),
      );
      assert.throws(() => f.kms.rotateKey(operator, "customer"), isErr("INVALID_INPUT", /importing new material/));
      assert.throws(
        () => f.kms.setKeyPolicy(operator, "customer", { rotation: "auto", rotationDays: 30 }),
        isErr("INVALID_INPUT", /imported/),
      );
      const p2 = f.kms.importParams(operator, "customer");
      const v2 = f.kms.importKey(
        operator,
        "customer",
        p2.importToken,
        await opensslWrap(f, p2.publicKeyPem, randomBytes(32), "b"),
      );
      assert.equal(v2.currentVersion, 2);
      assert.deepEqual(f.kms.unwrap(server, dk.wrapped, ctx).plaintext, dk.plaintext);
      assert.ok(
        f.events.some((e) => e.action === "key.import" && e.keyRef === "kek:customer:v2" && e.outcome === "success"),
      );
      const all = JSON.stringify(f.events);
      assert.ok(!all.includes(material.toString("hex")) && !all.includes(material.toString("base64")));
    } finally {
      await f.close();
    }
  });

  it("a tampered import, a wrong token, an expired token or a generated key are refused clearly", async () => {
    const f = await openFixture();
    try {
      const params = f.kms.importParams(operator, "imp");
      const wrapped = await opensslWrap(f, params.publicKeyPem, randomBytes(32), "t");
      for (const at of [10, 384 + 5, wrapped.length - 1]) {
        const bad = Buffer.from(wrapped);
        bad[at] = (bad[at] as number) ^ 1;
        assert.throws(
          () => f.kms.importKey(operator, "imp", params.importToken, bad),
          isErr("INTEGRITY", /import of kek:imp refused: the wrapped material does not unwrap/),
        );
      }
      assert.throws(
        () => f.kms.importKey(operator, "imp", params.importToken, wrapped.subarray(1)),
        isErr("INTEGRITY", /refused/),
      );
      // material wrapped for another token's key
      const other = f.kms.importParams(operator, "imp");
      assert.throws(() => f.kms.importKey(operator, "imp", other.importToken, wrapped), isErr("INTEGRITY"));
      assert.throws(
        () => f.kms.importKey(operator, "other", params.importToken, wrapped),
        isErr("INVALID_INPUT", /unknown import token/),
      );
      // a failed attempt does not burn the token; the intact blob still imports
      assert.equal(f.kms.importKey(operator, "imp", params.importToken, wrapped).currentVersion, 1);
      const late = f.kms.importParams(operator, "late");
      f.clock.advanceDays(1);
      assert.throws(
        () => f.kms.importKey(operator, "late", late.importToken, wrapped),
        isErr("CONFLICT", /expired at 2030-01-02T00:00:00.000Z/),
      );
      assert.throws(
        () => f.kms.importParams(operator, "default"),
        isErr("INVALID_INPUT", /generated by the key manager/),
      );
      assert.throws(() => f.kms.importParams(server, "x"), isErr("PERMISSION_DENIED"));
      const failed = f.events.filter((e) => e.action === "key.import" && e.outcome === "failure");
      assert.ok(failed.length >= 6);
    } finally {
      await f.close();
    }
  });

  it("export wraps the key so that openssl unwraps it on the receiving side", async () => {
    const f = await openFixture();
    try {
      const priv = join(f.dir, "recv.pem");
      const pub = join(f.dir, "recv.pub.pem");
      await run("openssl", ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072", "-out", priv]);
      await run("openssl", ["pkey", "-in", priv, "-pubout", "-out", pub]);
      const req = f.kms.exportKey(admin, "default", { publicKeyPem: await readFile(pub, "utf8") });
      f.kms.approve(alice, req.id);
      f.kms.approve(bob, req.id);
      const out = f.kms.fetchExport(admin, req.id);
      await writeFile(join(f.dir, "x.rsa"), out.wrapped.subarray(0, 384));
      await writeFile(join(f.dir, "x.kwp"), out.wrapped.subarray(384));
      await run("openssl", [
        "pkeyutl",
        "-decrypt",
        "-inkey",
        priv,
        "-in",
        join(f.dir, "x.rsa"),
        "-out",
        join(f.dir, "x.eph"),
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha256",
        "-pkeyopt",
        "rsa_mgf1_md:sha256",
      ]);
      const eph = (await readFile(join(f.dir, "x.eph"))).toString("hex");
      await run("openssl", [
        "enc",
        "-d",
        "-id-aes256-wrap-pad",
        "-K",
        eph,
        "-iv",
        "A65959A6",
        "-in",
        join(f.dir, "x.kwp"),
        "-out",
        join(f.dir, "x.key"),
      ]);
      assert.deepEqual(await readFile(join(f.dir, "x.key")), f.kms.keyring.exportMaterial("default", 1));
    } finally {
      await f.close();
    }
  });
});
