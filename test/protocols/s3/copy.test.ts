// CopyObject (issue 13): awscli s3api copy-object and the SDK — same and other bucket, metadata COPY/REPLACE, a copy
// onto itself, x-amz-copy-source-if-* conditions, versionId=null, SSE on the destination (SSE-KMS with a named key,
// SSE-C → SSE-C with another key), the errors S3 answers, the audit, and the copy read back over SFTP.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import {
  CopyObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  type S3Client,
} from "@aws-sdk/client-s3";
import { cli, removeDir } from "../../helpers/atrest.ts";
import { type S3Server, startS3 } from "../../helpers/s3.ts";
import { runSftpBatch } from "../../helpers/sftp-clients.ts";

let s3: S3Server;
let c: S3Client;
const body = randomBytes(5 * 1024 * 1024 + 123);
const md5 = createHash("md5").update(body).digest("hex");

before(async () => {
  s3 = await startS3("atrest-s3-copy-", ["alice"], {
    env: { ATREST_TEST_MODE: "1", ATREST_TEST_SSE_C_OVER_HTTP: "1" },
    before: async (data) => {
      await cli(["kms", "key", "create", "projects", "--data", data]);
      await cli(["folder", "add", "/alice/enc", "--allow-key", "projects", "--data", data]);
    },
  });
  c = s3.client();
  for (const b of ["src", "dst"]) {
    const r = await s3.aws(["s3", "mb", `s3://${b}`]);
    assert.equal(r.code, 0, r.stderr);
  }
  await c.send(
    new PutObjectCommand({
      Bucket: "src",
      Key: "dir/orig.bin",
      Body: body,
      ContentType: "application/x-orig",
      Metadata: { origin: "first" },
    }),
  );
});

after(async () => {
  c?.destroy();
  await s3?.server.stop();
  if (s3) await removeDir(s3.dir);
});

async function bytesOf(bucket: string, key: string, extra: Record<string, string> = {}): Promise<Buffer> {
  const got = await c.send(new GetObjectCommand({ Bucket: bucket, Key: key, ...extra }));
  return Buffer.from((await got.Body?.transformToByteArray()) ?? []);
}

test("copy-object to another bucket: the exact bytes, the source's metadata and ETag (COPY)", async () => {
  const r = await s3.aws([
    "s3api",
    "copy-object",
    "--bucket",
    "dst",
    "--key",
    "deep/er/copy.bin",
    "--copy-source",
    "src/dir/orig.bin",
  ]);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.CopyObjectResult.ETag, `"${md5}"`);
  assert.ok(out.CopyObjectResult.LastModified);
  assert.equal(out.ServerSideEncryption, "AES256");
  const head = await c.send(new HeadObjectCommand({ Bucket: "dst", Key: "deep/er/copy.bin" }));
  assert.equal(head.ContentType, "application/x-orig");
  assert.deepEqual(head.Metadata, { origin: "first" });
  assert.equal(head.ETag, `"${md5}"`);
  assert.ok(body.equals(await bytesOf("dst", "deep/er/copy.bin")));
  // the same file over SFTP
  const local = join(s3.dir, "sftp.bin");
  const sftp = await runSftpBatch({
    port: s3.server.port,
    user: "alice",
    keyFile: s3.sshKey,
    commands: [`get /dst/deep/er/copy.bin ${local}`],
  });
  assert.equal(sftp.code, 0, sftp.stderr);
  assert.ok(body.equals(await readFile(local)));
});

test("REPLACE takes the request's metadata; COPY onto itself is refused, REPLACE onto itself rewrites it", async () => {
  await c.send(
    new CopyObjectCommand({
      Bucket: "dst",
      Key: "replaced.bin",
      CopySource: "src/dir/orig.bin",
      MetadataDirective: "REPLACE",
      ContentType: "text/x-new",
      Metadata: { origin: "second" },
    }),
  );
  let head = await c.send(new HeadObjectCommand({ Bucket: "dst", Key: "replaced.bin" }));
  assert.equal(head.ContentType, "text/x-new");
  assert.deepEqual(head.Metadata, { origin: "second" });
  await assert.rejects(
    c.send(new CopyObjectCommand({ Bucket: "dst", Key: "replaced.bin", CopySource: "dst/replaced.bin" })),
    (err: Error) => err.name === "InvalidRequest",
  );
  await c.send(
    new CopyObjectCommand({
      Bucket: "dst",
      Key: "replaced.bin",
      CopySource: "/dst/replaced.bin",
      MetadataDirective: "REPLACE",
      Metadata: { origin: "third" },
    }),
  );
  head = await c.send(new HeadObjectCommand({ Bucket: "dst", Key: "replaced.bin" }));
  assert.deepEqual(head.Metadata, { origin: "third" });
  assert.equal(head.ETag, `"${md5}"`);
  assert.ok(body.equals(await bytesOf("dst", "replaced.bin")));
});

test("copy-source conditions, versionId=null, and S3's errors for what does not exist", async () => {
  const copy = (extra: Record<string, unknown>) =>
    c.send(new CopyObjectCommand({ Bucket: "dst", Key: "cond.bin", CopySource: "src/dir/orig.bin", ...extra }));
  await copy({ CopySourceIfMatch: `"${md5}"` });
  await copy({ CopySourceIfNoneMatch: '"0000"' });
  await copy({ CopySourceIfModifiedSince: new Date(Date.now() - 3_600_000) });
  const failed = (err: Error & { $metadata?: { httpStatusCode?: number } }) =>
    err.name === "PreconditionFailed" && err.$metadata?.httpStatusCode === 412;
  await assert.rejects(copy({ CopySourceIfMatch: '"0000"' }), failed);
  await assert.rejects(copy({ CopySourceIfNoneMatch: `"${md5}"` }), failed);
  await assert.rejects(copy({ CopySourceIfUnmodifiedSince: new Date(Date.now() - 3_600_000) }), failed);
  await assert.rejects(copy({ CopySourceIfModifiedSince: new Date(Date.now() + 3_600_000) }), failed);
  await c.send(
    new CopyObjectCommand({ Bucket: "dst", Key: "null-version.bin", CopySource: "src/dir/orig.bin?versionId=null" }),
  );
  await assert.rejects(
    c.send(new CopyObjectCommand({ Bucket: "dst", Key: "v.bin", CopySource: "src/dir/orig.bin?versionId=abc" })),
    (err: Error) => err.name === "NoSuchVersion",
  );
  await assert.rejects(
    c.send(new CopyObjectCommand({ Bucket: "dst", Key: "x.bin", CopySource: "src/dir/missing.bin" })),
    (err: Error) => err.name === "NoSuchKey",
  );
  await assert.rejects(
    c.send(new CopyObjectCommand({ Bucket: "dst", Key: "x.bin", CopySource: "nobucket/dir/orig.bin" })),
    (err: Error) => err.name === "NoSuchBucket",
  );
  await assert.rejects(
    c.send(new CopyObjectCommand({ Bucket: "nobucket", Key: "x.bin", CopySource: "src/dir/orig.bin" })),
    (err: Error) => err.name === "NoSuchBucket",
  );
  const r = await s3.aws(["s3api", "head-object", "--bucket", "dst", "--key", "x.bin"]);
  assert.notEqual(r.code, 0, "no object left by a failed copy");
});

test("SSE on the destination: aws:kms with a named key; SSE-C source to SSE-C destination with another key", async () => {
  const r = await s3.aws([
    "s3api",
    "copy-object",
    "--bucket",
    "enc",
    "--key",
    "kms.bin",
    "--copy-source",
    "src/dir/orig.bin",
    "--server-side-encryption",
    "aws:kms",
    "--ssekms-key-id",
    "projects",
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).SSEKMSKeyId, "projects");
  const who = JSON.parse(
    (await cli(["keys", "who-can-decrypt", "/alice/enc/kms.bin", "--json", "--data", s3.data])).stdout,
  );
  assert.equal(who.keyRef, "kek:projects:v1");

  const keyA = randomBytes(24).toString("base64");
  const keyB = randomBytes(24).toString("base64");
  const ssec = (k: string) => ["--sse-customer-algorithm", "AES256", "--sse-customer-key", k];
  const local = join(s3.dir, "ssec.bin");
  await writeFile(local, body.subarray(0, 100_000));
  let x = await s3.aws(["s3api", "put-object", "--bucket", "src", "--key", "a.bin", "--body", local, ...ssec(keyA)]);
  assert.equal(x.code, 0, x.stderr);
  // without the source key: S3's error, nothing written
  x = await s3.aws(["s3api", "copy-object", "--bucket", "dst", "--key", "b.bin", "--copy-source", "src/a.bin"]);
  assert.notEqual(x.code, 0);
  assert.match(x.stderr, /InvalidRequest|400/);
  x = await s3.aws([
    "s3api",
    "copy-object",
    "--bucket",
    "dst",
    "--key",
    "b.bin",
    "--copy-source",
    "src/a.bin",
    "--copy-source-sse-customer-algorithm",
    "AES256",
    "--copy-source-sse-customer-key",
    keyA,
    ...ssec(keyB),
  ]);
  assert.equal(x.code, 0, x.stderr);
  assert.equal(JSON.parse(x.stdout).SSECustomerKeyMD5, createHash("md5").update(keyB).digest("base64"));
  const back = join(s3.dir, "ssec.back");
  x = await s3.aws(["s3api", "get-object", "--bucket", "dst", "--key", "b.bin", ...ssec(keyA), back]);
  assert.notEqual(x.code, 0, "the source's key does not open the copy");
  x = await s3.aws(["s3api", "get-object", "--bucket", "dst", "--key", "b.bin", ...ssec(keyB), back]);
  assert.equal(x.code, 0, x.stderr);
  assert.ok(body.subarray(0, 100_000).equals(await readFile(back)));
  // SSE-C source to a plain destination
  x = await s3.aws([
    "s3api",
    "copy-object",
    "--bucket",
    "dst",
    "--key",
    "plain.bin",
    "--copy-source",
    "src/a.bin",
    "--copy-source-sse-customer-algorithm",
    "AES256",
    "--copy-source-sse-customer-key",
    keyA,
  ]);
  assert.equal(x.code, 0, x.stderr);
  assert.ok(body.subarray(0, 100_000).equals(await bytesOf("dst", "plain.bin")));
});

test("a copy is audited: the source's download and the destination's upload naming its source", async () => {
  const { stdout } = await cli(["audit", "tail", "-n", "500", "--format", "json", "--data", s3.data]);
  const records = stdout
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));
  const up = records.find((e) => e.action === "upload" && e.path === "/dst/deep/er/copy.bin");
  assert.equal(up?.outcome, "success");
  assert.equal(up?.protocol, "s3");
  assert.match(up?.detail ?? "", /^copy of \/src\/dir\/orig\.bin/);
  assert.ok(records.some((e) => e.action === "download" && e.path === "/src/dir/orig.bin" && e.size === body.length));
  const ssecCopy = records.find((e) => e.action === "upload" && e.path === "/dst/b.bin" && e.outcome === "success");
  assert.equal(ssecCopy?.detail, "copy of /src/a.bin; sse-c");
});
