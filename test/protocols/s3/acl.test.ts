// Bucket and object ACLs with @aws-sdk/client-s3, awscli and curl (docs/s3.md "ACLs and anonymous access"). By
// default (Block Public Access) a public ACL is refused with 403 AccessDenied wherever it is named (Put*Acl,
// x-amz-acl on PutObject and CreateBucket), never silently private; grants to named users work. With
// --s3-public-access allow, canned ACLs let other users and unsigned requests in for what they grant, and no more;
// anonymous requests are audited with job user `anonymous` and the bucket's owner as effective user.
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import {
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetBucketAclCommand,
  GetObjectAclCommand,
  GetObjectCommand,
  HeadBucketCommand,
  ListObjectsV2Command,
  PutBucketAclCommand,
  PutObjectAclCommand,
  PutObjectCommand,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { cli, removeDir } from "../../helpers/atrest.ts";
import { type S3Server, startS3 } from "../../helpers/s3.ts";

let blocked: S3Server;
let open: S3Server;
const status = (code: number, name?: string) => (e: { $metadata?: { httpStatusCode?: number }; name?: string }) =>
  e.$metadata?.httpStatusCode === code && (name === undefined || e.name === name);

before(async () => {
  blocked = await startS3("atrest-s3-acl-", ["alice", "bob"]);
  await blocked.client().send(new CreateBucketCommand({ Bucket: "acls" }));
  await blocked.client().send(new PutObjectCommand({ Bucket: "acls", Key: "a/b.txt", Body: "b" }));
  open = await startS3("atrest-s3-acl-open-", ["alice", "bob"], { serverArgs: ["--s3-public-access", "allow"] });
});

after(async () => {
  for (const s of [blocked, open]) {
    await s?.server.stop();
    if (s) await removeDir(s.dir);
  }
});

/** An unsigned request (curl, no credentials): status and body. */
async function anonymous(s3: S3Server, method: string, path: string, body?: string) {
  const r = await fetch(`${s3.endpoint}${path}`, { method, body });
  return { status: r.status, body: await r.text() };
}

test("GetBucketAcl and GetObjectAcl answer the owner's FULL_CONTROL by default", async () => {
  const c = blocked.client();
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
  const r = await blocked.aws(["s3api", "get-object-acl", "--bucket", "acls", "--key", "a/b.txt"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).Grants[0].Permission, "FULL_CONTROL");
});

test("blocked public access: a public ACL is 403 AccessDenied wherever it is named, never silently private", async () => {
  const c = blocked.client();
  await c.send(new PutBucketAclCommand({ Bucket: "acls", ACL: "private" }));
  await c.send(new PutObjectAclCommand({ Bucket: "acls", Key: "a/b.txt", ACL: "private" }));
  const denied = status(403, "AccessDenied");
  await assert.rejects(c.send(new PutBucketAclCommand({ Bucket: "acls", ACL: "public-read" })), denied);
  await assert.rejects(
    c.send(new PutObjectAclCommand({ Bucket: "acls", Key: "a/b.txt", ACL: "authenticated-read" })),
    denied,
  );
  await assert.rejects(
    c.send(new PutObjectCommand({ Bucket: "acls", Key: "pub.txt", Body: "x", ACL: "public-read" })),
    denied,
  );
  await assert.rejects(c.send(new CreateBucketCommand({ Bucket: "pubs", ACL: "public-read-write" })), denied);
  // nothing was made
  await assert.rejects(c.send(new GetObjectCommand({ Bucket: "acls", Key: "pub.txt" })), status(404));
  await assert.rejects(c.send(new HeadBucketCommand({ Bucket: "pubs" })), status(404));
  const policy = await c.send(new GetObjectAclCommand({ Bucket: "acls", Key: "a/b.txt" }));
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
    denied,
  );
  // unsigned requests get nothing
  assert.equal((await anonymous(blocked, "GET", "/acls/a/b.txt")).status, 403);
  // a grant to a named user is not public: bob may read the object, and only that
  const r = await blocked.aws([
    "s3api",
    "put-object-acl",
    "--bucket",
    "acls",
    "--key",
    "a/b.txt",
    "--grant-read",
    "id=bob",
  ]);
  assert.equal(r.code, 0, r.stderr);
  const bob = blocked.client(blocked.users[1]);
  const got = await bob.send(new GetObjectCommand({ Bucket: "acls", Key: "a/b.txt" }));
  assert.equal(await got.Body?.transformToString(), "b");
  await assert.rejects(bob.send(new ListObjectsV2Command({ Bucket: "acls" })), denied);
  await assert.rejects(bob.send(new PutObjectCommand({ Bucket: "acls", Key: "a/b.txt", Body: "no" })), denied);
  const grants = (await c.send(new GetObjectAclCommand({ Bucket: "acls", Key: "a/b.txt" }))).Grants;
  assert.deepEqual(
    grants?.map((g) => [g.Grantee?.ID, g.Permission]),
    [
      ["alice", "FULL_CONTROL"],
      ["bob", "READ"],
    ],
  );
});

test("allowed public access: canned ACLs let other users and anonymous requests in for what they grant", async () => {
  const [alice, bob] = open.users;
  const a = open.client(alice);
  const b = open.client(bob);
  await a.send(new CreateBucketCommand({ Bucket: "shelf", ACL: "public-read" }));
  await a.send(new PutObjectCommand({ Bucket: "shelf", Key: "open.txt", Body: "for all", ACL: "public-read" }));
  await a.send(new PutObjectCommand({ Bucket: "shelf", Key: "closed.txt", Body: "mine" }));
  await a.send(
    new PutObjectCommand({ Bucket: "shelf", Key: "members.txt", Body: "signed", ACL: "authenticated-read" }),
  );
  const acl = await a.send(new GetBucketAclCommand({ Bucket: "shelf" }));
  assert.deepEqual(
    acl.Grants?.map((g) => [g.Grantee?.Type, g.Grantee?.ID ?? g.Grantee?.URI, g.Permission]),
    [
      ["CanonicalUser", "alice", "FULL_CONTROL"],
      ["Group", "http://acs.amazonaws.com/groups/global/AllUsers", "READ"],
    ],
  );
  // anonymous: the public-read object and the listing, nothing else
  assert.deepEqual(await anonymous(open, "GET", "/shelf/open.txt"), { status: 200, body: "for all" });
  assert.equal((await anonymous(open, "GET", "/shelf/closed.txt")).status, 403);
  assert.equal((await anonymous(open, "GET", "/shelf/members.txt")).status, 403);
  const listing = await anonymous(open, "GET", "/shelf?list-type=2");
  assert.equal(listing.status, 200);
  assert.match(listing.body, /<Key>closed\.txt<\/Key>/);
  assert.equal((await anonymous(open, "PUT", "/shelf/new.txt", "x")).status, 403);
  assert.equal((await anonymous(open, "GET", "/shelf?acl")).status, 403);
  assert.equal((await anonymous(open, "DELETE", "/shelf/open.txt")).status, 403);
  // a key that is not there: 404 to whoever may list the bucket
  assert.equal((await anonymous(open, "GET", "/shelf/none.txt")).status, 404);
  assert.equal((await anonymous(open, "GET", "/")).status, 403, "no ListBuckets without a user");
  // another signed user: authenticated-read too
  const got = await b.send(new GetObjectCommand({ Bucket: "shelf", Key: "members.txt" }));
  assert.equal(await got.Body?.transformToString(), "signed");
  await assert.rejects(b.send(new GetObjectCommand({ Bucket: "shelf", Key: "closed.txt" })), status(403));
  // public-read-write: anyone writes; the object is the bucket owner's, private unless the writer names an ACL
  await a.send(new PutBucketAclCommand({ Bucket: "shelf", ACL: "public-read-write" }));
  assert.equal((await anonymous(open, "PUT", "/shelf/dropped.txt", "from nobody")).status, 200);
  const dropped = await a.send(new GetObjectCommand({ Bucket: "shelf", Key: "dropped.txt" }));
  assert.equal(await dropped.Body?.transformToString(), "from nobody");
  assert.equal((await anonymous(open, "GET", "/shelf/dropped.txt")).status, 403);
  // private again: the others are out
  await a.send(new PutBucketAclCommand({ Bucket: "shelf", ACL: "private" }));
  assert.equal((await anonymous(open, "GET", "/shelf?list-type=2")).status, 403);
  await assert.rejects(b.send(new ListObjectsV2Command({ Bucket: "shelf" })), status(403));
  // an object ACL does not outlive its version: overwritten without one, it is private
  await a.send(new PutObjectCommand({ Bucket: "shelf", Key: "open.txt", Body: "v2" }));
  assert.equal((await anonymous(open, "GET", "/shelf/open.txt")).status, 403);
});

test("CreateMultipartUpload's ACL is the completed object's, as a PutObject's; public ones refused while blocked", async () => {
  // blocked: a public canned ACL is refused at Create (no upload), a grant to a named user is kept
  const c = blocked.client();
  await assert.rejects(
    c.send(new CreateMultipartUploadCommand({ Bucket: "acls", Key: "mp-pub", ACL: "public-read" })),
    status(403, "AccessDenied"),
  );
  const cli = await blocked.aws([
    "s3api",
    "create-multipart-upload",
    "--bucket",
    "acls",
    "--key",
    "mp-bob",
    "--grant-read",
    "id=bob",
  ]);
  assert.equal(cli.code, 0, cli.stderr);
  const UploadId = JSON.parse(cli.stdout).UploadId as string;
  const part = await c.send(
    new UploadPartCommand({ Bucket: "acls", Key: "mp-bob", UploadId, PartNumber: 1, Body: "for bob" }),
  );
  const bob = blocked.client(blocked.users[1]);
  // nothing to read before the Complete
  await assert.rejects(bob.send(new GetObjectCommand({ Bucket: "acls", Key: "mp-bob" })), status(403));
  await c.send(
    new CompleteMultipartUploadCommand({
      Bucket: "acls",
      Key: "mp-bob",
      UploadId,
      MultipartUpload: { Parts: [{ PartNumber: 1, ETag: part.ETag }] },
    }),
  );
  const got = await bob.send(new GetObjectCommand({ Bucket: "acls", Key: "mp-bob" }));
  assert.equal(await got.Body?.transformToString(), "for bob");
  assert.deepEqual(
    (await c.send(new GetObjectAclCommand({ Bucket: "acls", Key: "mp-bob" }))).Grants?.map((g) => [
      g.Grantee?.ID,
      g.Permission,
    ]),
    [
      ["alice", "FULL_CONTROL"],
      ["bob", "READ"],
    ],
  );
  // allowed: public-read at Create makes the completed object readable by anyone (awscli's multipart cp --acl)
  const a = open.client();
  await a.send(new CreateBucketCommand({ Bucket: "mpacl" }));
  const up = await a.send(new CreateMultipartUploadCommand({ Bucket: "mpacl", Key: "pub", ACL: "public-read" }));
  const big = Buffer.alloc(5 * 1024 * 1024, 7);
  const p1 = await a.send(
    new UploadPartCommand({ Bucket: "mpacl", Key: "pub", UploadId: up.UploadId, PartNumber: 1, Body: big }),
  );
  const p2 = await a.send(
    new UploadPartCommand({ Bucket: "mpacl", Key: "pub", UploadId: up.UploadId, PartNumber: 2, Body: "tail" }),
  );
  assert.equal((await anonymous(open, "GET", "/mpacl/pub")).status, 403, "no object before the Complete");
  await a.send(
    new CompleteMultipartUploadCommand({
      Bucket: "mpacl",
      Key: "pub",
      UploadId: up.UploadId,
      MultipartUpload: {
        Parts: [
          { PartNumber: 1, ETag: p1.ETag },
          { PartNumber: 2, ETag: p2.ETag },
        ],
      },
    }),
  );
  const r = await fetch(`${open.endpoint}/mpacl/pub`);
  assert.equal(r.status, 200);
  assert.equal((await r.arrayBuffer()).byteLength, big.length + 4);
  // awscli: a file over its 8 MB threshold goes multipart, with the ACL on the Create (was 501)
  const file = join(open.dir, "big.bin");
  await writeFile(file, Buffer.alloc(9 * 1024 * 1024, 3));
  const cp = await open.aws(["s3", "cp", file, "s3://mpacl/big.bin", "--acl", "public-read"]);
  assert.equal(cp.code, 0, cp.stderr);
  const gotBig = await fetch(`${open.endpoint}/mpacl/big.bin`);
  assert.equal(gotBig.status, 200);
  assert.equal((await gotBig.arrayBuffer()).byteLength, 9 * 1024 * 1024);
});

test("audit: an anonymous request is job user anonymous, effective user the bucket's owner", async () => {
  const { stdout } = await cli(["audit", "tail", "-n", "2000", "--format", "json", "--data", open.data]);
  const records = stdout
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));
  const put = records.find((e) => e.action === "upload" && e.path === "/shelf/dropped.txt");
  assert.equal(put?.user, "anonymous");
  assert.equal(put?.effectiveUser, "alice");
  const read = records.find((e) => e.action === "download" && e.path === "/shelf/members.txt");
  assert.equal(read?.user, "bob");
  assert.equal(read?.effectiveUser, "alice");
  // the ACL changes are attrs.change events of the owner, naming no grantee
  const changes = records.filter((e) => e.action === "attrs.change" && e.path === "/shelf");
  assert.ok(changes.length >= 2, JSON.stringify(changes));
  assert.ok(changes.every((e) => !String(e.detail).includes("bob")));
});
