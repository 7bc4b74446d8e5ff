// Bucket operations: ListBuckets, CreateBucket, DeleteBucket, Get/Put/DeleteBucketEncryption, Get/PutBucketVersioning.
import { AtrestError } from "../../errors.ts";
import { bucketExists, type Ctx, iso, notImplemented, readSmallBody, send } from "./context.ts";
import { S3Error } from "./errors.ts";
import { aclToKeep, requestedAcl } from "./grants.ts";
import { kmsKeyName } from "./sse.ts";
import { esc, xmlDoc, xmlTexts } from "./xml.ts";

export const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** The folders of the user's home that are their buckets: not those whose name another user's bucket holds. */
async function ownBuckets(c: Ctx) {
  const dirs = (await c.session.list("/")).filter((e) => e.stat.kind === "dir");
  if (!c.buckets) return dirs;
  const out: typeof dirs = [];
  for (const e of dirs) {
    // an unregistered folder (made over SFTP) is registered to the user here, as when they name it
    if ((await c.buckets.claim(e.name, c.requester)) !== "taken") out.push(e);
  }
  return out;
}

export async function listBuckets(c: Ctx): Promise<void> {
  const all = (await ownBuckets(c)).sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
  // max-buckets pages the answer; the continuation token is the last name of the page (base64url)
  const max = c.query.has("max-buckets") ? Number(c.query.get("max-buckets")) : 10_000;
  if (!Number.isInteger(max) || max < 1 || max > 10_000)
    throw new S3Error("InvalidArgument", 400, "max-buckets must be an integer from 1 to 10000");
  const token = c.query.get("continuation-token");
  const after = token ? Buffer.from(token, "base64url").toString("utf8") : "";
  const rest = all.filter((e) => Buffer.compare(Buffer.from(e.name), Buffer.from(after)) > 0);
  const page = rest.slice(0, max);
  const body = xmlDoc("ListAllMyBucketsResult", {
    Owner: { ID: c.session.username, DisplayName: c.session.username },
    Buckets: { Bucket: page.map((e) => ({ Name: e.name, CreationDate: iso(e.stat.mtime) })) },
    ContinuationToken:
      rest.length > page.length ? Buffer.from(page.at(-1)?.name ?? "").toString("base64url") : undefined,
  });
  send(c.res, 200, body);
}

/** GetBucketLocation: us-east-1 answers an empty LocationConstraint, as AWS does; any other region its name. */
export async function bucketLocation(c: Ctx): Promise<void> {
  await bucketExists(c.session, c.bucket);
  const doc = xmlDoc("LocationConstraint", {});
  send(
    c.res,
    200,
    c.region === "us-east-1" ? doc : doc.replace("></LocationConstraint>", `>${esc(c.region)}</LocationConstraint>`),
  );
}

export async function createBucket(c: Ctx): Promise<void> {
  if (!BUCKET_NAME.test(c.bucket) || c.bucket.includes(".."))
    throw new S3Error("InvalidBucketName", 400, "The specified bucket is not valid.");
  // CreateBucketConfiguration: a LocationConstraint must name this endpoint's region (none: this region too)
  const xml = await readSmallBody(c);
  const location = xmlTexts(xml, "LocationConstraint")[0]?.trim() ?? "";
  if (location && location !== c.region) {
    throw new S3Error(
      "IllegalLocationConstraintException",
      400,
      `The ${location || "unspecified"} location constraint is incompatible for the region specific endpoint this request was sent to.`,
    );
  }
  const acl = aclToKeep(requestedAcl(c, c.requester), c.requester);
  // the global namespace: a name another user holds is theirs (409), one's own is created again (below)
  const claim = c.buckets ? await c.buckets.claim(c.bucket, c.requester) : "yours";
  if (claim === "taken") {
    throw new S3Error(
      "BucketAlreadyExists",
      409,
      "The requested bucket name is not available. The bucket namespace is shared by all users of the system. Please select a different name and try again.",
    );
  }
  try {
    await c.session.mkdir(`/${c.bucket}`);
    if (acl) await c.session.setObjectAcl?.(`/${c.bucket}`, acl);
  } catch (err) {
    // creating a bucket one already owns succeeds and changes nothing, as in us-east-1
    if (!(err instanceof AtrestError && err.code === "EXISTS")) {
      if (claim === "created") await c.buckets?.release(c.bucket, c.requester);
      throw err;
    }
    await bucketExists(c.session, c.bucket);
  }
  send(c.res, 200, undefined, { location: `/${c.bucket}` });
}

export async function deleteBucket(c: Ctx): Promise<void> {
  await bucketExists(c.session, c.bucket);
  await c.session.rmdir(`/${c.bucket}`);
  await c.buckets?.release(c.bucket, c.requester);
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

/** Get/PutBucketVersioning: the bucket folder's versioning (vfs/versions.ts); never enabled answers no Status. */
export async function bucketVersioning(c: Ctx): Promise<void> {
  await bucketExists(c.session, c.bucket);
  const dir = `/${c.bucket}`;
  if (!c.session.getVersioning || !c.session.setVersioning) notImplemented();
  if (c.req.method === "GET") {
    const state = await c.session.getVersioning(dir);
    send(c.res, 200, xmlDoc("VersioningConfiguration", state ? { Status: state } : {}));
    return;
  }
  if (c.req.method !== "PUT") {
    throw new S3Error("MethodNotAllowed", 405, "The specified method is not allowed against this resource.");
  }
  const xml = await readSmallBody(c);
  if (!xml.includes("<VersioningConfiguration")) {
    throw new S3Error(
      "MalformedXML",
      400,
      "The XML you provided was not well-formed or did not validate against our published schema.",
    );
  }
  // MFA delete needs an MFA device: not served (Disabled, or none, is what every client sends)
  const mfa = xmlTexts(xml, "MfaDelete")[0]?.trim();
  if (mfa !== undefined && mfa !== "Disabled") notImplemented();
  const status = xmlTexts(xml, "Status")[0]?.trim();
  if (status === undefined) {
    // no Status changes nothing (a bucket once versioned cannot go back to never versioned)
    send(c.res, 200);
    return;
  }
  if (status !== "Enabled" && status !== "Suspended") {
    throw new S3Error(
      "MalformedXML",
      400,
      "The XML you provided was not well-formed or did not validate against our published schema.",
    );
  }
  await c.session.setVersioning(dir, status);
  send(c.res, 200);
}
