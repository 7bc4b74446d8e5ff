// Racing S3 writes to one key of a versioned bucket through two `atrest server` nodes on one PostgreSQL schema (and
// one remote key manager), with @aws-sdk/client-s3: every PUT and delete, half through each node, gets its own version
// or marker and none answers 500; both nodes list the same versions with exactly one latest.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  ListObjectVersionsCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { type RunningKms, setupKms, startKms, unsealKms } from "../helpers/kms.ts";
import { dropTestSchemas, pgSkip, pgUrl, testSchema } from "../helpers/pg.ts";
import { addS3Key, type S3Key, s3PortOf } from "../helpers/s3.ts";

const skip = await pgSkip();
const N = 32;

describe("S3 versioned writes racing through two nodes on PostgreSQL", skip, () => {
  let root: string;
  let kms: RunningKms;
  let key: S3Key;
  const nodes: { server: RunningServer; client: S3Client }[] = [];

  before(async () => {
    root = await tempDir("atrest-pg-s3-versions-");
    const setup = await setupKms(root, { fs: "server", k1: "custodian", k2: "custodian" });
    kms = await startKms(setup.dir);
    await unsealKms(kms.url, setup.certs.k1 as string, [setup.shares[0] as string]);
    await unsealKms(kms.url, setup.certs.k2 as string, [setup.shares[1] as string]);
    const meta = pgUrl(testSchema());
    const kmsFlags = ["--kms", kms.url, "--kms-cert", setup.certs.fs as string];
    const datas: string[] = [];
    for (const id of ["a", "b"]) {
      const data = join(root, `node-${id}`);
      await cli(["init", "--data", data, ...kmsFlags]);
      datas.push(data);
    }
    const servers: RunningServer[] = [];
    for (const [i, id] of ["a", "b"].entries()) {
      const flags = [...kmsFlags, "--meta", meta, "--node-id", id, "--s3-port", "auto", "--s3-tls", "off"];
      servers.push(await startServer(datas[i] as string, flags));
    }
    // the data dir names the shared store once its server has started on it
    await cli(["user", "add", "alice", "--password-stdin", "--data", datas[0] as string], "alice-password-0123\n");
    key = await addS3Key(datas[0] as string, "alice");
    for (const server of servers) {
      const port = await s3PortOf(server);
      const client = new S3Client({
        endpoint: `http://127.0.0.1:${port}`,
        region: "us-east-1",
        forcePathStyle: true,
        credentials: { accessKeyId: key.id, secretAccessKey: key.secret },
      });
      nodes.push({ server, client });
    }
  });
  after(async () => {
    for (const n of nodes) await n.server.stop();
    await kms?.stop();
    await dropTestSchemas();
    if (root) await removeDir(root);
  });

  it(`${N} PUTs and deletes of one key, half through each node: each its own version, no 500`, async () => {
    const [a, b] = nodes.map((n) => n.client) as [S3Client, S3Client];
    await a.send(new CreateBucketCommand({ Bucket: "race" }));
    await a.send(new PutBucketVersioningCommand({ Bucket: "race", VersioningConfiguration: { Status: "Enabled" } }));
    // node b learns a folder's versioning state from the store within a second (docs/s3.md "Versioning")
    await new Promise((r) => setTimeout(r, 1500));
    const Key = "x/y/same.txt";
    const results = await Promise.allSettled(
      Array.from({ length: N }, (_, i) => {
        const c = i % 2 === 0 ? a : b;
        return i % 4 === 3
          ? c.send(new DeleteObjectCommand({ Bucket: "race", Key })).then((r) => r.VersionId)
          : c.send(new PutObjectCommand({ Bucket: "race", Key, Body: `body ${i}` })).then((r) => r.VersionId);
      }),
    );
    const failed = results
      .filter((r) => r.status === "rejected")
      .map((r) => {
        const e = (r as PromiseRejectedResult).reason as { name?: string; $metadata?: { httpStatusCode?: number } };
        return `${e.name} ${e.$metadata?.httpStatusCode}`;
      });
    assert.deepEqual(failed, [], nodes.map((n) => n.server.output().slice(-3000)).join("\n----\n"));
    const ids = results.map((r) => (r as PromiseFulfilledResult<string | undefined>).value);
    assert.equal(new Set(ids).size, N, JSON.stringify(ids));
    for (const c of [a, b]) {
      const listed = await c.send(new ListObjectVersionsCommand({ Bucket: "race", Prefix: Key }));
      const all = [...(listed.Versions ?? []), ...(listed.DeleteMarkers ?? [])];
      assert.deepEqual(new Set(all.map((v) => v.VersionId)), new Set(ids));
      assert.equal(all.filter((v) => v.IsLatest).length, 1);
    }
  });
});
