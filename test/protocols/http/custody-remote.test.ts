// Key custody through the web API with a remote key manager (`atrest kms serve` as its own process): each custodian
// signs the exact key-manager call with a key generated as the browser does (WebCrypto ECDSA P-256, non-extractable),
// certified by the key manager's CA from its public key alone; the file server only carries the envelope. Two
// custodians approve a destroy the operator asked for; a forged, replayed, stale or server-signed call is refused.
import assert from "node:assert/strict";
import { createPrivateKey, randomBytes, sign } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { encodeSignedCall, KMS_SIGNED_HEADER, type SignedKmsCall } from "../../../src/kms/api/relayed.ts";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../../helpers/atrest.ts";
import { ApiClient, assertProblem, type Reply } from "../../helpers/https.ts";
import { type RunningKms, setupKms, startKms, unsealKms } from "../../helpers/kms.ts";

/** A custodian's browser: a non-extractable signing key and the certificate the key manager issued for it. */
interface Browser {
  key: CryptoKey;
  certificate: string;
}

async function browserKey(root: string, kmsDir: string, name: string): Promise<Browser> {
  const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
  const spki = Buffer.from(await crypto.subtle.exportKey("spki", pair.publicKey));
  const pem = `-----BEGIN PUBLIC KEY-----\n${spki.toString("base64").replace(/.{64}/g, "$&\n")}\n-----END PUBLIC KEY-----\n`;
  const pubFile = join(root, `${name}.pub.pem`);
  await writeFile(pubFile, pem);
  const out = join(root, "web-certs", name);
  const issued = await cli([
    "kms",
    "client",
    "issue",
    name,
    "--role",
    "custodian",
    "--public-key",
    pubFile,
    "--out",
    out,
    "--data",
    kmsDir,
  ]);
  assert.match(issued.stdout, new RegExp(`issued custodian certificate for ${name}`));
  await assert.rejects(readFile(join(out, "client.key")), /ENOENT/); // no private key was made or written
  return { key: pair.privateKey, certificate: await readFile(join(out, "client.crt"), "utf8") };
}

async function signWith(b: Browser, statement: string): Promise<string> {
  const sig = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, b.key, Buffer.from(statement, "utf8"));
  return encodeSignedCall({ statement, signature: Buffer.from(sig).toString("base64url"), certificate: b.certificate });
}

/** The request unsigned (428 with the statement), then signed by `b` and sent again. */
async function signed(
  api: ApiClient,
  b: Browser,
  method: string,
  path: string,
  json?: unknown,
): Promise<{ reply: Reply; header: string; statement: string }> {
  const first = await api.req(method, path, json === undefined ? {} : { json });
  assertProblem(first, 428);
  const statement = first.json<{ statement: string; code: string }>().statement;
  assert.equal(first.json<{ code: string }>().code, "KMS_SIGNATURE_REQUIRED");
  const header = await signWith(b, statement);
  const reply = await api.req(method, path, {
    ...(json === undefined ? {} : { json }),
    headers: { [KMS_SIGNED_HEADER]: header },
  });
  return { reply, header, statement };
}

describe("HTTPS API: key custody with a remote key manager (signed calls)", () => {
  let root: string;
  let kms: RunningKms;
  let server: RunningServer;
  let kmsFlags: (who: string) => string[];
  let fs1Dir: string;
  const browsers: Record<string, Browser> = {};
  const as: Record<string, ApiClient> = {};
  let requestId: string;
  let data: string;

  before(async () => {
    root = await tempDir("atrest-custody-remote-");
    const setup = await setupKms(root, {
      fs1: "server",
      olga: "operator",
      keeper1: "custodian",
      keeper2: "custodian",
    });
    fs1Dir = setup.certs.fs1 as string;
    browsers.carol = await browserKey(root, setup.dir, "carol");
    browsers.dave = await browserKey(root, setup.dir, "dave");
    kms = await startKms(setup.dir);
    await unsealKms(kms.url, setup.certs.keeper1 as string, [setup.shares[0] as string]);
    await unsealKms(kms.url, setup.certs.keeper2 as string, [setup.shares[1] as string]);
    kmsFlags = (who) => ["--kms", kms.url, "--kms-cert", setup.certs[who] as string];
    data = join(root, "data");
    await cli(["init", "--data", data, ...kmsFlags("fs1")]);
    for (const [u, role] of [
      ["carol", "custodian"],
      ["dave", "custodian"],
      ["alice", "user"],
    ] as const) {
      await cli(["user", "add", u, "--role", role, "--password-stdin", "--data", data], `${u}-password\n`);
    }
    // a key with a file under it, for the destroy guard (last test)
    await cli(["kms", "key", "create", "kept", ...kmsFlags("olga")]);
    await cli(["folder", "add", "/alice/kept", "--key", "kept", "--data", data]);
    server = await startServer(data);
    for (const u of ["carol", "dave", "alice"]) {
      as[u] = await ApiClient.forData(server.httpPort, data);
      assert.equal((await as[u].login(u, `${u}-password`)).status, 200);
    }
    await cli(["kms", "key", "create", "old", ...kmsFlags("olga")]);
    const asked = await cli([
      "kms",
      "key",
      "destroy",
      "old",
      "--waiting-days",
      "7",
      "--reason",
      "retired",
      ...kmsFlags("olga"),
    ]);
    requestId = /request (req-[0-9a-f]+)/.exec(asked.stdout)?.[1] as string;
    assert.ok(requestId, asked.stdout);
  });
  after(async () => {
    await server?.stop();
    await kms?.stop();
    await removeDir(root);
  });

  test("a custodian lists the pending requests by signing the call", async () => {
    const { reply, statement } = await signed(as.carol, browsers.carol, "GET", "/api/v1/keys/requests?status=pending");
    assert.equal(reply.status, 200, reply.body.toString());
    const s = JSON.parse(statement) as { method: string; path: string; aud: string };
    assert.deepEqual([s.method, s.path], ["GET", "/v1/requests?status=pending"]);
    assert.match(s.aud, /^[0-9a-f]{64}$/);
    const list = reply.json<{ requests: { id: string; requester: string }[] }>().requests;
    assert.deepEqual(
      list.map((r) => [r.id, r.requester]),
      [[requestId, "olga"]],
    );
    // a user is refused before anything reaches the key manager
    assertProblem(await as.alice.req("GET", "/api/v1/keys/requests"), 403);
  });

  test("a forged, changed, replayed, stale or server-signed call is refused", async () => {
    const path = `/api/v1/keys/requests/${requestId}/approve`;
    const first = await as.carol.req("POST", path, { json: { reason: "fine" } });
    assertProblem(first, 428);
    const statement = first.json<{ statement: string }>().statement;
    const good = await signWith(browsers.carol, statement);
    // the envelope of another call (the body says something else): refused by the file server
    assertProblem(
      await as.carol.req("POST", path, { json: { reason: "other" }, headers: { [KMS_SIGNED_HEADER]: good } }),
      400,
    );
    // a statement changed after signing: the key manager's signature check refuses it
    const call = JSON.parse(Buffer.from(good, "base64url").toString()) as SignedKmsCall;
    const changed = encodeSignedCall({ ...call, statement: statement.replace('"fine"', '"evil"') });
    assertProblem(
      await as.carol.req("POST", path, { json: { reason: "evil" }, headers: { [KMS_SIGNED_HEADER]: changed } }),
      401,
    );
    // the file server's own key (a server certificate) cannot sign for a person
    const fsKey = createPrivateKey(await readFile(join(fs1Dir, "client.key"), "utf8"));
    const byServer = encodeSignedCall({
      statement,
      signature: sign("sha256", Buffer.from(statement), { key: fsKey, dsaEncoding: "ieee-p1363" }).toString(
        "base64url",
      ),
      certificate: await readFile(join(fs1Dir, "client.crt"), "utf8"),
    });
    const refused = await as.carol.req("POST", path, {
      json: { reason: "fine" },
      headers: { [KMS_SIGNED_HEADER]: byServer },
    });
    assertProblem(refused, 403);
    assert.match(refused.body.toString(), /server certificate \(fs1\) cannot sign for a person/);
    // a statement ten minutes old
    const stale = JSON.stringify({
      ...JSON.parse(statement),
      created: Date.now() - 600_000,
      nonce: randomBytes(16).toString("base64url"),
    });
    assertProblem(
      await as.carol.req("POST", path, {
        json: { reason: "fine" },
        headers: { [KMS_SIGNED_HEADER]: await signWith(browsers.carol, stale) },
      }),
      401,
    );
    // nothing above was counted
    const listed = await signed(as.dave, browsers.dave, "GET", "/api/v1/keys/requests?status=pending");
    const req = listed.reply.json<{ requests: { id: string; approvals: unknown[] }[] }>().requests[0];
    assert.deepEqual(req?.approvals, []);
  });

  test("two custodians approve the destroy through the web API; the key manager records each person", async () => {
    const path = `/api/v1/keys/requests/${requestId}/approve`;
    const one = await signed(as.carol, browsers.carol, "POST", path, { reason: "retired, checked" });
    assert.equal(one.reply.status, 200, one.reply.body.toString());
    assert.equal(one.reply.json<{ status: string }>().status, "pending");
    // the same envelope again: a replay
    const again = await as.carol.req("POST", path, {
      json: { reason: "retired, checked" },
      headers: { [KMS_SIGNED_HEADER]: one.header },
    });
    assertProblem(again, 401);
    assert.match(again.body.toString(), /already used/);
    // carol signing a second time is one custodian still
    const twice = await signed(as.carol, browsers.carol, "POST", path, { reason: "again" });
    assertProblem(twice.reply, 409);
    const two = await signed(as.dave, browsers.dave, "POST", path, { reason: "agreed" });
    assert.equal(two.reply.status, 200, two.reply.body.toString());
    const done = two.reply.json<{ status: string; approvals: { by?: string; custodian?: string }[] }>();
    assert.equal(done.status, "executed");
    const shown = JSON.parse((await cli(["kms", "key", "show", "old", "--json", ...kmsFlags("olga")])).stdout) as {
      versions: { destroyAt?: string }[];
    };
    assert.ok(shown.versions[0]?.destroyAt, "destruction scheduled");
    const listed = JSON.parse(
      (await cli(["kms", "request", "list", "--status", "executed", "--json", ...kmsFlags("olga")])).stdout,
    ) as { id: string; approvals: Record<string, unknown>[] }[];
    const approvers = listed.find((r) => r.id === requestId)?.approvals.map((a) => JSON.stringify(a)) ?? [];
    assert.equal(approvers.length, 2);
    assert.match(approvers[0] as string, /carol/);
    assert.match(approvers[1] as string, /dave/);
  });

  test("the destroy guard: the file server counts its files before it carries a custodian's signed approval", async () => {
    const put = await as.alice.req("PUT", "/api/v1/files/kept/x.txt", { body: "under kek:kept" });
    assert.equal(put.status, 201, put.body.toString());
    // the operator's CLI with the file server's data directory (bound to this key manager): refused, counted
    const ask = ["kms", "key", "destroy", "kept", "--waiting-days", "7", ...kmsFlags("olga")];
    await assert.rejects(cli([...ask, "--data", data]), /1 file\(s\) under kek:kept:v1.*--accept-data-loss/);
    // without one the CLI cannot know (nor can the key manager): it says so, and the approvals are guarded
    const asked = await cli([...ask, "--data", join(root, "none")]);
    assert.match(asked.stderr, /no data directory at .*none: the files under kek:kept were not counted/);
    const id = /request (req-[0-9a-f]+)/.exec(asked.stdout)?.[1] as string;
    const path = `/api/v1/keys/requests/${id}/approve`;
    // refused before a signature is even asked for: nothing reaches the key manager
    const refused = await as.carol.req("POST", path, { json: { reason: "ok" } });
    assert.match(String(assertProblem(refused, 409).detail), /1 file\(s\) under kek:kept:v1/);
    const accepted = await signed(as.carol, browsers.carol, "POST", path, { reason: "ok", acceptDataLoss: true });
    assert.equal(accepted.reply.status, 200, accepted.reply.body.toString());
    assert.equal(accepted.reply.json<{ status: string }>().status, "pending");
    // the signed statement is the key manager call alone: the acceptance is the file server's, audited there
    assert.deepEqual((JSON.parse(accepted.statement) as { body: unknown }).body, { reason: "ok" });
    const audit = (await cli(["audit", "tail", "-n", "100", "--data", data])).stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { action: string; outcome: string; user: string; reason?: string });
    assert.deepEqual(
      audit.filter((e) => e.action === "key.approve").map((e) => [e.outcome, e.user, e.reason]),
      [
        ["failure", "carol", "data loss not accepted"],
        ["success", "carol", "data loss accepted"],
      ],
    );
  });
});
