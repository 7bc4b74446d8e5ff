// Administration over HTTPS against a real server, one client per role: the admin manages users (a user added here
// logs in; a removed one loses their session), groups, folders and bans; the auditor reads users and the audit log
// with filters and login histories; the custodian lists, creates and rotates keys through the key manager; every
// route refuses the roles DESIGN §2 keeps out (403 problem+json), bad input is 400/409.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../../helpers/atrest.ts";
import { ApiClient, assertProblem } from "../../helpers/https.ts";

describe("HTTPS API: administration by role", () => {
  let dir: string;
  let data: string;
  let server: RunningServer;
  const as: Record<string, ApiClient> = {};

  before(async () => {
    dir = await tempDir("atrest-http-admin-");
    data = join(dir, "data");
    await cli(["init", "--data", data]);
    for (const role of ["admin", "custodian", "auditor", "user"]) {
      await cli(["user", "add", `${role}1`, "--role", role, "--password-stdin", "--data", data], `${role}-pw-long\n`);
    }
    server = await startServer(data);
    const base = await ApiClient.forData(server.httpPort, data);
    for (const role of ["admin", "custodian", "auditor", "user"]) {
      as[role] = base.fresh();
      assert.equal((await as[role].login(`${role}1`, `${role}-pw-long`)).status, 200);
    }
  });
  after(async () => {
    await server?.stop();
    await removeDir(dir);
  });

  test("the admin adds a user who then logs in; removing them ends their session", async () => {
    const add = await as.admin.req("POST", "/api/v1/admin/users", {
      json: { name: "dave", password: "dave-password", groups: ["eng"], quotaBytes: 1000000 },
    });
    assert.equal(add.status, 201, add.body.toString());
    assert.equal(add.json().hasPassword, true);
    assert.ok(!add.body.toString().includes("argon2"), "no password hash in the answer");
    assertProblem(
      await as.admin.req("POST", "/api/v1/admin/users", { json: { name: "dave", password: "dave-password" } }),
      409,
    );
    assertProblem(
      await as.admin.req("POST", "/api/v1/admin/users", { json: { name: "Bad Name", password: "x-password" } }),
      400,
    );
    assertProblem(await as.admin.req("POST", "/api/v1/admin/users", { json: { name: "erin" } }), 400);
    const dave = as.admin.fresh();
    assert.equal((await dave.login("dave", "dave-password")).status, 200);
    assert.equal((await dave.req("PUT", "/api/v1/files/hello.txt", { body: "hi" })).status, 201);
    const users = (await as.auditor.req("GET", "/api/v1/admin/users")).json<{ users: { name: string }[] }>().users;
    assert.ok(
      users.some((u) => u.name === "dave"),
      "the auditor reads the user list",
    );
    assert.equal((await as.admin.req("DELETE", "/api/v1/admin/users/dave")).status, 204);
    assertProblem(await dave.req("GET", "/api/v1/fs/list"), 401);
    assertProblem(await as.admin.req("DELETE", "/api/v1/admin/users/dave"), 404);
  });

  test("groups, folders and bans", async () => {
    assert.equal((await as.admin.req("PUT", "/api/v1/admin/groups/eng", { json: {} })).status, 200);
    const groups = (await as.admin.req("GET", "/api/v1/admin/groups")).json<{ groups: { name: string }[] }>().groups;
    assert.deepEqual(
      groups.map((g) => g.name),
      ["eng"],
    );
    assert.equal((await as.admin.req("DELETE", "/api/v1/admin/groups/eng")).status, 204);
    assert.equal((await as.admin.req("PUT", "/api/v1/admin/folders", { json: { path: "/shared/vault" } })).status, 200);
    const folders = (await as.auditor.req("GET", "/api/v1/admin/folders")).json<{ folders: { path: string }[] }>()
      .folders;
    assert.deepEqual(
      folders.map((f) => f.path),
      ["/shared/vault"],
    );
    assert.equal((await as.admin.req("DELETE", "/api/v1/admin/folders?path=/shared/vault")).status, 204);
    assertProblem(await as.admin.req("PUT", "/api/v1/admin/folders", { json: { path: "relative" } }), 400);
    // ban 127.0.0.7 (threshold 15), lift it over the API
    const attacker = as.admin.fresh("127.0.0.7");
    for (let i = 0; i < 15; i++) await attacker.login("user1", "wrong");
    const bans = (await as.admin.req("GET", "/api/v1/admin/bans")).json<{
      bans: { subject: string; active: boolean }[];
    }>().bans;
    assert.ok(bans.some((b) => b.subject === "127.0.0.7" && b.active));
    assertProblem(await attacker.login("user1", "user-pw-long"), 401);
    assert.equal((await as.admin.req("DELETE", "/api/v1/admin/bans/127.0.0.7")).json().lifted, 1);
    assert.equal((await attacker.login("user1", "user-pw-long")).status, 200);
  });

  test("the auditor queries the audit log and login histories; users see their own", async () => {
    const q = await as.auditor.req("GET", "/api/v1/audit?action=user.add&limit=10");
    assert.equal(q.status, 200);
    const recs = q.json<{ records: { record: { action: string; user: string; protocol: string; role: string } }[] }>()
      .records;
    const viaHttp = recs.find((r) => r.record.protocol === "http");
    assert.ok(viaHttp, "the user added over HTTPS is audited with protocol http");
    assert.equal(viaHttp.record.user, "admin1");
    assert.equal(viaHttp.record.role, "admin");
    const logins = (await as.auditor.req("GET", "/api/v1/audit/logins/user1")).json<{
      records: { record: { outcome: string } }[];
    }>();
    assert.ok(logins.records.some((r) => r.record.outcome === "failure"));
    assert.ok(logins.records.some((r) => r.record.outcome === "success"));
    const mine = (await as.user.req("GET", "/api/v1/account/logins")).json<{
      records: { record: { user: string } }[];
    }>();
    assert.ok(mine.records.length > 0 && mine.records.every((r) => r.record.user === "user1"));
    assertProblem(await as.auditor.req("GET", "/api/v1/audit?since=yesterday"), 400);
  });

  test("the custodian lists, creates and rotates keys", async () => {
    const created = await as.custodian.req("POST", "/api/v1/keys", { json: { name: "finance" } });
    assert.equal(created.status, 201, created.body.toString());
    const rotated = await as.custodian.req("POST", "/api/v1/keys/finance/rotate");
    assert.equal(rotated.json().currentVersion, 2);
    const keys = (await as.custodian.req("GET", "/api/v1/keys")).json<{ keys: { name: string }[] }>().keys;
    assert.ok(keys.some((k) => k.name === "finance"));
    assertProblem(await as.custodian.req("POST", "/api/v1/keys/nope/rotate"), 404);
  });

  test("each role is refused what is not its job", async () => {
    const denied: [string, string, string, unknown?][] = [
      ["user", "GET", "/api/v1/admin/users"],
      ["custodian", "GET", "/api/v1/admin/users"],
      ["auditor", "POST", "/api/v1/admin/users", { name: "x", password: "xxxxxxxxx" }],
      ["auditor", "DELETE", "/api/v1/admin/bans/1.2.3.4"],
      ["custodian", "PUT", "/api/v1/admin/folders", { path: "/f" }],
      ["admin", "GET", "/api/v1/keys"],
      ["admin", "POST", "/api/v1/keys", { name: "k" }],
      ["auditor", "POST", "/api/v1/keys/finance/rotate"],
      ["user", "GET", "/api/v1/keys"],
      ["admin", "GET", "/api/v1/audit"],
      ["custodian", "GET", "/api/v1/audit/logins/user1"],
      ["user", "GET", "/api/v1/audit"],
      ["auditor", "GET", "/api/v1/fs/list"],
      ["custodian", "PUT", "/api/v1/files/x"],
    ];
    for (const [role, method, path, json] of denied) {
      const r = await as[role].req(method, path, json === undefined ? {} : { json });
      assertProblem(r, 403);
    }
  });
});
