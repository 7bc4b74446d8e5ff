// Administration over HTTPS against a real server, one client per role: the admin manages users (a user added here
// logs in; a removed one loses their session), changes, disables and enables users and ends their sessions (browser
// and a live OpenSSH sftp connection), groups, folders and bans; the auditor reads users and the audit log
// with filters and login histories; the custodian lists, creates and rotates keys and sets a rotation policy through the key manager; every
// route refuses the roles DESIGN §2 keeps out (403 problem+json), bad input is 400/409.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout } from "node:timers/promises";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../../helpers/atrest.ts";
import { ApiClient, assertProblem } from "../../helpers/https.ts";
import { makeClientKey, runSftpBatch, SSH_OPTS } from "../../helpers/sftp-clients.ts";

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

  test("the admin changes a user, ends their browser and SFTP sessions, disables and enables them", async () => {
    const key = await makeClientKey(join(dir, "keys"));
    const pub = (await readFile(`${key}.pub`, "utf8")).trim();
    const add = await as.admin.req("POST", "/api/v1/admin/users", {
      json: { name: "gina", password: "gina-password", publicKeys: [pub] },
    });
    assert.equal(add.status, 201, add.body.toString());
    assert.equal(add.json().disabled, false);
    const change = (json: unknown, who = as.admin, name = "gina") =>
      who.req("PATCH", `/api/v1/admin/users/${name}`, { json });
    const changed = await change({
      permissions: { "/": ["list", "download"] },
      groups: ["ops", "eng", "ops"],
      quotaBytes: 5000,
      quotaFiles: 7,
      requireTotp: false,
    });
    assert.equal(changed.status, 200, changed.body.toString());
    const u = changed.json<{ permissions: unknown; groups: string[]; quotaBytes: number; quotaFiles: number }>();
    assert.deepEqual(u.permissions, { "/": ["list", "download"] });
    assert.deepEqual(u.groups, ["eng", "ops"]);
    assert.equal(u.quotaBytes, 5000);
    assert.equal(u.quotaFiles, 7);
    assertProblem(await change({}), 400);
    assertProblem(await change({ role: "admin" }), 400);
    assertProblem(await change({ quotaBytes: -1 }), 400);
    assertProblem(await change({ permissions: { "/": ["fly"] } }), 400);
    assertProblem(await change({ home: "relative" }), 400);
    assertProblem(await change({ quotaBytes: 1 }, as.admin, "nobody"), 404);
    for (const role of ["user", "auditor", "custodian"]) assertProblem(await change({ quotaBytes: 1 }, as[role]), 403);
    assertProblem(await change({ disabled: true }, as.admin, "admin1"), 422);

    const gina = as.admin.fresh();
    assert.equal((await gina.login("gina", "gina-password")).status, 200);
    assertProblem(await gina.req("PUT", "/api/v1/files/a.txt", { body: "a" }), 403);
    assert.equal((await change({ permissions: { "/": ["list", "download", "upload", "mkdir"] } })).status, 200);
    assert.equal((await gina.req("PUT", "/api/v1/files/a.txt", { body: "a" })).status, 201);

    // a live OpenSSH sftp connection (commands on stdin, kept open) and the browser session end together
    const sftp = spawn(
      "sftp",
      [...SSH_OPTS, "-P", String(server.port), "-i", key, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"].concat(
        "gina@127.0.0.1",
      ),
      { stdio: ["pipe", "pipe", "pipe"] },
    );
    const exited = new Promise<number | null>((resolve) => sftp.once("exit", (code) => resolve(code)));
    let out = "";
    sftp.stdout.on("data", (d) => {
      out += d;
    });
    sftp.stderr.on("data", (d) => {
      out += d;
    });
    const sessions = async () =>
      (await as.admin.req("GET", "/api/v1/admin/sessions"))
        .json<{ sessions: { user: string; protocol: string }[] }>()
        .sessions.filter((x) => x.user === "gina");
    while (!(await sessions()).some((x) => x.protocol === "sftp")) {
      assert.equal(sftp.exitCode, null, `sftp ended early: ${out}`);
      await setTimeout(100);
    }
    assertProblem(await as.user.req("DELETE", "/api/v1/admin/users/gina/sessions"), 403);
    assertProblem(await as.admin.req("DELETE", "/api/v1/admin/users/nobody/sessions"), 404);
    const ended = await as.admin.req("DELETE", "/api/v1/admin/users/gina/sessions");
    assert.equal(ended.status, 200, ended.body.toString());
    assert.ok(ended.json<{ ended: number }>().ended >= 2, ended.body.toString());
    // OpenSSH's sftp says so, then waits for its (still open) stdin
    while (!/Received disconnect/.test(out)) {
      assert.equal(sftp.exitCode, null, `sftp ended without the server's disconnect: ${out}`);
      await setTimeout(100);
    }
    sftp.stdin.end();
    await exited;
    assertProblem(await gina.req("GET", "/api/v1/fs/list"), 401);
    assert.deepEqual(await sessions(), []);

    // disabled: every door refuses the right credentials; enabled again: they work
    assert.equal((await gina.login("gina", "gina-password")).status, 200);
    const off = await change({ disabled: true });
    assert.equal(off.json().disabled, true);
    assertProblem(await gina.req("GET", "/api/v1/fs/list"), 401);
    assertProblem(await gina.login("gina", "gina-password"), 401);
    const viaSftp = await runSftpBatch({ port: server.port, user: "gina", keyFile: key, commands: ["ls"] });
    assert.notEqual(viaSftp.code, 0, "a disabled user's SFTP login is refused");
    assert.equal((await change({ disabled: false })).json().disabled, false);
    assert.equal((await gina.login("gina", "gina-password")).status, 200);
    assert.equal(
      (await runSftpBatch({ port: server.port, user: "gina", keyFile: key, commands: ["ls"] })).code,
      0,
      "enabled again",
    );

    const audit = (await as.auditor.req("GET", "/api/v1/audit?user=gina&limit=1000")).json<{
      records: { record: { action: string; outcome: string; reason?: string; detail?: string } }[];
    }>().records;
    const details = audit.filter((r) => r.record.action === "user.change").map((r) => r.record.detail ?? "");
    assert.ok(
      details.some((d) => d.includes("quotaBytes 5000") && d.includes("groups eng,ops")),
      details.join("|"),
    );
    assert.ok(
      details.some((d) => /^sessions ended \(\d+\)$/.test(d)),
      details.join("|"),
    );
    assert.ok(details.includes("disabled true") && details.includes("disabled false"), details.join("|"));
    assert.ok(audit.some((r) => r.record.action === "login" && r.record.reason === "account disabled"));
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

  test("the custodian lists, creates and rotates keys and sets a rotation policy", async () => {
    const created = await as.custodian.req("POST", "/api/v1/keys", { json: { name: "finance" } });
    assert.equal(created.status, 201, created.body.toString());
    const rotated = await as.custodian.req("POST", "/api/v1/keys/finance/rotate");
    assert.equal(rotated.json().currentVersion, 2);
    const keys = (await as.custodian.req("GET", "/api/v1/keys")).json<{ keys: { name: string }[] }>().keys;
    assert.ok(keys.some((k) => k.name === "finance"));
    assertProblem(await as.custodian.req("POST", "/api/v1/keys/nope/rotate"), 404);
    const rotation = (json: unknown, who = as.custodian, key = "finance") =>
      who.req("PUT", `/api/v1/keys/${key}/rotation`, { json });
    const auto = await rotation({ policy: "auto", periodDays: 90 });
    assert.equal(auto.status, 200, auto.body.toString());
    const r = auto.json<{ rotation: { policy: string; periodDays: number; nextRotationAt: string } }>().rotation;
    assert.deepEqual([r.policy, r.periodDays], ["auto", 90]);
    const due = Date.parse(r.nextRotationAt) - Date.now();
    assert.ok(due > 89 * 86_400_000 && due <= 90 * 86_400_000, r.nextRotationAt);
    const listed = (await as.custodian.req("GET", "/api/v1/keys")).json<{
      keys: { name: string; rotation: { policy: string } }[];
    }>().keys;
    assert.equal(listed.find((k) => k.name === "finance")?.rotation.policy, "auto");
    assert.equal(
      (await rotation({ policy: "manual" })).json<{ rotation: { policy: string } }>().rotation.policy,
      "manual",
    );
    assertProblem(await rotation({ policy: "auto" }), 400);
    assertProblem(await rotation({ policy: "none", periodDays: 3 }), 400);
    assertProblem(await rotation({ policy: "auto", periodDays: 0 }), 400);
    assertProblem(await rotation({ policy: "sometimes" }), 400);
    assertProblem(await rotation({ policy: "manual" }, as.custodian, "nope"), 404);
    for (const role of ["admin", "auditor", "user"]) assertProblem(await rotation({ policy: "none" }, as[role]), 403);
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
