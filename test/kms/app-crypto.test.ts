// The encryption API for applications over the real HTTPS + mTLS server, through the documented Node client
// (KmsAppClient): encrypt/decrypt with an encryption context, random nonces, rewrap after rotation, domain
// separation from wrapped data keys, HMAC, Ed25519 and ECDSA P-256 signatures (checked by the openssl CLI from the
// public key), key types, per-client policies per key and operation, batch forms, audit without secrets, and the
// OpenAPI document kept current.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { AtrestError, IntegrityError, KeyUnavailableError } from "../../src/errors.ts";
import { KmsAppClient } from "../../src/kms/api/apps-client.ts";
import { RemoteKms } from "../../src/kms/api/client.ts";
import { initKmsDir, issueClient } from "../../src/kms/home.ts";
import { readKmsAudit } from "../../src/kms/kms-audit.ts";
import { OPENAPI_FILE, openApiJson } from "../../src/kms/server/openapi.ts";
import { KmsServer } from "../../src/kms/server/server.ts";
import { ROOT, removeDir, tempDir } from "../helpers/atrest.ts";
import { testKmsStore } from "./fixture.ts";

const code = (c: string) => (e: unknown) => e instanceof AtrestError && e.code === c;

describe("encryption API for applications (HTTPS + mTLS, KmsAppClient)", () => {
  let root: string;
  let kmsDir: string;
  let server: KmsServer;
  let app: KmsAppClient;
  let narrow: KmsAppClient;
  let ops: RemoteKms;

  before(async () => {
    root = await tempDir("atrest-kms-apps-");
    kmsDir = join(root, "kms");
    await initKmsDir(kmsDir, { dev: true, ...testKmsStore() });
    server = await KmsServer.start({ dir: kmsDir, port: 0, schedulerIntervalMs: 0 });
    const url = `https://127.0.0.1:${server.port}`;
    for (const [name, role] of [
      ["webapp", "server"],
      ["narrow", "server"],
      ["oscar", "operator"],
    ] as const) {
      await issueClient(kmsDir, name, role, join(root, "certs", name));
    }
    app = await KmsAppClient.connect({ url, certDir: join(root, "certs", "webapp") });
    narrow = await KmsAppClient.connect({ url, certDir: join(root, "certs", "narrow") });
    ops = await RemoteKms.connect({ url, certDir: join(root, "certs", "oscar") });
    await ops.call("POST", "/v1/keys", { name: "customers" });
    await ops.call("POST", "/v1/keys", { name: "macs", type: "hmac-sha256" });
    await ops.call("POST", "/v1/keys", { name: "sign-ed", type: "ed25519" });
    await ops.call("POST", "/v1/keys", { name: "sign-ec", type: "ecdsa-p256" });
    // narrow may only encrypt with customers* keys and verify signatures: no decrypt, no hmac.
    server.service().policies.set(
      "narrow",
      {
        rules: [
          { keys: ["customers*"], ops: ["encrypt"] },
          { keys: ["sign-*"], ops: ["verify"] },
        ],
      },
      "test",
      new Date(),
    );
  });

  after(async () => {
    await app?.close();
    await narrow?.close();
    await ops?.close();
    await server?.close();
    await removeDir(root);
  });

  test("encrypt → decrypt with the same context; the ciphertext names key and version; nonces never repeat", async () => {
    const ctx = { table: "cards", row: "42" };
    const r = await app.encrypt("customers", "4111 1111 1111 1111", ctx);
    assert.equal(r.keyRef, "kek:customers:v1");
    assert.match(r.ciphertext, /^atrest:customers:v1:[A-Za-z0-9+/]+={0,2}$/);
    assert.equal((await app.decrypt("customers", r.ciphertext, ctx)).toString(), "4111 1111 1111 1111");
    // Wrong or missing context, a flipped byte, a token of another key: refused.
    await assert.rejects(app.decrypt("customers", r.ciphertext, { table: "cards", row: "43" }), IntegrityError);
    await assert.rejects(app.decrypt("customers", r.ciphertext), IntegrityError);
    const body = Buffer.from(r.ciphertext.split(":")[3] as string, "base64");
    body[body.length - 20] ^= 1;
    await assert.rejects(
      app.decrypt("customers", `atrest:customers:v1:${body.toString("base64")}`, ctx),
      IntegrityError,
    );
    await assert.rejects(app.decrypt("macs", r.ciphertext, ctx), code("INVALID_INPUT"));
    await assert.rejects(app.decrypt("customers", "vault:v1:abcd", ctx), code("INVALID_INPUT"));
    // 1000 encryptions of one plaintext: 1000 distinct 96-bit nonces and ciphertexts.
    const many = await app.encryptBatch(
      "customers",
      Array.from({ length: 1000 }, () => ({ plaintext: "same", context: ctx })),
    );
    const nonces = new Set(
      many.map((m) => {
        assert.ok(!("error" in m));
        return Buffer.from(m.ciphertext.split(":")[3] as string, "base64")
          .subarray(0, 12)
          .toString("hex");
      }),
    );
    assert.equal(nonces.size, 1000);
    assert.equal((await app.decrypt("customers", r.ciphertext, ctx)).length, 19);
    // Empty plaintext is a valid value; 64 KiB is the limit.
    const empty = await app.encrypt("customers", Buffer.alloc(0));
    assert.equal((await app.decrypt("customers", empty.ciphertext)).length, 0);
    await assert.rejects(app.encrypt("customers", Buffer.alloc(64 * 1024 + 1)), code("INVALID_INPUT"));
  });

  test("a wrapped data key cannot be opened through decrypt (domain separation under one AES key)", async () => {
    const dk = await app.generateDataKey("customers", { f: "x" });
    // Same KEK, same nonce ‖ ciphertext ‖ tag bytes, repackaged as an encrypt token: authentication fails.
    const n = dk.wrapped.readUInt8(4);
    const tail = dk.wrapped.subarray(9 + n);
    await assert.rejects(
      app.decrypt("customers", `atrest:customers:v1:${tail.toString("base64")}`, { f: "x" }),
      IntegrityError,
    );
    assert.deepEqual(await app.unwrapDataKey(dk.wrapped, { f: "x" }), dk.plaintext);
  });

  test("rotation: rewrap moves a ciphertext to the current version without the plaintext leaving", async () => {
    const ctx = { user: "7" };
    const old = await app.encrypt("customers", "secret value", ctx);
    await ops.call("POST", "/v1/keys/customers/rotate", {});
    const fresh = await app.encrypt("customers", "x", ctx);
    assert.equal(fresh.keyRef, "kek:customers:v2");
    const moved = await app.rewrap("customers", old.ciphertext, ctx);
    assert.equal(moved.keyRef, "kek:customers:v2");
    assert.match(moved.ciphertext, /^atrest:customers:v2:/);
    assert.equal((await app.decrypt("customers", moved.ciphertext, ctx)).toString(), "secret value");
    await assert.rejects(app.rewrap("customers", old.ciphertext, { user: "8" }), IntegrityError);
    // Retire v1: old ciphertexts no longer decrypt, but can still be rewrapped (that is how a version is retired).
    await ops.call("PUT", "/v1/keys/customers/policy", { minDecryptionVersion: 2 });
    await assert.rejects(app.decrypt("customers", old.ciphertext, ctx), KeyUnavailableError);
    assert.equal((await app.rewrap("customers", old.ciphertext, ctx)).keyRef, "kek:customers:v2");
    await ops.call("PUT", "/v1/keys/customers/policy", { minDecryptionVersion: 1 });
    // A compromised version still decrypts (to re-encrypt) but no longer encrypts.
    await ops.call("PUT", "/v1/keys/customers/versions/2/state", { state: "compromised" });
    await assert.rejects(app.encrypt("customers", "y", ctx), KeyUnavailableError);
    assert.equal((await app.decrypt("customers", moved.ciphertext, ctx)).toString(), "secret value");
    await ops.call("POST", "/v1/keys/customers/rotate", {});
    assert.equal((await app.rewrap("customers", moved.ciphertext, ctx)).keyRef, "kek:customers:v3");
  });

  test("HMAC: deterministic, verified in constant time, refused on keys of another type", async () => {
    const mac = await app.hmac("macs", "order=17&amount=100");
    assert.match(mac, /^atrest:macs:v1:/);
    assert.equal(Buffer.from(mac.split(":")[3] as string, "base64").length, 32);
    assert.equal(await app.hmac("macs", "order=17&amount=100"), mac);
    assert.equal(await app.verifyHmac("macs", "order=17&amount=100", mac), true);
    assert.equal(await app.verifyHmac("macs", "order=17&amount=900", mac), false);
    const bad = Buffer.from(mac.split(":")[3] as string, "base64");
    bad[0] ^= 1;
    assert.equal(
      await app.verifyHmac("macs", "order=17&amount=100", `atrest:macs:v1:${bad.toString("base64")}`),
      false,
    );
    assert.equal(await app.verifyHmac("macs", "x", "atrest:macs:v1:AAAA"), false);
    await assert.rejects(app.hmac("customers", "x"), (e: unknown) => {
      assert.ok(e instanceof AtrestError && e.code === "INVALID_INPUT");
      assert.match(e.message, /aes-256-gcm key: hmac needs a hmac-sha256 key/);
      return true;
    });
    await assert.rejects(app.encrypt("macs", "x"), code("INVALID_INPUT"));
    await assert.rejects(app.sign("macs", "x"), code("INVALID_INPUT"));
    // A rotated MAC key keeps verifying old MACs; new MACs name v2.
    await ops.call("POST", "/v1/keys/macs/rotate", {});
    assert.equal(await app.verifyHmac("macs", "order=17&amount=100", mac), true);
    assert.match(await app.hmac("macs", "order=17&amount=100"), /^atrest:macs:v2:/);
  });

  for (const [key, type] of [
    ["sign-ed", "ed25519"],
    ["sign-ec", "ecdsa-p256"],
  ] as const) {
    test(`${type}: sign, verify through the API, and verify with openssl from the public key`, async () => {
      const msg = `invoice 2026-12-02 ${type}`;
      const sig = await app.sign(key, msg);
      assert.match(sig, new RegExp(`^atrest:${key}:v1:`));
      assert.equal(await app.verify(key, msg, sig), true);
      assert.equal(await app.verify(key, `${msg}!`, sig), false);
      assert.equal(await narrow.verify(key, msg, sig), true, "narrow may verify");
      const pub = await app.publicKey(key);
      assert.equal(pub.type, type);
      assert.equal(pub.keyRef, `kek:${key}:v1`);
      const dir = join(root, key);
      execFileSync("mkdir", ["-p", dir]);
      await writeFile(join(dir, "pub.pem"), pub.publicKeyPem);
      await writeFile(join(dir, "msg"), msg);
      await writeFile(join(dir, "sig"), Buffer.from(sig.split(":")[3] as string, "base64"));
      const args =
        type === "ed25519"
          ? ["pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in", "msg", "-sigfile", "sig"]
          : ["dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig", "msg"];
      const out = execFileSync("openssl", args, { cwd: dir, encoding: "utf8" });
      assert.match(out, /Verified OK|Signature Verified Successfully/);
      await assert.rejects(app.publicKey("customers"), code("INVALID_INPUT"));
      await assert.rejects(app.encrypt(key, "x"), code("INVALID_INPUT"));
    });
  }

  test("per-client policy per key and operation: a narrowed client is refused what its rules omit", async () => {
    const r = await narrow.encrypt("customers", "ok", { a: "b" });
    await assert.rejects(narrow.decrypt("customers", r.ciphertext, { a: "b" }), (e: unknown) => {
      assert.ok(e instanceof AtrestError && e.code === "PERMISSION_DENIED");
      assert.match(e.message, /client narrow \(role server\) may not decrypt on kek:customers/);
      return true;
    });
    await assert.rejects(narrow.hmac("macs", "x"), code("PERMISSION_DENIED"));
    await assert.rejects(narrow.sign("sign-ed", "x"), code("PERMISSION_DENIED"));
    // An operator certificate has no data role at all.
    await assert.rejects(
      ops.call("POST", "/v1/keys/customers/encrypt", { plaintext: "AA==", context: {} }),
      code("PERMISSION_DENIED"),
    );
  });

  test("batch forms: one result per item, a bad item fails alone", async () => {
    const enc = await app.encryptBatch("customers", [
      { plaintext: "a", context: { i: "0" } },
      { plaintext: "b", context: { i: "1" } },
    ]);
    const c = enc.map((e) => {
      assert.ok(!("error" in e));
      return e.ciphertext;
    });
    const dec = await app.decryptBatch("customers", [
      { ciphertext: c[0] as string, context: { i: "0" } },
      { ciphertext: c[1] as string, context: { i: "0" } },
      { ciphertext: "garbage", context: {} },
    ]);
    assert.deepEqual(dec[0], Buffer.from("a"));
    assert.ok("error" in (dec[1] as object) && (dec[1] as { error: Error }).error instanceof IntegrityError);
    assert.ok("error" in (dec[2] as object) && (dec[2] as { error: AtrestError }).error.code === "INVALID_INPUT");
    const signed = await ops.call<{ items: { signature: string }[] }>("POST", "/v1/keys/sign-ed/batch/sign", {
      items: [{ input: "AA==" }],
    });
    assert.ok(signed.items[0] && "error" in signed.items[0], "operator may not sign");
  });

  test("the KMS audit records every call with key version and context, never a plaintext or token", async () => {
    const secretText = "never-in-the-audit-log-9f3a";
    const r = await app.encrypt("customers", secretText, { tenant: "t1" });
    await app.decrypt("customers", r.ciphertext, { tenant: "t1" });
    const records = await readKmsAudit(kmsDir, server.service().keyring);
    const ok = records.filter((x): x is Exclude<typeof x, { integrity: "failed" }> => !("integrity" in x));
    assert.equal(ok.length, records.length);
    const enc = ok.filter((x) => x.action === "key.encrypt" && x.user === "webapp" && /"t1"/.test(x.detail ?? ""));
    assert.ok(enc.length >= 1 && enc.every((x) => x.keyRef?.startsWith("kek:customers:v")));
    assert.ok(
      ok.some((x) => x.action === "key.decrypt" && x.outcome === "success" && /"tenant":"t1"/.test(x.detail ?? "")),
    );
    assert.ok(ok.some((x) => x.action === "key.decrypt" && x.outcome === "failure" && x.user === "narrow"));
    assert.ok(ok.some((x) => x.action === "key.sign" && x.keyRef === "kek:sign-ed:v1"));
    assert.ok(ok.some((x) => x.action === "key.verify" && /"valid":false/.test(x.detail ?? "")));
    const text = JSON.stringify(ok);
    assert.ok(!text.includes(secretText) && !text.includes(Buffer.from(secretText).toString("base64")));
    assert.ok(!text.includes(r.ciphertext.split(":")[3] as string));
  });

  test("docs/api/kms-openapi.json is current (npm run openapi) and documents every route", async () => {
    const onDisk = await readFile(join(ROOT, OPENAPI_FILE), "utf8");
    assert.equal(onDisk, openApiJson(), "docs/api/kms-openapi.json is stale: run npm run openapi");
    const doc = JSON.parse(onDisk) as { paths: Record<string, Record<string, { requestBody?: unknown }>> };
    const enc = doc.paths["/v1/keys/{name}/encrypt"]?.post;
    assert.ok(enc?.requestBody, "encrypt documents its body");
    assert.ok(doc.paths["/v1/keys/{name}/batch/verify"]?.post);
  });
});
