// A copy source is read as a GET of it would be (docs/s3.md "CopyObject"): CopyObject and UploadPartCopy need
// s3:GetObject (s3:GetObjectVersion for `?versionId=`) on the source under its bucket's policy and ACLs, the owner's
// requests included, and the destination's s3:PutObject. Refused copies answer 403 AccessDenied and write nothing;
// a copy from another user's bucket that its ACL or policy lets the requester read works (with @aws-sdk/client-s3
// and awscli).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  CopyObjectCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListPartsCommand,
  PutBucketAclCommand,
  PutBucketPolicyCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  UploadPartCopyCommand,
} from "@aws-sdk/client-s3";
import { removeDir } from "../../helpers/atrest.ts";
import { type S3Server, startS3 } from "../../helpers/s3.ts";

let s3: S3Server;
const denied = (e: { $metadata?: { httpStatusCode?: number }; name?: string }) =>
  e.$metadata?.httpStatusCode === 403 && e.name === "AccessDenied";
const policy = (statements: object[]) => JSON.stringify({ Version: "2012-10-17", Statement: statements });

before(async () => {
  s3 = await startS3("atrest-s3-copy-access-", ["alice", "bob"]);
});

after(async () => {
  await s3?.server.stop();
  if (s3) await removeDir(s3.dir);
});

/** The object is not there (404 to its bucket's owner). */
async function absent(bucket: string, key: string, as = s3.users[0]): Promise<void> {
  await assert.rejects(
    s3.client(as).send(new HeadObjectCommand({ Bucket: bucket, Key: key })),
    (e: { $metadata?: { httpStatusCode?: number } }) => e.$metadata?.httpStatusCode === 404,
  );
}

test("a Deny on the source refuses CopyObject and UploadPartCopy where the ACLs would let them read it", async () => {
  const [alice, bob] = s3.users;
  const a = s3.client(alice);
  const b = s3.client(bob);
  // bob may write into alice's bucket and read her object by its ACL; her policy denies him that object
  await a.send(new CreateBucketCommand({ Bucket: "shared" }));
  await a.send(new PutBucketAclCommand({ Bucket: "shared", GrantWrite: 'id="bob"' }));
  await a.send(new PutObjectCommand({ Bucket: "shared", Key: "secret", Body: "s".repeat(100), GrantRead: 'id="bob"' }));
  await a.send(new PutObjectCommand({ Bucket: "shared", Key: "open", Body: "o", GrantRead: 'id="bob"' }));
  await a.send(
    new PutBucketPolicyCommand({
      Bucket: "shared",
      Policy: policy([
        { Effect: "Deny", Principal: { AWS: "bob" }, Action: "s3:GetObject", Resource: "arn:aws:s3:::shared/secret" },
      ]),
    }),
  );
  await assert.rejects(b.send(new GetObjectCommand({ Bucket: "shared", Key: "secret" })), denied);
  await assert.rejects(
    b.send(new CopyObjectCommand({ Bucket: "shared", Key: "copy", CopySource: "shared/secret" })),
    denied,
  );
  await absent("shared", "copy");
  // awscli shows the same refusal
  const r = await s3.aws(
    ["s3api", "copy-object", "--bucket", "shared", "--key", "copy2", "--copy-source", "shared/secret"],
    bob,
  );
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /AccessDenied/);
  await absent("shared", "copy2");
  // UploadPartCopy: refused, the upload holds no part
  const { UploadId } = await b.send(new CreateMultipartUploadCommand({ Bucket: "shared", Key: "mp" }));
  await assert.rejects(
    b.send(
      new UploadPartCopyCommand({ Bucket: "shared", Key: "mp", UploadId, PartNumber: 1, CopySource: "shared/secret" }),
    ),
    denied,
  );
  const parts = await b.send(new ListPartsCommand({ Bucket: "shared", Key: "mp", UploadId }));
  assert.equal(parts.Parts?.length ?? 0, 0);
  // an object the Deny does not name is copied as before
  await b.send(new CopyObjectCommand({ Bucket: "shared", Key: "open-copy", CopySource: "shared/open" }));
  const got = await a.send(new GetObjectCommand({ Bucket: "shared", Key: "open-copy" }));
  assert.equal(await got.Body?.transformToString(), "o");
});

test("the owner's own Deny applies to a copy source as to a GET", async () => {
  const a = s3.client();
  await a.send(new CreateBucketCommand({ Bucket: "locked" }));
  await a.send(new CreateBucketCommand({ Bucket: "elsewhere" }));
  await a.send(new PutObjectCommand({ Bucket: "locked", Key: "vault/x", Body: "x" }));
  await a.send(
    new PutBucketPolicyCommand({
      Bucket: "locked",
      Policy: policy([
        { Effect: "Deny", Principal: "*", Action: "s3:GetObject", Resource: "arn:aws:s3:::locked/vault/*" },
      ]),
    }),
  );
  await assert.rejects(a.send(new GetObjectCommand({ Bucket: "locked", Key: "vault/x" })), denied);
  await assert.rejects(
    a.send(new CopyObjectCommand({ Bucket: "elsewhere", Key: "x", CopySource: "locked/vault/x" })),
    denied,
  );
  await absent("elsewhere", "x");
  await assert.rejects(
    a.send(new CopyObjectCommand({ Bucket: "locked", Key: "out", CopySource: "locked/vault/x" })),
    denied,
  );
  await absent("locked", "out");
});

test("a copy from another user's bucket into one's own: allowed by the object's ACL or an Allow, versions need s3:GetObjectVersion", async () => {
  const [alice, bob] = s3.users;
  const a = s3.client(alice);
  const b = s3.client(bob);
  await b.send(new CreateBucketCommand({ Bucket: "bobs" }));
  await a.send(new CreateBucketCommand({ Bucket: "alices" }));
  await a.send(
    new PutObjectCommand({ Bucket: "alices", Key: "granted", Body: "g".repeat(6 << 20), GrantRead: 'id="bob"' }),
  );
  await a.send(new PutObjectCommand({ Bucket: "alices", Key: "private", Body: "p" }));
  // no grant: refused, nothing written
  await assert.rejects(
    b.send(new CopyObjectCommand({ Bucket: "bobs", Key: "p", CopySource: "alices/private" })),
    denied,
  );
  await absent("bobs", "p", bob);
  // a missing key in a bucket bob may not list: 403, not 404
  await assert.rejects(b.send(new CopyObjectCommand({ Bucket: "bobs", Key: "n", CopySource: "alices/none" })), denied);
  // the object's READ grant: copied, and as an UploadPartCopy source
  await b.send(new CopyObjectCommand({ Bucket: "bobs", Key: "g", CopySource: "alices/granted" }));
  const got = await b.send(new GetObjectCommand({ Bucket: "bobs", Key: "g" }));
  assert.equal((await got.Body?.transformToByteArray())?.length, 6 << 20);
  const { UploadId } = await b.send(new CreateMultipartUploadCommand({ Bucket: "bobs", Key: "mp" }));
  const part = await b.send(
    new UploadPartCopyCommand({
      Bucket: "bobs",
      Key: "mp",
      UploadId,
      PartNumber: 1,
      CopySource: "alices/granted",
      CopySourceRange: "bytes=0-99",
    }),
  );
  assert.ok(part.CopyPartResult?.ETag);
  // a versioned bucket whose policy lets bob GetObject (not GetObjectVersion)
  await a.send(new CreateBucketCommand({ Bucket: "alicever" }));
  await a.send(new PutBucketVersioningCommand({ Bucket: "alicever", VersioningConfiguration: { Status: "Enabled" } }));
  const v1 = await a.send(new PutObjectCommand({ Bucket: "alicever", Key: "k", Body: "one" }));
  await a.send(new PutObjectCommand({ Bucket: "alicever", Key: "k", Body: "two" }));
  await a.send(
    new PutBucketPolicyCommand({
      Bucket: "alicever",
      Policy: policy([
        { Effect: "Allow", Principal: { AWS: ["bob"] }, Action: "s3:GetObject", Resource: "arn:aws:s3:::alicever/*" },
      ]),
    }),
  );
  await b.send(new CopyObjectCommand({ Bucket: "bobs", Key: "current", CopySource: "alicever/k" }));
  const cur = await b.send(new GetObjectCommand({ Bucket: "bobs", Key: "current" }));
  assert.equal(await cur.Body?.transformToString(), "two");
  await assert.rejects(
    b.send(new CopyObjectCommand({ Bucket: "bobs", Key: "old", CopySource: `alicever/k?versionId=${v1.VersionId}` })),
    denied,
  );
  await absent("bobs", "old", bob);
  await assert.rejects(b.send(new GetObjectCommand({ Bucket: "alicever", Key: "k", VersionId: v1.VersionId })), denied);
  // with s3:GetObjectVersion the version is copied
  await a.send(
    new PutBucketPolicyCommand({
      Bucket: "alicever",
      Policy: policy([
        {
          Effect: "Allow",
          Principal: { AWS: ["bob"] },
          Action: ["s3:GetObject", "s3:GetObjectVersion"],
          Resource: "arn:aws:s3:::alicever/*",
        },
      ]),
    }),
  );
  await b.send(
    new CopyObjectCommand({ Bucket: "bobs", Key: "old", CopySource: `alicever/k?versionId=${v1.VersionId}` }),
  );
  const old = await b.send(new GetObjectCommand({ Bucket: "bobs", Key: "old" }));
  assert.equal(await old.Body?.transformToString(), "one");
});
