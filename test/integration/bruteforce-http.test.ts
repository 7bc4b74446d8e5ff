// Brute force across doors (issue 12, "Proven by"): 50 wrong HTTPS passwords from one address ban that address on
// every door: the right password is then refused over HTTPS and over SFTP (OpenSSH sftp bound to that address), while
// another address logs in; the ban expires (a short configured ban time) and the right password works again on both
// doors; bans, refusals and the expiry are in the audit log.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { ApiClient, assertProblem } from "../helpers/https.ts";
import { runSftpBatch } from "../helpers/sftp-clients.ts";

const BAN_SECONDS = 6;
const ATTACKER = "127.0.0.7";

let dir: string;
let data: string;
let server: RunningServer;

before(async () => {
  dir = await tempDir("atrest-bruteforce-http-");
  data = join(dir, "data");
  await cli(["init", "--data", data]);
  await cli(["user", "add", "alice", "--password-stdin", "--data", data], "the-right-one\n");
  server = await startServer(data, [], { ATREST_DEFENDER_BAN_SECONDS: String(BAN_SECONDS) });
});
after(async () => {
  await server?.stop();
  await removeDir(dir);
});

const sftpFrom = (address: string) =>
  runSftpBatch({
    port: server.port,
    user: "alice",
    password: "the-right-one",
    commands: ["pwd"],
    args: ["-o", `BindAddress=${address}`],
    timeoutMs: 30_000,
  });

test("50 wrong HTTPS passwords from one address: banned on HTTPS and SFTP, the right password refused, then the ban ends", async () => {
  const api = await ApiClient.forData(server.httpPort, data);
  const attacker = api.fresh(ATTACKER);
  const started = Date.now();
  for (let i = 0; i < 50; i++) {
    const r = assertProblem(await attacker.login("alice", `guess-${i}`), 401);
    assert.equal(r.code, "UNAUTHORIZED", "every refusal looks the same, banned or not");
  }
  // banned: the right password is refused on both doors from that address
  assertProblem(await attacker.login("alice", "the-right-one"), 401);
  const sftp = await sftpFrom(ATTACKER);
  assert.notEqual(sftp.code, 0, "OpenSSH sftp from the banned address is refused");
  // the ban is by address: alice herself, from elsewhere, logs in on both doors
  assert.equal((await api.fresh("127.0.0.1").login("alice", "the-right-one")).status, 200);
  assert.equal((await sftpFrom("127.0.0.1")).code, 0);
  const bans = JSON.parse((await cli(["defender", "list", "--json", "--data", data])).stdout) as {
    kind: string;
    subject: string;
  }[];
  assert.deepEqual(
    bans.map((b) => `${b.kind}:${b.subject}`),
    [`ip:${ATTACKER}`],
    "the address is banned, not the user",
  );
  // the ban ends on its own
  const left = started + BAN_SECONDS * 1000 + 500 - Date.now();
  if (left > 0) await sleep(left);
  let ok = 0;
  for (let i = 0; i < 20 && ok === 0; i++) {
    if ((await attacker.login("alice", "the-right-one")).status === 200) ok = 1;
    else await sleep(500);
  }
  assert.equal(ok, 1, "the right password works again over HTTPS after the ban");
  assert.equal((await sftpFrom(ATTACKER)).code, 0, "and over SFTP");
  await sleep(2500); // the defender's sweep audits the expiry every 2 s
  const audit = (await cli(["audit", "tail", "-n", "400", "--data", data])).stdout.split("\n");
  const failures = audit.filter(
    (l) => l.includes('"action":"login","outcome":"failure"') && l.includes(`"sourceIp":"${ATTACKER}"`),
  );
  const checked = failures.filter((l) => l.includes('"reason":"bad credentials"')).length;
  const banned = failures.filter((l) => l.includes('"reason":"banned"'));
  assert.equal(checked, 15, "the default threshold: 15 wrong passwords reach a check, the rest are refused as banned");
  assert.ok(
    banned.some((l) => l.includes('"protocol":"sftp"')),
    "the SFTP refusal is audited as banned",
  );
  assert.ok(banned.filter((l) => l.includes('"protocol":"http"')).length >= 36);
  assert.ok(audit.some((l) => l.includes('"action":"defender.ban"') && l.includes(ATTACKER)));
  assert.ok(audit.some((l) => l.includes('"action":"defender.expire"') && l.includes(ATTACKER)));
});
