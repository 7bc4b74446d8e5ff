// Conditional writes (issue 13): PutObject and CompleteMultipartUpload with If-None-Match / If-Match, from awscli and
// @aws-sdk/client-s3 — 412 PreconditionFailed when the key exists (or has another ETag), 404 NoSuchKey for If-Match on
// a missing key, the key unchanged after a refusal; and the check is atomic with the commit: of two conditional PUTs
// racing on one key (both past the check at open), exactly one wins.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { Readable } from "node:stream";
import { after, before, test } from "node:test";
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  PutObjectCommand,
  type S3Client,
  S3ServiceException,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { removeDir } from "../../helpers/atrest.ts";
import { type S3Server, startS3 } from "../../helpers/s3.ts";

let s3: S3Server;
let c: S3Client;

before(async () => {
  s3 = await startS3("atrest-s3-cond-", ["alice"]);
  c = s3.client();
  const r = await s3.aws(["s3", "mb", "s3://cond"]);
  assert.equal(r.code, 0, r.stderr);
});

after(async () => {
  c?.destroy();
  await s3?.server.stop();
  if (s3) await removeDir(s3.dir);
});

async function bytesOf(key: string): Promise<Buffer> {
  const got = await c.send(new GetObjectCommand({ Bucket: "cond", Key: key }));
  return Buffer.from((await got.Body?.transformToByteArray()) ?? []);
}

/** The S3 error code and status a rejected SDK call carries. */
function s3Error(err: unknown): [number | undefined, string] {
  assert.ok(err instanceof S3ServiceException, String(err));
  return [err.$metadata.httpStatusCode, err.name];
}

async function refused(p: Promise<unknown>): Promise<[number | undefined, string]> {
  try {
    await p;
  } catch (err) {
    return s3Error(err);
  }
  assert.fail("the request succeeded");
}

test("awscli put-object --if-none-match '*': creates the key once, then PreconditionFailed and the key unchanged", async () => {
  const file = `${s3.dir}/first.txt`;
  await writeFile(file, "first");
  const put = (body: string) =>
    s3.aws(["s3api", "put-object", "--bucket", "cond", "--key", "once.txt", "--body", body, "--if-none-match", "*"]);
  const ok = await put(file);
  assert.equal(ok.code, 0, ok.stderr);
  await writeFile(`${s3.dir}/second.txt`, "second");
  const again = await put(`${s3.dir}/second.txt`);
  assert.notEqual(again.code, 0);
  assert.match(again.stderr, /PreconditionFailed/);
  assert.equal((await bytesOf("once.txt")).toString(), "first");
});

test("SDK If-Match / If-None-Match on PutObject: the ETag decides, a missing key is NoSuchKey", async () => {
  const first = await c.send(new PutObjectCommand({ Bucket: "cond", Key: "m.txt", Body: "one", IfNoneMatch: "*" }));
  assert.ok(first.ETag);
  assert.deepEqual(
    await refused(c.send(new PutObjectCommand({ Bucket: "cond", Key: "m.txt", Body: "x", IfNoneMatch: "*" }))),
    [412, "PreconditionFailed"],
  );
  assert.deepEqual(
    await refused(c.send(new PutObjectCommand({ Bucket: "cond", Key: "m.txt", Body: "x", IfMatch: '"0123"' }))),
    [412, "PreconditionFailed"],
  );
  assert.equal((await bytesOf("m.txt")).toString(), "one");
  const second = await c.send(new PutObjectCommand({ Bucket: "cond", Key: "m.txt", Body: "two", IfMatch: first.ETag }));
  assert.equal(second.ETag, `"${createHash("md5").update("two").digest("hex")}"`);
  // the old tag no longer holds
  assert.deepEqual(
    await refused(c.send(new PutObjectCommand({ Bucket: "cond", Key: "m.txt", Body: "x", IfMatch: first.ETag }))),
    [412, "PreconditionFailed"],
  );
  await c.send(new PutObjectCommand({ Bucket: "cond", Key: "m.txt", Body: "three", IfMatch: "*" }));
  assert.equal((await bytesOf("m.txt")).toString(), "three");
  assert.deepEqual(
    await refused(c.send(new PutObjectCommand({ Bucket: "cond", Key: "nothing.txt", Body: "x", IfMatch: "*" }))),
    [404, "NoSuchKey"],
  );
  assert.deepEqual(await refused(c.send(new GetObjectCommand({ Bucket: "cond", Key: "nothing.txt" }))), [
    404,
    "NoSuchKey",
  ]);
});

test("SDK CompleteMultipartUpload with If-None-Match '*': PreconditionFailed once the key exists, the upload kept", async () => {
  const complete = async (key: string) => {
    const { UploadId } = await c.send(new CreateMultipartUploadCommand({ Bucket: "cond", Key: key }));
    const part = await c.send(
      new UploadPartCommand({ Bucket: "cond", Key: key, UploadId, PartNumber: 1, Body: `body of ${UploadId}` }),
    );
    const done = () =>
      c.send(
        new CompleteMultipartUploadCommand({
          Bucket: "cond",
          Key: key,
          UploadId,
          IfNoneMatch: "*",
          MultipartUpload: { Parts: [{ PartNumber: 1, ETag: part.ETag }] },
        }),
      );
    return { UploadId, done };
  };
  const a = await complete("mp.bin");
  const b = await complete("mp.bin");
  await a.done();
  assert.deepEqual(await refused(b.done()), [412, "PreconditionFailed"]);
  assert.equal((await bytesOf("mp.bin")).toString(), `body of ${a.UploadId}`);
});

/**
 * A PutObject whose body stops one byte short until `release()`: `almost` resolves once the SDK has taken all but
 * that byte. The body is larger than what loopback socket buffers hold, so by then the server has read most of it,
 * which it does only after opening the write (and checking the precondition there).
 */
function heldPut(key: string, fill: number, size: number, condition: { IfNoneMatch?: string; IfMatch?: string }) {
  const data = Buffer.alloc(size, fill);
  let at = 0;
  let releaseFn: () => void = () => undefined;
  const released = new Promise<void>((r) => {
    releaseFn = r;
  });
  let almostFn: () => void = () => undefined;
  const almost = new Promise<void>((r) => {
    almostFn = r;
  });
  const body = new Readable({
    read() {
      if (at < size - 1) {
        const n = Math.min(256 * 1024, size - 1 - at);
        this.push(data.subarray(at, at + n));
        at += n;
        if (at === size - 1) almostFn();
        return;
      }
      if (at === size - 1) {
        at = size;
        void released.then(() => {
          this.push(data.subarray(size - 1));
          this.push(null);
        });
      }
    },
  });
  const result = c.send(
    new PutObjectCommand({ Bucket: "cond", Key: key, Body: body, ContentLength: size, ...condition }),
  );
  result.catch(() => undefined);
  return { data, almost, release: releaseFn, result };
}

/** Two held PUTs of one key, both past the open (and its check) before either may finish: who wins. */
async function race(key: string, condition: { IfNoneMatch?: string; IfMatch?: string }) {
  const size = 32 * 1024 * 1024;
  const a = heldPut(key, 0x61, size, condition);
  const b = heldPut(key, 0x62, size, condition);
  await Promise.all([a.almost, b.almost]);
  a.release();
  b.release();
  const outcomes = await Promise.allSettled([a.result, b.result]);
  const won = outcomes.flatMap((o, i) => (o.status === "fulfilled" ? [i] : []));
  assert.equal(won.length, 1, `exactly one PUT wins: ${JSON.stringify(outcomes.map((o) => o.status))}`);
  const lost = outcomes.find((o) => o.status === "rejected") as PromiseRejectedResult;
  assert.deepEqual(s3Error(lost.reason), [412, "PreconditionFailed"]);
  const winner = won[0] === 0 ? a : b;
  const got = await bytesOf(key);
  assert.equal(createHash("sha256").update(got).digest("hex"), createHash("sha256").update(winner.data).digest("hex"));
}

test("two concurrent PUTs with If-None-Match '*' on a new key: exactly one creates it, the other is 412", async () => {
  await race("race-new.bin", { IfNoneMatch: "*" });
});

test("two concurrent PUTs with If-Match on the same ETag: exactly one replaces it, the other is 412", async () => {
  const first = await c.send(new PutObjectCommand({ Bucket: "cond", Key: "race-match.bin", Body: "base" }));
  assert.ok(first.ETag);
  await race("race-match.bin", { IfMatch: first.ETag });
});
