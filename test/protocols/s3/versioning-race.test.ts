// Racing writes to one key of a versioned bucket (@aws-sdk/client-s3): every PUT and every delete gets its own
// version or marker, none answers 500, and ListObjectVersions has them all with exactly one latest. The PostgreSQL
// matrix (scripts/test-postgres.ts) runs it with the metadata in PostgreSQL, where commits race for real.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectVersionsCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
} from "@aws-sdk/client-s3";
import { removeDir } from "../../helpers/atrest.ts";
import { type S3Server, startS3 } from "../../helpers/s3.ts";

let s3: S3Server;
const N = 16;

before(async () => {
  s3 = await startS3("atrest-s3-version-race-");
  const c = s3.client();
  await c.send(new CreateBucketCommand({ Bucket: "race" }));
  await c.send(new PutBucketVersioningCommand({ Bucket: "race", VersioningConfiguration: { Status: "Enabled" } }));
});

after(async () => {
  await s3?.server.stop();
  if (s3) await removeDir(s3.dir);
});

test(`${N} concurrent PUTs and deletes of one key: each its own version, no 500`, async () => {
  const c = s3.client();
  // a new key under a new prefix: the folders are made by the racing writes too
  const Key = "a/b/same.txt";
  const results = await Promise.allSettled(
    Array.from({ length: N }, (_, i) =>
      i % 4 === 3
        ? c.send(new DeleteObjectCommand({ Bucket: "race", Key })).then((r) => ({ id: r.VersionId, body: undefined }))
        : c
            .send(new PutObjectCommand({ Bucket: "race", Key, Body: `body ${i}` }))
            .then((r) => ({ id: r.VersionId, body: `body ${i}` })),
    ),
  );
  const failed = results.filter((r) => r.status === "rejected").map((r) => String((r as PromiseRejectedResult).reason));
  assert.deepEqual(failed, []);
  const made = results.map((r) => (r as PromiseFulfilledResult<{ id?: string; body?: string }>).value);
  const ids = made.map((m) => m.id);
  assert.ok(
    ids.every((id) => typeof id === "string" && id.length > 0),
    JSON.stringify(ids),
  );
  assert.equal(new Set(ids).size, N, "every write its own version id");
  const listed = await c.send(new ListObjectVersionsCommand({ Bucket: "race", Prefix: Key }));
  const all = [...(listed.Versions ?? []), ...(listed.DeleteMarkers ?? [])];
  assert.deepEqual(new Set(all.map((v) => v.VersionId)), new Set(ids));
  assert.equal(all.filter((v) => v.IsLatest).length, 1);
  assert.equal(listed.Versions?.length, N - N / 4);
  // every kept version reads back its own body
  for (const m of made.filter((x) => x.body !== undefined)) {
    const got = await c.send(new GetObjectCommand({ Bucket: "race", Key, VersionId: m.id }));
    assert.equal(await got.Body?.transformToString(), m.body);
  }
});

test("suspended: racing PUTs and deletes of one key leave one version null, older ids kept; deleting versions races too", async () => {
  const c = s3.client();
  await c.send(new CreateBucketCommand({ Bucket: "race2" }));
  await c.send(new PutBucketVersioningCommand({ Bucket: "race2", VersioningConfiguration: { Status: "Enabled" } }));
  const Key = "k";
  const kept = await Promise.all(
    Array.from({ length: 4 }, (_, i) => c.send(new PutObjectCommand({ Bucket: "race2", Key, Body: `v${i}` }))),
  );
  await c.send(new PutBucketVersioningCommand({ Bucket: "race2", VersioningConfiguration: { Status: "Suspended" } }));
  const results = await Promise.allSettled([
    ...Array.from({ length: N }, (_, i) =>
      i % 4 === 3
        ? c.send(new DeleteObjectCommand({ Bucket: "race2", Key }))
        : c.send(new PutObjectCommand({ Bucket: "race2", Key, Body: `s${i}` })),
    ),
    // two of the kept versions deleted while the null version is replaced
    ...kept.slice(0, 2).map((k) => c.send(new DeleteObjectCommand({ Bucket: "race2", Key, VersionId: k.VersionId }))),
  ]);
  const failed = results.filter((r) => r.status === "rejected").map((r) => String((r as PromiseRejectedResult).reason));
  assert.deepEqual(failed, []);
  const listed = await c.send(new ListObjectVersionsCommand({ Bucket: "race2", Prefix: Key }));
  const all = [...(listed.Versions ?? []), ...(listed.DeleteMarkers ?? [])];
  assert.equal(all.filter((v) => v.VersionId === "null").length, 1, JSON.stringify(all));
  assert.deepEqual(
    new Set(all.filter((v) => v.VersionId !== "null").map((v) => v.VersionId)),
    new Set(kept.slice(2).map((k) => k.VersionId)),
  );
  assert.equal(all.filter((v) => v.IsLatest).length, 1);
});
