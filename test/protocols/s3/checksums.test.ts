// x-amz-checksum-* (issue 13 item 4): CRC32, CRC32C, CRC64NVME, SHA1 and SHA256 on PutObject (header and aws-chunked
// trailer, as @aws-sdk/client-s3 sends them by default), kept with the version and answered by HEAD/GET with
// x-amz-checksum-mode (the SDK checks the body against it); on multipart parts and at Complete (COMPOSITE: the
// checksum of the parts' checksums "-N"; FULL_OBJECT: the CRC of the whole object, equal to the SDK's own CRC of the
// same bytes); a wrong checksum is BadDigest and stores nothing; awscli s3api and `aws s3 cp` likewise.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, test } from "node:test";
import {
  ChecksumAlgorithm,
  type ChecksumType,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListPartsCommand,
  PutObjectCommand,
  type S3Client,
  S3ServiceException,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { removeDir } from "../../helpers/atrest.ts";
import { type S3Server, startS3 } from "../../helpers/s3.ts";

let s3: S3Server;
let c: S3Client;
const MiB = 1024 * 1024;

before(async () => {
  s3 = await startS3("atrest-s3-checksum-", ["alice"]);
  c = s3.client();
  const r = await s3.aws(["s3", "mb", "s3://sums"]);
  assert.equal(r.code, 0, r.stderr);
});

after(async () => {
  c?.destroy();
  await s3?.server.stop();
  if (s3) await removeDir(s3.dir);
});

const field = (a: string) => `Checksum${a}` as "ChecksumCRC32";

async function refused(p: Promise<unknown>): Promise<[number | undefined, string]> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof S3ServiceException, String(err));
    return [err.$metadata.httpStatusCode, err.name];
  }
  assert.fail("the request succeeded");
}

/** HEAD with x-amz-checksum-mode, and a GET of it all that the SDK validates against the checksum it answers. */
async function checksumOf(key: string, algorithm: string) {
  const plain = await c.send(new HeadObjectCommand({ Bucket: "sums", Key: key }));
  assert.equal(plain[field(algorithm)], undefined, "no checksum without x-amz-checksum-mode");
  const head = await c.send(new HeadObjectCommand({ Bucket: "sums", Key: key, ChecksumMode: "ENABLED" }));
  const got = await c.send(new GetObjectCommand({ Bucket: "sums", Key: key, ChecksumMode: "ENABLED" }));
  const body = Buffer.from((await got.Body?.transformToByteArray()) ?? []);
  assert.equal(got[field(algorithm)], head[field(algorithm)]);
  return { value: head[field(algorithm)], type: head.ChecksumType, body };
}

for (const algorithm of ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"] as const) {
  test(`SDK PutObject with ${algorithm}: header and trailer forms checked, kept, answered with x-amz-checksum-mode`, async () => {
    const data = randomBytes(3 * MiB + 17);
    // a Buffer body: the checksum travels as a header; a stream: aws-chunked with the checksum as a trailer
    const put = await c.send(
      new PutObjectCommand({ Bucket: "sums", Key: `${algorithm}.bin`, Body: data, ChecksumAlgorithm: algorithm }),
    );
    assert.ok(put[field(algorithm)], `PUT answers Checksum${algorithm}`);
    const back = await checksumOf(`${algorithm}.bin`, algorithm);
    assert.equal(back.value, put[field(algorithm)]);
    assert.equal(back.type, "FULL_OBJECT");
    assert.ok(back.body.equals(data));
    const streamed = await c.send(
      new PutObjectCommand({
        Bucket: "sums",
        Key: `${algorithm}-stream.bin`,
        Body: Readable.from([data.subarray(0, MiB), data.subarray(MiB)]),
        ContentLength: data.length,
        ChecksumAlgorithm: algorithm,
      }),
    );
    assert.equal(streamed[field(algorithm)], put[field(algorithm)]);
    assert.equal((await checksumOf(`${algorithm}-stream.bin`, algorithm)).value, put[field(algorithm)]);
    if (algorithm === "SHA256") {
      assert.equal(put.ChecksumSHA256, createHash("sha256").update(data).digest("base64"));
    }
  });
}

test("CopyObject keeps the source's full-object checksum; x-amz-checksum-algorithm computes another", async () => {
  const src = await checksumOf("CRC32C.bin", "CRC32C");
  await c.send(new CopyObjectCommand({ Bucket: "sums", Key: "copy.bin", CopySource: "sums/CRC32C.bin" }));
  assert.equal((await checksumOf("copy.bin", "CRC32C")).value, src.value);
  await c.send(
    new CopyObjectCommand({
      Bucket: "sums",
      Key: "copy256.bin",
      CopySource: "sums/CRC32C.bin",
      ChecksumAlgorithm: "SHA256",
    }),
  );
  const again = await checksumOf("copy256.bin", "SHA256");
  assert.equal(again.value, createHash("sha256").update(src.body).digest("base64"));
});

test("a wrong x-amz-checksum value is BadDigest and stores nothing", async () => {
  const [status, code] = await refused(
    c.send(new PutObjectCommand({ Bucket: "sums", Key: "bad.bin", Body: "some bytes", ChecksumCRC32C: "AAAAAA==" })),
  );
  assert.deepEqual([status, code], [400, "BadDigest"]);
  assert.deepEqual(await refused(c.send(new HeadObjectCommand({ Bucket: "sums", Key: "bad.bin" }))), [404, "NotFound"]);
});

/** A multipart upload of `parts` with `algorithm` (and `type`), completed with the parts' checksums. */
async function multipart(key: string, parts: Buffer[], algorithm: ChecksumAlgorithm, type?: ChecksumType) {
  const created = await c.send(
    new CreateMultipartUploadCommand({ Bucket: "sums", Key: key, ChecksumAlgorithm: algorithm, ChecksumType: type }),
  );
  assert.equal(created.ChecksumAlgorithm, algorithm);
  const UploadId = created.UploadId;
  const done = [];
  for (const [i, body] of parts.entries()) {
    const r = await c.send(
      new UploadPartCommand({
        Bucket: "sums",
        Key: key,
        UploadId,
        PartNumber: i + 1,
        Body: body,
        ChecksumAlgorithm: algorithm,
      }),
    );
    assert.ok(r[field(algorithm)], "UploadPart answers the part's checksum");
    done.push({ PartNumber: i + 1, ETag: r.ETag, [field(algorithm)]: r[field(algorithm)] });
  }
  const listed = await c.send(new ListPartsCommand({ Bucket: "sums", Key: key, UploadId }));
  assert.deepEqual(
    listed.Parts?.map((p) => p[field(algorithm)]),
    done.map((p) => p[field(algorithm)]),
  );
  return { UploadId, parts: done };
}

test("SDK multipart with SHA256 (COMPOSITE): the checksum of the parts' checksums, -N, kept and answered", async () => {
  const parts = [randomBytes(5 * MiB), randomBytes(MiB + 5)];
  const { UploadId, parts: done } = await multipart("composite.bin", parts, ChecksumAlgorithm.SHA256);
  const out = await c.send(
    new CompleteMultipartUploadCommand({
      Bucket: "sums",
      Key: "composite.bin",
      UploadId,
      MultipartUpload: { Parts: done },
    }),
  );
  const digests = parts.map((p) => createHash("sha256").update(p).digest());
  const expected = `${createHash("sha256").update(Buffer.concat(digests)).digest("base64")}-2`;
  assert.equal(out.ChecksumSHA256, expected);
  assert.equal(out.ChecksumType, "COMPOSITE");
  // a Complete repeated after it succeeded answers the same ETag and checksum
  const again = await c.send(
    new CompleteMultipartUploadCommand({
      Bucket: "sums",
      Key: "composite.bin",
      UploadId,
      MultipartUpload: { Parts: done },
    }),
  );
  assert.equal(again.ETag, out.ETag);
  assert.equal(again.ChecksumSHA256, expected);
  const back = await checksumOf("composite.bin", "SHA256");
  assert.equal(back.value, expected);
  assert.equal(back.type, "COMPOSITE");
  assert.ok(back.body.equals(Buffer.concat(parts)));
  // GET/HEAD ?partNumber with the checksum mode: that part's own checksum (the SDK checks the part's bytes against it)
  for (const n of [1, 2]) {
    const head = await c.send(
      new HeadObjectCommand({ Bucket: "sums", Key: "composite.bin", PartNumber: n, ChecksumMode: "ENABLED" }),
    );
    assert.equal(head.ChecksumSHA256, digests[n - 1]?.toString("base64"), `part ${n}`);
    assert.equal(head.PartsCount, 2);
    const got = await c.send(
      new GetObjectCommand({ Bucket: "sums", Key: "composite.bin", PartNumber: n, ChecksumMode: "ENABLED" }),
    );
    assert.equal(got.ChecksumSHA256, digests[n - 1]?.toString("base64"));
    assert.ok(Buffer.from((await got.Body?.transformToByteArray()) ?? []).equals(parts[n - 1] as Buffer));
  }
});

for (const algorithm of [ChecksumAlgorithm.CRC64NVME, ChecksumAlgorithm.CRC32C, ChecksumAlgorithm.CRC32]) {
  test(`SDK multipart with ${algorithm} FULL_OBJECT: the CRC of the whole object, as the SDK computes it`, async () => {
    const parts = [randomBytes(5 * MiB), randomBytes(5 * MiB + 1), randomBytes(333)];
    const whole = Buffer.concat(parts);
    // the SDK's own CRC of the same bytes, from a single PutObject
    const single = await c.send(
      new PutObjectCommand({
        Bucket: "sums",
        Key: `whole-${algorithm}.bin`,
        Body: whole,
        ChecksumAlgorithm: algorithm,
      }),
    );
    const expected = single[field(algorithm)];
    assert.ok(expected);
    const key = `full-${algorithm}.bin`;
    const { UploadId, parts: done } = await multipart(key, parts, algorithm, "FULL_OBJECT");
    // a wrong whole-object checksum at Complete: BadDigest, the upload stays
    assert.deepEqual(
      await refused(
        c.send(
          new CompleteMultipartUploadCommand({
            Bucket: "sums",
            Key: key,
            UploadId,
            MultipartUpload: { Parts: done },
            [field(algorithm)]: single.ChecksumCRC32 === "AAAAAA==" ? "AQAAAA==" : "AAAAAA==",
          }),
        ),
      ),
      [400, "BadDigest"],
    );
    const out = await c.send(
      new CompleteMultipartUploadCommand({
        Bucket: "sums",
        Key: key,
        UploadId,
        MultipartUpload: { Parts: done },
        [field(algorithm)]: expected,
      }),
    );
    assert.equal(out[field(algorithm)], expected);
    assert.equal(out.ChecksumType, "FULL_OBJECT");
    const back = await checksumOf(key, algorithm);
    assert.equal(back.value, expected);
    assert.equal(back.type, "FULL_OBJECT");
    assert.ok(back.body.equals(whole));
  });
}

test("awscli: put-object --checksum-algorithm SHA256 (its CRC32C needs botocore[crt]), head-object --checksum-mode ENABLED; aws s3 cp multipart", async () => {
  const data = randomBytes(2 * MiB + 9);
  const local = join(s3.dir, "cli.bin");
  await writeFile(local, data);
  let r = await s3.aws([
    "s3api",
    "put-object",
    "--bucket",
    "sums",
    "--key",
    "cli.bin",
    "--body",
    local,
    "--checksum-algorithm",
    "SHA256",
  ]);
  assert.equal(r.code, 0, r.stderr);
  const put = JSON.parse(r.stdout);
  assert.equal(put.ChecksumSHA256, createHash("sha256").update(data).digest("base64"));
  r = await s3.aws(["s3api", "head-object", "--bucket", "sums", "--key", "cli.bin", "--checksum-mode", "ENABLED"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).ChecksumSHA256, put.ChecksumSHA256);
  // aws s3 cp of 20 MiB: a multipart upload with the checksums awscli sends by default, read back identical
  const big = randomBytes(20 * MiB + 3);
  await writeFile(local, big);
  r = await s3.aws(["s3", "cp", local, "s3://sums/cp.bin"]);
  assert.equal(r.code, 0, r.stderr);
  r = await s3.aws(["s3api", "head-object", "--bucket", "sums", "--key", "cp.bin", "--checksum-mode", "ENABLED"]);
  assert.equal(r.code, 0, r.stderr);
  const head = JSON.parse(r.stdout);
  assert.match(head.ETag, /-3"$/);
  const back = await checksumOf(
    "cp.bin",
    Object.keys(head)
      .find((k) => k.startsWith("Checksum") && k !== "ChecksumType")
      ?.slice(8) ?? "CRC32",
  );
  assert.ok(back.body.equals(big));
});
