// Get/PutBucketAcl and Get/PutObjectAcl as a server without ACLs answers them: every bucket and object is private to
// the user whose tree it is in (atrest's per-path permissions decide who else sees it, through their own tree), so
// the ACL is always the owner's FULL_CONTROL. Setting that ACL (canned `private`, or a policy granting only the owner
// FULL_CONTROL) succeeds and changes nothing; any other grant is 501, never silently dropped.
import { bucketExists, type Ctx, readSmallBody, send } from "./context.ts";
import { S3Error } from "./errors.ts";
import { statObject } from "./objects.ts";
import { esc, xmlTexts } from "./xml.ts";

function policyXml(owner: string): string {
  const o = esc(owner);
  return (
    `<?xml version="1.0" encoding="UTF-8"?>\n<AccessControlPolicy xmlns="http://s3.amazonaws.com/doc/2006-03-01/">` +
    `<Owner><ID>${o}</ID><DisplayName>${o}</DisplayName></Owner><AccessControlList><Grant>` +
    `<Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser"><ID>${o}</ID>` +
    `<DisplayName>${o}</DisplayName></Grantee><Permission>FULL_CONTROL</Permission></Grant></AccessControlList>` +
    "</AccessControlPolicy>"
  );
}

const noAcls = () =>
  new S3Error(
    "NotImplemented",
    501,
    "atrest keeps every bucket and object private to its owner: only the private ACL can be set",
  );

/** Checks that a Put*Acl asks for the owner-only ACL (canned private or its explicit policy). */
async function requirePrivate(c: Ctx): Promise<void> {
  const h = c.req.headers;
  const grants = Object.keys(h).filter((n) => n.startsWith("x-amz-grant-"));
  const canned = h["x-amz-acl"];
  const body = await readSmallBody(c);
  if (canned !== undefined) {
    if (canned !== "private" || grants.length > 0 || body.trim() !== "") throw noAcls();
    return;
  }
  if (grants.length > 0) throw noAcls();
  if (body.trim() === "") throw new S3Error("MissingSecurityHeader", 400, "Your request was missing a required header");
  const list = xmlTexts(body, "Grant");
  const owner = c.session.username;
  const ownerOnly =
    list.length === 1 &&
    xmlTexts(list[0] as string, "ID")[0]?.trim() === owner &&
    xmlTexts(list[0] as string, "Permission")[0]?.trim() === "FULL_CONTROL";
  if (!ownerOnly) throw noAcls();
}

export async function bucketAcl(c: Ctx): Promise<void> {
  await bucketExists(c.session, c.bucket);
  if (c.req.method === "GET") return send(c.res, 200, policyXml(c.session.username));
  if (c.req.method === "PUT") {
    await requirePrivate(c);
    return send(c.res, 200);
  }
  throw new S3Error("MethodNotAllowed", 405, "The specified method is not allowed against this resource.");
}

export async function objectAcl(c: Ctx): Promise<void> {
  await statObject(c);
  if (c.req.method === "GET") return send(c.res, 200, policyXml(c.session.username));
  if (c.req.method === "PUT") {
    await requirePrivate(c);
    return send(c.res, 200);
  }
  throw new S3Error("MethodNotAllowed", 405, "The specified method is not allowed against this resource.");
}
