import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { App, initData } from "../../src/app.ts";
import type { AuditRecord } from "../../src/audit/types.ts";
import type { RuleInput } from "../../src/events/schema.ts";
import type { VfsSession } from "../../src/vfs/types.ts";
import { removeDir, tempDir } from "../helpers/atrest.ts";
import { exists, get, put } from "../helpers/vfs.ts";
import { startWebhookReceiver, type WebhookReceiver, waitFor } from "./receivers.ts";

describe("trigger engine (in process: real vfs, sqlite, embedded KMS, audit)", () => {
  let dir: string;
  let app: App;
  let hook: WebhookReceiver;
  let alice: VfsSession;
  let bob: VfsSession;
  let admin: VfsSession;
  const records: AuditRecord[] = [];
  const SECRET = "a-webhook-secret-of-some-length";

  before(async () => {
    dir = await tempDir("atrest-events-");
    await initData(dir);
    app = await App.open(dir);
    await app.putGroup("partners", {});
    await app.addUser({ name: "ops", password: "pw-ops-123456", home: "/" });
    await app.addUser({ name: "alice", password: "pw-alice-1234", home: "/exchange", groups: ["partners"] });
    await app.addUser({ name: "bob", password: "pw-bob-123456", home: "/exchange" });
    alice = await app.openSession("alice", { protocol: "sftp", sessionId: "s-alice" });
    bob = await app.openSession("bob", { protocol: "sftp", sessionId: "s-bob" });
    admin = await app.openSession("ops", { protocol: "cli", sessionId: "s-ops" });
    await alice.mkdir("/in");
    hook = await startWebhookReceiver(SECRET);
    app.audit.onRecord((r) => records.push(r));
    await app.triggers.start({ pollMs: 50, keyWatchMs: 100 });
  });
  after(async () => {
    await hook.close();
    await app.close();
    await removeDir(dir);
  });

  const rule = (over: Partial<RuleInput>): RuleInput => ({
    name: "partners-in",
    owner: "ops",
    event: "upload",
    conditions: { groups: ["partners"], paths: ["/exchange/in/*.csv"], size: { max: 10_000 } },
    actions: [
      { type: "move", to: "/out" },
      { type: "webhook", url: hook.url, secret: SECRET },
    ],
    retry: { attempts: 3, delaySeconds: 0.1, maxDelaySeconds: 1 },
    ...over,
  });

  it("validates references with clear errors", async () => {
    const add = (r: RuleInput) => app.triggers.rules.add(r);
    await assert.rejects(add(rule({ owner: "nobody" })), /rule owner: unknown user "nobody"/);
    await assert.rejects(add(rule({ conditions: { groups: ["ghosts"] } })), /unknown group "ghosts"/);
    await assert.rejects(add(rule({ conditions: { users: ["carol"] } })), /unknown user "carol"/);
    await assert.rejects(add(rule({ conditions: { paths: ["in/*.csv"] } })), /bad glob "in\/\*\.csv"/);
    await assert.rejects(
      add(rule({ actions: [{ type: "webhook", url: "ftp://x/y", secret: SECRET }] })),
      /URL must be http\(s\)/,
    );
    await assert.rejects(add(rule({ actions: [{ type: "webhook", url: "not a url" }] })), /bad URL "not a url"/);
    await assert.rejects(add(rule({ event: "login" })), /paths and size apply only to file events/);
    await assert.rejects(
      add(rule({ event: "login", conditions: {}, actions: [{ type: "delete" }] })),
      /works on the event's file/,
    );
    await assert.rejects(add(rule({ event: "schedule", conditions: {} })), /event schedule needs a schedule/);
    assert.deepEqual(await app.triggers.rules.list(), []);
  });

  it("upload by a partner → moved to /out as the owner, webhook with a valid HMAC and the event fields", async () => {
    const { generated } = await app.triggers.rules.add(rule({}));
    assert.deepEqual(generated, [], "the secret was given");
    const data = randomBytes(3000);
    await put(alice, "/in/report.csv", data);
    const [e] = await waitFor(async () => {
      const h = await app.triggers.store.history("partners-in");
      return h.length === 1 && h[0].state === "done" ? h : undefined;
    });
    assert.deepEqual(await get(admin, "/out/report.csv"), data);
    assert.equal(await exists(alice, "/in/report.csv"), false);
    assert.equal(hook.deliveries.length, 1);
    const d = hook.deliveries[0];
    assert.ok(d.validSignature, "HMAC over timestamp.body verifies with the shared secret");
    assert.equal(d.headers["x-atrest-delivery"], e.id);
    assert.equal(d.json.rule, "partners-in");
    assert.equal(d.json.event, "upload");
    assert.equal(d.json.user, "alice");
    assert.equal(d.json.path, "/exchange/in/report.csv");
    assert.equal(d.json.file, "/out/report.csv");
    assert.equal(d.json.size, 3000);
    assert.ok(!d.body.includes(data.subarray(0, 16).toString("base64")), "no file content");
    assert.deepEqual(
      e.data.log.map((l) => [l.type, l.ok]),
      [
        ["move", true],
        ["webhook", true],
      ],
    );
    // the move is audited with job user trigger:<rule> and effective user the owner
    const moved = records.find((r) => r.action === "rename" && r.targetPath === "/out/report.csv");
    assert.equal(moved?.user, "trigger:partners-in");
    assert.equal(moved?.effectiveUser, "ops");
    assert.equal(moved?.protocol, "trigger");
    assert.equal(moved?.sessionId, e.id);
  });

  it("conditions that do not match do not fire", async () => {
    const before = (await app.triggers.store.history("partners-in")).length;
    await put(bob, "/in/bob.csv", randomBytes(10)); // not a partner
    await put(alice, "/in/notes.txt", randomBytes(10)); // other path
    await put(alice, "/in/big.csv", randomBytes(20_000)); // size out of range
    await alice.mkdir("/in/sub");
    await put(alice, "/in/sub/deep.csv", randomBytes(10)); // * stays in one segment
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await app.triggers.store.history("partners-in")).length, before);
    assert.ok(await exists(bob, "/in/bob.csv"));
    assert.ok(await exists(alice, "/in/big.csv"));
  });

  it("a failing webhook retries with backoff, lands in dead letters, and retry resumes at the failed step", async () => {
    hook.status = 500;
    const sent = hook.deliveries.length;
    await put(alice, "/in/second.csv", randomBytes(100));
    const dead = await waitFor(async () => {
      const list = await app.triggers.store.deadLetters();
      return list.length === 1 ? list[0] : undefined;
    });
    assert.equal(hook.deliveries.length - sent, 3, "3 attempts");
    assert.equal(dead.step, 1, "the move completed; the webhook step failed");
    assert.equal(dead.errorCode, "FAILED");
    const fails = dead.data.log.filter((l) => !l.ok);
    assert.equal(fails.length, 3);
    assert.match(fails[0].detail, /HTTP 500/);
    const at = dead.data.log.filter((l) => !l.ok).map((l) => Date.parse(l.at));
    assert.ok(at[2] - at[1] > at[1] - at[0] - 50, "the delay grows");
    hook.status = 204;
    await app.triggers.store.retry(dead.id);
    await waitFor(async () => ((await app.triggers.store.get(dead.id))?.state === "done" ? true : undefined));
    assert.equal(hook.deliveries.length - sent, 4);
    assert.ok(hook.deliveries.at(-1)?.validSignature);
    assert.ok(await exists(admin, "/out/second.csv"), "moved once, not twice");
    assert.deepEqual(await app.triggers.store.deadLetters(), []);
    await assert.rejects(app.triggers.store.retry(dead.id), /is done, not a dead letter/);
  });

  it("a receiver's 4xx is permanent: dead letter at once", async () => {
    hook.status = 401;
    const sent = hook.deliveries.length;
    await put(alice, "/in/third.csv", randomBytes(100));
    const dead = await waitFor(async () => (await app.triggers.store.deadLetters())[0]);
    assert.equal(hook.deliveries.length - sent, 1);
    assert.equal(dead.errorCode, "INVALID_INPUT");
    hook.status = 200;
  });

  it("key-rotated fires once per new key version, seen by watching the key manager", async () => {
    await app.keys.rotateKey("default"); // before the rule: not replayed
    await new Promise((r) => setTimeout(r, 300));
    await app.triggers.rules.add({
      name: "on-rotate",
      owner: "ops",
      event: "key-rotated",
      actions: [{ type: "webhook", url: hook.url, secret: SECRET }],
    });
    const sent = hook.deliveries.length;
    const before = (await app.keys.listKeys()).find((k) => k.name === "default")?.currentVersion ?? 0;
    await app.keys.rotateKey("default");
    await app.keys.rotateKey("default");
    const got = await waitFor(() => (hook.deliveries.length - sent >= 2 ? hook.deliveries.slice(sent) : undefined));
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(hook.deliveries.length - sent, 2, "once per version");
    assert.deepEqual(got.map((d) => d.json.keyRef).sort(), [
      `kek:default:v${before + 1}`,
      `kek:default:v${before + 2}`,
    ]);
    assert.ok(got.every((d) => d.validSignature && d.json.event === "key-rotated"));
  });

  it("rename, download, delete and mkdir events carry global paths (a rename: source and target)", async () => {
    await app.triggers.rules.add({
      name: "file-events",
      owner: "ops",
      event: ["rename", "download", "delete", "mkdir"],
      conditions: { users: ["alice"], paths: ["/exchange/ev/**"] },
      actions: [{ type: "webhook", url: hook.url, secret: SECRET }],
    });
    const sent = hook.deliveries.length;
    await alice.mkdir("/ev");
    await put(alice, "/ev/a.tmp", randomBytes(5)); // upload: not listened to
    await alice.rename("/ev/a.tmp", "/ev/a.dat", false);
    await get(alice, "/ev/a.dat");
    await alice.remove("/ev/a.dat");
    const got = await waitFor(() => (hook.deliveries.length - sent >= 3 ? hook.deliveries.slice(sent) : undefined));
    await new Promise((r) => setTimeout(r, 300));
    const seen = hook.deliveries.slice(sent).map((d) => [d.json.event, d.json.path, d.json.targetPath ?? null]);
    assert.deepEqual(
      seen.sort(),
      [
        ["delete", "/exchange/ev/a.dat", null],
        ["download", "/exchange/ev/a.dat", null],
        ["rename", "/exchange/ev/a.tmp", "/exchange/ev/a.dat"],
      ].sort(),
      "mkdir /exchange/ev itself does not match /exchange/ev/**",
    );
    assert.equal(got.find((d) => d.json.event === "download")?.json.size, 5);
  });
});
