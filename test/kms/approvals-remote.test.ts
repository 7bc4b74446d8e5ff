// Dual control over HTTPS + mTLS: the KMS server in process (Shamir-sealed, unsealed by two custodians through the
// API), every governance step made by the real CLI as a separate process with its own client certificate, so the
// identities are certificates, not names typed on a command line.
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { KmsRole } from "../../src/kms/api/caller.ts";
import { RemoteKms } from "../../src/kms/api/client.ts";
import { initKmsDir, issueClient } from "../../src/kms/home.ts";
import { KmsServer } from "../../src/kms/server/server.ts";
import { cli, removeDir, tempDir } from "../helpers/atrest.ts";
import { testKmsStore } from "./fixture.ts";

const ctx = { fileId: "f-remote" };

describe("governance over HTTPS with client certificates (CLI → KMS server)", () => {
  let root: string;
  let kmsDir: string;
  let server: KmsServer;
  let url: string;
  const cert: Record<string, string> = {};
  let fs1: RemoteKms;

  const as = (who: string) => ["--kms", url, "--kms-cert", cert[who] as string];
  async function fails(args: string[]): Promise<string> {
    try {
      await cli(args);
    } catch (e) {
      return String((e as { stderr?: string }).stderr);
    }
    throw new Error(`expected atrest ${args.join(" ")} to fail`);
  }

  before(async () => {
    root = await tempDir("atrest-kms-gov-");
    kmsDir = join(root, "kms");
    const init = await initKmsDir(kmsDir, { shares: 3, threshold: 2, ...testKmsStore() });
    const shares = init.mode === "shamir" ? init.shares : [];
    server = await KmsServer.start({ dir: kmsDir, port: 0, schedulerIntervalMs: 0 });
    url = `https://127.0.0.1:${server.port}`;
    const people: [string, KmsRole][] = [
      ["fs1", "server"],
      ["olga", "operator"],
      ["alice", "custodian"],
      ["bob", "custodian"],
      ["adam", "admin"],
    ];
    for (const [name, role] of people) {
      cert[name] = join(root, "certs", name);
      await issueClient(kmsDir, name, role, cert[name] as string);
    }
    const alice = await RemoteKms.connect({ url, certDir: cert.alice as string });
    const bob = await RemoteKms.connect({ url, certDir: cert.bob as string });
    await alice.unseal(shares[0] as string);
    await bob.unseal(shares[1] as string);
    await alice.close();
    await bob.close();
    fs1 = await RemoteKms.connect({ url, certDir: cert.fs1 as string });
  });
  after(async () => {
    await fs1?.close();
    await server?.close();
    await removeDir(root);
  });

  it("destroy: the operator asks, the same person cannot approve, two custodian certificates schedule it", async () => {
    await cli(["kms", "key", "create", "hr", ...as("olga")]);
    const dk = await fs1.generateDataKey("hr", ctx);
    assert.match(
      await fails(["kms", "key", "destroy", "hr", ...as("fs1")]),
      /client fs1 \(role server\) may not request-destroy/,
    );
    const asked = await cli([
      "kms",
      "key",
      "destroy",
      "hr",
      "--waiting-days",
      "7",
      "--reason",
      "closed",
      ...as("olga"),
    ]);
    const id = /request (req-[0-9a-f]+)/.exec(asked.stdout)?.[1] as string;
    assert.ok(id, asked.stdout);
    assert.match(await fails(["kms", "approve", id, ...as("olga")]), /olga \(role operator\) may not decide-request/);
    assert.match(await fails(["kms", "approve", id, ...as("adam")]), /may not decide-request/);
    assert.match((await cli(["kms", "approve", id, "--reason", "ok", ...as("alice")])).stdout, /needs 1 more/);
    assert.match(await fails(["kms", "approve", id, ...as("alice")]), /alice already decided/);
    assert.match((await cli(["kms", "approve", id, ...as("bob")])).stdout, /executed: destruction scheduled for/);
    const shown = JSON.parse((await cli(["kms", "key", "show", "hr", "--json", ...as("alice")])).stdout);
    assert.ok(shown.versions[0].destroyAt);
    assert.deepEqual(await fs1.unwrap(dk.wrapped, ctx), dk.plaintext); // waiting period
    const list = JSON.parse(
      (await cli(["kms", "request", "list", "--status", "executed", "--json", ...as("adam")])).stdout,
    );
    assert.deepEqual(
      list.map((r: { id: string; requester: string }) => [r.id, r.requester]),
      [[id, "olga"]],
    );
    // cancel during the waiting period, by one custodian
    await cli(["kms", "key", "cancel-destroy", "hr", ...as("alice")]);
    assert.equal(
      JSON.parse((await cli(["kms", "key", "show", "hr", "--json", ...as("olga")])).stdout).versions[0].destroyAt,
      undefined,
    );
  });

  it("client policy and export through the API, with the requester fetching the export", async () => {
    const asked = await cli([
      "kms",
      "policy",
      "set",
      "fs1",
      "--keys",
      "tenant-*",
      "--ops",
      "generate-data-key,unwrap",
      ...as("adam"),
    ]);
    const id = /request (req-[0-9a-f]+)/.exec(asked.stdout)?.[1] as string;
    await cli(["kms", "approve", id, ...as("alice")]);
    await cli(["kms", "approve", id, ...as("bob")]);
    assert.match(
      (await cli(["kms", "policy", "show", "fs1", ...as("adam")])).stdout,
      /fs1\tkeys tenant-\*\tops generate-data-key,unwrap/,
    );
    await assert.rejects(
      fs1.generateDataKey("hr", ctx),
      /client fs1 \(role server\) may not generate-data-key on kek:hr/,
    );

    const pub = join(root, "export.pub.pem");
    await writeFile(
      pub,
      generateKeyPairSync("rsa", { modulusLength: 2048 }).publicKey.export({ type: "spki", format: "pem" }),
    );
    const ex = await cli(["kms", "key", "export", "hr", "--public-key", pub, ...as("olga")]);
    const exId = /request (req-[0-9a-f]+)/.exec(ex.stdout)?.[1] as string;
    await cli(["kms", "approve", exId, ...as("alice")]);
    await cli(["kms", "approve", exId, ...as("bob")]);
    assert.match(
      await fails(["kms", "request", "export", exId, "--out", join(root, "x"), ...as("adam")]),
      /may not|only olga/,
    );
    const got = await cli(["kms", "request", "export", exId, "--out", join(root, "hr.wrapped"), ...as("olga")]);
    assert.match(got.stdout, /wrote kek:hr:v1 \(RSA_AES_KEY_WRAP_SHA_256\)/);
  });
});
