// GetObjectAttributes with @aws-sdk/client-s3: ETag, checksum, size and storage class of a PutObject; the parts of a
// multipart object, paged, with each part's checksum; an SSE-C object only with its key; an unknown attribute refused.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import {
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetObjectAttributesCommand,
  type ObjectAttributes,
  PutObjectCommand,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { removeDir } from "../../helpers/atrest.ts";
import { type S3Server, startS3 } from "../../helpers/s3.ts";

let s3: S3Server;
const ALL: ObjectAttributes[] = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"];

before(async () => {
  s3 = await startS3("atrest-s3-attrs-", ["alice"], {
    env: { ATREST_TEST_MODE: "1", ATREST_TEST_SSE_C_OVER_HTTP: "1" },
  });
  await s3.client().send(new CreateBucketCommand({ Bucket: "attrs" }));
});

after(async () => {
  await s3?.server.stop();
  if (s3) await removeDir(s3.dir);
});

test("a PutObject's ETag, SHA-256 checksum, size and storage class; no parts", async () => {
  const c = s3.client();
  const body = randomBytes(1234);
  const sha = createHash("sha256").update(body).digest("base64");
  await c.send(new PutObjectCommand({ Bucket: "attrs", Key: "one.bin", Body: body, ChecksumSHA256: sha }));
  const a = await c.send(new GetObjectAttributesCommand({ Bucket: "attrs", Key: "one.bin", ObjectAttributes: ALL }));
  assert.equal(a.ETag, createHash("md5").update(body).digest("hex"));
  assert.equal(a.Checksum?.ChecksumSHA256, sha);
  assert.equal(a.ObjectSize, 1234);
  assert.equal(a.StorageClass, "STANDARD");
  assert.equal(a.ObjectParts, undefined);
  assert.ok(a.LastModified instanceof Date);
  const some = await c.send(
    new GetObjectAttributesCommand({ Bucket: "attrs", Key: "one.bin", ObjectAttributes: ["ObjectSize"] }),
  );
  assert.equal(some.ObjectSize, 1234);
  assert.equal(some.ETag, undefined);
  await assert.rejects(
    c.send(
      new GetObjectAttributesCommand({
        Bucket: "attrs",
        Key: "one.bin",
        ObjectAttributes: ["Colour" as ObjectAttributes],
      }),
    ),
    /Invalid attribute name/,
  );
  await assert.rejects(
    c.send(new GetObjectAttributesCommand({ Bucket: "attrs", Key: "none.bin", ObjectAttributes: ALL })),
    /NoSuchKey|does not exist/,
  );
});

test("a multipart object's parts, paged with MaxParts and PartNumberMarker", async () => {
  const c = s3.client();
  const sizes = [5 * 1024 * 1024, 5 * 1024 * 1024, 77];
  const { UploadId } = await c.send(new CreateMultipartUploadCommand({ Bucket: "attrs", Key: "mp.bin" }));
  const parts = [];
  for (const [i, size] of sizes.entries()) {
    const r = await c.send(
      new UploadPartCommand({ Bucket: "attrs", Key: "mp.bin", UploadId, PartNumber: i + 1, Body: randomBytes(size) }),
    );
    parts.push({ PartNumber: i + 1, ETag: r.ETag });
  }
  const done = await c.send(
    new CompleteMultipartUploadCommand({ Bucket: "attrs", Key: "mp.bin", UploadId, MultipartUpload: { Parts: parts } }),
  );
  const a = await c.send(new GetObjectAttributesCommand({ Bucket: "attrs", Key: "mp.bin", ObjectAttributes: ALL }));
  assert.equal(`"${a.ETag}"`, done.ETag);
  assert.equal(a.ObjectSize, sizes[0] + sizes[1] + 77);
  assert.equal(a.ObjectParts?.TotalPartsCount, 3);
  assert.equal(a.ObjectParts?.IsTruncated, false);
  assert.deepEqual(
    a.ObjectParts?.Parts?.map((p) => [p.PartNumber, p.Size]),
    sizes.map((s, i) => [i + 1, s]),
  );
  const page = await c.send(
    new GetObjectAttributesCommand({
      Bucket: "attrs",
      Key: "mp.bin",
      ObjectAttributes: ["ObjectParts"],
      MaxParts: 1,
      PartNumberMarker: "1",
    }),
  );
  assert.equal(page.ObjectParts?.IsTruncated, true);
  assert.equal(page.ObjectParts?.NextPartNumberMarker, "2");
  assert.deepEqual(
    page.ObjectParts?.Parts?.map((p) => p.PartNumber),
    [2],
  );
});

test("a multipart object uploaded with SHA-256 answers each part's checksum", async () => {
  const c = s3.client();
  const bodies = [randomBytes(5 * 1024 * 1024), randomBytes(1000)];
  const { UploadId } = await c.send(
    new CreateMultipartUploadCommand({ Bucket: "attrs", Key: "sums.bin", ChecksumAlgorithm: "SHA256" }),
  );
  const parts = [];
  for (const [i, Body] of bodies.entries()) {
    const r = await c.send(
      new UploadPartCommand({
        Bucket: "attrs",
        Key: "sums.bin",
        UploadId,
        PartNumber: i + 1,
        Body,
        ChecksumAlgorithm: "SHA256",
      }),
    );
    parts.push({ PartNumber: i + 1, ETag: r.ETag, ChecksumSHA256: r.ChecksumSHA256 });
  }
  await c.send(
    new CompleteMultipartUploadCommand({
      Bucket: "attrs",
      Key: "sums.bin",
      UploadId,
      MultipartUpload: { Parts: parts },
    }),
  );
  const a = await c.send(new GetObjectAttributesCommand({ Bucket: "attrs", Key: "sums.bin", ObjectAttributes: ALL }));
  assert.deepEqual(
    a.ObjectParts?.Parts?.map((p) => p.ChecksumSHA256),
    bodies.map((b) => createHash("sha256").update(b).digest("base64")),
  );
  assert.match(a.Checksum?.ChecksumSHA256 ?? "", /-2$|^[A-Za-z0-9+/=]+$/);
});

test("an SSE-C object: refused without its key or with another (400, as HEAD), answered with it", async () => {
  const c = s3.client();
  const raw = randomBytes(32);
  // the SDK adds the key's MD5 for GetObject, not for GetObjectAttributes
  const ssec = (k: Buffer) => ({
    SSECustomerAlgorithm: "AES256",
    SSECustomerKey: k.toString("base64"),
    SSECustomerKeyMD5: createHash("md5").update(k).digest("base64"),
  });
  const sse = ssec(raw);
  await c.send(new PutObjectCommand({ Bucket: "attrs", Key: "sealed.bin", Body: "x".repeat(1000), ...sse }));
  await assert.rejects(
    c.send(new GetObjectAttributesCommand({ Bucket: "attrs", Key: "sealed.bin", ObjectAttributes: ALL })),
    (e: { $metadata?: { httpStatusCode?: number } }) => e.$metadata?.httpStatusCode === 400,
  );
  const other = ssec(randomBytes(32));
  await assert.rejects(
    c.send(new GetObjectAttributesCommand({ Bucket: "attrs", Key: "sealed.bin", ObjectAttributes: ALL, ...other })),
    (e: { $metadata?: { httpStatusCode?: number } }) => e.$metadata?.httpStatusCode === 400,
  );
  const a = await c.send(
    new GetObjectAttributesCommand({ Bucket: "attrs", Key: "sealed.bin", ObjectAttributes: ALL, ...sse }),
  );
  assert.equal(a.ObjectSize, 1000);
  assert.equal(a.StorageClass, "STANDARD");
});
