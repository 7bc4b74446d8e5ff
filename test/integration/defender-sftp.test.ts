// The brute-force defender against a real server process and the real OpenSSH client: failures across several
// connections (each under the per-connection limit) ban the source IP, a ban refuses even the right password,
// `atrest defender list|unban` run as separate processes see and lift it, a user failing from several addresses is
// banned too, the allow list exempts; bans and unbans are audited with who lifted them. Source addresses other than
// 127.0.0.1 come from `ssh -o BindAddress=127.0.0.N` (all of 127/8 is loopback on Linux).
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { osUser } from "../../src/service/actor.ts";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { runSftpBatch } from "../helpers/sftp-clients.ts";

describe("brute-force defender over SFTP", () => {
  let dir: string;
  let data: string;
  let server: RunningServer;

  before(async () => {
    dir = await tempDir("atrest-defender-");
    data = join(dir, "data");
    await cli(["init", "--data", data]);
    await cli(["user", "add", "alice", "--password-stdin", "--data", data], "alice-right\n");
    await cli(["user", "add", "bob", "--password-stdin", "--data", data], "bob-right\n");
    server = await startServer(data, [], {
      ATREST_DEFENDER_THRESHOLD: "3",
      ATREST_DEFENDER_USER_THRESHOLD: "4",
      ATREST_DEFENDER_BAN_SECONDS: "600",
      ATREST_DEFENDER_ALLOW_LIST: "127.0.0.9",
    });
  });
  after(async () => {
    await server?.stop();
    await removeDir(dir);
  });

  const login = (user: string, password: string, from = "127.0.0.1") =>
    runSftpBatch({
      port: server.port,
      user,
      password,
      commands: ["pwd"],
      args: ["-o", `BindAddress=${from}`],
      timeoutMs: 30_000,
    });
  const bans = async () =>
    JSON.parse((await cli(["defender", "list", "--json", "--data", data])).stdout) as {
      kind: string;
      subject: string;
      count: number;
    }[];
  const audit = async () =>
    (await cli(["audit", "tail", "-n", "200", "--data", data])).stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, string>);

  test("failures across connections ban the IP; the right password is refused until `defender unban`", async () => {
    assert.equal((await login("alice", "alice-right")).code, 0, "works before any failure");
    for (let i = 0; i < 3; i++) {
      // NumberOfPasswordPrompts=1: one failure per connection, far under the per-connection limit of 6
      assert.notEqual((await login("alice", `wrong-${i}`)).code, 0);
    }
    const refused = await login("alice", "alice-right");
    assert.notEqual(refused.code, 0, "banned: the right password is refused too");
    assert.match(refused.stderr, /Permission denied/, "the refusal looks like any failed login");
    assert.deepEqual(
      (await bans()).map((b) => [b.kind, b.subject, b.count]),
      [["ip", "127.0.0.1", 1]],
    );
    // another address is not affected
    assert.equal((await login("alice", "alice-right", "127.0.0.3")).code, 0);

    const out = await cli(["defender", "unban", "127.0.0.1", "--as", "ops-jane", "--data", data]);
    assert.match(out.stdout, /lifted the ip ban on 127\.0\.0\.1/);
    assert.deepEqual(await bans(), []);
    assert.equal((await login("alice", "alice-right")).code, 0, "works again after the unban");

    const records = await audit();
    const ban = records.find((r) => r.action === "defender.ban" && r.target === "127.0.0.1");
    assert.ok(ban, "the ban is audited");
    assert.equal(ban.user, "defender");
    const unban = records.find((r) => r.action === "defender.unban" && r.target === "127.0.0.1");
    assert.equal(unban?.user, "ops-jane");
    assert.equal(unban?.protocol, "cli");
    assert.ok(
      records.some((r) => r.action === "login" && r.outcome === "failure" && r.reason === "banned"),
      "the refused login while banned is audited as such",
    );
  });

  test("a user failing from several addresses is banned by name; the default actor is the OS user", async () => {
    for (const n of [4, 5, 6, 7]) assert.notEqual((await login("bob", "wrong", `127.0.0.${n}`)).code, 0);
    assert.deepEqual(
      (await bans()).map((b) => [b.kind, b.subject]),
      [["user", "bob"]],
    );
    assert.notEqual((await login("bob", "bob-right", "127.0.0.8")).code, 0, "banned by name from any address");
    assert.equal((await login("alice", "alice-right", "127.0.0.8")).code, 0, "other users are not affected");
    await cli(["defender", "unban", "bob", "--data", data], undefined, { ...process.env, ATREST_AS: "" });
    assert.equal((await login("bob", "bob-right", "127.0.0.8")).code, 0);
    const unban = (await audit()).find((r) => r.action === "defender.unban" && r.target === "bob");
    assert.equal(unban?.user, osUser());
  });

  test("the allow list is never scored or banned", async () => {
    for (let i = 0; i < 6; i++) assert.notEqual((await login("carol", `guess-${i}`, "127.0.0.9")).code, 0);
    assert.deepEqual(await bans(), []);
    assert.equal((await login("alice", "alice-right", "127.0.0.9")).code, 0);
  });

  test("`defender unban` of something not banned says so and fails", async () => {
    await assert.rejects(cli(["defender", "unban", "192.0.2.1", "--data", data]), (err: { stderr: string }) =>
      /no ban on 192\.0\.2\.1/.test(err.stderr),
    );
  });
});
