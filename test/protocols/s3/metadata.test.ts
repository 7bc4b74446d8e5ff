// Object metadata over S3 (issue 13): x-amz-meta-*, Content-Type, Content-Disposition/Encoding/Language,
// Cache-Control and Expires are stored sealed with the version and answered on GET/HEAD (response-* overrides them for
// one response); the ETag of GET, HEAD and the listings is the PUT's (MD5 of the plaintext); metadata values appear
// nowhere in the data dir.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand } from "@aws-sdk/client-s3";
import { removeDir } from "../../helpers/atrest.ts";
import { type S3Server, startS3 } from "../../helpers/s3.ts";
import { storeBytes } from "../../helpers/store.ts";

let s3: S3Server;
const canary = `canary-${randomBytes(6).toString("hex")}`;

before(async () => {
  s3 = await startS3("atrest-s3-meta-");
  const r = await s3.aws(["s3", "mb", "s3://docs"]);
  assert.equal(r.code, 0, r.stderr);
});

after(async () => {
  await s3?.server.stop();
  if (s3) await removeDir(s3.dir);
});

test("put-object metadata comes back on head-object and get-object; ETags agree everywhere", async () => {
  const body = randomBytes(300_000);
  const local = join(s3.dir, "doc.bin");
  await writeFile(local, body);
  const md5 = createHash("md5").update(body).digest("hex");
  let r = await s3.aws([
    "s3api",
    "put-object",
    "--bucket",
    "docs",
    "--key",
    "a/doc.bin",
    "--body",
    local,
    "--content-type",
    "application/x-atrest-test",
    "--content-disposition",
    'attachment; filename="doc.bin"',
    "--content-encoding",
    "identity",
    "--content-language",
    "fr-CA",
    "--cache-control",
    "max-age=60",
    "--expires",
    "2031-01-02T03:04:05Z",
    "--metadata",
    `project=${canary},Owner-Name=Zoe`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).ETag, `"${md5}"`);
  r = await s3.aws(["s3api", "head-object", "--bucket", "docs", "--key", "a/doc.bin"]);
  assert.equal(r.code, 0, r.stderr);
  const head = JSON.parse(r.stdout);
  assert.equal(head.ETag, `"${md5}"`);
  assert.equal(head.ContentType, "application/x-atrest-test");
  assert.equal(head.ContentDisposition, 'attachment; filename="doc.bin"');
  assert.equal(head.ContentEncoding, "identity");
  assert.equal(head.ContentLanguage, "fr-CA");
  assert.equal(head.CacheControl, "max-age=60");
  assert.match(head.Expires ?? head.ExpiresString, /2031/);
  assert.equal(head.Metadata.project, canary);
  assert.equal(head.ContentLength, body.length);
  const back = join(s3.dir, "doc.back");
  r = await s3.aws(["s3api", "get-object", "--bucket", "docs", "--key", "a/doc.bin", back]);
  assert.equal(r.code, 0, r.stderr);
  const got = JSON.parse(r.stdout);
  assert.equal(got.ETag, `"${md5}"`);
  assert.equal(got.ContentType, "application/x-atrest-test");
  assert.equal(got.Metadata.project, canary);
  assert.ok(body.equals(await readFile(back)));
  for (const args of [
    ["list-objects-v2", "--bucket", "docs"],
    ["list-objects", "--bucket", "docs"],
  ]) {
    r = await s3.aws(["s3api", ...args]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).Contents[0].ETag, `"${md5}"`, args[0]);
  }
  r = await s3.aws(["s3api", "list-object-versions", "--bucket", "docs"]);
  assert.equal(JSON.parse(r.stdout).Versions[0].ETag, `"${md5}"`);
  // conditionals on the stored ETag
  r = await s3.aws(["s3api", "head-object", "--bucket", "docs", "--key", "a/doc.bin", "--if-match", `"${md5}"`]);
  assert.equal(r.code, 0, r.stderr);
  r = await s3.aws(["s3api", "head-object", "--bucket", "docs", "--key", "a/doc.bin", "--if-none-match", `"${md5}"`]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /304|Not Modified/);
});

test("the SDK: metadata, response-* overrides, default content type, aws s3 cp ETag", async () => {
  const c = s3.client();
  const put = await c.send(
    new PutObjectCommand({
      Bucket: "docs",
      Key: "sdk.txt",
      Body: "hello metadata",
      ContentType: "text/plain; charset=utf-8",
      Metadata: { color: "blue", "two-words": "a b" },
    }),
  );
  assert.equal(put.ETag, `"${createHash("md5").update("hello metadata").digest("hex")}"`);
  const head = await c.send(new HeadObjectCommand({ Bucket: "docs", Key: "sdk.txt" }));
  assert.equal(head.ContentType, "text/plain; charset=utf-8");
  assert.deepEqual(head.Metadata, { color: "blue", "two-words": "a b" });
  assert.equal(head.ETag, put.ETag);
  const got = await c.send(
    new GetObjectCommand({
      Bucket: "docs",
      Key: "sdk.txt",
      ResponseContentType: "application/json",
      ResponseContentDisposition: "inline",
      ResponseCacheControl: "no-cache",
    }),
  );
  assert.equal(got.ContentType, "application/json");
  assert.equal(got.ContentDisposition, "inline");
  assert.equal(got.CacheControl, "no-cache");
  assert.equal(await got.Body?.transformToString(), "hello metadata");
  // no Content-Type given: S3's default (the SDK sends none for a Buffer body)
  await c.send(new PutObjectCommand({ Bucket: "docs", Key: "plain.bin", Body: Buffer.from([1, 2, 3]) }));
  const plain = await c.send(new HeadObjectCommand({ Bucket: "docs", Key: "plain.bin" }));
  assert.ok(plain.ContentType === "binary/octet-stream" || plain.ContentType === "application/octet-stream");
  assert.equal(plain.ContentEncoding, undefined, "aws-chunked is not kept as the object's encoding");
  c.destroy();
  // aws s3 cp guesses the type from the name and sends aws-chunked bodies: same ETag back
  const local = join(s3.dir, "page.html");
  await writeFile(local, "<html></html>");
  let r = await s3.aws(["s3", "cp", local, "s3://docs/page.html"]);
  assert.equal(r.code, 0, r.stderr);
  r = await s3.aws(["s3api", "head-object", "--bucket", "docs", "--key", "page.html"]);
  const h = JSON.parse(r.stdout);
  assert.equal(h.ContentType, "text/html");
  assert.equal(h.ETag, `"${createHash("md5").update("<html></html>").digest("hex")}"`);
});

test("user metadata over 2 KB is refused with MetadataTooLarge and nothing is written", async () => {
  const local = join(s3.dir, "small.txt");
  await writeFile(local, "x");
  const r = await s3.aws([
    "s3api",
    "put-object",
    "--bucket",
    "docs",
    "--key",
    "big-meta.txt",
    "--body",
    local,
    "--metadata",
    `big=${"v".repeat(2100)}`,
  ]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /MetadataTooLarge/);
  const h = await s3.aws(["s3api", "head-object", "--bucket", "docs", "--key", "big-meta.txt"]);
  assert.notEqual(h.code, 0);
});

test("metadata values are nowhere in the clear under the data dir", async () => {
  const needles = [canary, "application/x-atrest-test", "hello metadata", "two-words"].map((n) => Buffer.from(n));
  const files: string[] = [];
  const visit = async (d: string) => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (e.isDirectory()) await visit(join(d, e.name));
      else files.push(join(d, e.name));
    }
  };
  await visit(s3.data);
  // the metadata store itself: meta.db among the files, or (the PostgreSQL matrix) the database's rows
  const contents: [string, Buffer][] = [["metadata store", await storeBytes(s3.data)]];
  for (const f of files) contents.push([f, await readFile(f)]);
  for (const [where, bytes] of contents) {
    for (const n of needles) assert.equal(bytes.indexOf(n), -1, `${n} found in ${where}`);
  }
});
