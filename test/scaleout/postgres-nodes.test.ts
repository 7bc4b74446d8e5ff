// Two `atrest server` processes on one PostgreSQL store and one remote key manager (issue 15): 200 concurrent HTTPS
// uploads into one folder, half through each node, against a user's file quota: exactly the quota's worth commit,
// every other upload is refused as over quota, and both nodes and the CLI see the same tree and the same usage.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { cli, cliProcess, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { ApiClient } from "../helpers/https.ts";
import { type RunningKms, setupKms, startKms, unsealKms } from "../helpers/kms.ts";
import { dropTestSchemas, pgSkip, pgUrl, testSchema } from "../helpers/pg.ts";

const skip = await pgSkip();
const UPLOADS = 200;
const QUOTA_FILES = 50;
const SIZE = 1024;

describe("two server nodes on one PostgreSQL store", skip, () => {
  let root: string;
  let kms: RunningKms;
  let meta: string;
  const nodes: { data: string; server: RunningServer; api: ApiClient }[] = [];

  before(async () => {
    root = await tempDir("atrest-pg-nodes-");
    const setup = await setupKms(root, { fs: "server", alice: "custodian", bob: "custodian" });
    kms = await startKms(setup.dir);
    await unsealKms(kms.url, setup.certs.alice as string, [setup.shares[0] as string]);
    await unsealKms(kms.url, setup.certs.bob as string, [setup.shares[1] as string]);
    meta = pgUrl(testSchema());
    const kmsFlags = ["--kms", kms.url, "--kms-cert", setup.certs.fs as string];
    for (const id of ["a", "b"]) {
      const data = join(root, `node-${id}`);
      await cli(["init", "--data", data, ...kmsFlags]);
      const server = await startServer(data, [...kmsFlags, "--meta", meta, "--node-id", id]);
      nodes.push({ data, server, api: await ApiClient.forData(server.httpPort, data) });
    }
    // node a recorded the store in its data dir: the CLI finds it without --meta
    await cli(
      [
        "user",
        "add",
        "alice",
        "--password-stdin",
        "--quota-files",
        String(QUOTA_FILES),
        "--data",
        nodes[0]?.data ?? "",
      ],
      "alice-password\n",
    );
    for (const n of nodes) assert.equal((await n.api.login("alice", "alice-password")).status, 200);
  });
  after(async () => {
    for (const n of nodes) await n.server.stop();
    await kms?.stop();
    await dropTestSchemas();
    if (root) await removeDir(root);
  });

  it(`${UPLOADS} concurrent uploads through both nodes: the file quota (${QUOTA_FILES}) holds exactly`, async () => {
    const started = Date.now();
    const replies = await Promise.all(
      Array.from({ length: UPLOADS }, (_, i) =>
        (nodes[i % 2] as (typeof nodes)[number]).api.req("PUT", `/api/v1/files/f${String(i).padStart(3, "0")}.bin`, {
          body: Buffer.alloc(SIZE, i % 251),
          headers: { "content-type": "application/octet-stream" },
        }),
      ),
    );
    const ms = Date.now() - started;
    const by = new Map<number, number>();
    for (const r of replies) by.set(r.status, (by.get(r.status) ?? 0) + 1);
    assert.equal(by.get(201), QUOTA_FILES, `statuses ${JSON.stringify([...by])}`);
    const refused = replies.filter((r) => r.status !== 201);
    for (const r of refused) assert.equal(r.json<{ code: string }>().code, "QUOTA_EXCEEDED", r.body.toString());
    // both nodes list the same folder from the shared store
    const listings = await Promise.all(nodes.map((n) => n.api.req("GET", "/api/v1/fs/list?path=/&limit=1000")));
    const names = listings.map((l) => {
      assert.equal(l.status, 200, l.body.toString());
      return (l.json<{ entries: { name: string }[] }>().entries ?? []).map((e) => e.name).sort();
    });
    assert.equal(names[0]?.length, QUOTA_FILES);
    assert.deepEqual(names[0], names[1]);
    const users = JSON.parse((await cliProcess(["user", "list", "--json", "--data", nodes[1]?.data ?? ""])).stdout) as {
      name: string;
      usedFiles: number;
      usedBytes: number;
    }[];
    const alice = users.find((u) => u.name === "alice");
    assert.equal(alice?.usedFiles, QUOTA_FILES);
    assert.equal(alice?.usedBytes, QUOTA_FILES * SIZE);
    console.log(`${UPLOADS} uploads through 2 nodes in ${ms} ms: ${by.get(201)} stored, ${refused.length} over quota`);
  });
});
