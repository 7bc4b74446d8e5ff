// Crypto-shredding end to end, every step a separate process (the running file server, CLI commands as operator and
// custodians): a folder rule gives /alice/vault its own key; one custodian's approval does not destroy it, two do
// (scheduled, then due under the test clock); afterwards exactly the files `keys shred-report` listed fail, nothing
// else does. On the data directory's key manager (local identities, `--as`): `atrest kms serve` does not read the test
// clock yet, so a destruction days ahead cannot be made due there from a test.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { makeClientKey, runSftpBatch, sha256File } from "../helpers/sftp-clients.ts";

describe("dual control: destroying a key shreds exactly the files shred-report lists", () => {
  let root: string;
  let data: string;
  let key: string;
  let clock: string;
  let server: RunningServer;
  const saved: Record<string, string | undefined> = {};
  const hashes = new Map<string, string>();
  const sftp = (commands: string[]) =>
    runSftpBatch({ port: server.port, user: "alice", keyFile: key, commands, timeoutMs: 60_000 });
  const as = (who: string) => ["--as", who, "--data", data];
  const download = async (name: string) => {
    const back = join(root, `${name.replaceAll("/", "_")}.back`);
    const r = await sftp([`get ${name} ${back}`]);
    return r.code === 0 && (await sha256File(back)) === hashes.get(name);
  };

  before(async () => {
    root = await tempDir("atrest-shred-");
    data = join(root, "data");
    clock = join(root, "clock");
    key = await makeClientKey(root);
    // Test clock for the key manager (honoured only in test mode; docs/kms.md).
    for (const k of ["ATREST_TEST_MODE", "ATREST_TEST_CLOCK_FILE"]) saved[k] = process.env[k];
    process.env.ATREST_TEST_MODE = "1";
    process.env.ATREST_TEST_CLOCK_FILE = clock;
    await cli(["init", "--data", data]);
    await cli(["kms", "key", "create", "vault", ...as("op")]);
    await cli(["user", "add", "alice", "--public-key", `${key}.pub`, "--data", data]);
    await cli(["folder", "add", "/alice/vault", "--key", "vault", "--data", data]);
    server = await startServer(data, ["--dek-cache-seconds", "0"]);
    for (const name of ["vault/v1.txt", "vault/v2.txt", "keep.txt", "vault-not/k2.txt"]) {
      const local = join(root, name.replaceAll("/", "_"));
      await writeFile(local, randomBytes(5000));
      hashes.set(name, await sha256File(local));
    }
    const r = await sftp([
      "-mkdir vault-not",
      ...[...hashes.keys()].map((n) => `put ${join(root, n.replaceAll("/", "_"))} ${n}`),
    ]);
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => {
    await server?.stop();
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    await removeDir(root);
  });

  it("shred-report names the vault files; one approval is not enough; two destroy at the due time", async () => {
    const report = JSON.parse(
      (await cli(["keys", "shred-report", "--key", "vault", "--version", "1", "--json", "--data", data])).stdout,
    );
    assert.deepEqual(
      report.files.map((f: { path: string }) => f.path),
      ["/alice/vault/v1.txt", "/alice/vault/v2.txt"],
    );
    assert.equal(report.bytes, 10_000);

    // The file server's guard: the key manager cannot know these files, atrest refuses until the loss is accepted.
    const destroy = ["kms", "key", "destroy", "vault", "--waiting-days", "7", ...as("op")];
    await assert.rejects(cli(destroy), (e: { stderr?: string }) => {
      assert.match(String(e.stderr), /2 file\(s\) under kek:vault:v1.*--accept-data-loss/);
      return true;
    });
    const requested = (await cli([...destroy, "--accept-data-loss"])).stdout;
    const id = /request (req-[0-9a-f]+)/.exec(requested)?.[1];
    assert.ok(id, requested);
    await assert.rejects(cli(["kms", "approve", id, ...as("alice")]), /2 file\(s\) under kek:vault:v1/);
    await cli(["kms", "approve", id, "--reason", "retire vault", "--accept-data-loss", ...as("alice")]);
    // One custodian: nothing scheduled, everything reads.
    assert.doesNotMatch((await cli(["kms", "key", "show", "vault", ...as("op")])).stdout, /destroy at/);
    await assert.rejects(cli(["kms", "approve", id, "--accept-data-loss", ...as("alice")]), /already|distinct|twice/i);
    assert.ok(await download("vault/v1.txt"));

    await cli(["kms", "approve", id, "--accept-data-loss", ...as("bob")]);
    assert.match((await cli(["kms", "key", "show", "vault", ...as("op")])).stdout, /destroy at/);
    assert.ok(await download("vault/v2.txt"), "scheduled, not yet destroyed: still readable");
    // but nothing new goes under a version being destroyed: it would be lost at the due time, counted by nobody
    const late = join(root, "late.txt");
    await writeFile(late, randomBytes(100));
    const put = await sftp([`put ${late} vault/late.txt`]);
    assert.notEqual(put.code, 0, "an upload under a key scheduled for destruction was accepted");
    assert.match((await cli(["kms", "key", "show", "vault", ...as("op")])).stdout, /kek:vault:v1\tactive.*destroy at/);

    // Eight days later (test clock) the scheduler destroys the key at its next pass (every CLI command runs one).
    await writeFile(clock, new Date(Date.now() + 8 * 86_400_000).toISOString());
    const shown = (await cli(["kms", "key", "show", "vault", ...as("op")])).stdout;
    assert.match(shown, /kek:vault:v1\tdestroyed/);
    await new Promise((r) => setTimeout(r, 300)); // the running server's keyring refreshes within 0.1 s

    // Exactly the listed files are gone; the rest reads.
    assert.equal(await download("vault/v1.txt"), false);
    assert.equal(await download("vault/v2.txt"), false);
    assert.ok(await download("keep.txt"));
    assert.ok(await download("vault-not/k2.txt"));
    const who = JSON.parse(
      (await cli(["keys", "who-can-decrypt", "/alice/vault/v1.txt", "--json", "--data", data])).stdout,
    );
    assert.equal(who.keyState, "destroyed");
    const records = (await cli(["audit", "tail", "-n", "60", "--data", data])).stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    // the guard's refusals and the accepted losses, in the file server's audit (the key manager's has the note too)
    assert.deepEqual(
      records
        .filter((e) => e.reason === "data loss accepted" || e.reason === "data loss not accepted")
        .map((e) => [e.action, e.outcome, e.user]),
      [
        ["key.request", "failure", "op"],
        ["key.request", "success", "op"],
        ["key.approve", "failure", "alice"],
        ["key.approve", "success", "alice"],
        ["key.approve", "success", "bob"],
      ],
    );
    const failed = records
      .filter((e) => e.action === "download" && e.outcome === "failure")
      .map((e) => [e.path, e.reason]);
    assert.deepEqual(failed, [
      ["/vault/v1.txt", "KEY_UNAVAILABLE"],
      ["/vault/v2.txt", "KEY_UNAVAILABLE"],
    ]);
  });
});
