// The trigger engine end to end: rules added with the CLI, uploads by OpenSSH sftp into the real server, the output
// PGP-encrypted to finance's gpg-generated key and decrypted by gpg, a webhook receiver started here; dead letters and retry through the CLI while the server runs; a restart (after SIGKILL)
// with a pending execution completes it exactly once.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { App } from "../../src/app.ts";
import { startWebhookReceiver, type WebhookReceiver, waitFor } from "../events/receivers.ts";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { Gpg } from "../helpers/gpg.ts";
import { makeClientKey, runSftpBatch, sha256File } from "../helpers/sftp-clients.ts";

describe("triggers: OpenSSH sftp uploads into the real server fire rules added with the CLI", () => {
  let dir: string;
  let data: string;
  let server: RunningServer | undefined;
  let hook: WebhookReceiver;
  let gpg: Gpg;
  const keys: Record<string, string> = {};
  const SECRET = "integration-webhook-secret-42";

  before(async () => {
    dir = await tempDir("atrest-triggers-");
    data = join(dir, "data");
    hook = await startWebhookReceiver(SECRET);
    await cli(["init", "--data", data]);
    await cli(["group", "add", "partners", "--data", data]);
    gpg = await Gpg.create();
    for (const [name, extra] of [
      ["ops", ["--home", "/"]],
      ["alice", ["--home", "/exchange", "--group", "partners"]],
      ["bob", ["--home", "/exchange"]],
      ["finance", ["--home", "/finance"]],
    ] as const) {
      keys[name] = await makeClientKey(join(dir, "keys"));
      await cli(["user", "add", name, "--public-key", `${keys[name]}.pub`, ...extra, "--data", data]);
    }
    // finance's key pair comes from gpg; atrest gets only the public key (and makes its organisation signing key)
    const fpr = await gpg.generate("Finance <finance@example.com>", "rsa3072");
    const app = await App.open(data);
    try {
      await app.pgp.import("finance", await gpg.exportPublic(fpr));
      await gpg.importKey((await app.pgp.org.create({ name: "atrest org" })).armor());
    } finally {
      await app.close();
    }
    const rule = {
      name: "partners-in",
      owner: "ops",
      event: "upload",
      conditions: { groups: ["partners"], paths: ["/exchange/in/*.csv"], size: { min: 1, max: 1_000_000 } },
      actions: [
        { type: "pgp-encrypt", recipients: ["finance"], sign: true, removePlaintext: true },
        { type: "move", to: "/out" },
        { type: "webhook", url: hook.url, secret: SECRET },
      ],
      retry: { attempts: 3, delaySeconds: 0.3, maxDelaySeconds: 2 },
    };
    await writeFile(join(dir, "rule.json"), JSON.stringify(rule));
    const added = await cli(
      ["trigger", "add", "--file", "-", "--data", data, "--as", "ops-jane"],
      JSON.stringify(rule),
    );
    assert.match(added.stdout, /added trigger rule partners-in \(3 action\(s\)\)/);
    assert.doesNotMatch(added.stdout, /secret/, "a given secret is not echoed");
    // the rule change is audited as the acting user, with the admin role (never filtered from a SIEM)
    const tail = (await cli(["audit", "tail", "--data", data])).stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    const change = tail.find((r) => r.action === "config.change" && r.target === "trigger:partners-in");
    assert.deepEqual([change?.user, change?.role, change?.protocol], ["ops-jane", "admin", "cli"]);
    server = await startServer(data);
  });
  after(async () => {
    await server?.stop();
    await hook.close();
    await gpg.stop();
    await removeDir(dir);
  });

  const sftp = (user: string, commands: string[]) =>
    runSftpBatch({ port: server?.port ?? 0, user, keyFile: keys[user], commands, timeoutMs: 60_000 });

  const upload = async (user: string, name: string, bytes: Buffer) => {
    const local = join(dir, `up-${name}`);
    await writeFile(local, bytes);
    const r = await sftp(user, ["-mkdir in", `put ${local} in/${name}`]);
    assert.equal(r.code, 0, r.stderr);
    return local;
  };

  const trigger = async (...args: string[]) => (await cli(["trigger", ...args, "--data", data])).stdout;

  it("validates rule files with one-line errors (exit code 2)", async () => {
    await writeFile(
      join(dir, "bad.json"),
      JSON.stringify({
        name: "x",
        owner: "ops",
        event: "upload",
        actions: [{ type: "move", to: "/o" }],
        conditions: { groups: ["nope"] },
      }),
    );
    const err = await cli(["trigger", "add", "--file", join(dir, "bad.json"), "--data", data]).catch((e) => e);
    assert.equal(err.code, 2);
    assert.equal(err.stderr, 'atrest: rule conditions.groups: unknown group "nope" (atrest group add)\n');
  });

  it("an upload by a partner is PGP-encrypted to finance, moved to /out, announced (valid HMAC); others do not fire", async () => {
    const local = await upload("alice", "report.csv", randomBytes(200_000));
    const d = await waitFor(() => hook.deliveries.find((x) => x.json.path === "/exchange/in/report.csv"), 60_000);
    assert.ok(d.validSignature);
    assert.equal(d.json.user, "alice");
    assert.equal(d.json.protocol, "sftp");
    assert.equal(d.json.size, 200_000);
    assert.equal(d.json.file, "/out/report.csv.pgp");
    const back = join(dir, "back.csv.pgp");
    const r = await sftp("ops", [`get out/report.csv.pgp ${back}`]);
    assert.equal(r.code, 0, r.stderr);
    const plain = join(dir, "back.csv");
    const dec = await gpg.decrypt(back, plain);
    assert.equal(dec.code, 0, dec.stderr);
    assert.equal(await sha256File(plain), await sha256File(local));
    assert.match(dec.stderr, /\[GNUPG:\] GOODSIG .* atrest org/);
    const left = await sftp("alice", ["ls -1 in"]);
    assert.doesNotMatch(left.stdout.replace(/^sftp>.*$/gm, ""), /report\.csv/, "plaintext removed, .pgp moved");

    await upload("bob", "bob.csv", randomBytes(100)); // not in partners
    await upload("alice", "notes.txt", randomBytes(100)); // other path
    await upload("alice", "empty.csv", Buffer.alloc(0)); // size out of range
    await new Promise((res) => setTimeout(res, 1500));
    assert.equal(hook.deliveries.length, 1);
    const history = await trigger("history", "partners-in");
    assert.equal(history.trim().split("\n").length, 1);
    assert.match(history, /\tdone\t.*\t3\/3\t.*webhook: ok HTTP 200/);
  });

  it("a failing webhook retries with backoff, then shows in dead-letters; retry re-runs it", async () => {
    hook.status = 500;
    const before = hook.deliveries.length;
    await upload("alice", "second.csv", randomBytes(1000));
    const line = await waitFor(async () => {
      const out = await trigger("dead-letters");
      return out.includes("partners-in") ? out.trim() : undefined;
    });
    assert.equal(hook.deliveries.length - before, 3, "three attempts");
    assert.match(line, /\tdead\t.*\tstep 2\tattempts 3\tpartners-in webhook: FAILED .*HTTP 500/);
    const id = line.split("\t")[0];
    const json = JSON.parse(await trigger("dead-letters", "--json"));
    assert.equal(json[0].id, id);
    assert.ok(!JSON.stringify(json).includes(SECRET), "no secret in dead letters");

    hook.status = 200;
    assert.match(await trigger("retry", id), new RegExp(`queued execution ${id} again`));
    await waitFor(() => hook.deliveries.slice(before).find((x) => x.status === 200));
    await waitFor(async () => ((await trigger("dead-letters")).trim() === "" ? true : undefined));
    assert.equal(hook.deliveries.length - before, 4);
    const r = await sftp("ops", ["ls out"]);
    assert.match(r.stdout, /second\.csv\.pgp/);
    const err = await cli(["trigger", "retry", id, "--data", data]).catch((e) => e);
    assert.match(err.stderr, /is done, not a dead letter/);
  });

  it("a restart (after SIGKILL) with a pending execution completes it exactly once", async () => {
    // the first attempt fails; the retry is due after ~5 s, by when the server has been killed
    const slow = JSON.parse(await readFile(join(dir, "rule.json"), "utf8"));
    slow.retry = { attempts: 3, delaySeconds: 5, maxDelaySeconds: 5 };
    await writeFile(join(dir, "slow.json"), JSON.stringify(slow));
    await cli(["trigger", "add", "--replace", "--file", join(dir, "slow.json"), "--data", data]);
    hook.status = 503;
    const before = hook.deliveries.length;
    await upload("alice", "third.csv", randomBytes(1000));
    await waitFor(() => (hook.deliveries.length > before ? true : undefined));
    await server?.kill();
    hook.status = 200;
    server = await startServer(data);
    const ok = await waitFor(() => hook.deliveries.slice(before).find((x) => x.status === 200));
    assert.ok(ok.validSignature);
    await new Promise((res) => setTimeout(res, 1500));
    const mine = hook.deliveries.slice(before);
    assert.equal(mine.filter((x) => x.status === 200).length, 1, "delivered once");
    assert.ok(mine.every((x) => x.headers["x-atrest-delivery"] === ok.headers["x-atrest-delivery"]));
    const h = await trigger("history", "partners-in", "-n", "1");
    assert.match(h, new RegExp(`^${ok.headers["x-atrest-delivery"]}\\tdone\\t`));
    const r = await sftp("ops", ["ls -1 out"]);
    assert.equal(r.stdout.split("\n").filter((l) => l.trim() === "out/third.csv.pgp").length, 1);
  });

  it("login-failed from OpenSSH and key-rotated from the CLI fire their rules in the server", async () => {
    const rule = {
      name: "security",
      owner: "ops",
      event: ["login-failed", "key-rotated"],
      actions: [{ type: "webhook", url: hook.url, secret: SECRET }],
    };
    await writeFile(join(dir, "security.json"), JSON.stringify(rule));
    await cli(["trigger", "add", "--file", join(dir, "security.json"), "--data", data]);
    const before = hook.deliveries.length;
    const stranger = await makeClientKey(join(dir, "stranger"));
    const r = await runSftpBatch({ port: server?.port ?? 0, user: "alice", keyFile: stranger, commands: ["ls"] });
    assert.notEqual(r.code, 0);
    const failed = await waitFor(() => hook.deliveries.slice(before).find((d) => d.json.event === "login-failed"));
    assert.equal(failed.json.user, "alice");
    assert.equal(failed.json.protocol, "sftp");
    assert.equal(failed.json.sourceIp, "127.0.0.1");

    const rotated = await cli(["kms", "key", "rotate", "default", "--data", data]);
    const version = /kek:default:v(\d+)/.exec(rotated.stdout)?.[1];
    assert.ok(version, rotated.stdout);
    const d = await waitFor(() => hook.deliveries.slice(before).find((x) => x.json.event === "key-rotated"), 30_000);
    assert.equal(d.json.keyRef, `kek:default:v${version}`);
    assert.ok(d.validSignature);
    await trigger("rm", "security");
  });

  it("trigger list, show (no secrets), disable, rm", async () => {
    assert.match(await trigger("list"), /^partners-in\tenabled\tupload\towner ops\tpgp-encrypt,move,webhook\n$/);
    const shown = JSON.parse(await trigger("show", "partners-in"));
    assert.equal(shown.actions[2].url, hook.url);
    assert.equal(shown.actions[2].secret, undefined);
    const dry = ["--event", "upload", "--path", "/exchange/in/x.csv", "--size", "10"];
    assert.equal(
      await trigger("test", "partners-in", "--user", "alice", ...dry),
      "match: partners-in would run 3 action(s)\n",
    );
    const no = await cli(["trigger", "test", "partners-in", "--user", "bob", ...dry, "--data", data]).catch((e) => e);
    assert.equal(no.code, 1);
    assert.equal(no.stdout, "no match: bob is not a member of partners\n");
    await trigger("disable", "partners-in");
    const before = hook.deliveries.length;
    await upload("alice", "fourth.csv", randomBytes(10));
    await new Promise((res) => setTimeout(res, 1500));
    assert.equal(hook.deliveries.length, before, "disabled rules do not fire");
    await trigger("rm", "partners-in");
    assert.equal(await trigger("list"), "");
    const err = await cli(["trigger", "show", "partners-in", "--data", data]).catch((e) => e);
    assert.equal(err.stderr, "atrest: no trigger rule partners-in\n");
  });
});
