// Real server, real OpenSSH sftp client, real rsyslog over TLS: CEF, LEEF and RFC 5424 records of an upload arrive
// with both users; login/file history queries; a filter excluding an admin stops the server; fail-closed on ENOSPC.
import assert from "node:assert/strict";
import { symlink, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { osUser } from "../../src/service/actor.ts";
import { freePort, makeCa, type Receiver, splitSyslog, startRsyslog, type TestCa } from "../audit/receivers.ts";
import { cli, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { makeClientKey, runSftpBatch } from "../helpers/sftp-clients.ts";

function cef(msg: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of msg
    .split("|")
    .slice(7)
    .join("|")
    .matchAll(/(\w+)=((?:\\.|[^\\=])*?)(?= \w+=|$)/g)) {
    out[m[1] as string] = (m[2] as string).replace(/\\(.)/g, "$1");
  }
  return out;
}

function leef(msg: string): Record<string, string> {
  return Object.fromEntries(
    msg
      .split("|")
      .slice(6)
      .join("|")
      .split("\t")
      .map((kv) => kv.split(/=(.*)/s).slice(0, 2)),
  );
}

function sd(sdText: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of sdText.matchAll(/(\w+)="((?:\\.|[^"\\])*)"/g))
    out[m[1] as string] = (m[2] as string).replace(/\\(.)/g, "$1");
  return out;
}

describe("SIEM over TLS from a real SFTP session", () => {
  let dir: string;
  let data: string;
  let key: string;
  let ca: TestCa;
  let rs: Receiver;

  before(async () => {
    dir = await tempDir("atrest-siem-sftp-");
    data = join(dir, "data");
    key = await makeClientKey(dir);
    ca = await makeCa(join(dir, "pki"));
    rs = await startRsyslog(join(dir, "rsyslog"), { driver: "gtls", ca });
    await cli(["init", "--data", data]);
    await cli(["user", "add", "alice", "--public-key", `${key}.pub`, "--data", data]);
    await cli(["user", "add", "boss", "--role", "admin", "--password-stdin", "--data", data], "s3cret-boss\n");
  });
  after(async () => {
    await rs?.stop();
    await removeDir(dir);
  });

  test("CEF, LEEF and RFC 5424 of login, upload and logout arrive with both users; queries answer", async () => {
    const config = join(dir, "siem.json");
    const dest = { transport: "tls", host: "127.0.0.1", port: rs.port, ca: ca.ca };
    await writeFile(
      config,
      JSON.stringify({
        audit: {
          destinations: [
            { name: "arcsight", format: "cef", ...dest },
            { name: "qradar", format: "leef", ...dest },
            { name: "s5424", format: "rfc5424", ...dest, filter: { events: ["SECURITY", "upload"] } },
          ],
        },
      }),
    );
    const metricsPort = await freePort();
    const server = await startServer(data, ["--config", config, "--metrics-port", String(metricsPort)]);
    try {
      const local = join(dir, "report.csv");
      await writeFile(local, "a,b\n1,2\n");
      const put = await runSftpBatch({
        port: server.port,
        user: "alice",
        keyFile: key,
        commands: [`put ${local} /report.csv`],
      });
      assert.equal(put.code, 0, put.stderr);
      const wrong = await makeClientKey(join(dir, "wrong"));
      const denied = await runSftpBatch({ port: server.port, user: "alice", keyFile: wrong, commands: ["ls"] });
      assert.notEqual(denied.code, 0);
      // per destination: user.add alice, user.add boss, audit.config.change, login, upload, logout, failed login(s)
      const deadline = Date.now() + 20_000;
      let lines: string[] = [];
      for (;;) {
        lines = await rs.lines();
        const logouts = lines.filter((l) => splitSyslog(l).msgid === "logout").length;
        const failures = lines.filter((l) => splitSyslog(l).msgid === "login" && /outcome[=:"]+failure/.test(l)).length;
        if (logouts >= 3 && failures >= 3) break;
        assert.ok(Date.now() < deadline, `records missing:\n${lines.join("\n")}`);
        await new Promise((r) => setTimeout(r, 200));
      }
      const parsed = lines.map((l) => splitSyslog(l));
      const cefs = parsed.filter((p) => p.msg.startsWith("CEF:0|")).map((p) => cef(p.msg));
      const leefs = parsed.filter((p) => p.msg.startsWith("LEEF:2.0|")).map((p) => leef(p.msg));
      const s5424 = parsed
        .filter((p) => p.sd.startsWith("[atrest@"))
        .map((p): Record<string, string> => ({ ...sd(p.sd), msgid: p.msgid }));

      const cefUpload = cefs.find((f) => f.act === "upload");
      assert.equal(cefUpload?.suser, "alice");
      assert.equal(cefUpload?.cs1, "alice");
      assert.equal(cefUpload?.filePath, "/report.csv");
      assert.equal(cefUpload?.fname, "report.csv");
      assert.equal(cefUpload?.fsize, "8");
      assert.equal(cefUpload?.src, "127.0.0.1");
      assert.equal(cefUpload?.app, "sftp");
      const cefLogin = cefs.find((f) => f.act === "login" && f.outcome === "success");
      assert.equal(cefLogin?.cs4, "publickey");
      assert.ok(cefLogin?.cs3, "session id");
      // job user and effective user differ on the CLI's user add: the acting OS user (no --as) for alice
      const cefAdd = cefs.find((f) => f.act === "user.add" && f.cs1 === "alice");
      assert.equal(cefAdd?.suser, osUser());

      const leefUpload = leefs.find((f) => f.action === "upload");
      assert.equal(leefUpload?.usrName, "alice");
      assert.equal(leefUpload?.effectiveUser, "alice");
      assert.equal(leefUpload?.resource, "/report.csv");
      assert.equal(leefUpload?.fileSize, "8");
      assert.equal(leefUpload?.src, "127.0.0.1");
      const leefFail = leefs.find((f) => f.action === "login" && f.outcome === "failure");
      assert.equal(leefFail?.identSrc, "127.0.0.1");
      assert.equal(leefFail?.usrName, "alice");
      assert.ok(leefFail?.reason, "failure reason");
      const leefAdd = leefs.find((f) => f.action === "user.add" && f.effectiveUser === "boss");
      assert.equal(leefAdd?.usrName, osUser());

      const sUpload = s5424.find((f) => f.msgid === "upload");
      assert.equal(sUpload?.user, "alice");
      assert.equal(sUpload?.effectiveUser, "alice");
      assert.equal(sUpload?.path, "/report.csv");
      assert.equal(sUpload?.size, "8");
      assert.equal(sUpload?.protocol, "sftp");
      assert.equal(
        s5424.some((f) => f.msgid === "download" || f.msgid === "mkdir"),
        false,
        "the SECURITY+upload filter",
      );

      // the same records, in the same order, to every destination: sequence numbers agree
      const seqs = (xs: Record<string, string | undefined>[], k: string) => xs.map((x) => Number(x[k]));
      assert.deepEqual(seqs(cefs, "externalId"), seqs(leefs, "seq"));
      assert.deepEqual(
        seqs(cefs, "externalId"),
        [...seqs(cefs, "externalId")].sort((a, b) => a - b),
      );

      const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      assert.match(metrics, /^atrest_audit_destination_connected\{destination="qradar"\} 1$/m);
      const sent = Number(/^atrest_audit_events_sent_total\{destination="arcsight"\} (\d+)$/m.exec(metrics)?.[1]);
      assert.equal(sent, cefs.length);
      assert.match(metrics, /^atrest_audit_log_writable 1$/m);
      const stats = JSON.parse((await cli(["audit", "stats", "--json", "--data", data])).stdout);
      assert.equal(stats.live, true);
      assert.deepEqual(
        stats.destinations.map((d: { name: string; connected: boolean }) => [d.name, d.connected]),
        [
          ["arcsight", true],
          ["qradar", true],
          ["s5424", true],
        ],
      );
    } finally {
      await server.stop();
    }
    const logins = (await cli(["audit", "logins", "alice", "--format", "json", "--data", data])).stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    assert.deepEqual(logins.map((r) => [r.action, r.outcome, r.method, r.sourceIp]).slice(0, 2), [
      ["login", "success", "publickey", "127.0.0.1"],
      ["logout", "success", undefined, "127.0.0.1"],
    ]);
    assert.ok(logins.some((r) => r.outcome === "failure" && r.reason));
    const text = (await cli(["audit", "logins", "alice", "--since", "1h", "--data", data])).stdout;
    assert.match(text, /login {2}success {2}alice {2}method=publickey {2}from=127\.0\.0\.1 {2}via=sftp/);
    const history = (await cli(["audit", "file", "/alice/report.csv", "--format", "json", "--data", data])).stdout;
    const files = history
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      files.map((r) => [r.action, r.user, r.path, r.size]),
      [["upload", "alice", "/report.csv", 8]],
    );
    const cefOut = (await cli(["audit", "file", "/report.csv", "--format", "cef", "--data", data])).stdout;
    assert.match(cefOut, /^CEF:0\|atrest\|atrest\|[^|]+\|upload\|/);
    const offline = (await cli(["audit", "stats", "--data", data])).stdout;
    assert.match(offline, /^no running server/);
    assert.match(offline, /arcsight: cef tls 127\.0\.0\.1:\d+ stopped .*backlog 0/);
    await assert.rejects(
      cli(["audit", "logins", "alice", "--since", "yesterday", "--data", data]),
      /--since: "yesterday"/,
    );
  });

  test("a filter that excludes an admin is refused at start-up, naming the user", async () => {
    const config = join(dir, "bad.json");
    await writeFile(
      config,
      JSON.stringify({
        audit: {
          destinations: [
            {
              name: "x",
              transport: "tcp",
              host: "127.0.0.1",
              port: rs.port,
              format: "cef",
              filter: { excludeUsers: ["boss"] },
            },
          ],
        },
      }),
    );
    await assert.rejects(
      startServer(data, ["--config", config]),
      /audit destination "x" filter: excludeUsers names "boss", a privileged user \(role admin\)/,
    );
    await writeFile(config, JSON.stringify({ audit: { destinations: [{ name: "x", transport: "smtp" }] } }));
    await assert.rejects(
      startServer(data, ["--config", config]),
      /config audit\.destinations\.0\.transport: must be udp, tcp or tls/,
    );
  });

  test("fail-closed: with the audit log on a full disk (/dev/full) logins are refused; without it they work", async () => {
    const log = join(data, "audit", "audit.log");
    const kept = join(dir, "audit.log.kept");
    await cli(["audit", "verify", "--data", data]).catch(() => undefined);
    const { rename } = await import("node:fs/promises");
    await rename(log, kept);
    await symlink("/dev/full", log);
    try {
      const server = await startServer(data, [], { ATREST_AUDIT_FAIL_CLOSED: "true" });
      try {
        const r = await runSftpBatch({ port: server.port, user: "alice", keyFile: key, commands: ["ls"] });
        assert.notEqual(r.code, 0, "login refused");
        await new Promise((res) => setTimeout(res, 200));
        assert.match(server.output(), /audit log cannot be written: refusing logins and file operations/);
        assert.match(server.output(), /ENOSPC/);
      } finally {
        await server.stop();
      }
      const open = await startServer(data);
      try {
        const r = await runSftpBatch({ port: open.port, user: "alice", keyFile: key, commands: ["ls"] });
        assert.equal(r.code, 0, r.stderr);
        assert.match(open.output(), /audit log cannot be written: records are kept in memory and retried/);
      } finally {
        await open.stop();
      }
    } finally {
      await unlink(log);
      await rename(kept, log);
    }
  });
});
