// The global bucket namespace (docs/s3.md "Buckets and keys"): a bucket name belongs to one user server-wide, as in
// AWS. Another user's CreateBucket of it answers 409 BucketAlreadyExists, their requests into it 403 AccessDenied
// (not 404), and it is not in their ListBuckets; the bucket stays a folder of its owner's home. Folders that existed
// before the registry (the upgrade) are registered at the first start, oldest user first; a folder made over SFTP
// later becomes its user's bucket when they name it, and a bucket folder removed over SFTP frees its name.
import assert from "node:assert/strict";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  ListBucketsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
} from "@aws-sdk/client-s3";
import { removeDir, startServer } from "../../helpers/atrest.ts";
import { type S3Server, startS3 } from "../../helpers/s3.ts";
import { runSftpBatch } from "../../helpers/sftp-clients.ts";

let s3: S3Server;
const status = (code: number, name?: string) => (e: { $metadata?: { httpStatusCode?: number }; name?: string }) =>
  e.$metadata?.httpStatusCode === code && (name === undefined || e.name === name);

async function sftp(user: string, port: number, commands: string[]): Promise<void> {
  const r = await runSftpBatch({ port, user, keyFile: s3.sshKey, commands });
  assert.equal(r.code, 0, r.stderr);
}

before(async () => {
  s3 = await startS3("atrest-s3-ns-", ["alice", "bob"], {
    // before the S3 door ever ran (the upgrade): both users have a folder `both`, bob one called `olds`
    async before(data) {
      const keys = join(data, "..", "keys");
      const keyFile = join(keys, (await readdir(keys)).find((f) => !f.endsWith(".pub")) ?? "");
      const old = await startServer(data, []);
      try {
        for (const [user, dirs] of [
          ["alice", ["both"]],
          ["bob", ["both", "olds"]],
        ] as const) {
          const r = await runSftpBatch({ port: old.port, user, keyFile, commands: dirs.map((d) => `mkdir ${d}`) });
          assert.equal(r.code, 0, r.stderr);
        }
      } finally {
        await old.stop();
      }
    },
  });
});

after(async () => {
  await s3?.server.stop();
  if (s3) await removeDir(s3.dir);
});

test("another user's bucket: CreateBucket 409 BucketAlreadyExists, its objects and listing 403, not in their list", async () => {
  const [alice, bob] = s3.users;
  const a = s3.client(alice);
  const b = s3.client(bob);
  await a.send(new CreateBucketCommand({ Bucket: "alices" }));
  await a.send(new PutObjectCommand({ Bucket: "alices", Key: "k", Body: "v" }));
  // the owner creating it again changes nothing (us-east-1)
  await a.send(new CreateBucketCommand({ Bucket: "alices" }));
  await assert.rejects(b.send(new CreateBucketCommand({ Bucket: "alices" })), status(409, "BucketAlreadyExists"));
  await assert.rejects(b.send(new GetObjectCommand({ Bucket: "alices", Key: "k" })), status(403, "AccessDenied"));
  await assert.rejects(b.send(new PutObjectCommand({ Bucket: "alices", Key: "x", Body: "y" })), status(403));
  await assert.rejects(b.send(new DeleteObjectCommand({ Bucket: "alices", Key: "k" })), status(403));
  await assert.rejects(b.send(new ListObjectsV2Command({ Bucket: "alices" })), status(403, "AccessDenied"));
  await assert.rejects(b.send(new HeadBucketCommand({ Bucket: "alices" })), status(403));
  await assert.rejects(b.send(new DeleteBucketCommand({ Bucket: "alices" })), status(403));
  // a name nobody holds is still 404
  await assert.rejects(b.send(new ListObjectsV2Command({ Bucket: "nobodys" })), status(404, "NoSuchBucket"));
  const names = (await b.send(new ListBucketsCommand({}))).Buckets?.map((x) => x.Name) ?? [];
  assert.ok(!names.includes("alices"), names.join());
  // the object is untouched, and the bucket is alice's folder
  const got = await a.send(new GetObjectCommand({ Bucket: "alices", Key: "k" }));
  assert.equal(await got.Body?.transformToString(), "v");
  await sftp("alice", s3.server.port, ["ls alices/k"]);
  // deleted, the name is free for anyone
  await a.send(new DeleteObjectCommand({ Bucket: "alices", Key: "k" }));
  await a.send(new DeleteBucketCommand({ Bucket: "alices" }));
  await b.send(new CreateBucketCommand({ Bucket: "alices" }));
  await assert.rejects(a.send(new CreateBucketCommand({ Bucket: "alices" })), status(409, "BucketAlreadyExists"));
});

test("upgrade: existing folders are registered at the first start, a name two users have goes to the older one", async () => {
  const [alice, bob] = s3.users;
  const a = s3.client(alice);
  const b = s3.client(bob);
  const list = async (c: typeof a) => (await c.send(new ListBucketsCommand({}))).Buckets?.map((x) => x.Name) ?? [];
  assert.ok((await list(a)).includes("both"));
  assert.ok(!(await list(b)).includes("both"));
  assert.ok((await list(b)).includes("olds"));
  await assert.rejects(a.send(new CreateBucketCommand({ Bucket: "olds" })), status(409, "BucketAlreadyExists"));
  await assert.rejects(b.send(new ListObjectsV2Command({ Bucket: "both" })), status(403));
  // bob's own folder `both` is still there over SFTP
  await sftp("bob", s3.server.port, ["cd both"]);
});

test("a folder made over SFTP is its user's bucket; one removed over SFTP frees the name", async () => {
  const [alice, bob] = s3.users;
  const a = s3.client(alice);
  const b = s3.client(bob);
  await sftp("bob", s3.server.port, ["mkdir viasftp"]);
  await b.send(new PutObjectCommand({ Bucket: "viasftp", Key: "f", Body: "1" }));
  await assert.rejects(a.send(new CreateBucketCommand({ Bucket: "viasftp" })), status(409, "BucketAlreadyExists"));
  await sftp("bob", s3.server.port, ["rm viasftp/f", "rmdir viasftp"]);
  await a.send(new CreateBucketCommand({ Bucket: "viasftp" }));
  await assert.rejects(b.send(new ListObjectsV2Command({ Bucket: "viasftp" })), status(403));
});
