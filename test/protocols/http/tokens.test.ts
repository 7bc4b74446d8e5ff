// API tokens against a real server: issued from a session (secret shown once, only its hash stored), used by curl and
// node:https as Bearer, limited to their scopes and path prefixes, unable to mint more tokens, revocable; a wrong
// token is refused like a wrong password (audited, scored by the defender); the secret never reaches the audit log
// or the store in clear. Expiry is checked with a clock in the service.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import type { AuditLog } from "../../../src/audit/log.ts";
import { TokenService } from "../../../src/service/tokens.ts";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../../helpers/atrest.ts";
import { ApiClient, assertProblem } from "../../helpers/https.ts";
import { openTestStore, storeBytes } from "../../helpers/store.ts";

const execFileP = promisify(execFile);

describe("HTTPS API: API tokens", () => {
  let dir: string;
  let data: string;
  let server: RunningServer;
  let alice: ApiClient;

  before(async () => {
    dir = await tempDir("atrest-tokens-");
    data = join(dir, "data");
    await cli(["init", "--data", data]);
    await cli(["user", "add", "alice", "--password-stdin", "--data", data], "alice-pw\n");
    server = await startServer(data);
    alice = await ApiClient.forData(server.httpPort, data);
    assert.equal((await alice.login("alice", "alice-pw")).status, 200);
    await alice.req("POST", "/api/v1/fs/mkdir", { json: { path: "/reports" } });
    await alice.req("PUT", "/api/v1/files/reports/q3.txt", { body: "q3" });
    await alice.req("PUT", "/api/v1/files/private.txt", { body: "mine" });
  });
  after(async () => {
    await server?.stop();
    await removeDir(dir);
  });

  const issue = async (body: Record<string, unknown>) => {
    const r = await alice.req("POST", "/api/v1/tokens", { json: body });
    assert.equal(r.status, 201, r.body.toString());
    return r.json<{ id: string; token: string; scopes: string[]; paths: string[]; expiresAt: string }>();
  };
  const withToken = (token: string) => {
    const c = alice.fresh();
    c.bearer = token;
    return c;
  };

  test("a read-only token for /reports: curl downloads there, nothing else", async () => {
    const t = await issue({ name: "reports reader", scopes: ["files:read"], paths: ["/reports"], expiresInDays: 7 });
    assert.match(t.token, /^atr_[A-Za-z0-9_-]{16}_[A-Za-z0-9_-]{43}$/);
    assert.deepEqual(t.paths, ["/reports"]);
    const { stdout } = await execFileP("curl", [
      "-sS",
      "--fail-with-body",
      "--cacert",
      join(data, "tls", "server.crt"),
      "-H",
      `Authorization: Bearer ${t.token}`,
      `https://localhost:${server.httpPort}/api/v1/files/reports/q3.txt`,
    ]);
    assert.equal(stdout, "q3");
    const c = withToken(t.token);
    assert.equal((await c.req("GET", "/api/v1/fs/list?path=/reports")).status, 200);
    assertProblem(await c.req("GET", "/api/v1/files/private.txt"), 403);
    assertProblem(await c.req("GET", "/api/v1/fs/list?path=/"), 403);
    assertProblem(await c.req("PUT", "/api/v1/files/reports/new.txt", { body: "x" }), 403);
    assertProblem(await c.req("GET", "/api/v1/tokens"), 403);
    // no CSRF header needed with a token (it is no ambient credential), but a token cannot mint tokens
    const rw = await issue({ name: "writer", scopes: ["files:write", "files:read", "account"] });
    const w = withToken(rw.token);
    assert.equal((await w.req("PUT", "/api/v1/files/reports/new.txt", { body: "x" })).status, 201);
    assertProblem(await w.req("POST", "/api/v1/tokens", { json: { name: "more", scopes: ["files:read"] } }), 403);
  });

  test("list shows no secrets, revoke ends the token, only hashes are stored, the audit never holds the secret", async () => {
    const t = await issue({ name: "to revoke", scopes: ["files:read"] });
    const list = await alice.req("GET", "/api/v1/tokens");
    assert.ok(list.json<{ tokens: { id: string }[] }>().tokens.some((x) => x.id === t.id));
    assert.ok(!list.body.toString().includes(t.token.slice("atr_".length + 16 + 1)));
    assert.equal((await withToken(t.token).req("GET", "/api/v1/fs/stat?path=/private.txt")).status, 200);
    assert.equal((await alice.req("DELETE", `/api/v1/tokens/${t.id}`)).status, 204);
    assertProblem(await withToken(t.token).req("GET", "/api/v1/fs/stat?path=/private.txt"), 401);
    assertProblem(await alice.req("DELETE", `/api/v1/tokens/${t.id}`), 404);
    const secret = t.token.slice("atr_".length + 16 + 1);
    const db = await storeBytes(data);
    assert.ok(!db.includes(Buffer.from(secret)), "the secret is not in the store");
    const audit = (await cli(["audit", "tail", "-n", "500", "--data", data])).stdout;
    assert.ok(!audit.includes(secret), "the secret is not in the audit log");
    assert.match(audit, /"action":"token.create"/);
    assert.match(audit, /"action":"token.revoke"/);
  });

  test("a wrong token is a 401 like any refused login, audited and scored", async () => {
    const c = withToken(`atr_${"A".repeat(16)}_${"B".repeat(43)}`);
    const r = assertProblem(await c.req("GET", "/api/v1/fs/list"), 401);
    assert.equal(r.code, "UNAUTHORIZED");
    assertProblem(await withToken("garbage").req("GET", "/api/v1/fs/list"), 401);
    const audit = (await cli(["audit", "tail", "-n", "50", "--data", data])).stdout;
    assert.match(audit, /"method":"token".*"reason":"bad token"|"reason":"bad token".*"method":"token"/);
  });
});

test("TokenService: expiry, and bounds on the lifetime", async () => {
  const dir = await tempDir("atrest-tokens-unit-");
  const store = await openTestStore(join(dir, "meta.db"));
  const records: unknown[] = [];
  let now = 1_800_000_000_000;
  const svc = new TokenService(store, { record: (e: unknown) => records.push(e) } as unknown as AuditLog, () => now);
  const actor = { user: "alice", role: "user" as const, protocol: "http" as const };
  const { token } = await svc.create(actor, { name: "t", scopes: ["files:read"], paths: [], expiresInDays: 1 });
  assert.equal((await svc.verify(token))?.user, "alice");
  now += 86_400_000;
  assert.equal(await svc.verify(token), undefined, "expired at its expiry");
  await assert.rejects(svc.create(actor, { name: "t", scopes: [], paths: [], expiresInDays: 0 }), /expiresInDays/);
  await assert.rejects(svc.create(actor, { name: "t", scopes: [], paths: [], expiresInDays: 400 }), /expiresInDays/);
  assert.equal(records.length, 1);
  await store.close();
  await removeDir(dir);
});
