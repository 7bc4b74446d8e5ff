// POST /v1/relay on the key manager itself (in process, so its audit log can be read): a signed call runs as the
// person who signed it and the audit names the person and the file server that carried it; only a `server` client
// may carry one, only the listed operations may be signed, and a statement for another key manager is refused.
import assert from "node:assert/strict";
import { generateKeyPairSync, randomBytes, sign } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { RemoteKms } from "../../src/kms/api/client.ts";
import { type RelayMethod, type SignedKmsCall, statementFor } from "../../src/kms/api/relayed.ts";
import { initKmsDir, issueClient } from "../../src/kms/home.ts";
import { readKmsAudit } from "../../src/kms/kms-audit.ts";
import { KmsServer } from "../../src/kms/server/server.ts";
import { removeDir, tempDir } from "../helpers/atrest.ts";
import { testKmsStore } from "./fixture.ts";

describe("KMS: signed calls relayed by a file server", () => {
  let root: string;
  let kmsDir: string;
  let server: KmsServer;
  const client: Record<string, RemoteKms> = {};
  let carol: { key: ReturnType<typeof generateKeyPairSync>["privateKey"]; certificate: string };

  const call = (method: RelayMethod, path: string, body: unknown, aud = client.fs1?.audience as string) => {
    const statement = statementFor(aud, method, path, body, randomBytes(16).toString("base64url"));
    const signature = sign("sha256", Buffer.from(statement), { key: carol.key, dsaEncoding: "ieee-p1363" });
    return { statement, signature: signature.toString("base64url"), certificate: carol.certificate } as SignedKmsCall;
  };

  before(async () => {
    root = await tempDir("atrest-kms-relay-");
    kmsDir = join(root, "kms");
    await initKmsDir(kmsDir, { dev: true, ...testKmsStore() });
    server = await KmsServer.start({ dir: kmsDir, port: 0, schedulerIntervalMs: 0 });
    const url = `https://127.0.0.1:${server.port}`;
    for (const [name, role] of [
      ["fs1", "server"],
      ["olga", "operator"],
    ] as const) {
      await issueClient(kmsDir, name, role, join(root, name));
      client[name] = await RemoteKms.connect({ url, certDir: join(root, name) });
    }
    const pair = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const pub = join(root, "carol.pub.pem");
    await writeFile(pub, pair.publicKey.export({ type: "spki", format: "pem" }));
    await issueClient(kmsDir, "carol", "custodian", join(root, "carol"), {
      publicKeyPem: await readFile(pub, "utf8"),
    });
    carol = { key: pair.privateKey, certificate: await readFile(join(root, "carol", "client.crt"), "utf8") };
    await client.olga?.createKey("hr");
  });
  after(async () => {
    for (const c of Object.values(client)) await c.close();
    await server?.close();
    await removeDir(root);
  });

  test("runs as the signer; the audit names the person and the relay", async () => {
    const asked = await client.olga?.call<{ id: string }>("POST", "/v1/keys/hr/destroy", { reason: "gone" });
    const id = asked?.id as string;
    const r = await client.fs1?.relay<{ status: string }>(call("POST", `/v1/requests/${id}/approve`, { reason: "ok" }));
    assert.equal(r?.status, "pending");
    const records = await readKmsAudit(kmsDir, server.service().keyring);
    const approve = records.find((x) => "action" in x && x.action === "key.approve" && x.outcome === "success");
    assert.ok(approve && "user" in approve, "an approve record");
    assert.equal(approve.user, "carol");
    assert.equal(approve.role, "custodian");
    assert.equal(approve.method, "signed statement relayed by fs1");
  });

  test("the signer's role applies: a custodian cannot ask for a destruction", async () => {
    await assert.rejects(
      client.fs1?.relay(call("POST", "/v1/keys/hr/destroy", { reason: "x" })) as Promise<unknown>,
      /carol \(role custodian\) may not request-destroy/,
    );
  });

  test("only an ECDSA P-256 public key is certified; no private key is written", async () => {
    const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 }).publicKey.export({ type: "spki", format: "pem" });
    await assert.rejects(
      issueClient(kmsDir, "rob", "custodian", join(root, "rob"), { publicKeyPem: rsa as string }),
      /must be ECDSA P-256/,
    );
    await assert.rejects(
      issueClient(kmsDir, "rob", "custodian", join(root, "rob"), { publicKeyPem: "not a key" }),
      /cannot read the public key/,
    );
    await assert.rejects(readFile(join(root, "carol", "client.key")), /ENOENT/);
  });

  test("only a server client carries; only listed operations; only this key manager", async () => {
    await assert.rejects(
      client.olga?.relay(call("GET", "/v1/requests", null)) as Promise<unknown>,
      /olga \(role operator\) may not relay/,
    );
    await assert.rejects(
      client.fs1?.relay(call("POST", "/v1/unwrap", { wrapped: "x", context: {} })) as Promise<unknown>,
      /unwrap cannot be a signed call/,
    );
    await assert.rejects(
      client.fs1?.relay(call("GET", "/v1/requests", null, "0".repeat(64))) as Promise<unknown>,
      /names another key manager/,
    );
  });
});
