// Bucket policies (docs/s3.md "Bucket policies"): Get/Put/DeleteBucketPolicy, and their evaluation on every request
// into the bucket. The subset served: Effect Allow/Deny, Principal `*` or {"AWS": "*" | user | [users]}, Action
// (`*`, `s3:*`, `s3:Get*`-style wildcards), Resource (ARNs of the bucket and its objects, wildcards), Condition with
// String(Not)Equals, String(Not)Like, StringEqualsIgnoreCase, Null and Bool on the keys listed in CONDITION_KEYS.
// Anything else (NotAction, NotPrincipal, another operator or key) is refused with MalformedPolicy: a policy is kept
// only when every part of it is evaluated. An explicit Deny wins over everything (the owner's requests too); an Allow
// lets another user (or, public access allowed, anyone) in where the ACLs do not. The document is kept as sent, sealed
// with the bucket folder's attributes.
import { z } from "zod";
import { AtrestError } from "../../errors.ts";
import { ANONYMOUS } from "../../service/login.ts";
import { bucketExists, type Ctx, readSmallBody, send } from "./context.ts";
import { S3Error } from "./errors.ts";

const strings = z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]);

const statementSchema = z
  .object({
    Sid: z.string().optional(),
    Effect: z.enum(["Allow", "Deny"]),
    Principal: z.union([z.literal("*"), z.object({ AWS: strings }).strict()]),
    Action: strings,
    Resource: strings,
    Condition: z.record(z.string(), z.record(z.string(), z.union([strings, z.boolean()]))).optional(),
  })
  .strict();

const policySchema = z
  .object({
    Version: z.enum(["2012-10-17", "2008-10-17"]).optional(),
    Id: z.string().optional(),
    Statement: z.union([statementSchema, z.array(statementSchema).min(1)]),
  })
  .strict();

type Statement = z.infer<typeof statementSchema>;

const OPERATORS = new Set([
  "StringEquals",
  "StringNotEquals",
  "StringEqualsIgnoreCase",
  "StringNotEqualsIgnoreCase",
  "StringLike",
  "StringNotLike",
  "Null",
  "Bool",
]);

/** The condition keys a request answers (others are refused when the policy is set). */
const CONDITION_KEYS: Record<string, (c: Ctx) => string | undefined> = {
  "s3:prefix": (c) => c.query.get("prefix"),
  "s3:delimiter": (c) => c.query.get("delimiter"),
  "s3:max-keys": (c) => c.query.get("max-keys"),
  "s3:x-amz-acl": (c) => header(c, "x-amz-acl"),
  "s3:x-amz-server-side-encryption": (c) => header(c, "x-amz-server-side-encryption"),
  "s3:x-amz-server-side-encryption-aws-kms-key-id": (c) => header(c, "x-amz-server-side-encryption-aws-kms-key-id"),
  "s3:x-amz-server-side-encryption-customer-algorithm": (c) =>
    header(c, "x-amz-server-side-encryption-customer-algorithm"),
  "s3:x-amz-copy-source": (c) => header(c, "x-amz-copy-source"),
  "s3:x-amz-metadata-directive": (c) => header(c, "x-amz-metadata-directive"),
  "s3:x-amz-content-sha256": (c) => header(c, "x-amz-content-sha256"),
  "aws:SecureTransport": (c) => String(c.secure),
  "aws:username": (c) => (c.requester === ANONYMOUS ? undefined : c.requester),
};

function header(c: Ctx, name: string): string | undefined {
  const v = c.req.headers[name];
  return Array.isArray(v) ? v.join(",") : v;
}

const malformed = (m: string) => new S3Error("MalformedPolicy", 400, m);
const list = (v: string | string[]) => (Array.isArray(v) ? v : [v]);

/** `*` any run, `?` one character, as IAM matches actions and resources. */
function wildcard(pattern: string, value: string, ignoreCase = false): boolean {
  const re = pattern
    .replace(/[.+^${}()|[\]\\]/g, "\\$&")
    .replace(/\*/g, ".*")
    .replace(/\?/g, ".");
  return new RegExp(`^${re}$`, ignoreCase ? "is" : "s").test(value);
}

/** Parses and checks a policy document for bucket `bucket`; the refusal names what is not served. */
export function parseBucketPolicy(text: string, bucket: string): Statement[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw malformed("This policy contains invalid Json");
  }
  const r = policySchema.safeParse(json);
  if (!r.success) {
    throw malformed(`Policy has an element this server does not evaluate: ${r.error.issues[0]?.path.join(".") ?? ""}`);
  }
  const statements = Array.isArray(r.data.Statement) ? r.data.Statement : [r.data.Statement];
  for (const s of statements) {
    for (const a of list(s.Action)) {
      if (a !== "*" && !/^s3:[A-Za-z*?]+$/.test(a)) throw malformed(`Policy has an invalid action: ${a}`);
    }
    for (const res of list(s.Resource)) {
      const arn = "arn:aws:s3:::";
      if (!res.startsWith(arn)) throw malformed(`Policy has an invalid resource: ${res}`);
      const name = res.slice(arn.length).split("/")[0] ?? "";
      if (!wildcard(name, bucket)) throw malformed("Policy has invalid resource: it must name this bucket");
    }
    for (const [op, keys] of Object.entries(s.Condition ?? {})) {
      if (!OPERATORS.has(op)) throw malformed(`Policy has an unsupported condition operator: ${op}`);
      for (const k of Object.keys(keys)) {
        if (!(k in CONDITION_KEYS)) throw malformed(`Policy has an unsupported condition key: ${k}`);
      }
    }
  }
  return statements;
}

/** The principal matches the requester: `*` (anyone, unsigned too), or a user by name or IAM user ARN. */
function principalMatches(s: Statement, requester: string): boolean {
  if (s.Principal === "*") return true;
  return list(s.Principal.AWS).some((p) => {
    if (p === "*") return true;
    if (requester === ANONYMOUS) return false;
    const name = /^arn:aws:iam::[^:]*:(?:user\/)?(.+)$/.exec(p)?.[1] ?? p;
    return name === requester;
  });
}

function conditionHolds(c: Ctx, s: Statement): boolean {
  for (const [op, keys] of Object.entries(s.Condition ?? {})) {
    for (const [k, raw] of Object.entries(keys)) {
      const value = CONDITION_KEYS[k]?.(c);
      const wanted = typeof raw === "boolean" ? [String(raw)] : list(raw);
      const holds = (() => {
        switch (op) {
          case "Null":
            return wanted.some((w) => (w === "true") === (value === undefined));
          case "Bool":
            return value !== undefined && wanted.includes(value);
          case "StringEquals":
            return value !== undefined && wanted.includes(value);
          case "StringNotEquals":
            return value === undefined || !wanted.includes(value);
          case "StringEqualsIgnoreCase":
            return value !== undefined && wanted.some((w) => w.toLowerCase() === value.toLowerCase());
          case "StringNotEqualsIgnoreCase":
            return value === undefined || !wanted.some((w) => w.toLowerCase() === value.toLowerCase());
          case "StringLike":
            return value !== undefined && wanted.some((w) => wildcard(w, value));
          case "StringNotLike":
            return value === undefined || !wanted.some((w) => wildcard(w, value));
          default:
            return false;
        }
      })();
      if (!holds) return false;
    }
  }
  return true;
}

/** The IAM action and resource ARN of a request (what a statement is matched against). */
export function actionOf(c: Ctx, form: boolean): { action: string; resource: string } {
  const m = c.req.method;
  const q = c.query;
  const bucketArn = `arn:aws:s3:::${c.bucket}`;
  if (form) return { action: "s3:PutObject", resource: `${bucketArn}/${c.key}` };
  if (!c.key) {
    const get = m === "GET" || m === "HEAD";
    const sub = (name: string, g: string, p: string, d?: string) =>
      q.has(name) ? (get ? g : m === "DELETE" && d ? d : p) : undefined;
    const action =
      sub("acl", "s3:GetBucketAcl", "s3:PutBucketAcl") ??
      sub("policy", "s3:GetBucketPolicy", "s3:PutBucketPolicy", "s3:DeleteBucketPolicy") ??
      sub("encryption", "s3:GetEncryptionConfiguration", "s3:PutEncryptionConfiguration") ??
      sub("tagging", "s3:GetBucketTagging", "s3:PutBucketTagging") ??
      sub("versioning", "s3:GetBucketVersioning", "s3:PutBucketVersioning") ??
      sub("cors", "s3:GetBucketCORS", "s3:PutBucketCORS") ??
      sub("location", "s3:GetBucketLocation", "s3:GetBucketLocation") ??
      (q.has("uploads") && get ? "s3:ListBucketMultipartUploads" : undefined) ??
      (q.has("versions") && get ? "s3:ListBucketVersions" : undefined) ??
      (q.has("delete") && m === "POST" ? "s3:DeleteObject" : undefined) ??
      (get ? "s3:ListBucket" : m === "PUT" ? "s3:CreateBucket" : m === "DELETE" ? "s3:DeleteBucket" : "s3:Unknown");
    // DeleteObjects names its keys in the body: matched as every object of the bucket
    return { action, resource: action === "s3:DeleteObject" ? `${bucketArn}/*` : bucketArn };
  }
  const get = m === "GET" || m === "HEAD";
  const action = q.has("acl")
    ? get
      ? "s3:GetObjectAcl"
      : "s3:PutObjectAcl"
    : q.has("tagging")
      ? get
        ? "s3:GetObjectTagging"
        : m === "DELETE"
          ? "s3:DeleteObjectTagging"
          : "s3:PutObjectTagging"
      : q.has("attributes")
        ? "s3:GetObjectAttributes"
        : q.has("uploadId") && m === "DELETE"
          ? "s3:AbortMultipartUpload"
          : q.has("uploadId") && m === "GET"
            ? "s3:ListMultipartUploadParts"
            : get
              ? "s3:GetObject"
              : m === "DELETE"
                ? "s3:DeleteObject"
                : "s3:PutObject";
  return { action: q.has("versionId") ? versionAction(action) : action, resource: `${bucketArn}/${c.key}` };
}

/** What an operation on one version (`?versionId=`) is called, as IAM names them: s3:GetObject → s3:GetObjectVersion. */
export function versionAction(action: string): string {
  const m = /^s3:(Get|Put|Delete)Object(Acl|Tagging)?$/.exec(action);
  return m && !(m[1] === "Put" && m[2] === undefined) ? `s3:${m[1]}ObjectVersion${m[2] ?? ""}` : action;
}

/** The bucket's policy document as kept, if any. */
async function storedPolicy(c: Ctx): Promise<string | undefined> {
  try {
    const st = await c.session.stat(`/${c.bucket}`);
    return st.kind === "dir" ? st.object?.policy : undefined;
  } catch (err) {
    if (err instanceof AtrestError && err.code === "NOT_FOUND") return undefined;
    throw err;
  }
}

/**
 * The bucket policy's verdict on the request: `deny` (an explicit Deny matches), `allow` (an Allow matches, no Deny)
 * or undefined (no statement matches, or no policy). An Allow to everyone counts only with public access allowed.
 * `as`: the action and resource to weigh instead of the request's own (a copy source is weighed as a GET of it).
 */
export async function policyVerdict(
  c: Ctx,
  form = false,
  as?: { action: string; resource: string },
): Promise<"allow" | "deny" | undefined> {
  if (!c.bucket || c.owner === undefined) return undefined;
  const text = await storedPolicy(c);
  if (!text) return undefined;
  const statements = parseBucketPolicy(text, c.bucket);
  const { action, resource } = as ?? actionOf(c, form);
  let allowed = false;
  for (const s of statements) {
    if (!principalMatches(s, c.requester)) continue;
    if (!list(s.Action).some((a) => wildcard(a, action, true))) continue;
    if (!list(s.Resource).some((r) => wildcard(r, resource))) continue;
    if (!conditionHolds(c, s)) continue;
    if (s.Effect === "Deny") return "deny";
    if (c.publicAcls || !isPublic(s)) allowed = true;
  }
  return allowed ? "allow" : undefined;
}

const isPublic = (s: Statement) => s.Principal === "*" || list(s.Principal.AWS).includes("*");

/** Get/Put/DeleteBucketPolicy (the owner's only: another user's request never reaches here). */
export async function bucketPolicy(c: Ctx): Promise<void> {
  await bucketExists(c.session, c.bucket);
  const dir = `/${c.bucket}`;
  const m = c.req.method;
  if (m === "GET") {
    const text = await storedPolicy(c);
    if (!text) throw new S3Error("NoSuchBucketPolicy", 404, "The bucket policy does not exist");
    c.res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
    c.res.end(text);
    return;
  }
  if (!c.session.setBucketPolicy) throw new S3Error("NotImplemented", 501, "policies are not kept by this store");
  if (m === "DELETE") {
    await c.session.setBucketPolicy(dir, undefined);
    return send(c.res, 204);
  }
  if (m === "PUT") {
    const text = await readSmallBody(c, 20 * 1024);
    const statements = parseBucketPolicy(text, c.bucket);
    // S3's Block Public Access refuses a policy that lets everyone in (BlockPublicPolicy)
    if (!c.publicAcls && statements.some((s) => s.Effect === "Allow" && isPublic(s))) {
      throw new S3Error(
        "AccessDenied",
        403,
        "Public bucket policies are blocked on this server (its administrator allows them with --s3-public-access allow)",
      );
    }
    await c.session.setBucketPolicy(dir, text);
    return send(c.res, 204);
  }
  throw new S3Error("MethodNotAllowed", 405, "The specified method is not allowed against this resource.");
}
