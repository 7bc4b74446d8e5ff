// Bucket and object ACLs (docs/s3.md "ACLs and anonymous access"): canned ACLs (x-amz-acl) and grants
// (x-amz-grant-*, an AccessControlPolicy document) on CreateBucket, PutObject, CopyObject, POST Object and
// Put*Acl; Get*Acl answers them. They are kept sealed with the bucket folder's or the object version's attributes
// (ObjectMeta.acl): the grantees are user names. A bucket or object without one is private to the bucket's owner.
// Objects belong to the bucket's owner whoever wrote them (S3's "bucket owner preferred" object ownership), so
// bucket-owner-read and bucket-owner-full-control are the private ACL.
// A request into another user's bucket (signed by another user, or unsigned: `anonymous`) is let in only for what a
// grant to that user, to AuthenticatedUsers (any signed user) or to AllUsers (anyone) gives. Public grants (AllUsers,
// AuthenticatedUsers) are refused and ignored unless the server allows them (--s3-public-access allow), like S3's
// Block Public Access.
import { AtrestError } from "../../errors.ts";
import type { FileStat } from "../../vfs/types.ts";
import { bucketExists, type Ctx, readSmallBody, send } from "./context.ts";
import { accessDenied, S3Error } from "./errors.ts";
import {
  checkedPublic,
  dedupe,
  GROUPS,
  type Grant,
  granted,
  grantee,
  grantsOf,
  notSupported,
  PERMISSIONS,
  type Permission,
  requestedAcl,
} from "./grants.ts";
import { statObject } from "./objects.ts";
import { policyVerdict } from "./policy.ts";
import { esc, xmlTexts } from "./xml.ts";

/** An AccessControlPolicy document (PutBucketAcl / PutObjectAcl body). */
function parsePolicy(c: Ctx, xml: string, owner: string): Grant[] {
  if (!/<AccessControlPolicy[\s>]/.test(xml)) {
    throw new S3Error(
      "MalformedACLError",
      400,
      "The XML you provided was not well-formed or did not validate against our published schema",
    );
  }
  const grants: Grant[] = [];
  for (const g of xmlTexts(xml, "Grant")) {
    const perm = xmlTexts(g, "Permission")[0]?.trim() ?? "";
    if (!PERMISSIONS.includes(perm)) throw new S3Error("MalformedACLError", 400, `Invalid permission: ${perm}`);
    const id = xmlTexts(g, "ID")[0]?.trim();
    const uri = xmlTexts(g, "URI")[0]?.trim();
    const email = xmlTexts(g, "EmailAddress")[0]?.trim();
    const who = id ? grantee("id", id) : uri ? grantee("uri", uri) : email ? grantee("email", email) : undefined;
    if (!who) throw new S3Error("MalformedACLError", 400, "A Grant without a Grantee");
    grants.push([who, perm as Permission]);
  }
  // the owner keeps FULL_CONTROL of what is theirs whatever the document says (atrest has no owner-locked-out state)
  if (!grants.some(([g, p]) => g === `id:${owner}` && p === "FULL_CONTROL"))
    grants.unshift([`id:${owner}`, "FULL_CONTROL"]);
  return checkedPublic(c, dedupe(grants));
}

async function bucketGrants(c: Ctx): Promise<Grant[]> {
  try {
    return grantsOf(await c.session.stat(`/${c.bucket}`), c.session.username);
  } catch (err) {
    if (err instanceof AtrestError && err.code === "NOT_FOUND") return [];
    throw err;
  }
}

/** Refuses (403) a request into another user's bucket that its ACL does not give `perm`. */
export async function requireBucket(c: Ctx, perm: Permission): Promise<void> {
  if (!granted(c, await bucketGrants(c), perm)) throw accessDenied();
}

/**
 * Refuses a request on another user's object that its ACL does not give `perm`. A key that is not there answers
 * 404 only to someone who may list the bucket (403 otherwise), as in S3.
 */
export async function requireObject(c: Ctx, perm: Permission): Promise<void> {
  let st: FileStat;
  try {
    st = await c.session.stat(`/${c.bucket}/${c.key}`);
  } catch (err) {
    if (err instanceof AtrestError && err.code === "NOT_FOUND") return requireBucket(c, "READ");
    throw err;
  }
  if (!granted(c, grantsOf(st, c.session.username), perm)) throw accessDenied();
}

/** x-amz-expected-bucket-owner: a bucket of someone else than the request expects is refused (403), as in S3. */
export function checkExpectedOwner(c: Ctx): void {
  const expected = c.req.headers["x-amz-expected-bucket-owner"];
  if (expected !== undefined && c.bucket && expected !== c.owner) throw accessDenied();
}

/**
 * Lets a request in or refuses it (403) before its operation runs: the expected owner, then the bucket policy (a Deny
 * refuses the owner too), then for another user's bucket what the policy allows or else the ACLs grant. A
 * CreateBucket of a name someone holds is left to CreateBucket (409).
 */
export async function admit(c: Ctx, form: boolean): Promise<void> {
  if (!c.bucket) return;
  checkExpectedOwner(c);
  if (!form && c.req.method === "PUT" && !c.key && c.query.size === 0) return;
  const verdict = await policyVerdict(c, form);
  if (verdict === "deny") throw accessDenied();
  if (c.owner === undefined || c.owner === c.requester || verdict === "allow") return;
  if (form) await requireBucket(c, "WRITE");
  else await authorize(c);
}

/** What a request into another user's bucket needs from the ACLs, checked. */
async function authorize(c: Ctx): Promise<void> {
  const m = c.req.method;
  const q = c.query;
  const sub = [...q.keys()].filter(
    (k) =>
      !k.startsWith("response-") &&
      !["versionId", "partNumber", "list-type", "x-id"].includes(k) &&
      !k.startsWith("X-Amz-"),
  );
  if (!c.key) {
    if (q.has("acl")) return requireBucket(c, m === "GET" ? "READ_ACP" : "WRITE_ACP");
    if (m === "POST" && q.has("delete")) return requireBucket(c, "WRITE");
    // a listing: any parameter that is not a sub-resource is ignored, as S3 ignores it (a form's redirect adds some)
    if ((m === "GET" || m === "HEAD") && !sub.some((k) => BUCKET_SUBRESOURCES.has(k))) return requireBucket(c, "READ");
    if (m === "GET" && (q.has("uploads") || q.has("versions"))) return requireBucket(c, "READ");
    throw accessDenied();
  }
  if (q.has("acl")) return requireObject(c, m === "GET" ? "READ_ACP" : "WRITE_ACP");
  if ((m === "GET" || m === "HEAD") && sub.length === 0) return requireObject(c, "READ");
  if (m === "GET" && q.has("uploadId")) return requireBucket(c, "WRITE");
  if (m === "PUT" || m === "DELETE" || (m === "POST" && (q.has("uploads") || q.has("uploadId")))) {
    if (sub.every((k) => k === "uploads" || k === "uploadId")) return requireBucket(c, "WRITE");
  }
  throw accessDenied();
}

/** The sub-resources of a bucket (an operation other than listing its objects). */
const BUCKET_SUBRESOURCES = new Set([
  "acl",
  "accelerate",
  "analytics",
  "cors",
  "delete",
  "encryption",
  "intelligent-tiering",
  "inventory",
  "lifecycle",
  "location",
  "logging",
  "metrics",
  "notification",
  "object-lock",
  "ownershipControls",
  "policy",
  "policyStatus",
  "publicAccessBlock",
  "replication",
  "requestPayment",
  "tagging",
  "uploads",
  "versioning",
  "versions",
  "website",
]);

function policyXml(owner: string, grants: Grant[]): string {
  const o = esc(owner);
  const grantXml = grants
    .map(([g, p]) => {
      const who = g.startsWith("id:")
        ? `xsi:type="CanonicalUser"><ID>${esc(g.slice(3))}</ID><DisplayName>${esc(g.slice(3))}</DisplayName>`
        : `xsi:type="Group"><URI>${GROUPS}${g.slice("group:".length)}</URI>`;
      return `<Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ${who}</Grantee><Permission>${p}</Permission></Grant>`;
    })
    .join("");
  return (
    `<?xml version="1.0" encoding="UTF-8"?>\n<AccessControlPolicy xmlns="http://s3.amazonaws.com/doc/2006-03-01/">` +
    `<Owner><ID>${o}</ID><DisplayName>${o}</DisplayName></Owner><AccessControlList>${grantXml}</AccessControlList>` +
    "</AccessControlPolicy>"
  );
}

/** The ACL a Put*Acl sets: canned or header grants, or the policy document in the body. */
async function putAcl(c: Ctx, owner: string): Promise<Grant[]> {
  const fromHeaders = requestedAcl(c, owner);
  const body = await readSmallBody(c);
  if (fromHeaders) {
    if (body.trim() !== "") throw new S3Error("UnexpectedContent", 400, "This request does not support content");
    return fromHeaders;
  }
  if (body.trim() === "") throw new S3Error("MissingSecurityHeader", 400, "Your request was missing a required header");
  return parsePolicy(c, body, owner);
}

function setAcl(c: Ctx): NonNullable<Ctx["session"]["setObjectAcl"]> {
  const set = c.session.setObjectAcl?.bind(c.session);
  if (!set) throw notSupported("ACLs are not kept by this store");
  return set;
}

export async function bucketAcl(c: Ctx): Promise<void> {
  await bucketExists(c.session, c.bucket);
  const owner = c.session.username;
  if (c.req.method === "GET") return send(c.res, 200, policyXml(owner, await bucketGrants(c)));
  if (c.req.method === "PUT") {
    await setAcl(c)(`/${c.bucket}`, await putAcl(c, owner));
    return send(c.res, 200);
  }
  throw new S3Error("MethodNotAllowed", 405, "The specified method is not allowed against this resource.");
}

export async function objectAcl(c: Ctx): Promise<void> {
  const st = await statObject(c);
  const owner = c.session.username;
  if (c.req.method === "GET") return send(c.res, 200, policyXml(owner, grantsOf(st, owner)));
  if (c.req.method === "PUT") {
    if (st.kind !== "file") throw notSupported("ACLs of folder markers");
    await setAcl(c)(`/${c.bucket}/${c.key}`, await putAcl(c, owner));
    return send(c.res, 200);
  }
  throw new S3Error("MethodNotAllowed", 405, "The specified method is not allowed against this resource.");
}
