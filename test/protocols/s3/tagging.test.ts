// Object tagging with @aws-sdk/client-s3: x-amz-tagging on PutObject and CreateMultipartUpload, Get/Put/DeleteObjectTagging,
// the tag count on HEAD/GET, CopyObject's tagging directive, S3's limits, bucket tagging; tags are audited by count only
// and sealed in the data dir.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import {
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteBucketTaggingCommand,
  DeleteObjectTaggingCommand,
  GetBucketTaggingCommand,
  GetObjectCommand,
  GetObjectTaggingCommand,
  HeadObjectCommand,
  PutBucketTaggingCommand,
  PutObjectCommand,
  PutObjectTaggingCommand,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { cli, removeDir } from "../../helpers/atrest.ts";
import { type S3Server, startS3 } from "../../helpers/s3.ts";
import { storeBytes } from "../../helpers/store.ts";

let s3: S3Server;
const canaryKey = `tagkey-${randomBytes(5).toString("hex")}`;
const canaryValue = `tagvalue-${randomBytes(5).toString("hex")}`;

before(async () => {
  s3 = await startS3("atrest-s3-tags-");
  await s3.client().send(new CreateBucketCommand({ Bucket: "tags" }));
});

after(async () => {
  await s3?.server.stop();
  if (s3) await removeDir(s3.dir);
});

const tagsOf = async (Key: string) =>
  ((await s3.client().send(new GetObjectTaggingCommand({ Bucket: "tags", Key }))).TagSet ?? []).map((t) => [
    t.Key,
    t.Value,
  ]);

test("tags set with PutObject come back, are counted on HEAD and GET, replaced and removed", async () => {
  const c = s3.client();
  await c.send(
    new PutObjectCommand({ Bucket: "tags", Key: "a.txt", Body: "a", Tagging: `${canaryKey}=${canaryValue}&two=w%20x` }),
  );
  assert.deepEqual(await tagsOf("a.txt"), [
    [canaryKey, canaryValue],
    ["two", "w x"],
  ]);
  assert.equal((await c.send(new HeadObjectCommand({ Bucket: "tags", Key: "a.txt" }))).TagCount, 2);
  const got = await c.send(new GetObjectCommand({ Bucket: "tags", Key: "a.txt" }));
  assert.equal(got.TagCount, 2);
  await got.Body?.transformToString();
  await c.send(
    new PutObjectTaggingCommand({ Bucket: "tags", Key: "a.txt", Tagging: { TagSet: [{ Key: "k", Value: "" }] } }),
  );
  assert.deepEqual(await tagsOf("a.txt"), [["k", ""]]);
  // the content and the other metadata stay
  const after = await c.send(new GetObjectCommand({ Bucket: "tags", Key: "a.txt" }));
  assert.equal(await after.Body?.transformToString(), "a");
  await c.send(new DeleteObjectTaggingCommand({ Bucket: "tags", Key: "a.txt" }));
  assert.deepEqual(await tagsOf("a.txt"), []);
  // a new version starts without tags
  await c.send(
    new PutObjectTaggingCommand({ Bucket: "tags", Key: "a.txt", Tagging: { TagSet: [{ Key: "x", Value: "1" }] } }),
  );
  await c.send(new PutObjectCommand({ Bucket: "tags", Key: "a.txt", Body: "b" }));
  assert.deepEqual(await tagsOf("a.txt"), []);
  await assert.rejects(
    c.send(new GetObjectTaggingCommand({ Bucket: "tags", Key: "none" })),
    /NoSuchKey|does not exist/,
  );
});

test("CopyObject copies the tags, or replaces them with REPLACE", async () => {
  const c = s3.client();
  await c.send(new PutObjectCommand({ Bucket: "tags", Key: "src", Body: "s", Tagging: "from=source" }));
  await c.send(new CopyObjectCommand({ Bucket: "tags", Key: "copy1", CopySource: "tags/src" }));
  assert.deepEqual(await tagsOf("copy1"), [["from", "source"]]);
  await c.send(
    new CopyObjectCommand({
      Bucket: "tags",
      Key: "copy2",
      CopySource: "tags/src",
      TaggingDirective: "REPLACE",
      Tagging: "new=one",
    }),
  );
  assert.deepEqual(await tagsOf("copy2"), [["new", "one"]]);
});

test("S3's limits: 10 tags, unique keys, key and value lengths", async () => {
  const c = s3.client();
  const put = (TagSet: { Key: string; Value: string }[]) =>
    c.send(new PutObjectTaggingCommand({ Bucket: "tags", Key: "src", Tagging: { TagSet } }));
  const many = Array.from({ length: 11 }, (_, i) => ({ Key: `k${i}`, Value: "v" }));
  await assert.rejects(
    put(many),
    (e: { $metadata?: { httpStatusCode?: number } }) => e.$metadata?.httpStatusCode === 400,
  );
  await assert.rejects(
    put([
      { Key: "d", Value: "1" },
      { Key: "d", Value: "2" },
    ]),
    /InvalidTag|same key/,
  );
  await assert.rejects(put([{ Key: "k".repeat(129), Value: "1" }]), /InvalidTag|TagKey/);
  await assert.rejects(put([{ Key: "k", Value: "v".repeat(257) }]), /InvalidTag|TagValue/);
  await assert.rejects(
    c.send(
      new PutObjectCommand({ Bucket: "tags", Key: "bad", Body: "x", Tagging: many.map((t) => `${t.Key}=1`).join("&") }),
    ),
    (e: { $metadata?: { httpStatusCode?: number } }) => e.$metadata?.httpStatusCode === 400,
  );
  assert.deepEqual(await tagsOf("src"), [["from", "source"]], "a refused PutObjectTagging changes nothing");
});

test("bucket tags, and the tags of a multipart upload given to the object at Complete", async () => {
  const c = s3.client();
  await assert.rejects(c.send(new GetBucketTaggingCommand({ Bucket: "tags" })), /NoSuchTagSet/);
  await c.send(
    new PutBucketTaggingCommand({
      Bucket: "tags",
      Tagging: {
        TagSet: [
          { Key: "team", Value: "web" },
          { Key: `bucket-${canaryKey}`, Value: canaryValue },
        ],
      },
    }),
  );
  const got = await c.send(new GetBucketTaggingCommand({ Bucket: "tags" }));
  assert.deepEqual(
    got.TagSet?.map((t) => [t.Key, t.Value]),
    [
      [`bucket-${canaryKey}`, canaryValue],
      ["team", "web"],
    ],
  );
  const up = await c.send(
    new CreateMultipartUploadCommand({ Bucket: "tags", Key: "mp", Tagging: `Hello=World&${canaryKey}=${canaryValue}` }),
  );
  const part = await c.send(
    new UploadPartCommand({ Bucket: "tags", Key: "mp", UploadId: up.UploadId, PartNumber: 1, Body: "one part" }),
  );
  await c.send(
    new CompleteMultipartUploadCommand({
      Bucket: "tags",
      Key: "mp",
      UploadId: up.UploadId,
      MultipartUpload: { Parts: [{ PartNumber: 1, ETag: part.ETag }] },
    }),
  );
  assert.deepEqual(await tagsOf("mp"), [
    ["Hello", "World"],
    [canaryKey, canaryValue],
  ]);
  // the bucket's tags stay until deleted (kept for the data-dir scan below, then removed)
  await c.send(new DeleteBucketTaggingCommand({ Bucket: "tags" }));
  await assert.rejects(c.send(new GetBucketTaggingCommand({ Bucket: "tags" })), /NoSuchTagSet/);
  await c.send(
    new PutBucketTaggingCommand({ Bucket: "tags", Tagging: { TagSet: [{ Key: canaryKey, Value: canaryValue }] } }),
  );
});

test("tags are audited by count only and nowhere in clear in the data dir", async () => {
  const c = s3.client();
  await c.send(
    new PutObjectTaggingCommand({
      Bucket: "tags",
      Key: "src",
      Tagging: { TagSet: [{ Key: canaryKey, Value: canaryValue }] },
    }),
  );
  const { stdout } = await cli(["audit", "tail", "-n", "300", "--format", "json", "--data", s3.data]);
  assert.match(stdout, /tags 1/);
  assert.ok(!stdout.includes(canaryKey) && !stdout.includes(canaryValue), "the audit names no tag");
  const files: string[] = [];
  const visit = async (d: string) => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await visit(p);
      else if (e.isFile()) files.push(p);
    }
  };
  await visit(s3.data);
  const contents: [string, Buffer][] = [["metadata store", await storeBytes(s3.data)]];
  for (const f of files) contents.push([f, await readFile(f).catch(() => Buffer.alloc(0))]);
  for (const [where, bytes] of contents) {
    for (const n of [canaryKey, canaryValue]) assert.equal(bytes.indexOf(n), -1, `${n} found in ${where}`);
  }
});
