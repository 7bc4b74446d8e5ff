// POST Object: a browser form upload (multipart/form-data) to a bucket, authorized by a policy document that the
// access key's owner signed (docs/s3.md "POST Object"). The policy bounds what the form may carry: an expiration, a
// condition for every field, the object's size (content-length-range). The signature is AWS's SigV4 one
// (x-amz-algorithm, x-amz-credential, x-amz-date, x-amz-signature) or the older AWSAccessKeyId + signature (HMAC-SHA1
// of the policy), which S3 still takes for form uploads. The file streams into the store like a PutObject body.
import { createHash, createHmac } from "node:crypto";
import type { IncomingHttpHeaders, IncomingMessage } from "node:http";
import { constantTimeEqual, zero } from "../../crypto/bytes.ts";
import { ANONYMOUS } from "../../service/login.ts";
import { WriteBatcher } from "../../vfs/write-batch.ts";
import { apiName, Checksum, checksumAlgorithm } from "./checksum.ts";
import { bucketExists, type Ctx, hasControl, mkdirs, objectPath, send } from "./context.ts";
import { S3Error } from "./errors.ts";
import type { Form } from "./form.ts";
import { aclToKeep, cannedAcl } from "./grants.ts";
import { metadataOf, objectMeta } from "./metadata.ts";
import { writePlan } from "./objects.ts";
import type { ParsedAuth } from "./sigv4.ts";
import { MAX_SKEW_MS, signingKey } from "./sigv4.ts";
import { sseHeaders } from "./sse.ts";
import { parseTagging } from "./tagging.ts";
import { xmlDoc } from "./xml.ts";

/**
 * An unsigned POST to a bucket itself (no sub-resource) is a POST Object when its body is a form; any other POST is
 * a signed request.
 */
export function isPostObject(req: IncomingMessage, bucket: string, key: string, query: [string, string][]): boolean {
  return (
    req.method === "POST" &&
    bucket !== "" &&
    key === "" &&
    req.headers.authorization === undefined &&
    query.length === 0
  );
}

const denied = (m: string) => new S3Error("AccessDenied", 403, m);
const invalidPolicy = (m: string) => new S3Error("InvalidPolicyDocument", 400, `Invalid Policy: ${m}`);

/** Fields the policy need not name: the credentials, the file, the file's checksum and what S3 ignores. */
function exempt(name: string): boolean {
  return (
    ["awsaccesskeyid", "signature", "policy", "x-amz-signature", "file"].includes(name) ||
    name.startsWith("x-ignore-") ||
    name.startsWith("x-amz-checksum-")
  );
}

export interface PostCredential {
  auth: ParsedAuth;
  verifier: { verify(secret: Buffer): boolean; signingKey(): Buffer | undefined };
}

/** The form's credential and the check of its policy signature the login service runs with the key's secret. */
export function postCredential(form: Form, now: number): PostCredential {
  const f = form.fields;
  const policy = f.get("policy");
  const auth = (accessKeyId: string, scope = ""): ParsedAuth => ({
    accessKeyId,
    scope,
    amzDate: "",
    signedHeaders: [],
    signature: "",
    payload: "UNSIGNED-PAYLOAD",
    presigned: false,
  });
  if (f.has("x-amz-credential") || f.has("x-amz-signature") || f.has("x-amz-algorithm")) {
    const cred = f.get("x-amz-credential") ?? "";
    const sig = f.get("x-amz-signature") ?? "";
    const date = f.get("x-amz-date") ?? "";
    if (f.get("x-amz-algorithm") !== "AWS4-HMAC-SHA256") {
      throw new S3Error("InvalidArgument", 400, "x-amz-algorithm must be AWS4-HMAC-SHA256");
    }
    if (!policy || !sig || !cred || !date) {
      throw new S3Error(
        "InvalidArgument",
        400,
        "a signed POST needs policy, x-amz-credential, x-amz-date and x-amz-signature",
      );
    }
    const parts = cred.split("/");
    if (parts.length !== 5 || parts[3] !== "s3" || parts[4] !== "aws4_request" || !/^\d{8}$/.test(parts[1] ?? "")) {
      throw new S3Error("InvalidArgument", 400, "malformed x-amz-credential");
    }
    const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(date);
    if (!m || !date.startsWith(parts[1] as string)) throw new S3Error("InvalidArgument", 400, "malformed x-amz-date");
    const [y, mo, d, h, mi, s] = m.slice(1).map(Number) as [number, number, number, number, number, number];
    // the policy's expiration bounds the form's life; a date far ahead of the clock is a forged or broken one
    if (Date.UTC(y, mo - 1, d, h, mi, s) - now > MAX_SKEW_MS) throw denied("Request is not valid yet");
    const scope = parts.slice(1).join("/");
    const given = Buffer.from(sig.toLowerCase());
    let derived: Buffer | undefined;
    return {
      auth: auth(parts[0] as string, scope),
      verifier: {
        verify(secret) {
          const key = signingKey(secret, scope);
          const ok = constantTimeEqual(Buffer.from(createHmac("sha256", key).update(policy).digest("hex")), given);
          if (ok) derived = key;
          else zero(key);
          return ok;
        },
        signingKey: () => derived,
      },
    };
  }
  const id = f.get("awsaccesskeyid");
  if (id !== undefined) {
    const sig = f.get("signature");
    if (!policy || !sig) throw new S3Error("InvalidArgument", 400, "a signed POST needs both policy and signature");
    const given = Buffer.from(sig);
    return {
      auth: auth(id),
      verifier: {
        verify: (secret) =>
          constantTimeEqual(Buffer.from(createHmac("sha1", secret).update(policy).digest("base64")), given),
        signingKey: () => undefined,
      },
    };
  }
  // atrest has no public buckets: every upload is signed by a user's key
  throw denied("Anonymous access is not allowed");
}

type Condition =
  | { kind: "eq" | "starts-with"; field: string; value: string }
  | { kind: "range"; min: number; max: number };

/** The policy document's conditions, after its expiration is checked. */
export function parsePolicy(policy: string, now: number): Condition[] {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(policy, "base64").toString("utf8"));
  } catch {
    throw invalidPolicy("Invalid JSON.");
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) throw invalidPolicy("Invalid JSON.");
  const { expiration, conditions } = doc as Record<string, unknown>;
  if (typeof expiration !== "string") throw invalidPolicy("Policy missing expiration.");
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$/.test(expiration) || Number.isNaN(Date.parse(expiration))) {
    throw invalidPolicy("Invalid 'expiration' value.");
  }
  if (!Array.isArray(conditions)) throw invalidPolicy("Policy missing conditions.");
  const out: Condition[] = [];
  for (const c of conditions) {
    if (Array.isArray(c)) {
      const op = typeof c[0] === "string" ? c[0].toLowerCase() : "";
      if (op === "content-length-range") {
        const [, min, max] = c;
        if (c.length !== 3 || !Number.isSafeInteger(min) || !Number.isSafeInteger(max) || min < 0 || min > max) {
          throw invalidPolicy("Invalid content-length-range condition.");
        }
        out.push({ kind: "range", min, max });
        continue;
      }
      const [, field, value] = c;
      if ((op !== "eq" && op !== "starts-with") || c.length !== 3 || typeof field !== "string") {
        throw invalidPolicy("Invalid condition.");
      }
      if (!field.startsWith("$") || typeof value !== "string") throw invalidPolicy("Invalid condition.");
      out.push({ kind: op, field: field.slice(1).toLowerCase(), value });
    } else if (typeof c === "object" && c !== null) {
      const entries = Object.entries(c);
      const [field, value] = entries[0] ?? [];
      if (entries.length !== 1 || field === undefined || typeof value !== "string") {
        throw invalidPolicy("Invalid condition.");
      }
      out.push({ kind: "eq", field: field.toLowerCase(), value });
    } else throw invalidPolicy("Invalid condition.");
  }
  // after the document is known to be well-formed: an expired one is refused as S3 refuses it
  if (Date.parse(expiration) < now) throw denied("Invalid according to Policy: Policy expired.");
  return out;
}

/**
 * Checks every condition against the form (the bucket is the one the URL names, the key after `${filename}`) and that
 * no field goes unnamed by the policy; the content-length-range, if any.
 */
export function checkPolicy(
  conditions: Condition[],
  fields: Map<string, string>,
): { min: number; max: number } | undefined {
  let range: { min: number; max: number } | undefined;
  const named = new Set<string>();
  for (const c of conditions) {
    if (c.kind === "range") {
      range = c;
      continue;
    }
    named.add(c.field);
    // an absent field is empty: ["starts-with", "$x-amz-server-side-encryption", ""] allows a form without it (as S3)
    const v = fields.get(c.field) ?? "";
    const ok = c.kind === "eq" ? v === c.value : v.startsWith(c.value);
    if (!ok) throw denied(`Invalid according to Policy: Policy Condition failed: ["${c.kind}", "$${c.field}", ...]`);
  }
  const extra = [...fields.keys()].filter((n) => !exempt(n) && !named.has(n));
  if (extra.length > 0) throw denied(`Invalid according to Policy: Extra input fields: ${extra.join(", ")}`);
  return range;
}

/** The request as the SSE and metadata helpers read it: the form's fields stand for the headers of a PutObject. */
export function fieldRequest(form: Form, req: IncomingMessage): Pick<IncomingMessage, "headers" | "socket"> {
  const headers: IncomingHttpHeaders = {};
  for (const [k, v] of form.fields) if (!exempt(k) && k !== "key" && k !== "bucket") headers[k] = v;
  return { headers, socket: req.socket };
}

/** An x-amz-checksum-<algorithm> field: the file's checksum, checked as it streams in. */
function formChecksum(fields: Map<string, string>): { checksum: Checksum; expected: Buffer } | undefined {
  const named = [...fields.keys()].filter((k) => k.startsWith("x-amz-checksum-") && k !== "x-amz-checksum-algorithm");
  if (named.length === 0) return undefined;
  if (named.length > 1) throw new S3Error("InvalidRequest", 400, "Expecting a single x-amz-checksum- field.");
  const name = named[0] as string;
  const algorithm = checksumAlgorithm(name.slice("x-amz-checksum-".length));
  const value = fields.get(name) ?? "";
  const expected = Buffer.from(value, "base64");
  if (expected.toString("base64") !== value || expected.length === 0) {
    throw new S3Error("InvalidRequest", 400, `Value for x-amz-checksum-${algorithm} is invalid.`);
  }
  return { checksum: new Checksum(algorithm), expected };
}

/** Stores the form's file under its key after the policy holds; answers as success_action_* ask. */
export async function postObject(c: Ctx, form: Form, now: number): Promise<void> {
  const fields = new Map(form.fields);
  const file = form.file;
  if (!file) throw new S3Error("InvalidArgument", 400, "POST requires exactly one file upload per request.");
  const rawKey = fields.get("key");
  if (rawKey === undefined || rawKey === "") {
    throw new S3Error("InvalidArgument", 400, "Bucket POST must contain a field named 'key'.");
  }
  // biome-ignore lint/suspicious/noTemplateCurlyInString: S3's literal placeholder for the file part's name
  const key = rawKey.replaceAll("${filename}", file.filename);
  fields.set("key", key);
  fields.set("bucket", c.bucket);
  // an unsigned form (into a bucket whose ACL lets anyone write) has no policy to hold it to
  const unsigned = c.requester === ANONYMOUS && !fields.has("policy");
  const range = unsigned ? undefined : checkPolicy(parsePolicy(fields.get("policy") ?? "", now), fields);
  if (key.length > 1024) throw new S3Error("KeyTooLongError", 400, "Your key is too long");
  if (hasControl(key)) throw new S3Error("InvalidURI", 400, "Couldn't parse the specified URI.");
  if (key.endsWith("/") || key.split("/").some((p) => p === "." || p === "..")) {
    throw new S3Error("InvalidArgument", 400, "a POST key names a file");
  }
  // what atrest does not keep is refused, not dropped: an object would not be what the form asked for
  const canned = fields.get("acl");
  const acl =
    canned === undefined ? undefined : aclToKeep(cannedAcl(c, canned, c.session.username), c.session.username);
  const tagging = fields.get("tagging");
  const tags = tagging === undefined ? undefined : parseTagging(tagging);
  const sum = formChecksum(fields);
  await bucketExists(c.session, c.bucket);
  const at = { ...c, key, req: fieldRequest(form, c.req) as IncomingMessage };
  const plan = await writePlan(at);
  const headers = metadataOf(at.req);
  const path = objectPath(c.bucket, key);
  await mkdirs(c.session, path.slice(0, path.lastIndexOf("/")));
  const md5 = createHash("md5");
  let size = 0;
  const w = await c.session.openWrite(path, { truncate: true, ...plan, parents: true });
  try {
    const out = new WriteBatcher(w);
    for await (const piece of file.pieces) {
      size += piece.length;
      if (range && size > range.max) {
        throw new S3Error("EntityTooLarge", 400, "Your proposed upload exceeds the maximum allowed size");
      }
      md5.update(piece);
      sum?.checksum.update(piece);
      await out.push(piece);
    }
    if (range && size < range.min) {
      throw new S3Error("EntityTooSmall", 400, "Your proposed upload is smaller than the minimum allowed size");
    }
    if (sum && !constantTimeEqual(sum.checksum.digest(), sum.expected)) {
      throw new S3Error(
        "BadDigest",
        400,
        `The ${apiName(sum.checksum.algorithm)} you specified did not match the calculated checksum.`,
      );
    }
    await out.flush();
  } catch (err) {
    await w.abort(false).catch(() => undefined);
    throw err;
  }
  const etag = md5.digest("hex");
  const kept = sum && { algorithm: sum.checksum.algorithm, value: sum.expected.toString("base64") };
  await w.close(undefined, objectMeta(etag, headers, kept && { ...kept, type: "FULL_OBJECT" }, tags, acl));
  const location = `/${encodeURIComponent(c.bucket)}/${key.split("/").map(encodeURIComponent).join("/")}`;
  const answer = {
    etag: `"${etag}"`,
    location,
    ...sseHeaders(await c.session.keyOf?.(path, c.customerKey?.key), c.customerKey),
  };
  const redirect = fields.get("success_action_redirect") ?? fields.get("redirect");
  if (redirect && /^https?:\/\//i.test(redirect)) {
    const q = `bucket=${encodeURIComponent(c.bucket)}&key=${encodeURIComponent(key)}&etag=${encodeURIComponent(`"${etag}"`)}`;
    send(c.res, 303, undefined, { ...answer, location: `${redirect}${redirect.includes("?") ? "&" : "?"}${q}` });
    return;
  }
  const status = fields.get("success_action_status");
  if (status === "201") {
    // without a namespace, as S3 answers it (clients look up <Key> unqualified)
    const body = xmlDoc("PostResponse", { Location: location, Bucket: c.bucket, Key: key, ETag: `"${etag}"` }).replace(
      ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"',
      "",
    );
    send(c.res, 201, body, answer);
  } else send(c.res, status === "200" ? 200 : 204, undefined, answer);
}
