import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { SMTPServer } from "smtp-server";
import { App, initData } from "../../src/app.ts";
import { TriggerEngine } from "../../src/events/engine.ts";
import type { RuleInput } from "../../src/events/schema.ts";
import type { Execution } from "../../src/events/store.ts";
import { silentLogger } from "../../src/logger.ts";
import type { VfsSession } from "../../src/vfs/types.ts";
import { removeDir, tempDir } from "../helpers/atrest.ts";
import { exists, get, put } from "../helpers/vfs.ts";
import { startWebhookReceiver, waitFor } from "./receivers.ts";
import { makeTls, type TestTls } from "./tls.ts";

const DAY = 86_400_000;

interface Mail {
  raw: string;
  secure: boolean;
  from: string;
  to: string[];
  user?: string;
}

/** smtp-server on loopback with a certificate from the test CA; MAIL FROM is refused until STARTTLS. */
async function startSmtp(tls: TestTls, opts: { offerStartTls: boolean; password?: string }) {
  const mails: Mail[] = [];
  const server = new SMTPServer({
    secure: false,
    key: tls.key,
    cert: tls.cert,
    authOptional: opts.password === undefined,
    disabledCommands: [...(opts.password === undefined ? ["AUTH"] : []), ...(opts.offerStartTls ? [] : ["STARTTLS"])],
    logger: false,
    onAuth(auth, _session, cb) {
      if (auth.username === "mailer" && auth.password === opts.password) return cb(null, { user: auth.username });
      cb(new Error("535 bad credentials"));
    },
    onMailFrom(_address, session, cb) {
      if (!session.secure)
        return cb(Object.assign(new Error("Must issue a STARTTLS command first"), { responseCode: 530 }));
      cb();
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        mails.push({
          raw: Buffer.concat(chunks).toString("utf8"),
          secure: session.secure,
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
          to: session.envelope.rcptTo.map((r) => r.address),
          user: session.user as string | undefined,
        });
        cb();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.server.address() as AddressInfo).port;
  return { mails, port, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

describe("trigger actions against real peers", () => {
  let dir: string;
  let app: App;
  let tls: TestTls;
  let alice: VfsSession;
  let ops: VfsSession;

  before(async () => {
    dir = await tempDir("atrest-actions-");
    tls = await makeTls(await tempDir("atrest-tls-").then((d) => d));
    await initData(join(dir, "data"));
    app = await App.open(join(dir, "data"));
    await app.addUser({ name: "ops", password: "pw-ops-123456", home: "/" });
    await app.addUser({ name: "alice", password: "pw-alice-1234", home: "/home/alice" });
    alice = await app.openSession("alice", { protocol: "sftp", sessionId: "s-alice" });
    ops = await app.openSession("ops", { protocol: "cli", sessionId: "s-ops" });
    await app.triggers.start({ pollMs: 50 });
  });
  after(async () => {
    await app.close();
    await removeDir(dir);
  });

  const finished = (rule: string, n = 1) =>
    waitFor(async () => {
      const h = await app.triggers.store.history(rule);
      return h.length >= n && h.slice(0, n).every((e) => e.state === "done" || e.state === "dead") ? h : undefined;
    });

  it("email: delivered through a local SMTP server over STARTTLS, authenticated, with the event fields", async () => {
    const smtp = await startSmtp(tls, { offerStartTls: true, password: "smtp-secret-pw" });
    try {
      await app.triggers.rules.add({
        name: "mail-on-upload",
        owner: "ops",
        event: "upload",
        conditions: { paths: ["/home/alice/mail/*"] },
        actions: [
          {
            type: "email",
            to: ["finance@example.com"],
            subject: "new file {name} from {user}",
            smtp: {
              host: "localhost",
              port: smtp.port,
              from: "atrest@example.com",
              user: "mailer",
              password: "smtp-secret-pw",
              ca: tls.ca,
            },
          },
        ],
      } satisfies RuleInput);
      const shown = JSON.stringify(await app.triggers.rules.get("mail-on-upload"));
      assert.ok(!shown.includes("smtp-secret-pw"), "the stored rule does not hold the password");
      await alice.mkdir("/mail");
      await put(alice, "/mail/invoice.pdf", randomBytes(500));
      const [e] = await finished("mail-on-upload");
      assert.equal(e.state, "done", JSON.stringify(e.data.log));
      assert.equal(smtp.mails.length, 1);
      const m = smtp.mails[0];
      assert.ok(m.secure, "the message went over TLS (STARTTLS)");
      assert.equal(m.user, "mailer");
      assert.deepEqual(m.to, ["finance@example.com"]);
      assert.match(m.raw, /Subject: new file invoice\.pdf from alice/);
      assert.match(m.raw, /path: \/home\/alice\/mail\/invoice\.pdf/);
      assert.match(m.raw, /X-Atrest-Delivery: /);
    } finally {
      await smtp.close();
      await app.triggers.rules.remove("mail-on-upload");
    }
  });

  it("email: a server that does not offer STARTTLS gets nothing (the step fails)", async () => {
    const smtp = await startSmtp(tls, { offerStartTls: false });
    try {
      await app.triggers.rules.add({
        name: "mail-plain",
        owner: "ops",
        event: "upload",
        conditions: { paths: ["/home/alice/plain/*"] },
        actions: [
          {
            type: "email",
            to: ["x@example.com"],
            smtp: { host: "localhost", port: smtp.port, from: "atrest@example.com", ca: tls.ca },
          },
        ],
        retry: { attempts: 2, delaySeconds: 0.05, maxDelaySeconds: 1 },
      });
      await alice.mkdir("/plain");
      await put(alice, "/plain/a.txt", randomBytes(10));
      const [e] = await finished("mail-plain");
      assert.equal(e.state, "dead");
      assert.match(e.data.log.at(-1)?.detail ?? "", /STARTTLS/i);
      assert.equal(smtp.mails.length, 0);
    } finally {
      await smtp.close();
    }
  });

  it("webhook over HTTPS: verifies the receiver against the pinned CA, refuses it without", async () => {
    const hook = await startWebhookReceiver("https-hook-secret-0123456789", { key: tls.key, cert: tls.cert });
    try {
      const base = {
        owner: "ops",
        event: "mkdir",
        conditions: { paths: ["/home/alice/hooks"] },
        retry: { attempts: 1, delaySeconds: 0, maxDelaySeconds: 0 },
      } as const;
      await app.triggers.rules.add({
        ...base,
        name: "hook-pinned",
        actions: [{ type: "webhook", url: hook.url, secret: hook.secret, ca: tls.ca }],
      });
      const { generated } = await app.triggers.rules.add({
        ...base,
        name: "hook-system-ca",
        actions: [{ type: "webhook", url: hook.url }],
      });
      assert.equal(generated.length, 1, "a secret was generated and shown once");
      assert.ok(generated[0].secret.length >= 43);
      await alice.mkdir("/hooks");
      const [ok] = await finished("hook-pinned");
      const [bad] = await finished("hook-system-ca");
      assert.equal(ok.state, "done");
      assert.equal(hook.deliveries.length, 1);
      assert.ok(hook.deliveries[0].validSignature);
      assert.equal(hook.deliveries[0].json.event, "mkdir");
      assert.equal(bad.state, "dead");
      assert.match(bad.data.log.at(-1)?.detail ?? "", /certificate/i);
    } finally {
      await hook.close();
    }
  });

  it("command: argv without a shell, event fields in the environment, timeout, failure recorded", async () => {
    const out = join(dir, "cmd-out.txt");
    await app.triggers.rules.add({
      name: "run-cmd",
      owner: "ops",
      event: "upload",
      conditions: { paths: ["/home/alice/cmd/*"] },
      actions: [
        {
          type: "command",
          argv: [
            "sh",
            "-c",
            'printf "%s|%s|%s|%s|%s" "$ATREST_RULE" "$ATREST_USER" "$ATREST_PATH" "$ATREST_SIZE" "$1" > "$2"',
            "x",
            "{name}",
            out,
          ],
          env: { EXTRA: "1" },
        },
        { type: "command", argv: ["sh", "-c", "echo boom >&2; exit 3"] },
      ],
      retry: { attempts: 1, delaySeconds: 0, maxDelaySeconds: 0 },
    });
    await alice.mkdir("/cmd");
    await put(alice, "/cmd/a;rm -rf x.txt", randomBytes(7));
    const [e] = await finished("run-cmd");
    assert.equal(await readFile(out, "utf8"), "run-cmd|alice|/home/alice/cmd/a;rm -rf x.txt|7|a;rm -rf x.txt");
    assert.equal(e.state, "dead");
    assert.equal(e.step, 1);
    assert.match(e.data.log.at(-1)?.detail ?? "", /sh exited 3: boom/);

    await app.triggers.rules.add({
      name: "slow-cmd",
      owner: "ops",
      event: "upload",
      conditions: { paths: ["/home/alice/slow/*"] },
      actions: [{ type: "command", argv: ["sleep", "30"], timeoutSeconds: 1 }],
      retry: { attempts: 1, delaySeconds: 0, maxDelaySeconds: 0 },
    });
    await alice.mkdir("/slow");
    const t0 = Date.now();
    await put(alice, "/slow/x", randomBytes(1));
    const [slow] = await finished("slow-cmd");
    assert.ok(Date.now() - t0 < 10_000);
    assert.match(slow.data.log.at(-1)?.detail ?? "", /killed by SIGKILL/);
  });

  it("copy and rename with templates; the current file follows the rename", async () => {
    await app.triggers.rules.add({
      name: "copy-rename",
      owner: "ops",
      event: "upload",
      conditions: { paths: ["/home/alice/docs/*.txt"] },
      actions: [
        { type: "copy", to: "/backup/{user}" },
        { type: "rename", name: "{stem}-done.{ext}" },
        { type: "copy", to: "/backup/renamed" },
      ],
    });
    await alice.mkdir("/docs");
    const data = randomBytes(200_000);
    await put(alice, "/docs/r.txt", data);
    const [e] = await finished("copy-rename");
    assert.equal(e.state, "done", JSON.stringify(e.data.log));
    assert.deepEqual(await get(ops, "/backup/alice/r.txt"), data);
    assert.deepEqual(await get(alice, "/docs/r-done.txt"), data);
    assert.deepEqual(await get(ops, "/backup/renamed/r-done.txt"), data);
    assert.equal(await exists(alice, "/docs/r.txt"), false);
  });

  it("actions outside the owner's home are refused (permanent, dead letter)", async () => {
    await app.triggers.rules.add({
      name: "alice-owned",
      owner: "alice",
      event: "upload",
      conditions: { paths: ["/home/alice/own/*"] },
      actions: [{ type: "move", to: "/elsewhere" }],
    });
    await alice.mkdir("/own");
    await put(alice, "/own/f", randomBytes(3));
    const [e] = await finished("alice-owned");
    assert.equal(e.state, "dead");
    assert.equal(e.errorCode, "PERMISSION_DENIED");
    assert.equal(e.attempts, 1, "not retried");
    assert.ok(await exists(alice, "/own/f"));
  });
});

describe("schedules and retention under a test clock", () => {
  let dir: string;
  let app: App;
  let engine: TriggerEngine;
  let now = Date.now();
  let s: VfsSession;

  before(async () => {
    dir = await tempDir("atrest-retention-");
    await initData(dir);
    app = await App.open(dir);
    await app.triggers.close(); // replaced by an engine on a test clock
    engine = new TriggerEngine({
      store: app.store,
      keys: app.keys,
      audit: app.audit,
      logger: silentLogger,
      openSession: (u, i) => app.openSession(u, i),
      clock: () => now,
    });
    await app.addUser({ name: "ops", password: "pw-ops-123456", home: "/" });
    s = await app.openSession("ops", { protocol: "cli", sessionId: "s" });
  });
  after(async () => {
    await engine.close();
    await app.close();
    await removeDir(dir);
  });

  const settle = async (rule: string, n: number): Promise<Execution[]> =>
    waitFor(async () => {
      await engine.tick();
      const h = await engine.store.history(rule);
      return h.length === n && h.every((e) => e.state === "done" || e.state === "dead") ? h : undefined;
    });

  it("fires once per due time, then deletes or archives files older than N days", async () => {
    for (const d of ["/out", "/out/sub", "/keep"]) await s.mkdir(d);
    const t0 = now;
    await put(s, "/out/old.csv", randomBytes(10));
    await put(s, "/out/sub/old2.csv", randomBytes(20));
    await put(s, "/out/recent.csv", randomBytes(30));
    await s.setMtime("/out/recent.csv", t0 + 25 * DAY);
    await put(s, "/keep/old.csv", randomBytes(40));
    await engine.rules.add({
      name: "purge",
      owner: "ops",
      event: "schedule",
      schedule: { every: "1d" },
      actions: [{ type: "retention", path: "/out", olderThanDays: 30 }],
    });
    await engine.rules.add({
      name: "archive",
      owner: "ops",
      event: "schedule",
      schedule: { cron: "0 3 * * *" },
      actions: [{ type: "retention", path: "/keep", olderThanDays: 30, mode: "archive", archiveTo: "/archive" }],
    });

    await engine.tick();
    assert.equal((await engine.store.history("purge")).length, 0, "not due yet");

    now = t0 + 31 * DAY; // a month later: one firing each, not one per missed day
    const [p] = await settle("purge", 1);
    const [a] = await settle("archive", 1);
    assert.equal(p.state, "done");
    assert.match(p.data.log[0].detail, /^2 file\(s\), 30 bytes deleted/);
    assert.equal(await exists(s, "/out/old.csv"), false);
    assert.equal(await exists(s, "/out/sub/old2.csv"), false);
    assert.ok(await exists(s, "/out/sub"), "directories stay");
    assert.ok(await exists(s, "/out/recent.csv"), "25 days younger: 6 days old");
    assert.equal(a.state, "done");
    assert.ok(await exists(s, "/archive/old.csv"));
    assert.equal(await exists(s, "/keep/old.csv"), false);
    assert.equal(p.data.event.user, "trigger:purge");
    assert.equal(p.data.event.effectiveUser, "ops");

    await engine.tick();
    assert.equal((await engine.store.history("purge")).length, 1, "same time: no second firing");

    // two nodes on one store read the same last firing and both decide the slot is due: only one fires it
    const rule = (await engine.store.listRules()).find((r) => r.rule.name === "purge");
    const seen = rule?.lastFiredAt ?? null;
    const raced = await Promise.all([1, 2].map(() => engine.store.fire("purge", now + 500, undefined, seen)));
    assert.deepEqual(raced.sort(), [false, true]);

    now += 1 * DAY + 1000;
    await settle("purge", 2);
    assert.ok(await exists(s, "/out/recent.csv"), "7 days old");
    now += 24 * DAY;
    const [p3] = await settle("purge", 3);
    assert.match(p3.data.log[0].detail, /^1 file\(s\), 30 bytes deleted/);
    assert.equal(await exists(s, "/out/recent.csv"), false);

    now += 31 * DAY; // completed executions are forgotten after 30 days (the new firing stays)
    await settle("purge", 1);
    assert.deepEqual(
      (await engine.store.history("purge")).map((e) => e.data.event.time),
      [new Date(now).toISOString()],
    );
  });
});
