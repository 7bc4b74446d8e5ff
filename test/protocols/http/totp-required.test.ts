// TOTP required by a group or per user: a member without TOTP logs in over HTTPS to a session that can only enrol
// (everything else 403 TOTP_ENROLMENT_REQUIRED) until a first code is confirmed; from then on password logins need a
// code and TOTP cannot be turned off. SFTP cannot ask for a code: OpenSSH sftp password logins of such users are
// refused with a reason that says so (enrolled or not), public-key logins work. An admin sets the flag on a user over
// the API and it applies at the next login.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../../helpers/atrest.ts";
import { ApiClient, assertProblem } from "../../helpers/https.ts";
import { makeClientKey, runSftpBatch } from "../../helpers/sftp-clients.ts";

const execFileP = promisify(execFile);
const oathtool = async (secret: string, at: string) =>
  (await execFileP("oathtool", ["--totp", "-b", secret, "-N", at])).stdout.trim();

describe("HTTPS API: TOTP required per group and per user", () => {
  let dir: string;
  let data: string;
  let server: RunningServer;
  let api: ApiClient;
  let halKey: string;

  before(async () => {
    dir = await tempDir("atrest-totp-req-");
    data = join(dir, "data");
    halKey = await makeClientKey(join(dir, "keys"));
    await cli(["init", "--data", data]);
    await cli(["group", "add", "finance", "--require-totp", "--data", data]);
    await cli(["user", "add", "gina", "--group", "finance", "--password-stdin", "--data", data], "gina-pw\n");
    await cli(
      ["user", "add", "hal", "--require-totp", "--public-key", `${halKey}.pub`, "--password-stdin", "--data", data],
      "hal-pw\n",
    );
    await cli(["user", "add", "ivan", "--password-stdin", "--data", data], "ivan-pw\n");
    await cli(["user", "add", "root", "--role", "admin", "--password-stdin", "--data", data], "root-pw\n");
    server = await startServer(data);
    api = await ApiClient.forData(server.httpPort, data);
  });
  after(async () => {
    await server?.stop();
    await removeDir(dir);
  });

  test("a group member enrols at the first login, then needs a code; TOTP cannot be turned off", async () => {
    const g = api.fresh();
    const first = await g.login("gina", "gina-pw");
    assert.equal(first.status, 200);
    assert.equal(first.json().totpEnrolmentRequired, true);
    const denied = assertProblem(await g.req("GET", "/api/v1/fs/list?path=/"), 403);
    assert.equal(denied.code, "TOTP_ENROLMENT_REQUIRED");
    assertProblem(await g.req("PUT", "/api/v1/files/x.txt", { body: "x" }), 403);
    assert.equal((await g.req("GET", "/api/v1/auth/session")).json().totpEnrolmentRequired, true);
    assert.deepEqual((await g.req("GET", "/api/v1/account/totp")).json(), {
      enabled: false,
      required: true,
      recoveryCodesLeft: 0,
    });
    const e = await g.req("POST", "/api/v1/account/totp");
    assert.equal(e.status, 201);
    const { secret, recoveryCodes } = e.json<{ secret: string; recoveryCodes: string[] }>();
    const now = await oathtool(secret, "now");
    assert.equal((await g.req("POST", "/api/v1/account/totp/confirm", { json: { code: now } })).status, 204);
    assert.equal((await g.req("GET", "/api/v1/fs/list?path=/")).status, 200, "the same session is a full one now");
    const g2 = api.fresh();
    assert.equal(assertProblem(await g2.login("gina", "gina-pw"), 401).code, "SECOND_FACTOR_REQUIRED");
    const next = await oathtool(secret, "now + 30 seconds");
    const ok = await g2.req("POST", "/api/v1/auth/login", {
      json: { username: "gina", password: "gina-pw", totp: next },
      anonymous: true,
    });
    assert.equal(ok.status, 200);
    assert.equal(ok.json().totpEnrolmentRequired, undefined);
    const off = assertProblem(await g.req("DELETE", "/api/v1/account/totp", { json: { code: recoveryCodes[0] } }), 403);
    assert.match(String(off.detail), /required/);
    // SFTP: the password alone is refused, with the reason in the audit
    const sftp = await runSftpBatch({ port: server.port, user: "gina", password: "gina-pw", commands: ["pwd"] });
    assert.notEqual(sftp.code, 0);
    const audit = (await cli(["audit", "tail", "-n", "200", "--data", data])).stdout;
    assert.match(
      audit,
      /"user":"gina","protocol":"sftp","method":"password","reason":"second factor required: sftp cannot ask for a TOTP code \(log in with a public key\)"/,
    );
  });

  test("a user required by their own flag, not enrolled: SFTP password refused, public key accepted", async () => {
    const pw = await runSftpBatch({ port: server.port, user: "hal", password: "hal-pw", commands: ["pwd"] });
    assert.notEqual(pw.code, 0);
    const key = await runSftpBatch({ port: server.port, user: "hal", keyFile: halKey, commands: ["pwd"] });
    assert.equal(key.code, 0, key.stderr);
    const audit = (await cli(["audit", "tail", "-n", "200", "--data", data])).stdout;
    assert.match(
      audit,
      /"user":"hal","protocol":"sftp","method":"password","reason":"second factor required but not set up: enrol TOTP over HTTPS first; sftp cannot ask for a code \(log in with a public key\)"/,
    );
    assert.match(audit, /"action":"login","outcome":"success","user":"hal","protocol":"sftp","method":"publickey"/);
  });

  test("an admin requires TOTP of a user over the API: it applies at the next login", async () => {
    const i = api.fresh();
    const before = await i.login("ivan", "ivan-pw");
    assert.equal(before.json().totpEnrolmentRequired, undefined);
    assert.equal((await i.req("GET", "/api/v1/fs/list?path=/")).status, 200);
    const root = api.fresh();
    assert.equal((await root.login("root", "root-pw")).status, 200);
    const set = await root.req("PUT", "/api/v1/admin/users/ivan/require-totp", { json: { required: true } });
    assert.equal(set.status, 200, set.body.toString());
    assert.equal(set.json().requireTotp, true);
    assertProblem(await i.req("PUT", "/api/v1/admin/users/ivan/require-totp", { json: { required: false } }), 403);
    const after = await api.fresh().login("ivan", "ivan-pw");
    assert.equal(after.json().totpEnrolmentRequired, true);
    const groups = await root.req("GET", "/api/v1/admin/groups");
    assert.deepEqual(
      groups.json<{ groups?: { name: string; options: object }[] }>().groups?.find((x) => x.name === "finance")
        ?.options ?? groups.json<{ name: string; options: object }[]>(),
      { requireTotp: true },
    );
    const audit = (await cli(["audit", "tail", "-n", "300", "--data", data])).stdout;
    assert.match(audit, /"action":"user.change".*"effectiveUser":"ivan","detail":"requireTotp true"/);
  });
});
