// Bucket and object ACLs with @aws-sdk/client-s3 and awscli: every bucket and object is private to its owner, so
// GetBucketAcl / GetObjectAcl answer the owner's FULL_CONTROL; PutBucketAcl / PutObjectAcl take the private ACL
// (canned or as a policy) and refuse any other grant with 501 rather than dropping it.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  CreateBucketCommand,
  GetBucketAclCommand,
  GetObjectAclCommand,
  PutBucketAclCommand,
  PutObjectAclCommand,
  PutObjectCommand,
} from "@aws-sdk/client-s3";
import { removeDir } from "../../helpers/atrest.ts";
import { type S3Server, startS3 } from "../../helpers/s3.ts";

let s3: S3Server;

before(async () => {
  s3 = await startS3("atrest-s3-acl-");
  await s3.client().send(new CreateBucketCommand({ Bucket: "acls" }));
  await s3.client().send(new PutObjectCommand({ Bucket: "acls", Key: "a/b.txt", Body: "b" }));
});

after(async () => {
  await s3?.server.stop();
  if (s3) await removeDir(s3.dir);
});

test("GetBucketAcl and GetObjectAcl answer the owner's FULL_CONTROL", async () => {
  const c = s3.client();
  for (const acl of [
    await c.send(new GetBucketAclCommand({ Bucket: "acls" })),
    await c.send(new GetObjectAclCommand({ Bucket: "acls", Key: "a/b.txt" })),
  ]) {
    assert.equal(acl.Owner?.ID, "alice");
    assert.deepEqual(
      acl.Grants?.map((g) => [g.Grantee?.Type, g.Grantee?.ID, g.Permission]),
      [["CanonicalUser", "alice", "FULL_CONTROL"]],
    );
  }
  await assert.rejects(c.send(new GetObjectAclCommand({ Bucket: "acls", Key: "none" })), /NoSuchKey|does not exist/);
  const r = await s3.aws(["s3api", "get-object-acl", "--bucket", "acls", "--key", "a/b.txt"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).Grants[0].Permission, "FULL_CONTROL");
});

test("the private ACL can be set, canned or as the owner-only policy; a public one is refused with 501", async () => {
  const c = s3.client();
  await c.send(new PutBucketAclCommand({ Bucket: "acls", ACL: "private" }));
  await c.send(new PutObjectAclCommand({ Bucket: "acls", Key: "a/b.txt", ACL: "private" }));
  const policy = await c.send(new GetObjectAclCommand({ Bucket: "acls", Key: "a/b.txt" }));
  await c.send(
    new PutObjectAclCommand({
      Bucket: "acls",
      Key: "a/b.txt",
      AccessControlPolicy: { Owner: policy.Owner, Grants: policy.Grants },
    }),
  );
  const notImplemented = (e: { $metadata?: { httpStatusCode?: number } }) => e.$metadata?.httpStatusCode === 501;
  await assert.rejects(c.send(new PutBucketAclCommand({ Bucket: "acls", ACL: "public-read" })), notImplemented);
  await assert.rejects(
    c.send(new PutObjectAclCommand({ Bucket: "acls", Key: "a/b.txt", ACL: "public-read-write" })),
    notImplemented,
  );
  await assert.rejects(
    c.send(
      new PutObjectAclCommand({
        Bucket: "acls",
        Key: "a/b.txt",
        AccessControlPolicy: {
          Owner: policy.Owner,
          Grants: [
            { Grantee: { Type: "Group", URI: "http://acs.amazonaws.com/groups/global/AllUsers" }, Permission: "READ" },
          ],
        },
      }),
    ),
    notImplemented,
  );
  const r = await s3.aws(["s3api", "put-bucket-acl", "--bucket", "acls", "--grant-read", "id=bob"]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /NotImplemented/);
});
