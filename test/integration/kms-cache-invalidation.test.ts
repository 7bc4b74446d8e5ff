// A key state change at a separate key manager reaches the file server's DEK cache within a second, not after the
// cache lifetime (300 s by default): `atrest kms serve` and `atrest server --kms …` as two processes, OpenSSH sftp
// reading a file whose DEK is cached. A compromise drops the cached DEK (the next read is a fresh unwrap, flagged
// compromised in the KMS audit); a raised minimum decryption version makes the next read fail.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { RemoteKms } from "../../src/kms/api/client.ts";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { type KmsSetup, type RunningKms, setupKms, startKms, unsealKms } from "../helpers/kms.ts";
import { makeClientKey, runSftpBatch, sha256File } from "../helpers/sftp-clients.ts";

/** Resolves with the ms from `t0` until `re` matches the server's output (or rejects after `limitMs`). */
async function seenAfter(
  server: RunningServer,
  re: RegExp,
  from: number,
  t0: number,
  limitMs: number,
): Promise<number> {
  for (;;) {
    if (re.test(server.output().slice(from))) return performance.now() - t0;
    if (performance.now() - t0 > limitMs) throw new Error(`not seen within ${limitMs} ms: ${re}\n${server.output()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("DEK cache invalidation from a remote key manager", () => {
  let root: string;
  let data: string;
  let key: string;
  let setup: KmsSetup;
  let kms: RunningKms;
  let server: RunningServer;
  let op: RemoteKms;
  let hash: string;
  const sftp = (commands: string[]) =>
    runSftpBatch({ port: server.port, user: "alice", keyFile: key, commands, timeoutMs: 60_000 });
  const get = async (name: string) => {
    const back = join(root, `${name}.${randomBytes(4).toString("hex")}`);
    const r = await sftp([`get ${name} ${back}`]);
    return { ...r, sha: r.code === 0 ? await sha256File(back) : undefined };
  };

  before(async () => {
    root = await tempDir("atrest-kms-watch-");
    data = join(root, "data");
    key = await makeClientKey(root);
    setup = await setupKms(root, { fs1: "server", op: "operator", alice: "custodian", bob: "custodian" });
    kms = await startKms(setup.dir);
    await unsealKms(kms.url, setup.certs.alice as string, [setup.shares[0] as string]);
    await unsealKms(kms.url, setup.certs.bob as string, [setup.shares[1] as string]);
    op = await RemoteKms.connect({ url: kms.url, certDir: setup.certs.op as string });
    await cli(["init", "--data", data, "--kms", kms.url, "--kms-cert", setup.certs.fs1 as string]);
    await cli(["user", "add", "alice", "--public-key", `${key}.pub`, "--data", data]);
    server = await startServer(data, ["--log-level", "info"]);
    const local = join(root, "f.bin");
    await writeFile(local, randomBytes(100_000));
    hash = await sha256File(local);
    assert.equal((await sftp([`put ${local} f.bin`])).code, 0);
    const first = await get("f.bin"); // the DEK is cached now (the upload remembered it, this read hit it)
    assert.equal(first.sha, hash);
  });

  after(async () => {
    await op?.close();
    await server?.stop();
    await kms?.stop();
    await removeDir(root);
  });

  /** Successful unwraps the KMS has answered (its own metrics, read with the operator certificate). */
  const unwraps = async () => {
    let n = 0;
    for (const line of (await op.metrics()).split("\n")) {
      if (!line.startsWith("atrest_kms_requests_total{") || !/outcome="success"/.test(line)) continue;
      if (/op="(batch-)?unwrap"/.test(line)) n += Number(line.slice(line.lastIndexOf(" ") + 1));
    }
    return n;
  };

  it("compromise: the cached DEK is dropped within a second; the next read is a fresh unwrap", async () => {
    const u0 = await unwraps();
    assert.equal((await get("f.bin")).sha, hash);
    assert.equal(await unwraps(), u0, "a cached read does not reach the KMS");
    const from = server.output().length;
    const t0 = performance.now();
    await op.call("PUT", "/v1/keys/default/versions/1/state", { state: "compromised" });
    const ms = await seenAfter(
      server,
      /key state changed at the key manager: cached data keys dropped/,
      from,
      t0,
      5000,
    );
    assert.ok(ms < 1000, `cache dropped after ${ms.toFixed(0)} ms`);
    assert.match(server.output().slice(from), /kek:default/);
    const r = await get("f.bin"); // compromised still decrypts (to move data away), but only through the KMS now
    assert.equal(r.sha, hash);
    assert.ok((await unwraps()) > u0, "the read after the compromise asked the KMS");
  });

  it("minimum decryption version raised: the next read is refused within a second, not after 300 s", async () => {
    await op.call("POST", "/v1/keys/default/rotate", {});
    // after the rotation, a read still works (v1 is compromised but above the minimum): cached again
    assert.equal((await get("f.bin")).sha, hash);
    const from = server.output().length;
    const t0 = performance.now();
    await op.call("PUT", "/v1/keys/default/policy", { minDecryptionVersion: 2 });
    const ms = await seenAfter(server, /cached data keys dropped/, from, t0, 5000);
    assert.ok(ms < 1000, `cache dropped after ${ms.toFixed(0)} ms`);
    const r = await get("f.bin");
    assert.notEqual(r.code, 0, "the read is refused by the key manager");
    assert.equal(r.sha, undefined);
  });
});
