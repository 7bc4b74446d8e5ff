// Key custody routes: files per key version (custodian, auditor), who-can-decrypt (custodian), dual-control requests
// with each custodian as their own key-manager caller (the requester's approval refused, two others run it), key
// jobs (rewrap with its figures, one at a time), and every other role refused.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../../helpers/atrest.ts";
import { ApiClient, assertProblem } from "../../helpers/https.ts";

describe("HTTPS API: key custody", () => {
  let dir: string;
  let data: string;
  let server: RunningServer;
  const as: Record<string, ApiClient> = {};

  before(async () => {
    dir = await tempDir("atrest-custody-");
    data = join(dir, "data");
    await cli(["init", "--data", data]);
    const users: [string, string][] = [
      ["alice", "user"],
      ["root", "admin"],
      ["frank", "auditor"],
      ["carol", "custodian"],
      ["dave", "custodian"],
      ["erin", "custodian"],
    ];
    for (const [u, role] of users) {
      await cli(["user", "add", u, "--role", role, "--password-stdin", "--data", data], `${u}-password\n`);
    }
    server = await startServer(data);
    for (const [u] of users) {
      as[u] = await ApiClient.forData(server.httpPort, data);
      assert.equal((await as[u].login(u, `${u}-password`)).status, 200);
    }
    const put = await as.alice.req("PUT", "/api/v1/files/a.txt", { body: "hello" });
    assert.equal(put.status, 201, put.body.toString());
  });
  after(async () => {
    await server?.stop();
    await removeDir(dir);
  });

  test("roles: only custodians (and auditors for the counts) get in", async () => {
    for (const u of ["alice", "root", "frank"]) {
      assertProblem(await as[u].req("GET", "/api/v1/keys/requests"), 403);
      assertProblem(await as[u].req("GET", "/api/v1/keys/jobs"), 403);
      assertProblem(await as[u].req("GET", "/api/v1/keys/who-can-decrypt?path=/alice/a.txt"), 403);
      assertProblem(await as[u].req("POST", "/api/v1/keys/jobs", { json: { kind: "rewrap", key: "default" } }), 403);
      assertProblem(await as[u].req("POST", "/api/v1/keys/default/destroy", { json: {} }), 403);
    }
    assertProblem(await as.alice.req("GET", "/api/v1/keys/status"), 403);
    assert.equal((await as.frank.req("GET", "/api/v1/keys/status")).status, 200);
  });

  test("files per key version and who-can-decrypt", async () => {
    const s = (await as.carol.req("GET", "/api/v1/keys/status")).json<{ versions: unknown[] }>();
    assert.deepEqual(s.versions, [{ keyRef: "kek:default:v1", files: 1, current: true }]);
    const w = await as.carol.req("GET", "/api/v1/keys/who-can-decrypt?path=/alice/a.txt");
    assert.equal(w.status, 200, w.body.toString());
    const r = w.json<{ path: string; keyRef: string; owner: string; newFilesKey: string }>();
    assert.equal(r.keyRef, "kek:default:v1");
    assert.equal(r.owner, "alice");
    assertProblem(await as.carol.req("GET", "/api/v1/keys/who-can-decrypt?path=/alice/../x"), 400);
    assertProblem(await as.carol.req("GET", "/api/v1/keys/who-can-decrypt?path=/nope"), 404);
  });

  test("a destroy request: the requester cannot approve it, two other custodians run it", async () => {
    assert.equal((await as.carol.req("POST", "/api/v1/keys", { json: { name: "old" } })).status, 201);
    assert.equal((await as.carol.req("POST", "/api/v1/keys/old/rotate")).status, 200);
    assertProblem(await as.carol.req("POST", "/api/v1/keys/old/destroy", { json: { waitingDays: 2 } }), 400);
    const made = await as.carol.req("POST", "/api/v1/keys/old/destroy", {
      json: { version: 1, waitingDays: 7, reason: "retired" },
    });
    assert.equal(made.status, 201, made.body.toString());
    const req = made.json<{ id: string; requester: string; status: string }>();
    assert.equal(req.requester, "http:carol");
    const pending = (await as.dave.req("GET", "/api/v1/keys/requests?status=pending")).json<{
      requests: { id: string }[];
    }>();
    assert.deepEqual(
      pending.requests.map((r) => r.id),
      [req.id],
    );
    const own = await as.carol.req("POST", `/api/v1/keys/requests/${req.id}/approve`, { json: { reason: "mine" } });
    assert.ok(own.status >= 400 && own.status < 500, own.body.toString());
    const one = await as.dave.req("POST", `/api/v1/keys/requests/${req.id}/approve`, { json: { reason: "ok" } });
    assert.equal(one.json<{ status: string }>().status, "pending");
    assertProblem(
      await as.dave.req("POST", `/api/v1/keys/requests/${req.id}/approve`, { json: { reason: "again" } }),
      409,
    );
    const two = await as.erin.req("POST", `/api/v1/keys/requests/${req.id}/approve`, { json: { reason: "ok" } });
    assert.equal(two.json<{ status: string }>().status, "executed", two.body.toString());
    const keys = (await as.carol.req("GET", "/api/v1/keys")).json<{
      keys: { name: string; versions: { version: number; destroyAt?: string }[] }[];
    }>();
    assert.ok(keys.keys.find((k) => k.name === "old")?.versions.find((v) => v.version === 1)?.destroyAt);
    // one custodian may stop it during the waiting period; nothing left to cancel then
    for (const u of ["alice", "root", "frank"]) {
      assertProblem(await as[u].req("POST", "/api/v1/keys/old/cancel-destroy", { json: { version: 1 } }), 403);
    }
    const cancelled = await as.dave.req("POST", "/api/v1/keys/old/cancel-destroy", { json: { version: 1 } });
    assert.equal(cancelled.status, 200, cancelled.body.toString());
    const v1 = cancelled
      .json<{ versions: { version: number; destroyAt?: string }[] }>()
      .versions.find((v) => v.version === 1);
    assert.equal(v1?.destroyAt, undefined);
    assertProblem(await as.dave.req("POST", "/api/v1/keys/old/cancel-destroy", { json: { version: 1 } }), 400);
    // a rejection ends a request
    const r2 = (await as.carol.req("POST", "/api/v1/keys/old/destroy", { json: { version: 2, reason: "x" } })).json<{
      id?: string;
    }>();
    if (r2.id) {
      const rej = await as.dave.req("POST", `/api/v1/keys/requests/${r2.id}/reject`, { json: { reason: "no" } });
      assert.equal(rej.json<{ status: string }>().status, "rejected");
    }
  });

  test("a rewrap job after a rotation moves the file to the new version, with its figures", async () => {
    assert.equal((await as.carol.req("POST", "/api/v1/keys/default/rotate")).status, 200);
    const before = (await as.frank.req("GET", "/api/v1/keys/status")).json<{ versions: { current: boolean }[] }>();
    assert.deepEqual(
      before.versions.map((v) => v.current),
      [false],
    );
    const started = await as.carol.req("POST", "/api/v1/keys/jobs", { json: { kind: "rewrap", key: "default" } });
    assert.equal(started.status, 202, started.body.toString());
    const id = started.json<{ id: string }>().id;
    let job: { state: string; done: number; total: number } | undefined;
    for (let i = 0; i < 100; i++) {
      job = (await as.carol.req("GET", "/api/v1/keys/jobs"))
        .json<{ jobs: (typeof job & { id: string })[] }>()
        .jobs.find((j) => j?.id === id);
      if (job?.state !== "running") break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(job?.state, "done");
    assert.equal(job?.done, 1);
    const after = (await as.frank.req("GET", "/api/v1/keys/status")).json<{ versions: unknown[] }>();
    assert.deepEqual(after.versions, [{ keyRef: "kek:default:v2", files: 1, current: true }]);
    assertProblem(await as.carol.req("POST", "/api/v1/keys/jobs", { json: { kind: "shred", key: "default" } }), 400);
  });

  test("the destroy guard: asking for, or approving, a destruction that loses files needs acceptDataLoss", async () => {
    // after the rewrap above: alice's file and the server's service keys are on kek:default:v2, v1 holds nothing
    const refused = await as.carol.req("POST", "/api/v1/keys/default/destroy", { json: { reason: "all of it" } });
    const p = assertProblem(refused, 409);
    assert.match(String(p.detail), /1 file\(s\) under kek:default:v2/);
    assert.match(String(p.detail), /the server's own service key\(s\) .*metadata\.key.* under kek:default:v2/);
    assert.match(String(p.detail), /acceptDataLoss/);
    assert.equal(
      (await as.dave.req("GET", "/api/v1/keys/requests?status=pending")).json<{ requests: unknown[] }>().requests
        .length,
      0,
      "nothing asked of the key manager",
    );
    const made = await as.carol.req("POST", "/api/v1/keys/default/destroy", {
      json: { reason: "all of it", acceptDataLoss: true },
    });
    assert.equal(made.status, 201, made.body.toString());
    const req = made.json<{ id: string; reason: string }>();
    assert.match(req.reason, /^all of it \[destroy request with data loss accepted: 1 file\(s\) lost/);
    // each approval is checked again, when it is given
    const approve = (acceptDataLoss?: boolean) =>
      as.dave.req("POST", `/api/v1/keys/requests/${req.id}/approve`, {
        json: { reason: "ok", ...(acceptDataLoss ? { acceptDataLoss } : {}) },
      });
    assert.match(String(assertProblem(await approve(), 409).detail), /1 file\(s\) under kek:default:v2/);
    const one = await approve(true);
    assert.equal(one.json<{ status: string }>().status, "pending", one.body.toString());
    assert.equal(
      (await as.erin.req("POST", `/api/v1/keys/requests/${req.id}/reject`, { json: { reason: "no" } })).status,
      200,
    );
    // a version nothing is wrapped under needs no acceptance
    const v1 = await as.carol.req("POST", "/api/v1/keys/default/destroy", { json: { version: 1, reason: "old" } });
    assert.equal(v1.status, 201, v1.body.toString());
    const v1id = v1.json<{ id: string }>().id;
    assert.equal(
      (await as.dave.req("POST", `/api/v1/keys/requests/${v1id}/approve`, { json: { reason: "ok" } })).json<{
        status: string;
      }>().status,
      "pending",
    );
    await as.erin.req("POST", `/api/v1/keys/requests/${v1id}/reject`, { json: { reason: "no" } });
    const records = (await cli(["audit", "tail", "-n", "200", "--data", data])).stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { action: string; outcome: string; user: string; reason?: string; detail?: string })
      .filter((e) => e.reason === "data loss accepted" || e.reason === "data loss not accepted");
    assert.deepEqual(
      records.map((e) => [e.action, e.outcome, e.user]),
      [
        ["key.request", "failure", "carol"],
        ["key.request", "success", "carol"],
        ["key.approve", "failure", "dave"],
        ["key.approve", "success", "dave"],
      ],
    );
    assert.match(records[1]?.detail ?? "", /1 file\(s\) lost \(1 file\(s\) under kek:default:v2/);
  });
});
