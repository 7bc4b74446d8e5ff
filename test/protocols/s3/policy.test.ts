// Bucket policies (docs/s3.md "Bucket policies") with @aws-sdk/client-s3: Put/Get/DeleteBucketPolicy, an Allow that
// lets another user in where the ACLs do not, a Deny that refuses the owner too (a condition on the SSE-C algorithm),
// and MalformedPolicy for what the server does not evaluate; with public access blocked, an Allow to everyone is
// refused.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  CreateBucketCommand,
  DeleteBucketPolicyCommand,
  GetBucketPolicyCommand,
  ListObjectsV2Command,
  PutBucketPolicyCommand,
  PutObjectCommand,
} from "@aws-sdk/client-s3";
import { removeDir } from "../../helpers/atrest.ts";
import { type S3Server, startS3 } from "../../helpers/s3.ts";

let s3: S3Server;
const status = (code: number, name?: string) => (e: { $metadata?: { httpStatusCode?: number }; name?: string }) =>
  e.$metadata?.httpStatusCode === code && (name === undefined || e.name === name);
const policy = (statements: object[]) => JSON.stringify({ Version: "2012-10-17", Statement: statements });

before(async () => {
  s3 = await startS3("atrest-s3-policy-", ["alice", "bob"]);
  await s3.client().send(new CreateBucketCommand({ Bucket: "pol" }));
  await s3.client().send(new PutObjectCommand({ Bucket: "pol", Key: "k", Body: "v" }));
});

after(async () => {
  await s3?.server.stop();
  if (s3) await removeDir(s3.dir);
});

test("an Allow to a named user lets them list; a Deny refuses the owner too; the document comes back as set", async () => {
  const [alice, bob] = s3.users;
  const a = s3.client(alice);
  const b = s3.client(bob);
  await assert.rejects(a.send(new GetBucketPolicyCommand({ Bucket: "pol" })), status(404, "NoSuchBucketPolicy"));
  await assert.rejects(b.send(new ListObjectsV2Command({ Bucket: "pol" })), status(403, "AccessDenied"));
  const doc = policy([
    { Effect: "Allow", Principal: { AWS: ["bob"] }, Action: "s3:ListBucket", Resource: "arn:aws:s3:::pol" },
    {
      Effect: "Deny",
      Principal: "*",
      Action: "s3:PutObject",
      Resource: "arn:aws:s3:::pol/*",
      Condition: { Null: { "s3:x-amz-server-side-encryption-customer-algorithm": "true" } },
    },
  ]);
  await a.send(new PutBucketPolicyCommand({ Bucket: "pol", Policy: doc }));
  assert.equal((await a.send(new GetBucketPolicyCommand({ Bucket: "pol" }))).Policy, doc);
  const listed = await b.send(new ListObjectsV2Command({ Bucket: "pol" }));
  assert.deepEqual(
    listed.Contents?.map((o) => o.Key),
    ["k"],
  );
  // the Allow names listing only, and bob's bucket policy rights stop there
  await assert.rejects(b.send(new PutObjectCommand({ Bucket: "pol", Key: "x", Body: "y" })), status(403));
  await assert.rejects(b.send(new GetBucketPolicyCommand({ Bucket: "pol" })), status(403));
  // the Deny: the owner's unencrypted PUT is refused, one with an SSE-C key is not (the condition holds for the first)
  await assert.rejects(
    a.send(new PutObjectCommand({ Bucket: "pol", Key: "plain", Body: "p" })),
    status(403, "AccessDenied"),
  );
  await a.send(new DeleteBucketPolicyCommand({ Bucket: "pol" }));
  await assert.rejects(b.send(new ListObjectsV2Command({ Bucket: "pol" })), status(403));
  await a.send(new PutObjectCommand({ Bucket: "pol", Key: "plain", Body: "p" }));
});

test("MalformedPolicy for what is not evaluated; a public Allow refused while public access is blocked", async () => {
  const a = s3.client();
  const put = (doc: string) => a.send(new PutBucketPolicyCommand({ Bucket: "pol", Policy: doc }));
  const malformed = status(400, "MalformedPolicy");
  await assert.rejects(put("{not json"), malformed);
  await assert.rejects(
    put(policy([{ Effect: "Allow", Principal: "*", NotAction: "s3:GetObject", Resource: "arn:aws:s3:::pol/*" }])),
    malformed,
  );
  await assert.rejects(
    put(
      policy([
        {
          Effect: "Deny",
          Principal: "*",
          Action: "s3:GetObject",
          Resource: "arn:aws:s3:::pol/*",
          Condition: { IpAddress: { "aws:SourceIp": "10.0.0.0/8" } },
        },
      ]),
    ),
    malformed,
  );
  await assert.rejects(
    put(policy([{ Effect: "Allow", Principal: "*", Action: "s3:GetObject", Resource: "arn:aws:s3:::other/*" }])),
    malformed,
  );
  await assert.rejects(
    put(policy([{ Effect: "Allow", Principal: "*", Action: "s3:GetObject", Resource: "arn:aws:s3:::pol/*" }])),
    status(403, "AccessDenied"),
  );
  await assert.rejects(a.send(new GetBucketPolicyCommand({ Bucket: "pol" })), status(404));
});
