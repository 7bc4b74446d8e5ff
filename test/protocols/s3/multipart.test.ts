// Multipart uploads (issue 13): aws s3 cp of a file over 8 MB (awscli splits it into 8 MiB parts) up and down with the
// S3 multipart ETag; the SDK for Create / UploadPart / UploadPartCopy (range) / ListParts / ListMultipartUploads /
// Complete / Abort, S3's errors (EntityTooSmall, InvalidPart, InvalidPartOrder, NoSuchUpload); SSE-C on every part;
// the completed object read over SFTP; no part blob left behind after Complete or Abort; no plaintext in the data dir.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListPartsCommand,
  PutObjectCommand,
  type S3Client,
  UploadPartCommand,
  UploadPartCopyCommand,
} from "@aws-sdk/client-s3";
import { cli, removeDir } from "../../helpers/atrest.ts";
import { type S3Server, startS3 } from "../../helpers/s3.ts";
import { runSftpBatch } from "../../helpers/sftp-clients.ts";

const MiB = 1024 * 1024;
let s3: S3Server;
let c: S3Client;

before(async () => {
  s3 = await startS3("atrest-s3-mpu-", ["alice", "bob"], {
    env: { ATREST_TEST_MODE: "1", ATREST_TEST_SSE_C_OVER_HTTP: "1" },
    userArgs: { bob: ["--quota-bytes", String(8 * 1024 * 1024)] },
  });
  c = s3.client();
  const r = await s3.aws(["s3", "mb", "s3://big"]);
  assert.equal(r.code, 0, r.stderr);
});

after(async () => {
  c?.destroy();
  await s3?.server.stop();
  if (s3) await removeDir(s3.dir);
});

const md5hex = (b: Buffer) => createHash("md5").update(b).digest("hex");
const multipartEtag = (parts: Buffer[]) =>
  `"${createHash("md5")
    .update(Buffer.concat(parts.map((p) => createHash("md5").update(p).digest())))
    .digest("hex")}-${parts.length}"`;

async function files(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await files(p)));
    else out.push(p);
  }
  return out;
}

const blobCount = async () => (await files(join(s3.data, "blobs"))).length;

async function bytesOf(key: string, extra: Record<string, string> = {}): Promise<Buffer> {
  const got = await c.send(new GetObjectCommand({ Bucket: "big", Key: key, ...extra }));
  return Buffer.from((await got.Body?.transformToByteArray()) ?? []);
}

test("aws s3 cp of 20 MiB goes up in 8 MiB parts and comes back exact, with the multipart ETag", async () => {
  const body = randomBytes(20 * MiB + 5);
  const local = join(s3.dir, "big.bin");
  await writeFile(local, body);
  let r = await s3.aws(["s3", "cp", local, "s3://big/dir/big.bin"], undefined, 300_000);
  assert.equal(r.code, 0, r.stderr);
  const parts = [body.subarray(0, 8 * MiB), body.subarray(8 * MiB, 16 * MiB), body.subarray(16 * MiB)];
  const head = await c.send(new HeadObjectCommand({ Bucket: "big", Key: "dir/big.bin" }));
  assert.equal(head.ETag, multipartEtag(parts));
  assert.equal(head.ContentLength, body.length);
  const back = join(s3.dir, "big.back");
  r = await s3.aws(["s3", "cp", "s3://big/dir/big.bin", back], undefined, 300_000);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(body.equals(await readFile(back)));
  // the same object over SFTP
  const viaSftp = join(s3.dir, "big.sftp");
  const sftp = await runSftpBatch({
    port: s3.server.port,
    user: "alice",
    keyFile: s3.sshKey,
    commands: [`get /big/dir/big.bin ${viaSftp}`],
  });
  assert.equal(sftp.code, 0, sftp.stderr);
  assert.ok(body.equals(await readFile(viaSftp)));
  const list = await c.send(new ListMultipartUploadsCommand({ Bucket: "big" }));
  assert.equal(list.Uploads?.length ?? 0, 0, "the completed upload is gone");
});

test("the SDK: parts out of order, re-sent, copied with a range, listed; Complete with metadata; no staged blob left", async () => {
  const before = await blobCount();
  const a = randomBytes(5 * MiB);
  const b = randomBytes(5 * MiB + 7);
  const tail = randomBytes(1000);
  await c.send(new PutObjectCommand({ Bucket: "big", Key: "source.bin", Body: b }));
  const { UploadId } = await c.send(
    new CreateMultipartUploadCommand({
      Bucket: "big",
      Key: "sdk/obj.bin",
      ContentType: "application/x-mpu",
      Metadata: { step: "three" },
    }),
  );
  assert.ok(UploadId);
  const up = (n: number, data: Buffer) =>
    c.send(new UploadPartCommand({ Bucket: "big", Key: "sdk/obj.bin", UploadId, PartNumber: n, Body: data }));
  const p3 = await up(3, tail);
  const stale = await up(1, randomBytes(5 * MiB));
  const p1 = await up(1, a); // re-sent: replaces the first upload of part 1
  assert.notEqual(stale.ETag, p1.ETag);
  const p2 = await c.send(
    new UploadPartCopyCommand({
      Bucket: "big",
      Key: "sdk/obj.bin",
      UploadId,
      PartNumber: 2,
      CopySource: "big/source.bin",
      CopySourceRange: `bytes=0-${b.length - 1}`,
    }),
  );
  assert.equal(p2.CopyPartResult?.ETag, `"${md5hex(b)}"`);
  const listed = await c.send(new ListPartsCommand({ Bucket: "big", Key: "sdk/obj.bin", UploadId }));
  assert.deepEqual(
    listed.Parts?.map((p) => [p.PartNumber, p.Size, p.ETag]),
    [
      [1, a.length, p1.ETag],
      [2, b.length, p2.CopyPartResult?.ETag],
      [3, tail.length, p3.ETag],
    ],
  );
  const uploads = await c.send(new ListMultipartUploadsCommand({ Bucket: "big", Prefix: "sdk/" }));
  assert.deepEqual(
    uploads.Uploads?.map((u) => [u.Key, u.UploadId]),
    [["sdk/obj.bin", UploadId]],
  );
  const done = await c.send(
    new CompleteMultipartUploadCommand({
      Bucket: "big",
      Key: "sdk/obj.bin",
      UploadId,
      MultipartUpload: {
        Parts: [
          { PartNumber: 1, ETag: p1.ETag },
          { PartNumber: 2, ETag: p2.CopyPartResult?.ETag },
          { PartNumber: 3, ETag: p3.ETag },
        ],
      },
    }),
  );
  assert.equal(done.ETag, multipartEtag([a, b, tail]));
  const head = await c.send(new HeadObjectCommand({ Bucket: "big", Key: "sdk/obj.bin" }));
  assert.equal(head.ETag, done.ETag);
  assert.equal(head.ContentType, "application/x-mpu");
  assert.deepEqual(head.Metadata, { step: "three" });
  assert.ok(Buffer.concat([a, b, tail]).equals(await bytesOf("sdk/obj.bin")));
  // GET / HEAD ?partNumber: the parts as uploaded
  const h2 = await c.send(new HeadObjectCommand({ Bucket: "big", Key: "sdk/obj.bin", PartNumber: 2 }));
  assert.equal(h2.PartsCount, 3);
  assert.equal(h2.ContentLength, b.length);
  assert.equal(h2.ETag, done.ETag);
  const g3 = await c.send(new GetObjectCommand({ Bucket: "big", Key: "sdk/obj.bin", PartNumber: 3 }));
  assert.ok(tail.equals(Buffer.from((await g3.Body?.transformToByteArray()) ?? [])));
  await assert.rejects(
    c.send(new GetObjectCommand({ Bucket: "big", Key: "sdk/obj.bin", PartNumber: 4 })),
    (err: Error) => err.name === "InvalidPart",
  );
  // a Complete repeated after it succeeded answers the same result
  const again = await c.send(
    new CompleteMultipartUploadCommand({
      Bucket: "big",
      Key: "sdk/obj.bin",
      UploadId,
      MultipartUpload: { Parts: [{ PartNumber: 1, ETag: p1.ETag }] },
    }),
  );
  assert.equal(again.ETag, done.ETag);
  // source.bin and the object's three pieces (the parts it names, as staged) are the only new blobs: the stale part 1
  // went when it was re-sent, nothing was re-encrypted into a copy
  assert.equal(await blobCount(), before + 4);
});

test("S3's errors: EntityTooSmall, InvalidPart, InvalidPartOrder, NoSuchUpload; Abort leaves nothing", async () => {
  const before = await blobCount();
  const { UploadId } = await c.send(new CreateMultipartUploadCommand({ Bucket: "big", Key: "bad.bin" }));
  const up = (n: number, data: Buffer) =>
    c.send(new UploadPartCommand({ Bucket: "big", Key: "bad.bin", UploadId, PartNumber: n, Body: data }));
  const small1 = await up(1, randomBytes(1000));
  const small2 = await up(2, randomBytes(1000));
  const complete = (parts: { PartNumber: number; ETag?: string }[]) =>
    c.send(
      new CompleteMultipartUploadCommand({
        Bucket: "big",
        Key: "bad.bin",
        UploadId,
        MultipartUpload: { Parts: parts },
      }),
    );
  const named = (name: string) => (err: Error) => err.name === name;
  await assert.rejects(
    complete([
      { PartNumber: 1, ETag: small1.ETag },
      { PartNumber: 2, ETag: small2.ETag },
    ]),
    named("EntityTooSmall"),
  );
  await assert.rejects(
    complete([
      { PartNumber: 2, ETag: small2.ETag },
      { PartNumber: 1, ETag: small1.ETag },
    ]),
    named("InvalidPartOrder"),
  );
  await assert.rejects(complete([{ PartNumber: 7, ETag: small1.ETag }]), named("InvalidPart"));
  await assert.rejects(complete([{ PartNumber: 1, ETag: '"00000000000000000000000000000000"' }]), named("InvalidPart"));
  await assert.rejects(up(0, Buffer.from("x")), named("InvalidArgument"));
  await assert.rejects(
    c.send(new UploadPartCommand({ Bucket: "big", Key: "bad.bin", UploadId: "nope", PartNumber: 1, Body: "x" })),
    named("NoSuchUpload"),
  );
  // another key with this upload id
  await assert.rejects(
    c.send(new UploadPartCommand({ Bucket: "big", Key: "other.bin", UploadId, PartNumber: 1, Body: "x" })),
    named("NoSuchUpload"),
  );
  await assert.rejects(c.send(new HeadObjectCommand({ Bucket: "big", Key: "bad.bin" })), named("NotFound"));
  await c.send(new AbortMultipartUploadCommand({ Bucket: "big", Key: "bad.bin", UploadId }));
  await assert.rejects(
    c.send(new ListPartsCommand({ Bucket: "big", Key: "bad.bin", UploadId })),
    named("NoSuchUpload"),
  );
  await assert.rejects(complete([{ PartNumber: 1, ETag: small1.ETag }]), named("NoSuchUpload"));
  assert.equal(await blobCount(), before, "aborted: no part blob left");
});

test("SSE-C: the key on Create, on every part and on Complete; another key refused; read back only with it", async () => {
  const key = randomBytes(32);
  const other = randomBytes(32);
  const ssec = (k: Buffer) => ({
    SSECustomerAlgorithm: "AES256",
    SSECustomerKey: k.toString("base64"),
    SSECustomerKeyMD5: createHash("md5").update(k).digest("base64"),
  });
  const { UploadId } = await c.send(new CreateMultipartUploadCommand({ Bucket: "big", Key: "ssec.bin", ...ssec(key) }));
  const part1 = randomBytes(5 * MiB);
  const part2 = randomBytes(12345);
  const up = (n: number, data: Buffer, extra: object) =>
    c.send(new UploadPartCommand({ Bucket: "big", Key: "ssec.bin", UploadId, PartNumber: n, Body: data, ...extra }));
  await assert.rejects(up(1, part1, {}), (err: Error & { $metadata?: { httpStatusCode?: number } }) => {
    return err.$metadata?.httpStatusCode === 400;
  });
  await assert.rejects(up(1, part1, ssec(other)), (err: Error & { $metadata?: { httpStatusCode?: number } }) => {
    return err.$metadata?.httpStatusCode === 400;
  });
  const e1 = await up(1, part1, ssec(key));
  const e2 = await up(2, part2, ssec(key));
  const parts = [
    { PartNumber: 1, ETag: e1.ETag },
    { PartNumber: 2, ETag: e2.ETag },
  ];
  await assert.rejects(
    c.send(
      new CompleteMultipartUploadCommand({
        Bucket: "big",
        Key: "ssec.bin",
        UploadId,
        MultipartUpload: { Parts: parts },
      }),
    ),
    (err: Error) => err.name === "InvalidRequest",
  );
  await c.send(
    new CompleteMultipartUploadCommand({
      Bucket: "big",
      Key: "ssec.bin",
      UploadId,
      MultipartUpload: { Parts: parts },
      ...ssec(key),
    }),
  );
  assert.ok(Buffer.concat([part1, part2]).equals(await bytesOf("ssec.bin", ssec(key))));
  await assert.rejects(bytesOf("ssec.bin"), (err: Error) => err.name === "InvalidRequest");
  await assert.rejects(bytesOf("ssec.bin", ssec(other)), (err: Error) => err.name === "InvalidRequest");
});

test("no part plaintext anywhere under the data dir while an upload is staged", async () => {
  const canary = Buffer.from(`MPU-CANARY-${randomBytes(8).toString("hex")}`);
  const { UploadId } = await c.send(new CreateMultipartUploadCommand({ Bucket: "big", Key: "staged-secret-name.bin" }));
  await c.send(
    new UploadPartCommand({
      Bucket: "big",
      Key: "staged-secret-name.bin",
      UploadId,
      PartNumber: 1,
      Body: Buffer.concat([canary, Buffer.alloc(100_000, 0x41), canary]),
    }),
  );
  for (const f of await files(s3.data)) {
    const bytes = await readFile(f);
    assert.equal(bytes.indexOf(canary), -1, `part plaintext in ${f}`);
    assert.equal(bytes.indexOf(Buffer.from("staged-secret-name")), -1, `object name in ${f}`);
  }
  await c.send(new AbortMultipartUploadCommand({ Bucket: "big", Key: "staged-secret-name.bin", UploadId }));
});

/** bob's used bytes as the store has them (atrest user list). */
async function bobUsed(): Promise<number> {
  const { stdout } = await cli(["user", "list", "--json", "--data", s3.data]);
  const bob = (JSON.parse(stdout) as { name: string; usedBytes: number }[]).find((u) => u.name === "bob");
  assert.ok(bob);
  return bob.usedBytes;
}

test("staged parts count in the quota: a part over it is QuotaExceeded, Complete hands them to the object, Abort frees them", async () => {
  const bob = s3.client(s3.users[1]);
  await bob.send(new CreateBucketCommand({ Bucket: "bobs" }));
  const before = await bobUsed();
  const { UploadId } = await bob.send(new CreateMultipartUploadCommand({ Bucket: "bobs", Key: "staged.bin" }));
  const up = (n: number, data: Buffer, id = UploadId, key = "staged.bin") =>
    bob.send(new UploadPartCommand({ Bucket: "bobs", Key: key, UploadId: id, PartNumber: n, Body: data }));
  const p1 = randomBytes(5 * MiB);
  const e1 = await up(1, p1);
  assert.equal(await bobUsed(), before + 5 * MiB, "a staged part is charged to its owner");
  // 5 + 4 MiB staged would pass the 8 MiB quota: refused with S3's error, nothing kept
  await assert.rejects(up(2, randomBytes(4 * MiB)), (err: Error) => err.name === "QuotaExceeded");
  let listed = await bob.send(new ListPartsCommand({ Bucket: "bobs", Key: "staged.bin", UploadId }));
  assert.equal(listed.Parts?.length, 1);
  assert.equal(await bobUsed(), before + 5 * MiB);
  const p2 = randomBytes(2 * MiB);
  await up(2, randomBytes(2 * MiB));
  // sent again: replaces the earlier part 2, so it fits although 5 + 2 + 2 MiB would not
  const e2 = await up(2, p2);
  assert.equal(await bobUsed(), before + 7 * MiB);
  // a second upload's 2 MiB part would pass the quota too, until the first upload's parts become the object
  const other = await bob.send(new CreateMultipartUploadCommand({ Bucket: "bobs", Key: "other.bin" }));
  await assert.rejects(
    up(1, randomBytes(2 * MiB), other.UploadId, "other.bin"),
    (err: Error) => err.name === "QuotaExceeded",
  );
  // 7 MiB staged + the 7 MiB object would be 14 MiB: the commit takes the parts' bytes over instead
  await bob.send(
    new CompleteMultipartUploadCommand({
      Bucket: "bobs",
      Key: "staged.bin",
      UploadId,
      MultipartUpload: {
        Parts: [
          { PartNumber: 1, ETag: e1.ETag },
          { PartNumber: 2, ETag: e2.ETag },
        ],
      },
    }),
  );
  assert.equal(await bobUsed(), before + 7 * MiB, "the object, charged once");
  const got = await bob.send(new GetObjectCommand({ Bucket: "bobs", Key: "staged.bin" }));
  assert.ok(Buffer.concat([p1, p2]).equals(Buffer.from((await got.Body?.transformToByteArray()) ?? [])));
  // Abort gives a staged part's bytes back
  await up(1, randomBytes(MiB), other.UploadId, "other.bin");
  assert.equal(await bobUsed(), before + 8 * MiB);
  listed = await bob.send(new ListPartsCommand({ Bucket: "bobs", Key: "other.bin", UploadId: other.UploadId }));
  assert.equal(listed.Parts?.length, 1);
  // alice does not see bob's upload, nor can she touch it: bob's bucket is not hers (the global namespace: 403)
  await assert.rejects(
    c.send(new ListPartsCommand({ Bucket: "bobs", Key: "other.bin", UploadId: other.UploadId })),
    (err: Error) => err.name === "AccessDenied",
  );
  await bob.send(new AbortMultipartUploadCommand({ Bucket: "bobs", Key: "other.bin", UploadId: other.UploadId }));
  assert.equal(await bobUsed(), before + 7 * MiB);
  bob.destroy();
});

test("the quota is checked at Complete, in the commit: lowered meanwhile, S3's error, no object, the upload stays", async () => {
  const bob = s3.client(s3.users[1]);
  const before = await bobUsed();
  const { UploadId } = await bob.send(new CreateMultipartUploadCommand({ Bucket: "bobs", Key: "too-big.bin" }));
  const e1 = await bob.send(
    new UploadPartCommand({ Bucket: "bobs", Key: "too-big.bin", UploadId, PartNumber: 1, Body: randomBytes(MiB) }),
  );
  // the quota lowered below what bob holds with the staged part: the object (a new key) no longer fits
  const lowered = before + MiB / 2;
  await cli(["user", "set", "bob", "--quota-bytes", String(lowered), "--data", s3.data]);
  const complete = () =>
    bob.send(
      new CompleteMultipartUploadCommand({
        Bucket: "bobs",
        Key: "too-big.bin",
        UploadId,
        MultipartUpload: { Parts: [{ PartNumber: 1, ETag: e1.ETag }] },
      }),
    );
  await assert.rejects(complete(), (err: Error) => err.name === "QuotaExceeded");
  await assert.rejects(
    bob.send(new HeadObjectCommand({ Bucket: "bobs", Key: "too-big.bin" })),
    (err: Error) => err.name === "NotFound",
  );
  const listed = await bob.send(new ListPartsCommand({ Bucket: "bobs", Key: "too-big.bin", UploadId }));
  assert.equal(listed.Parts?.length, 1, "a failed Complete keeps the upload");
  assert.equal(await bobUsed(), before + MiB, "the staged part still charged, once");
  await cli(["user", "set", "bob", "--quota-bytes", String(8 * MiB), "--data", s3.data]);
  await complete();
  assert.equal(await bobUsed(), before + MiB);
  bob.destroy();
});

test("audit: Create, every part, Abort and the Complete's upload of the object", async () => {
  const { stdout } = await cli(["audit", "tail", "-n", "2000", "--format", "json", "--data", s3.data]);
  const records = stdout
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));
  const on = (path: string) => records.filter((e) => e.path === path && e.protocol === "s3");
  const obj = on("/big/sdk/obj.bin");
  assert.ok(obj.some((e) => e.action === "upload" && e.detail === "multipart upload created"));
  assert.ok(obj.some((e) => e.action === "upload" && e.detail === "multipart part 3" && e.size === 1000));
  const done = obj.find((e) => e.action === "upload" && /^multipart 3 parts/.test(e.detail ?? ""));
  assert.equal(done?.outcome, "success");
  assert.equal(done?.size, 10 * MiB + 7 + 1000);
  assert.ok(on("/big/bad.bin").some((e) => e.action === "delete" && e.detail === "multipart upload aborted"));
  const quota = records.find((e) => e.path === "/bobs/too-big.bin" && e.action === "upload" && e.outcome === "failure");
  assert.equal(quota?.reason, "QUOTA_EXCEEDED");
});
