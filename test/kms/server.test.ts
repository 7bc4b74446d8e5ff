// The KMS HTTPS server in process, with real TLS on loopback and the real RemoteKms client: seal state, Shamir
// unseal through the API, mutual TLS (no certificate, a foreign CA made with the openssl CLI, a revoked client),
// roles, encryption context, problem+json mapping, metrics.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { request } from "node:https";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { AtrestError, IntegrityError, KeyUnavailableError } from "../../src/errors.ts";
import type { KmsRole } from "../../src/kms/api/caller.ts";
import { CLIENT_CA_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE } from "../../src/kms/api/cert-files.ts";
import { RemoteKms } from "../../src/kms/api/client.ts";
import { revokeClient } from "../../src/kms/clients.ts";
import { initKmsDir, issueClient, openKmsDb } from "../../src/kms/home.ts";
import { readKmsAudit } from "../../src/kms/kms-audit.ts";
import { KmsServer } from "../../src/kms/server/server.ts";
import { removeDir, tempDir } from "../helpers/atrest.ts";
import { testKmsStore } from "./fixture.ts";

interface Raw {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One HTTPS request with whatever TLS material the test wants to present. */
function raw(
  port: number,
  method: string,
  path: string,
  tls: { key?: string; cert?: string; ca: string },
  body?: string,
): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: "127.0.0.1", port, method, path, ...tls, agent: false, headers: { "content-type": "application/json" } },
      (res) => {
        let b = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          b += c;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: b }));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

async function tlsOf(dir: string): Promise<{ key: string; cert: string; ca: string }> {
  const [key, cert, ca] = await Promise.all(
    [CLIENT_KEY_FILE, CLIENT_CERT_FILE, CLIENT_CA_FILE].map((f) => readFile(join(dir, f), "utf8")),
  );
  return { key, cert, ca };
}

describe("KMS server (HTTPS + mTLS, in process)", () => {
  let root: string;
  let kmsDir: string;
  let shares: string[];
  let server: KmsServer;
  const clients: Record<string, RemoteKms> = {};
  const certDirs: Record<string, string> = {};

  const issue = async (name: string, role: KmsRole) => {
    certDirs[name] = join(root, "certs", name);
    await issueClient(kmsDir, name, role, certDirs[name]);
    clients[name] = await RemoteKms.connect({ url: `https://127.0.0.1:${server.port}`, certDir: certDirs[name] });
  };

  before(async () => {
    root = await tempDir("atrest-kms-server-");
    kmsDir = join(root, "kms");
    const init = await initKmsDir(kmsDir, { shares: 5, threshold: 3, ...testKmsStore() });
    assert.equal(init.mode, "shamir");
    shares = init.mode === "shamir" ? init.shares : [];
    assert.equal(shares.length, 5);
    server = await KmsServer.start({ dir: kmsDir, port: 0, schedulerIntervalMs: 0 });
    await issue("fs1", "server");
    await issue("alice", "custodian");
    await issue("bob", "custodian");
    await issue("olga", "operator");
    await issue("audrey", "auditor");
    await issue("gone", "server");
    await issue("carol", "custodian");
    await issue("adam", "admin");
  });

  after(async () => {
    for (const c of Object.values(clients)) await c.close();
    await server?.close();
    await removeDir(root);
  });

  test("starts sealed: key operations answer 503 problem+json 'sealed' with the shares still needed", async () => {
    assert.equal(server.sealed, true);
    const st = await clients.fs1.status();
    assert.deepEqual([st.sealed, st.kind, st.threshold, st.shares, st.progress], [true, "shamir", 3, 5, 0]);
    const r = await raw(
      server.port,
      "POST",
      "/v1/keys/default/generate-data-key",
      await tlsOf(certDirs.fs1),
      JSON.stringify({ context: { file: "a" } }),
    );
    assert.equal(r.status, 503);
    assert.equal(r.headers["content-type"], "application/problem+json");
    const p = JSON.parse(r.body);
    assert.equal(p.title, "sealed");
    assert.equal(p.detail, "key manager is sealed: unseal with 3 more share(s)");
    assert.equal(p.code, "KEY_UNAVAILABLE");
    await assert.rejects(clients.fs1.generateDataKey("default", { file: "a" }), (e: Error) => {
      assert.ok(e instanceof KeyUnavailableError);
      assert.match(e.message, /sealed: unseal with 3 more share/);
      return true;
    });
  });

  test("unseal: only custodians; a mistyped share is refused without losing progress; 2 of 3 stay sealed", async () => {
    await assert.rejects(clients.fs1.unseal(shares[0]), /role server\) may not unseal/);
    let st = await clients.alice.unseal(shares[0]);
    assert.deepEqual([st.sealed, st.progress], [true, 1]);
    const typo = `${shares[1].slice(0, 20)}${shares[1][20] === "0" ? "1" : "0"}${shares[1].slice(21)}`;
    await assert.rejects(clients.bob.unseal(typo), (e: Error) => {
      assert.ok(e instanceof AtrestError && e.code === "INVALID_INPUT");
      assert.match(e.message, /checksum does not match.*progress unchanged \(1\/3\)/);
      return true;
    });
    // a state conflict, not bad input: 409 over HTTP, the same code on the client side
    await assert.rejects(
      clients.bob.unseal(shares[0]),
      (e: Error) => e instanceof AtrestError && e.code === "CONFLICT" && /already submitted/.test(e.message),
    );
    st = await clients.bob.unseal(shares[1]);
    assert.deepEqual([st.sealed, st.progress], [true, 2]);
    await assert.rejects(clients.fs1.generateDataKey("default", {}), /unseal with 1 more share/);
    st = await clients.alice.unseal(shares[2]);
    assert.deepEqual([st.sealed, st.progress], [false, 0]);
    assert.equal(server.sealed, false);
  });

  test("generate-data-key / unwrap round trip; a wrong context fails with IntegrityError (422)", async () => {
    const ctx = { file: "f-1", owner: "alice" };
    const dk = await clients.fs1.generateDataKey("default", ctx);
    assert.equal(dk.plaintext.length, 32);
    assert.equal(dk.keyRef, "kek:default:v1");
    const back = await clients.fs1.unwrap(dk.wrapped, ctx);
    assert.deepEqual(back, dk.plaintext);
    await assert.rejects(clients.fs1.unwrap(dk.wrapped, { ...ctx, file: "f-2" }), (e: Error) => {
      assert.ok(e instanceof IntegrityError);
      assert.match(e.message, /wrong encryption context/);
      return true;
    });
    const r = await raw(
      server.port,
      "POST",
      "/v1/unwrap",
      await tlsOf(certDirs.fs1),
      JSON.stringify({ wrapped: dk.wrapped.toString("base64"), context: { file: "x" } }),
    );
    assert.equal(r.status, 422);
    // Concurrent unwraps are coalesced into batch requests; each gets its own result or error.
    const many = await clients.fs1.generateDataKeys(
      "default",
      Array.from({ length: 50 }, (_, i) => ({ file: `b-${i}` })),
    );
    const results = await Promise.allSettled(
      many.map((k, i) => clients.fs1.unwrap(k.wrapped, { file: i === 7 ? "wrong" : `b-${i}` })),
    );
    results.forEach((r, i) => {
      if (i === 7) assert.ok(r.status === "rejected" && r.reason instanceof IntegrityError);
      else assert.ok(r.status === "fulfilled" && r.value.equals(many[i].plaintext));
    });
  });

  test("batch rewrap moves blobs to the current version; unwrap still gives the same DEK", async () => {
    const dks = await clients.fs1.generateDataKeys("default", [{ n: "1" }, { n: "2" }]);
    await clients.olga.rotateKey("default");
    const out = await clients.fs1.rewrapBatch([
      { wrapped: dks[0].wrapped, context: { n: "1" } },
      { wrapped: dks[1].wrapped, context: { n: "wrong" } },
    ]);
    assert.ok(!("error" in out[0]));
    assert.equal(out[0].keyRef, "kek:default:v2");
    assert.ok("error" in out[1] && out[1].error instanceof IntegrityError);
    if (!("error" in out[0])) assert.deepEqual(await clients.fs1.unwrap(out[0].wrapped, { n: "1" }), dks[0].plaintext);
  });

  test("roles: server cannot rotate, operator cannot unwrap, auditor reads keys only", async () => {
    const dk = await clients.fs1.generateDataKey("default", {});
    await assert.rejects(clients.fs1.rotateKey("default"), (e: Error) => {
      assert.ok(e instanceof AtrestError && e.code === "PERMISSION_DENIED");
      assert.match(e.message, /fs1/);
      return true;
    });
    await assert.rejects(clients.olga.unwrap(dk.wrapped, {}), (e: Error) => {
      assert.ok(e instanceof AtrestError && e.code === "PERMISSION_DENIED");
      return true;
    });
    const keys = await clients.audrey.listKeys();
    assert.ok(keys.some((k) => k.name === "default"));
    await assert.rejects(clients.audrey.createKey("x1"), /PERMISSION|permission denied/i);
  });

  test("mTLS: no certificate and a certificate from another CA (openssl) are refused in the handshake", async () => {
    const ca = (await tlsOf(certDirs.fs1)).ca;
    await assert.rejects(raw(server.port, "GET", "/v1/status", { ca }));
    const other = join(root, "other");
    execFileSync("mkdir", ["-p", other]);
    const sh = (args: string[]) => execFileSync("openssl", args, { cwd: other, stdio: "pipe" });
    sh(
      ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key"].concat([
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=evil CA",
      ]),
    );
    sh(
      [
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "c.key",
        "-out",
        "c.csr",
      ].concat(["-subj", "/CN=fs1/OU=server/O=atrest"]),
    );
    sh([
      "x509",
      "-req",
      "-in",
      "c.csr",
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      "c.crt",
      "-days",
      "2",
    ]);
    const key = await readFile(join(other, "c.key"), "utf8");
    const cert = await readFile(join(other, "c.crt"), "utf8");
    await assert.rejects(raw(server.port, "GET", "/v1/status", { key, cert, ca }));
    // The same through the client: a clear KEY_UNAVAILABLE, not a hang.
    const evil = await RemoteKms.connect({ url: `https://127.0.0.1:${server.port}`, key, cert, ca });
    await assert.rejects(evil.status(), (e: Error) => {
      assert.ok(e instanceof KeyUnavailableError);
      assert.match(e.message, /key manager unavailable at https:\/\/127\.0\.0\.1/);
      return true;
    });
    await evil.close();
  });

  test("a revoked client is refused (403) on its next request, even on a kept-alive connection", async () => {
    assert.equal((await clients.gone.status()).sealed, false);
    const db = openKmsDb(kmsDir);
    try {
      assert.equal(revokeClient(db, "gone", new Date().toISOString()), 1);
    } finally {
      db.close();
    }
    await new Promise((r) => setTimeout(r, 300));
    await assert.rejects(clients.gone.status(), (e: Error) => {
      assert.ok(e instanceof AtrestError && e.code === "PERMISSION_DENIED");
      assert.match(e.message, /client certificate of gone was revoked/);
      return true;
    });
  });

  test("bad requests: unknown route 404, wrong method 405, invalid JSON and fields 400, oversize 413", async () => {
    const tls = await tlsOf(certDirs.fs1);
    assert.equal((await raw(server.port, "GET", "/v1/nope", tls)).status, 404);
    const r405 = await raw(server.port, "GET", "/v1/unwrap", tls);
    assert.equal(r405.status, 405);
    assert.equal(r405.headers.allow, "POST");
    const bad = await raw(server.port, "POST", "/v1/unwrap", tls, "{nope");
    assert.equal(bad.status, 400);
    assert.match(JSON.parse(bad.body).detail, /not valid JSON/);
    const field = await raw(server.port, "POST", "/v1/unwrap", tls, JSON.stringify({ wrapped: "@@@@", context: {} }));
    assert.equal(field.status, 400);
    assert.match(JSON.parse(field.body).detail, /wrapped: wrapped must be standard base64/);
    const big = await raw(server.port, "POST", "/v1/unwrap", tls, JSON.stringify({ pad: "x".repeat(2 << 20) }));
    assert.equal(big.status, 413);
  });

  test("metrics: operator and auditor read Prometheus text; a server certificate may not", async () => {
    const text = await clients.olga.metrics();
    assert.match(text, /^atrest_kms_sealed 0$/m);
    assert.match(text, /^atrest_kms_requests_total\{op="unwrap",outcome="success"\} \d+$/m);
    assert.match(text, /^atrest_kms_requests_total\{op="unwrap",outcome="integrity"\} \d+$/m);
    assert.match(text, /^atrest_kms_key_age_seconds\{key="default"\} \d+$/m);
    assert.match(text, /^atrest_kms_request_duration_seconds_bucket\{op="batch-unwrap",le="\+Inf"\} \d+$/m);
    assert.match(await clients.audrey.metrics(), /atrest_kms_unseal_threshold 3/);
    await assert.rejects(clients.fs1.metrics(), /may not read metrics/);
  });

  test("seal forgets the master key; any other 3 shares unseal again and old DEKs unwrap", async () => {
    const dk = await clients.fs1.generateDataKey("default", { f: "keep" });
    await assert.rejects(clients.fs1.seal(), /may not seal/);
    const st = await clients.alice.seal();
    assert.equal(st.sealed, true);
    await assert.rejects(clients.fs1.unwrap(dk.wrapped, { f: "keep" }), /sealed/);
    for (const s of [shares[4], shares[1], shares[3]]) await clients.bob.unseal(s);
    assert.equal(server.sealed, false);
    assert.deepEqual(await clients.fs1.unwrap(dk.wrapped, { f: "keep" }), dk.plaintext);
  });
  test("dual control over HTTP: a client policy change needs two custodians, then denies fs1 outside tenant-*", async () => {
    await clients.olga.createKey("tenant-a");
    const req = await clients.adam.call<{ id: string; status: string; quorum: number }>(
      "PUT",
      "/v1/clients/fs1/policy",
      {
        policy: { rules: [{ keys: ["tenant-*"], ops: ["generate-data-key", "unwrap", "rewrap", "read"] }] },
        reason: "fs1 serves tenants only",
      },
    );
    assert.deepEqual([req.status, req.quorum], ["pending", 2]);
    await assert.rejects(clients.adam.call("POST", `/v1/requests/${req.id}/approve`, {}), /permission denied/i);
    const one = await clients.alice.call<{ status: string }>("POST", `/v1/requests/${req.id}/approve`, {
      reason: "ok",
    });
    assert.equal(one.status, "pending");
    await assert.rejects(clients.alice.call("POST", `/v1/requests/${req.id}/approve`, {}), /already/i);
    const two = await clients.bob.call<{ status: string }>("POST", `/v1/requests/${req.id}/approve`, { reason: "ok" });
    assert.equal(two.status, "executed");
    const listed = await clients.audrey.call<{ requests: { id: string }[] }>("GET", "/v1/requests?status=executed");
    assert.ok(listed.requests.some((r) => r.id === req.id));
    await assert.rejects(clients.fs1.generateDataKey("default", {}), (e: Error) => {
      assert.ok(e instanceof AtrestError && e.code === "PERMISSION_DENIED", String(e));
      assert.match(e.message, /fs1/);
      return true;
    });
    const dk = await clients.fs1.generateDataKey("tenant-a", { f: "t" });
    assert.deepEqual(await clients.fs1.unwrap(dk.wrapped, { f: "t" }), dk.plaintext);
    const policy = await clients.audrey.call<{ client: string }>("GET", "/v1/clients/fs1/policy");
    assert.equal(policy.client, "fs1");
  });

  test("the KMS audit log records unseal, seal, refused and key operations with the caller's identity", async () => {
    const records = await readKmsAudit(kmsDir, server.service().keyring);
    const ok = records.filter((r): r is Exclude<typeof r, { integrity: "failed" }> => !("integrity" in r));
    assert.equal(ok.length, records.length, "every record decrypts and authenticates");
    const unseal = ok.filter((r) => r.action === "kms.unseal");
    assert.ok(
      unseal.some((r) => r.outcome === "success" && r.user === "alice" && /"unsealed":true/.test(r.detail ?? "")),
    );
    assert.ok(unseal.some((r) => r.outcome === "failure" && r.user === "bob" && /checksum/.test(r.reason ?? "")));
    assert.ok(unseal.some((r) => r.outcome === "failure" && r.user === "fs1" && /may not unseal/.test(r.reason ?? "")));
    assert.ok(ok.some((r) => r.action === "kms.seal" && r.outcome === "success" && r.user === "alice"));
    const unwrap = ok.find((r) => r.action === "key.unwrap" && r.outcome === "success" && r.user === "fs1");
    assert.ok(unwrap);
    assert.equal(unwrap.role, "server");
    assert.match(unwrap.userId ?? "", /^[0-9a-f]{64}$/);
    assert.equal(unwrap.sourceIp, "127.0.0.1");
    assert.match(unwrap.keyRef ?? "", /^kek:default:v\d+$/);
    assert.ok(ok.some((r) => r.action === "key.unwrap" && r.outcome === "failure" && /context/.test(r.reason ?? "")));
  });
});
