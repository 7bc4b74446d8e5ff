// The SIEM pipeline in process against real receivers: rsyslog (imtcp plain, gtls and ossl TLS) and syslog-ng, the
// durable cursor across a pipeline restart, bad destinations, filters.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { AuditConfig } from "../../src/audit/config.ts";
import { AuditLog } from "../../src/audit/log.ts";
import { AuditPipeline } from "../../src/audit/pipeline.ts";
import type { AuditEvent } from "../../src/audit/types.ts";
import { aeadKey } from "../../src/crypto/aead.ts";
import { openSqliteStore } from "../../src/store/sqlite/index.ts";
import type { MetaStore } from "../../src/store/types.ts";
import { removeDir, tempDir } from "../helpers/atrest.ts";
import { testSealer } from "../helpers/store.ts";
import {
  freePort,
  makeCa,
  type Receiver,
  splitSyslog,
  startRsyslog,
  startSyslogNg,
  syslogNgRoot,
  type TestCa,
} from "./receivers.ts";

interface Logged {
  level: string;
  msg: string;
  obj: Record<string, unknown>;
}

function captureLogger() {
  const logged: Logged[] = [];
  const at = (level: string) => (obj: object, msg: string) =>
    logged.push({ level, msg, obj: obj as Record<string, unknown> });
  return { logged, logger: { info: at("info"), warn: at("warn"), error: at("error"), debug: at("debug") } };
}

class Rig {
  readonly dir: string;
  readonly key = randomBytes(32);
  readonly store: MetaStore;
  audit: AuditLog;
  pipeline: AuditPipeline | undefined;
  readonly log = captureLogger();

  constructor(dir: string) {
    this.dir = dir;
    this.store = openSqliteStore(join(dir, "meta.db"));
    // a fresh store has no legacy rows to seal: unlock takes effect before its first await
    void this.store.unlock(testSealer());
    this.audit = new AuditLog(join(dir, "audit", "audit.log"), Buffer.from(this.key), { groupCommit: true });
  }

  async start(config: Partial<AuditConfig>): Promise<AuditPipeline> {
    this.pipeline = await AuditPipeline.start(
      { failClosed: false, destinations: [], ...config },
      { audit: this.audit, key: aeadKey(Buffer.from(this.key)), store: this.store, logger: this.log.logger },
    );
    return this.pipeline;
  }

  async restartLog(): Promise<void> {
    await this.audit.close();
    this.audit = new AuditLog(join(this.dir, "audit", "audit.log"), Buffer.from(this.key), { groupCommit: true });
  }

  async close(): Promise<void> {
    await this.pipeline?.stop(1000);
    await this.audit.close();
    await this.store.close();
  }
}

const upload = (i: number, extra: Partial<AuditEvent> = {}): AuditEvent => ({
  action: "upload",
  outcome: "success",
  user: "alice",
  effectiveUser: "bob",
  protocol: "sftp",
  sourceIp: "127.0.0.1",
  sessionId: `s${i}`,
  path: `/in/file ${i}.csv`,
  size: i,
  ...extra,
});

/** CEF extension of a received line as a map (values unescaped). */
function cefFields(line: string): Record<string, string> {
  const { msg } = splitSyslog(line);
  assert.match(msg, /^CEF:0\|/);
  const ext = msg.split("|").slice(7).join("|");
  const out: Record<string, string> = {};
  for (const m of ext.matchAll(/(\w+)=((?:\\.|[^\\=])*?)(?= \w+=|$)/g)) {
    out[m[1] as string] = (m[2] as string).replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
  }
  return out;
}

let root: string;
let ca: TestCa;
let otherCa: TestCa;

before(async () => {
  root = await tempDir("atrest-siem-");
  ca = await makeCa(join(root, "pki"), "ca");
  otherCa = await makeCa(join(root, "pki"), "other");
});
after(() => removeDir(root));

describe("SIEM pipeline (real receivers)", () => {
  test("rsyslog imtcp: CEF with both users and the log sequence, in order; resumes from its cursor after a restart", async () => {
    const dir = join(root, "tcp");
    const rs = await startRsyslog(join(dir, "rsyslog"));
    const rig = new Rig(dir);
    try {
      const dest = {
        name: "arcsight",
        transport: "tcp" as const,
        host: "127.0.0.1",
        port: rs.port,
        format: "cef" as const,
      };
      await rig.start({ destinations: [dest] });
      for (let i = 1; i <= 50; i++) rig.audit.record(upload(i));
      let lines = await rs.waitFor(51);
      const first = cefFields(lines[1] as string);
      assert.equal(first.suser, "alice");
      assert.equal(first.cs1, "bob");
      assert.equal(first.cs1Label, "effectiveUser");
      assert.equal(first.filePath, "/in/file 1.csv");
      assert.equal(first.src, "127.0.0.1");
      assert.equal(first.fsize, "1");
      const seqs = lines.map((l) => Number(cefFields(l).externalId));
      assert.deepEqual(
        seqs,
        Array.from({ length: 51 }, (_, i) => i + 1),
      );
      // stop (graceful), record more while no pipeline runs, start again: the rest arrives, nothing twice
      await rig.pipeline?.stop();
      for (let i = 51; i <= 60; i++) rig.audit.record(upload(i));
      await rig.restartLog();
      await rig.start({ destinations: [dest] });
      lines = await rs.waitFor(61);
      await new Promise((r) => setTimeout(r, 500));
      lines = await rs.lines();
      const all = lines.map((l) => Number(cefFields(l).externalId));
      // 51 records + 1 checkpoint (close) are entries 1..52; the records after it keep their sequence numbers
      assert.equal(new Set(all).size, all.length, "no duplicates");
      assert.deepEqual(
        all,
        [...all].sort((a, b) => a - b),
        "in order",
      );
      assert.equal(all.length, 61);
      assert.deepEqual(
        lines.slice(51).map((l) => cefFields(l).filePath),
        Array.from({ length: 10 }, (_, i) => `/in/file ${51 + i}.csv`),
      );
    } finally {
      await rig.close();
      await rs.stop();
    }
  });

  for (const driver of ["gtls", "ossl"] as const) {
    test(`rsyslog TLS (${driver}) with the pinned CA: LEEF and RFC 5424 destinations`, async () => {
      const dir = join(root, driver);
      const rs = await startRsyslog(join(dir, "rsyslog"), { driver, ca });
      const rig = new Rig(dir);
      try {
        await rig.start({
          destinations: [
            {
              name: "qradar",
              transport: "tls",
              host: "127.0.0.1",
              port: rs.port,
              format: "leef",
              ca: ca.ca,
              leefDelimiter: "^",
            },
            { name: "s5424", transport: "tls", host: "localhost", port: rs.port, format: "rfc5424", ca: ca.ca },
          ],
        });
        rig.audit.record(upload(7, { path: "/in/a^b.csv" }));
        rig.audit.record({
          action: "login",
          outcome: "failure",
          user: "mallory",
          method: "password",
          reason: "bad credentials",
          sourceIp: "127.0.0.2",
          protocol: "sftp",
        });
        const lines = await rs.waitFor(6);
        const leef = lines.filter((l) => splitSyslog(l).msg.startsWith("LEEF:2.0|"));
        const s5424 = lines.filter((l) => splitSyslog(l).sd.startsWith("[atrest@32473"));
        assert.equal(leef.length, 3);
        assert.equal(s5424.length, 3);
        const up = leef.find((l) => l.includes("|upload|")) as string;
        const attrs = Object.fromEntries(
          (splitSyslog(up).msg.split("|").slice(6).join("|") as string)
            .split("^")
            .map((kv) => kv.split(/=(.*)/s).slice(0, 2)),
        );
        assert.equal(attrs.usrName, "alice");
        assert.equal(attrs.effectiveUser, "bob");
        assert.equal(attrs.filePath, "/in/a_b.csv", "the delimiter is replaced in values");
        assert.equal(attrs.seq, "2");
        const login = splitSyslog(s5424.find((l) => l.includes('action="login"')) as string);
        assert.equal(login.msgid, "login");
        assert.equal(login.pri, 13 * 8 + 5);
        assert.match(login.sd, /user="mallory"/);
        assert.match(login.sd, /effectiveUser="mallory"/);
        assert.match(login.sd, /reason="bad credentials"/);
        assert.match(login.sd, /srcIp="127.0.0.2"/);
        assert.match(login.sd, /seq="3"/);
        assert.equal(
          rig.pipeline?.snapshot().destinations.every((d) => d.connected),
          true,
        );
      } finally {
        await rig.close();
        await rs.stop();
      }
    });
  }

  test("syslog-ng (syslog() source, TCP and TLS): RFC 5424 and ECS arrive intact", {
    skip: syslogNgRoot() === undefined,
  }, async () => {
    const dir = join(root, "sng");
    const plain = await startSyslogNg(join(dir, "plain"));
    const tls = await startSyslogNg(join(dir, "tls"), ca);
    const rig = new Rig(dir);
    try {
      await rig.start({
        destinations: [
          { name: "sng-tcp", transport: "tcp", host: "127.0.0.1", port: plain.port, format: "rfc5424" },
          { name: "sng-tls", transport: "tls", host: "127.0.0.1", port: tls.port, format: "ecs", ca: ca.ca },
        ],
      });
      rig.audit.record(upload(3, { path: '/odd "quoted" ]path\\x' }));
      const [, p] = await plain.waitFor(2);
      const [, t] = await tls.waitFor(2);
      const sd = splitSyslog(p as string).sd;
      assert.match(sd, /path="\/odd \\"quoted\\" \\]path\\\\x"/);
      assert.match(sd, /effectiveUser="bob"/);
      const doc = JSON.parse(splitSyslog(t as string).msg);
      assert.equal(doc.user.name, "alice");
      assert.equal(doc.user.effective.name, "bob");
      assert.equal(doc.file.path, '/odd "quoted" ]path\\x');
      assert.equal(doc.event.sequence, 2);
    } finally {
      await rig.close();
      await plain.stop();
      await tls.stop();
    }
  });

  test("bad destinations: unknown host and a TLS receiver with another CA give clear errors; events stay spooled", async () => {
    const dir = join(root, "bad");
    const rs = await startRsyslog(join(dir, "rsyslog"), { driver: "ossl", ca: otherCa });
    const rig = new Rig(dir);
    try {
      await rig.start({
        destinations: [
          { name: "nohost", transport: "tcp", host: "siem.invalid", port: 6514, format: "cef", retryMaxMs: 500 },
          {
            name: "wrongca",
            transport: "tls",
            host: "127.0.0.1",
            port: rs.port,
            format: "cef",
            ca: ca.ca,
            retryMaxMs: 500,
          },
        ],
      });
      for (let i = 1; i <= 5; i++) rig.audit.record(upload(i));
      await new Promise((r) => setTimeout(r, 2500));
      const snap = rig.pipeline?.snapshot();
      const by = new Map(snap?.destinations.map((d) => [d.name, d]));
      assert.match(by.get("nohost")?.lastError ?? "", /^unknown host siem\.invalid \((ENOTFOUND|EAI_AGAIN)\)$/);
      assert.match(
        by.get("wrongca")?.lastError ?? "",
        /TLS failure with 127\.0\.0\.1:\d+: the server certificate is not issued by the pinned CA/,
      );
      for (const d of snap?.destinations ?? []) {
        assert.equal(d.connected, false);
        assert.equal(d.deliveredSeq, 0);
        assert.equal(d.backlog, 6, "everything is still to deliver");
      }
      // logged once per state change, not once per retry
      const warns = rig.log.logged.filter((l) => l.level === "warn" && l.obj.destination === "wrongca");
      assert.equal(warns.length, 1, JSON.stringify(warns));
      assert.equal((await rs.lines()).length, 0);
    } finally {
      await rig.close();
      await rs.stop();
    }
    // the stop saves the cursor even when nothing was delivered: a missing file is a failure, not seq 0
    const cursor = JSON.parse(await readFile(join(dir, "audit", "spool", "wrongca", "cursor.json"), "utf8"));
    assert.equal(cursor.seq, 0);
  });

  test("filters: a path exclusion hides only those events; privileged users always pass; excluding one is refused", async () => {
    const dir = join(root, "filter");
    const rs = await startRsyslog(join(dir, "rsyslog"));
    const rig = new Rig(dir);
    try {
      await rig.store.transaction((tx) =>
        tx.insertUser({
          id: "u-root",
          name: "root1",
          passwordHash: null,
          publicKeys: [],
          home: "/root1",
          permissions: {},
          groups: [],
          role: "custodian",
          kek: null,
          quotaBytes: 0,
          quotaFiles: 0,
          usedBytes: 0,
          usedFiles: 0,
          createdAt: new Date().toISOString(),
        }),
      );
      await assert.rejects(
        rig.start({
          destinations: [
            {
              name: "x",
              transport: "tcp",
              host: "127.0.0.1",
              port: rs.port,
              format: "cef",
              filter: { excludeUsers: ["carol", "root1"] },
            },
          ],
        }),
        /audit destination "x" filter: excludeUsers names "root1", a privileged user \(role custodian\)/,
      );
      await assert.rejects(
        rig.start({
          destinations: [
            {
              name: "x",
              transport: "tcp",
              host: "127.0.0.1",
              port: rs.port,
              format: "cef",
              filter: { excludeUsers: ["admin"] },
            },
          ],
        }),
        /excludeUsers names "admin", a privileged user/,
      );
      await assert.rejects(
        rig.start({
          destinations: [
            {
              name: "x",
              transport: "tcp",
              host: "127.0.0.1",
              port: rs.port,
              format: "cef",
              filter: { events: ["uplod"] },
            },
          ],
        }),
        /unknown event "uplod"/,
      );
      await rig.start({
        destinations: [
          {
            name: "f",
            transport: "tcp",
            host: "127.0.0.1",
            port: rs.port,
            format: "cef",
            filter: { excludePaths: ["/hr/**"], excludeUsers: ["carol"] },
          },
        ],
      });
      rig.audit.record(upload(1, { path: "/hr/salaries.xlsx" })); // hidden: excluded path
      rig.audit.record(upload(2, { path: "/in/ok.csv" })); // passes
      rig.audit.record(upload(3, { path: "/hr/x.csv", user: "root1", effectiveUser: "root1" })); // privileged: passes
      rig.audit.record(upload(4, { path: "/in/c.csv", user: "carol", effectiveUser: "carol" })); // hidden: excluded user
      rig.audit.record(upload(5, { path: "/in/c.csv", user: "admin", effectiveUser: "carol" })); // CLI admin: passes
      rig.audit.record({ action: "login", outcome: "success", user: "alice", method: "password" }); // no path: passes
      rig.audit.record(upload(6, { path: "/hr/a.csv", targetPath: "/public/a.csv", action: "rename" })); // leaves /hr: passes
      const lines = await rs.waitFor(6);
      await new Promise((r) => setTimeout(r, 1200));
      const got = (await rs.lines()).map((l) => cefFields(l));
      assert.deepEqual(
        got.map((f) => [f.act, f.suser, f.filePath]),
        [
          ["audit.config.change", "atrest", undefined],
          ["upload", "alice", "/in/ok.csv"],
          ["upload", "root1", "/hr/x.csv"],
          ["upload", "admin", "/in/c.csv"],
          ["login", "alice", undefined],
          ["rename", "alice", "/hr/a.csv"],
        ],
      );
      assert.equal(lines.length, 6);
      assert.equal(rig.pipeline?.snapshot().destinations[0]?.filtered, 2);
    } finally {
      await rig.close();
      await rs.stop();
    }
  });

  test("UDP: one message per datagram to rsyslog imudp", async () => {
    const dir = join(root, "udp");
    const rs = await startRsyslog(join(dir, "rsyslog"), undefined, { udp: true });
    const rig = new Rig(dir);
    try {
      await rig.start({
        destinations: [{ name: "udp", transport: "udp", host: "127.0.0.1", port: rs.port, format: "rfc5424" }],
      });
      for (let i = 1; i <= 20; i++) rig.audit.record(upload(i));
      const lines = await rs.waitFor(21);
      const seqs = lines.map((l) => Number(/seq="(\d+)"/.exec(l)?.[1]));
      assert.deepEqual(
        seqs,
        Array.from({ length: 21 }, (_, i) => i + 1),
      );
      assert.equal(rig.pipeline?.snapshot().destinations[0]?.deliveredSeq, 21);
    } finally {
      await rig.close();
      await rs.stop();
    }
  });

  test("back-pressure: over maxBacklog, admit() waits until the receiver took the backlog (nothing dropped)", async () => {
    const dir = join(root, "backpressure");
    const port = await freePort();
    await mkdir(dir, { recursive: true });
    const rig = new Rig(dir);
    let rs: Receiver | undefined;
    try {
      await rig.start({
        destinations: [
          { name: "slow", transport: "tcp", host: "127.0.0.1", port, format: "cef", maxBacklog: 5, retryMaxMs: 300 },
        ],
      });
      for (let i = 1; i <= 10; i++) rig.audit.record(upload(i));
      rig.audit.flush();
      let admitted = false;
      const gate = rig.audit.admit();
      assert.ok(gate instanceof Promise, "producers are slowed down");
      void gate.then(() => {
        admitted = true;
      });
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal(admitted, false, "still waiting while the receiver is down");
      rs = await startRsyslog(join(dir, "rsyslog"), undefined, { port });
      await gate;
      assert.ok(admitted);
      const lines = await rs.waitFor(11);
      assert.equal(lines.length, 11);
    } finally {
      await rig.close();
      await rs?.stop();
    }
  });
});
