// Routes a signed, logged-in request to its operation by method, bucket/key and sub-resource query.
import { bucketAcl, objectAcl } from "./acl.ts";
import { getObjectAttributes } from "./attributes.ts";
import {
  bucketEncryption,
  bucketLocation,
  bucketVersioning,
  createBucket,
  deleteBucket,
  listBuckets,
} from "./buckets.ts";
import { bucketExists, type Ctx, notImplemented, send } from "./context.ts";
import { copyObject } from "./copy.ts";
import { bucketCors } from "./cors.ts";
import { S3Error } from "./errors.ts";
import { listObjects, listVersions } from "./listing.ts";
import {
  abortMultipartUpload,
  completeMultipartUpload,
  createMultipartUpload,
  listMultipartUploads,
  listParts,
  uploadPart,
} from "./multipart.ts";
import { deleteObject, deleteObjects, getObject, putObject } from "./objects.ts";
import { bucketPolicy } from "./policy.ts";
import { bucketTagging, objectTagging } from "./tagging-routes.ts";

export async function dispatch(c: Ctx): Promise<void> {
  const m = c.req.method;
  const q = c.query;
  if (!c.bucket) {
    if (m === "GET") return listBuckets(c);
    throw new S3Error("MethodNotAllowed", 405, "The specified method is not allowed against this resource.");
  }
  if (!c.key) {
    if (q.has("versioning")) return bucketVersioning(c);
    if (q.has("location") && m === "GET") return bucketLocation(c);
    if (q.has("delete") && m === "POST") return deleteObjects(c);
    if (q.has("encryption")) return bucketEncryption(c);
    if (q.has("versions") && m === "GET") return listVersions(c);
    if (q.has("uploads") && m === "GET") return listMultipartUploads(c);
    if (q.has("acl")) return bucketAcl(c);
    if (q.has("policy")) return bucketPolicy(c);
    if (q.has("cors")) return bucketCors(c);
    if (q.has("tagging")) return bucketTagging(c);
    for (const sub of [
      "lifecycle",
      "website",
      "logging",
      "notification",
      "replication",
      "object-lock",
      "ownershipControls",
      "publicAccessBlock",
      "requestPayment",
      "accelerate",
    ]) {
      if (q.has(sub)) notImplemented();
    }
    if (m === "PUT") return createBucket(c);
    if (m === "HEAD") {
      await bucketExists(c.session, c.bucket);
      return send(c.res, 200);
    }
    if (m === "DELETE") return deleteBucket(c);
    if (m === "GET") return listObjects(c);
    throw new S3Error("MethodNotAllowed", 405, "The specified method is not allowed against this resource.");
  }
  if (q.has("attributes") && m === "GET") return getObjectAttributes(c);
  if (q.has("acl")) return objectAcl(c);
  if (q.has("tagging")) return objectTagging(c);
  for (const sub of ["retention", "legal-hold", "restore", "select"]) {
    if (q.has(sub)) notImplemented();
  }
  if (q.has("uploads")) {
    if (m === "POST") return createMultipartUpload(c);
    throw new S3Error("MethodNotAllowed", 405, "The specified method is not allowed against this resource.");
  }
  if (q.has("uploadId")) {
    if (m === "PUT" && q.has("partNumber")) return uploadPart(c);
    if (m === "POST") return completeMultipartUpload(c);
    if (m === "DELETE") return abortMultipartUpload(c);
    if (m === "GET") return listParts(c);
    throw new S3Error("MethodNotAllowed", 405, "The specified method is not allowed against this resource.");
  }
  if (m === "PUT") {
    if (c.req.headers["x-amz-copy-source"] !== undefined) return copyObject(c);
    return putObject(c);
  }
  if (m === "GET") return getObject(c, false);
  if (m === "HEAD") return getObject(c, true);
  if (m === "DELETE") return deleteObject(c);
  throw new S3Error("MethodNotAllowed", 405, "The specified method is not allowed against this resource.");
}
