// TOTP over HTTPS, codes made by oathtool (a real RFC 6238 implementation): enrolment returns the secret, an otpauth
// URI, its QR code and recovery codes; after confirmation a password alone is refused with SECOND_FACTOR_REQUIRED
// (audited as a failure), a current code logs in, a code is not accepted twice, a recovery code works once, and
// disabling needs a code. SFTP password logins of such a user are refused (SFTP cannot ask for the code).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { hotp } from "../../../src/service/totp.ts";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../../helpers/atrest.ts";
import { ApiClient, assertProblem } from "../../helpers/https.ts";
import { runSftpBatch } from "../../helpers/sftp-clients.ts";

const execFileP = promisify(execFile);
const oathtool = async (secret: string, at: string) =>
  (await execFileP("oathtool", ["--totp", "-b", secret, "-N", at])).stdout.trim();

test("HOTP matches RFC 4226 / RFC 6238 test vectors", () => {
  const secret = Buffer.from("12345678901234567890");
  assert.equal(hotp(secret, 0), "755224");
  assert.equal(hotp(secret, 1), "287082"); // RFC 6238 T=59 s: 94287082 (8 digits)
  assert.equal(hotp(secret, 9), "520489");
});

describe("HTTPS API: TOTP second factor", () => {
  let dir: string;
  let data: string;
  let server: RunningServer;
  let alice: ApiClient;

  before(async () => {
    dir = await tempDir("atrest-totp-");
    data = join(dir, "data");
    await cli(["init", "--data", data]);
    await cli(["user", "add", "alice", "--password-stdin", "--data", data], "alice-pw\n");
    server = await startServer(data);
    alice = await ApiClient.forData(server.httpPort, data);
    assert.equal((await alice.login("alice", "alice-pw")).status, 200);
  });
  after(async () => {
    await server?.stop();
    await removeDir(dir);
  });

  test("enrol, confirm, then logins need a code; replay refused; recovery codes once; disable needs a code", async () => {
    const e = await alice.req("POST", "/api/v1/account/totp");
    assert.equal(e.status, 201, e.body.toString());
    const { secret, otpauthUri, qrSvg, recoveryCodes } = e.json<{
      secret: string;
      otpauthUri: string;
      qrSvg: string;
      recoveryCodes: string[];
    }>();
    assert.match(secret, /^[A-Z2-7]{32}$/);
    assert.equal(
      otpauthUri,
      `otpauth://totp/atrest%3Aalice?secret=${secret}&issuer=atrest&algorithm=SHA1&digits=6&period=30`,
    );
    assert.match(qrSvg, /^<svg[\s\S]*<\/svg>\s*$/);
    assert.equal(recoveryCodes.length, 10);
    // not active until confirmed
    assert.equal((await alice.fresh().login("alice", "alice-pw")).status, 200);
    assertProblem(await alice.req("POST", "/api/v1/account/totp/confirm", { json: { code: "000000" } }), 400);
    const now = await oathtool(secret, "now");
    assert.equal((await alice.req("POST", "/api/v1/account/totp/confirm", { json: { code: now } })).status, 204);
    assert.deepEqual((await alice.req("GET", "/api/v1/account/totp")).json(), {
      enabled: true,
      required: false,
      recoveryCodesLeft: 10,
    });

    const c = alice.fresh();
    const bare = assertProblem(await c.login("alice", "alice-pw"), 401);
    assert.equal(bare.code, "SECOND_FACTOR_REQUIRED");
    const wrongPw = assertProblem(await c.login("alice", "wrong"), 401);
    assert.equal(wrongPw.code, "UNAUTHORIZED", "a wrong password says nothing about a second factor");
    const login = (code: string) =>
      c.req("POST", "/api/v1/auth/login", { json: { username: "alice", password: "alice-pw", totp: code } });
    assertProblem(await login(now), 401); // the confirming code was used: no replay
    const next = await oathtool(secret, "now + 30 seconds");
    assert.equal((await login(next)).status, 200);
    assertProblem(await login(next), 401);
    assert.equal((await login(recoveryCodes[0])).status, 200);
    assertProblem(await login(recoveryCodes[0]), 401);
    assert.equal((await alice.req("GET", "/api/v1/account/totp")).json().recoveryCodesLeft, 9);
    assertProblem(await alice.req("POST", "/api/v1/account/totp"), 409);

    const sftp = await runSftpBatch({
      port: server.port,
      user: "alice",
      password: "alice-pw",
      commands: ["pwd"],
      timeoutMs: 30_000,
    });
    assert.notEqual(sftp.code, 0, "SFTP cannot ask for the code: password logins are refused");

    const audit = (await cli(["audit", "tail", "-n", "100", "--data", data])).stdout;
    assert.match(audit, /"reason":"second factor required"/);
    assert.ok(!audit.includes(secret), "the TOTP secret is not in the audit log");

    assertProblem(await alice.req("DELETE", "/api/v1/account/totp", { json: { code: "123456" } }), 400);
    assert.equal((await alice.req("DELETE", "/api/v1/account/totp", { json: { code: recoveryCodes[1] } })).status, 204);
    assert.equal((await alice.fresh().login("alice", "alice-pw")).status, 200);
  });
});
