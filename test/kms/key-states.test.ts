// GET /v1/key-states over the real HTTPS + mTLS server: which keys a client hears about (those it may read, unwrap
// or decrypt), the long poll answering as soon as a state changes, the etag, and RemoteKms.watchKeyStates.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { AtrestError } from "../../src/errors.ts";
import { RemoteKms } from "../../src/kms/api/client.ts";
import type { KeyStateSnapshot } from "../../src/kms/api/types.ts";
import { initKmsDir, issueClient } from "../../src/kms/home.ts";
import { KmsServer } from "../../src/kms/server/server.ts";
import { removeDir, tempDir } from "../helpers/atrest.ts";
import { testKmsStore } from "./fixture.ts";

describe("key states (long poll) for DEK caches", () => {
  let root: string;
  let server: KmsServer;
  let fs: RemoteKms;
  let op: RemoteKms;

  before(async () => {
    root = await tempDir("atrest-kms-states-");
    const dir = join(root, "kms");
    await initKmsDir(dir, { dev: true, ...testKmsStore() });
    server = await KmsServer.start({ dir, port: 0, schedulerIntervalMs: 0 });
    const url = `https://127.0.0.1:${server.port}`;
    await issueClient(dir, "fs", "server", join(root, "fs"));
    await issueClient(dir, "op", "operator", join(root, "op"));
    fs = await RemoteKms.connect({ url, certDir: join(root, "fs") });
    op = await RemoteKms.connect({ url, certDir: join(root, "op") });
    for (const k of ["tenant-a", "tenant-b", "payroll"]) await op.call("POST", "/v1/keys", { name: k });
    // unwrap only, no read: the client must still hear of its keys' changes
    server.service().policies.set("fs", { rules: [{ keys: ["tenant-*"], ops: ["unwrap"] }] }, "t", new Date());
  });

  after(async () => {
    await fs?.close();
    await op?.close();
    await server?.close();
    await removeDir(root);
  });

  test("a client hears of the keys it may unwrap, not of others; the long poll answers on a change", async () => {
    const first = await fs.call<KeyStateSnapshot>("GET", "/v1/key-states");
    assert.deepEqual(
      first.keys.map((k) => k.name),
      ["tenant-a", "tenant-b"],
    );
    // unchanged: the poll waits out its time and answers the same etag
    const t0 = performance.now();
    const same = await fs.call<KeyStateSnapshot>("GET", `/v1/key-states?since=${first.etag}&wait=400`);
    assert.equal(same.etag, first.etag);
    assert.ok(performance.now() - t0 >= 350);
    // a change of a key it does not see does not wake it; one of its keys does, at once
    const poll = fs.call<KeyStateSnapshot>("GET", `/v1/key-states?since=${first.etag}&wait=8000`);
    await op.call("PUT", "/v1/keys/payroll/versions/1/state", { state: "deactivated" });
    await new Promise((r) => setTimeout(r, 300));
    const t1 = performance.now();
    await op.call("PUT", "/v1/keys/tenant-b/versions/1/state", { state: "compromised" });
    const changed = await poll;
    assert.ok(performance.now() - t1 < 1000, `answered after ${(performance.now() - t1).toFixed(0)} ms`);
    assert.notEqual(changed.etag, first.etag);
    assert.equal(changed.keys.find((k) => k.name === "tenant-b")?.versions[0]?.state, "compromised");
    await assert.rejects(
      fs.call("GET", "/v1/key-states?since=x&wait=60000"),
      (e: unknown) => e instanceof AtrestError && e.code === "INVALID_INPUT",
    );
  });

  test("RemoteKms.watchKeyStates reports the changed key names", async () => {
    const seen: string[][] = [];
    const stop = fs.watchKeyStates((keys) => seen.push(keys));
    try {
      await new Promise((r) => setTimeout(r, 300)); // the first answer is the baseline
      const t0 = performance.now();
      await op.call("POST", "/v1/keys/tenant-a/rotate", {});
      while (seen.length === 0 && performance.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(seen, [["tenant-a"]]);
      assert.ok(performance.now() - t0 < 1000);
    } finally {
      stop();
    }
  });
});
