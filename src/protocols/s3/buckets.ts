// Bucket operations: ListBuckets, CreateBucket, DeleteBucket, Get/Put/DeleteBucketEncryption.
import { AtrestError } from "../../errors.ts";
import { readBody } from "./body.ts";
import { bucketExists, type Ctx, iso, notImplemented, readSmallBody, send } from "./context.ts";
import { S3Error } from "./errors.ts";
import { kmsKeyName } from "./sse.ts";
import { xmlDoc, xmlTexts } from "./xml.ts";

export const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

export async function listBuckets(c: Ctx): Promise<void> {
  const entries = (await c.session.list("/")).filter((e) => e.stat.kind === "dir");
  const body = xmlDoc("ListAllMyBucketsResult", {
    Owner: { ID: c.session.username, DisplayName: c.session.username },
    Buckets: { Bucket: entries.map((e) => ({ Name: e.name, CreationDate: iso(e.stat.mtime) })) },
  });
  send(c.res, 200, body);
}

export async function createBucket(c: Ctx): Promise<void> {
  if (!BUCKET_NAME.test(c.bucket) || c.bucket.includes(".."))
    throw new S3Error("InvalidBucketName", 400, "The specified bucket is not valid.");
  for await (const _ of readBody(c.req, { auth: c.auth, key: c.signingKey }).pieces) {
    // CreateBucketConfiguration (location) is accepted and ignored: one region
  }
  try {
    await c.session.mkdir(`/${c.bucket}`);
  } catch (err) {
    if (err instanceof AtrestError && err.code === "EXISTS") {
      throw new S3Error(
        "BucketAlreadyOwnedByYou",
        409,
        "Your previous request to create the named bucket succeeded and you already own it.",
      );
    }
    throw err;
  }
  send(c.res, 200, undefined, { location: `/${c.bucket}` });
}

export async function deleteBucket(c: Ctx): Promise<void> {
  await bucketExists(c.session, c.bucket);
  await c.session.rmdir(`/${c.bucket}`);
  send(c.res, 204);
}

/** Get/Put/DeleteBucketEncryption: the bucket folder's default encryption for new objects (docs/s3.md). */
export async function bucketEncryption(c: Ctx): Promise<void> {
  await bucketExists(c.session, c.bucket);
  const dir = `/${c.bucket}`;
  const m = c.req.method;
  if (!c.session.getEncryption || !c.session.setEncryption) notImplemented();
  if (m === "GET") {
    const d = await c.session.getEncryption(dir);
    if (!d) {
      throw new S3Error(
        "ServerSideEncryptionConfigurationNotFoundError",
        404,
        "The server side encryption configuration was not found",
      );
    }
    return send(
      c.res,
      200,
      xmlDoc("ServerSideEncryptionConfiguration", {
        Rule: {
          ApplyServerSideEncryptionByDefault: { SSEAlgorithm: d.algorithm, KMSMasterKeyID: d.key },
          BucketKeyEnabled: false,
        },
      }),
    );
  }
  if (m === "DELETE") {
    await c.session.setEncryption(dir, undefined);
    return send(c.res, 204);
  }
  if (m === "PUT") {
    const xml = await readSmallBody(c);
    const rules = xmlTexts(xml, "Rule");
    if (!xml.includes("<ServerSideEncryptionConfiguration") || rules.length !== 1) {
      throw new S3Error("MalformedXML", 400, "The XML you provided was not well-formed or did not validate");
    }
    const algorithm = xmlTexts(rules[0] as string, "SSEAlgorithm")[0]?.trim();
    const keyId = xmlTexts(rules[0] as string, "KMSMasterKeyID")[0]?.trim();
    if (algorithm !== "AES256" && algorithm !== "aws:kms") {
      throw new S3Error("MalformedXML", 400, "SSEAlgorithm must be AES256 or aws:kms");
    }
    if (keyId && algorithm !== "aws:kms") {
      throw new S3Error("InvalidArgument", 400, "KMSMasterKeyID goes with SSEAlgorithm aws:kms only");
    }
    const key = keyId ? kmsKeyName(keyId) : undefined;
    await c.session.setEncryption(dir, { algorithm, ...(key ? { key } : {}) });
    return send(c.res, 200);
  }
  throw new S3Error("MethodNotAllowed", 405, "The specified method is not allowed against this resource.");
}
