// The S3 ACL model (docs/s3.md "ACLs and anonymous access"): grants, canned ACLs, the x-amz-acl / x-amz-grant-*
// headers, and whether grants give a requester a permission. The operations and the checks that use them: ./acl.ts.
import { ANONYMOUS } from "../../service/login.ts";
import type { FileStat } from "../../vfs/types.ts";
import type { Ctx } from "./context.ts";
import { S3Error } from "./errors.ts";

export type Permission = "FULL_CONTROL" | "READ" | "WRITE" | "READ_ACP" | "WRITE_ACP";
export const PERMISSIONS: readonly string[] = ["FULL_CONTROL", "READ", "WRITE", "READ_ACP", "WRITE_ACP"];
/** A grant: grantee (`id:<user>`, `group:AllUsers`, `group:AuthenticatedUsers`) and permission. */
export type Grant = [string, Permission];

export const GROUPS = "http://acs.amazonaws.com/groups/global/";
const ALL_USERS = "group:AllUsers";
const AUTHENTICATED = "group:AuthenticatedUsers";

export const notSupported = (what: string) =>
  new S3Error(
    "NotImplemented",
    501,
    `A header or query you provided implies functionality that is not implemented: ${what}`,
  );

/** The grants of a canned ACL for a bucket or object of `owner`. */
export function cannedGrants(canned: string, owner: string): Grant[] {
  const own: Grant = [`id:${owner}`, "FULL_CONTROL"];
  switch (canned) {
    case "private":
    case "bucket-owner-read":
    case "bucket-owner-full-control":
      return [own];
    case "public-read":
      return [own, [ALL_USERS, "READ"]];
    case "public-read-write":
      return [own, [ALL_USERS, "READ"], [ALL_USERS, "WRITE"]];
    case "authenticated-read":
      return [own, [AUTHENTICATED, "READ"]];
    case "aws-exec-read":
    case "log-delivery-write":
      throw notSupported(`canned ACL ${canned}`);
    default:
      throw new S3Error("InvalidArgument", 400, `Invalid canned ACL: ${canned}`);
  }
}

/** A canned ACL a request names (the POST Object `acl` field), public ones refused unless allowed. */
export function cannedAcl(c: Ctx, canned: string, owner: string): Grant[] {
  return checkedPublic(c, cannedGrants(canned, owner));
}

export function grantee(kind: string, value: string): string {
  if (kind === "id") return `id:${value}`;
  if (kind === "uri") {
    if (value === `${GROUPS}AllUsers`) return ALL_USERS;
    if (value === `${GROUPS}AuthenticatedUsers`) return AUTHENTICATED;
    throw notSupported(`grantee group ${value}`);
  }
  throw notSupported("grantees by e-mail address");
}

/** The ACL a request's x-amz-acl or x-amz-grant-* headers ask for; undefined when it names none. */
export function requestedAcl(c: Ctx, owner: string): Grant[] | undefined {
  const h = c.req.headers;
  const canned = h["x-amz-acl"];
  const headers: [string, Permission][] = [
    ["x-amz-grant-full-control", "FULL_CONTROL"],
    ["x-amz-grant-read", "READ"],
    ["x-amz-grant-write", "WRITE"],
    ["x-amz-grant-read-acp", "READ_ACP"],
    ["x-amz-grant-write-acp", "WRITE_ACP"],
  ];
  const given = headers.filter(([n]) => h[n] !== undefined);
  if (canned !== undefined && given.length > 0) {
    throw new S3Error("InvalidRequest", 400, "Specifying both Canned ACLs and Header Grants is not allowed");
  }
  if (canned !== undefined) return checkedPublic(c, cannedGrants(String(canned), owner));
  if (given.length === 0) return undefined;
  const grants: Grant[] = [[`id:${owner}`, "FULL_CONTROL"]];
  for (const [name, perm] of given) {
    for (const m of String(h[name]).matchAll(/(id|uri|emailAddress)\s*=\s*"?([^",]*)"?/gi)) {
      grants.push([
        grantee(
          (m[1] as string).toLowerCase() === "emailaddress" ? "email" : (m[1] as string).toLowerCase(),
          (m[2] as string).trim(),
        ),
        perm,
      ]);
    }
  }
  return checkedPublic(c, dedupe(grants));
}

export function dedupe(grants: Grant[]): Grant[] {
  const seen = new Set<string>();
  return grants.filter(([g, p]) => {
    const k = `${g}\0${p}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

const isPublic = (g: Grant) => g[0] === ALL_USERS || g[0] === AUTHENTICATED;

/** Refuses public grants unless the server allows them (never silently private: the request would not get what it asked). */
export function checkedPublic(c: Ctx, grants: Grant[]): Grant[] {
  if (!c.publicAcls && grants.some(isPublic)) {
    throw new S3Error(
      "AccessDenied",
      403,
      "Public ACLs are blocked on this server (its administrator allows them with --s3-public-access allow)",
    );
  }
  return grants;
}

/** The grants of a bucket folder or object version: as stored, or the owner's FULL_CONTROL. */
export function grantsOf(st: FileStat | undefined, owner: string): Grant[] {
  const stored = st?.object?.acl;
  return stored && stored.length > 0 ? (stored as Grant[]) : [[`id:${owner}`, "FULL_CONTROL"]];
}

/** Whether `grants` give the request's requester `perm` (FULL_CONTROL gives every permission). */
export function granted(c: Ctx, grants: Grant[], perm: Permission): boolean {
  if (c.owner !== undefined && c.requester === c.owner) return true;
  const who = new Set([c.publicAcls ? ALL_USERS : ""]);
  if (c.requester !== ANONYMOUS) {
    who.add(`id:${c.requester}`);
    if (c.publicAcls) who.add(AUTHENTICATED);
  }
  return grants.some(([g, p]) => who.has(g) && (p === perm || p === "FULL_CONTROL"));
}

/** A private ACL needs nothing stored (the default); any other is kept. */
export function aclToKeep(grants: Grant[] | undefined, owner: string): Grant[] | undefined {
  if (!grants) return undefined;
  return grants.length === 1 && grants[0]?.[0] === `id:${owner}` && grants[0][1] === "FULL_CONTROL"
    ? undefined
    : grants;
}
