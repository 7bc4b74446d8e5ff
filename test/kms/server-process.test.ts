// Two processes: `atrest kms serve` as a child on a real loopback port, the RemoteKms client in the test process.
// Custodians unseal through `atrest kms unseal` (share on stdin); killing the KMS gives a clear KEY_UNAVAILABLE
// fast; a restart comes back sealed and works again after unseal.
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { after, before, describe, test } from "node:test";
import { KeyUnavailableError } from "../../src/errors.ts";
import { RemoteKms } from "../../src/kms/api/client.ts";
import { cli, removeDir, tempDir } from "../helpers/atrest.ts";
import { type KmsSetup, type RunningKms, setupKms, startKms, unsealKms } from "../helpers/kms.ts";

describe("KMS as a separate process", () => {
  let root: string;
  let setup: KmsSetup;
  let kms: RunningKms | undefined;
  let client: RemoteKms;

  before(async () => {
    root = await tempDir("atrest-kms-proc-");
    setup = await setupKms(root, { fs1: "server", alice: "custodian", bob: "custodian" });
    kms = await startKms(setup.dir);
    client = await RemoteKms.connect({ url: kms.url, certDir: setup.certs.fs1 });
  });

  after(async () => {
    await client?.close();
    await kms?.stop();
    await removeDir(root);
  });

  test("kms serve starts sealed; two custodians at two invocations unseal it (progress printed)", async () => {
    assert.ok(kms);
    assert.match(kms.output(), /kms is sealed: 2 of 3 shares needed/);
    const st = await cli(["kms", "status", "--kms", kms.url, "--cert", setup.certs.alice]);
    assert.match(st.stdout, /sealed: 0\/2 shares submitted/);
    await assert.rejects(client.generateDataKey("default", { f: "1" }), /sealed: unseal with 2 more share/);
    assert.match(await unsealKms(kms.url, setup.certs.alice, [setup.shares[0]]), /unseal progress 1\/2/);
    // One custodian certificate cannot unseal alone with a second share (kms init's default: one per custodian).
    await assert.rejects(
      unsealKms(kms.url, setup.certs.alice, [setup.shares[1]]),
      /custodian alice already submitted a share: each custodian counts once; progress unchanged \(1\/2\)/,
    );
    assert.match((await cli(["kms", "status", "--kms", kms.url, "--cert", setup.certs.bob])).stdout, /sealed: 1\/2/);
    // A share on the command line is not even an option: the command takes none.
    await assert.rejects(cli(["kms", "unseal", setup.shares[1], "--kms", kms.url, "--cert", setup.certs.bob]));
    assert.match(await unsealKms(kms.url, setup.certs.bob, [setup.shares[2]]), /unsealed/);
    const json = JSON.parse(
      (await cli(["kms", "status", "--json", "--kms", kms.url, "--cert", setup.certs.bob])).stdout,
    );
    assert.deepEqual([json.sealed, json.kind, json.threshold, json.shares], [false, "shamir", 2, 3]);
  });

  test("RemoteKms round trip; KMS killed → KEY_UNAVAILABLE within 2 s; restart + unseal → works again", async () => {
    assert.ok(kms);
    const ctx = { file: "42", owner: "alice" };
    const dk = await client.generateDataKey("default", ctx);
    assert.deepEqual(await client.unwrap(dk.wrapped, ctx), dk.plaintext);
    const port = kms.port;
    await kms.kill();
    const t0 = performance.now();
    await assert.rejects(client.unwrap(dk.wrapped, ctx), (e: Error) => {
      assert.ok(e instanceof KeyUnavailableError, String(e));
      assert.match(
        e.message,
        new RegExp(`key manager unavailable at https://127\\.0\\.0\\.1:${port}: connection refused`),
      );
      return true;
    });
    assert.ok(performance.now() - t0 < 2000, `failed after ${performance.now() - t0} ms`);
    kms = await startKms(setup.dir, port);
    await assert.rejects(client.unwrap(dk.wrapped, ctx), /sealed/);
    await unsealKms(kms.url, setup.certs.alice, [setup.shares[1]]);
    await unsealKms(kms.url, setup.certs.bob, [setup.shares[0]]);
    assert.deepEqual(await client.unwrap(dk.wrapped, ctx), dk.plaintext);
  });

  test("a KMS address that accepts TCP but never answers fails within the connect timeout, not a hang", async () => {
    const sockets = new Set<import("node:net").Socket>();
    const silent = createServer((s) => sockets.add(s));
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", () => r()));
    const port = (silent.address() as import("node:net").AddressInfo).port;
    const c = await RemoteKms.connect({
      url: `https://127.0.0.1:${port}`,
      certDir: setup.certs.fs1,
      connectTimeoutMs: 500,
    });
    try {
      const t0 = performance.now();
      await assert.rejects(c.status(), /key manager unavailable at .*connect timeout after 500 ms/);
      assert.ok(performance.now() - t0 < 1500);
    } finally {
      await c.close();
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => silent.close(() => r()));
    }
  });

  test("kms client list shows the issued certificates; revoke refuses the client at its next call", async () => {
    assert.ok(kms);
    const list = (await cli(["kms", "client", "list", "--data", setup.dir])).stdout;
    assert.match(list, /^fs1\tserver\tvalid until \S+\tsha256:[0-9a-f]{64}$/m);
    assert.match(list, /^alice\tcustodian\t/m);
    await cli(["kms", "client", "revoke", "bob", "--data", setup.dir]);
    await new Promise((r) => setTimeout(r, 300));
    await assert.rejects(
      cli(["kms", "status", "--kms", kms.url, "--cert", setup.certs.bob]),
      (e: Error & { stderr: string }) => {
        assert.match(e.stderr, /atrest: client certificate of bob was revoked/);
        return true;
      },
    );
    assert.match((await cli(["kms", "client", "list", "--data", setup.dir])).stdout, /^bob\tcustodian\trevoked /m);
  });
});
