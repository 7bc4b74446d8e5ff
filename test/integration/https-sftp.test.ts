// The HTTPS door and the SFTP door over one server process: a file uploaded over HTTPS is read back by OpenSSH's sftp
// and one put by sftp is downloaded over HTTPS, byte for byte; and the shared brute-force defender: 50 wrong
// passwords over HTTPS from one address ban it, after which the right password is refused over HTTPS and over SFTP
// from that address (other addresses unaffected) until the ban expires.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { ApiClient, assertProblem } from "../helpers/https.ts";
import { makeClientKey, runSftpBatch } from "../helpers/sftp-clients.ts";

describe("HTTPS and SFTP on one server", () => {
  let dir: string;
  let data: string;
  let key: string;
  let server: RunningServer;
  let alice: ApiClient;

  before(async () => {
    dir = await tempDir("atrest-https-sftp-");
    data = join(dir, "data");
    key = await makeClientKey(join(dir, "keys"));
    await cli(["init", "--data", data]);
    await cli(["user", "add", "alice", "--password-stdin", "--public-key", `${key}.pub`, "--data", data], "alice-pw\n");
    server = await startServer(data, [], { ATREST_DEFENDER_BAN_SECONDS: "5" });
    alice = await ApiClient.forData(server.httpPort, data);
    assert.equal((await alice.login("alice", "alice-pw")).status, 200);
  });
  after(async () => {
    await server?.stop();
    await removeDir(dir);
  });

  test("uploaded over HTTPS, read over SFTP; put over SFTP, downloaded over HTTPS", async () => {
    const a = randomBytes(2_500_000);
    assert.equal((await alice.req("PUT", "/api/v1/files/from-https.bin", { body: a })).status, 201);
    const b = randomBytes(1_700_001);
    await writeFile(join(dir, "from-sftp.bin"), b);
    const r = await runSftpBatch({
      port: server.port,
      user: "alice",
      keyFile: key,
      cwd: dir,
      commands: ["get from-https.bin got.bin", "put from-sftp.bin"],
      timeoutMs: 60_000,
    });
    assert.equal(r.code, 0, r.stderr);
    assert.ok((await readFile(join(dir, "got.bin"))).equals(a));
    const got = await alice.req("GET", "/api/v1/files/from-sftp.bin");
    assert.equal(got.status, 200);
    assert.ok(got.body.equals(b));
  });

  test("50 wrong passwords over HTTPS ban the address for HTTPS and SFTP; the ban expires", async () => {
    const from = "127.0.0.5";
    const attacker = alice.fresh(from);
    for (let i = 0; i < 50; i++) assertProblem(await attacker.login("alice", `wrong-${i}`), 401);
    const refused = await attacker.login("alice", "alice-pw");
    assertProblem(refused, 401);
    const sftp = await runSftpBatch({
      port: server.port,
      user: "alice",
      password: "alice-pw",
      commands: ["pwd"],
      args: ["-o", `BindAddress=${from}`],
      timeoutMs: 30_000,
    });
    assert.notEqual(sftp.code, 0, "SFTP from the banned address is refused, even with the right password");
    const bans = JSON.parse((await cli(["defender", "list", "--json", "--data", data])).stdout) as {
      kind: string;
      subject: string;
    }[];
    assert.deepEqual(
      bans.map((b) => [b.kind, b.subject]),
      [["ip", from]],
      "the address is banned, not the user name",
    );
    assert.equal((await alice.fresh("127.0.0.6").login("alice", "alice-pw")).status, 200, "another address logs in");
    const log = (await cli(["audit", "tail", "-n", "200", "--data", data])).stdout;
    assert.match(
      log,
      /"action":"login","outcome":"failure".*"protocol":"http"|"protocol":"http".*"action":"login","outcome":"failure"/,
    );
    await new Promise((r) => setTimeout(r, 5500));
    assert.equal((await attacker.login("alice", "alice-pw")).status, 200, "after the ban the right password works");
  });
});
