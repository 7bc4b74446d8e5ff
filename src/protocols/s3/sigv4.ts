// AWS Signature Version 4 for S3: header auth (Authorization: AWS4-HMAC-SHA256 …) and presigned URLs (X-Amz-*
// query parameters), the canonical request as S3 defines it (the path encoded once), a 15-minute clock-skew window,
// constant-time signature compares. The secret itself stays in the login service: `verifier` returns the check that
// service runs, and keeps the derived signing key for the request's chunk signatures (aws-chunked).
import { createHash, createHmac } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { constantTimeEqual, zero } from "../../crypto/bytes.ts";
import { S3Error } from "./errors.ts";

export const MAX_SKEW_MS = 15 * 60 * 1000;
const MAX_PRESIGN_SECONDS = 7 * 24 * 3600;
export const EMPTY_SHA256 = createHash("sha256").update("").digest("hex");

export interface ParsedAuth {
  accessKeyId: string;
  /** yyyymmdd/region/s3/aws4_request */
  scope: string;
  amzDate: string;
  signedHeaders: string[];
  signature: string;
  /** The x-amz-content-sha256 value (UNSIGNED-PAYLOAD for presigned URLs). */
  payload: string;
  presigned: boolean;
}

/** What an unsigned (anonymous) request counts as: no key, its body taken as sent. */
export const UNSIGNED: ParsedAuth = Object.freeze({
  accessKeyId: "",
  scope: "",
  amzDate: "",
  signedHeaders: [],
  signature: "",
  payload: "UNSIGNED-PAYLOAD",
  presigned: false,
});

export const sha256hex = (data: string | Buffer) => createHash("sha256").update(data).digest("hex");
const hmac = (key: Buffer, data: string) => createHmac("sha256", key).update(data).digest();

function awsEncode(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new S3Error("InvalidURI", 400, "Couldn't parse the specified URI.");
  }
}

/** Query parameters in order of appearance, decoded (`+` is a literal plus in S3 URLs as AWS signs them). */
export function queryPairs(rawQuery: string): [string, string][] {
  if (!rawQuery) return [];
  return rawQuery
    .split("&")
    .filter((p) => p.length > 0)
    .map((p) => {
      const eq = p.indexOf("=");
      return eq < 0 ? [safeDecode(p), ""] : [safeDecode(p.slice(0, eq)), safeDecode(p.slice(eq + 1))];
    });
}

function parseAmzDate(d: string): number {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(d);
  if (!m) throw new S3Error("AccessDenied", 403, "AWS authentication requires a valid Date or x-amz-date header");
  const n = m.slice(1).map(Number) as [number, number, number, number, number, number];
  return Date.UTC(n[0], n[1] - 1, n[2], n[3], n[4], n[5]);
}

/** Parses the request's credentials (header or query); throws S3 errors for malformed or expired ones. */
export function parseAuth(req: IncomingMessage, query: [string, string][], now: number): ParsedAuth {
  const header = req.headers.authorization;
  const q = new Map(query);
  let parsed: ParsedAuth;
  if (header !== undefined) {
    const m = /^AWS4-HMAC-SHA256\s+(.*)$/s.exec(header);
    if (!m) {
      throw new S3Error(
        header.startsWith("AWS ") ? "InvalidRequest" : "AuthorizationHeaderMalformed",
        400,
        "only AWS4-HMAC-SHA256 is supported",
      );
    }
    const fields = new Map<string, string>();
    for (const part of (m[1] as string).split(",")) {
      const eq = part.indexOf("=");
      if (eq > 0) fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
    }
    const cred = fields.get("Credential");
    const signed = fields.get("SignedHeaders");
    const sig = fields.get("Signature");
    if (!cred || !signed || !sig)
      throw new S3Error("AuthorizationHeaderMalformed", 400, "incomplete Authorization header");
    const amzDate = headerValue(req, "x-amz-date") ?? "";
    const payload = headerValue(req, "x-amz-content-sha256");
    if (!payload)
      throw new S3Error("InvalidRequest", 400, "Missing required header for this request: x-amz-content-sha256");
    parsed = credential(cred, signed, sig, amzDate, payload, false);
    const t = parseAmzDate(amzDate);
    if (Math.abs(now - t) > MAX_SKEW_MS) {
      throw new S3Error(
        "RequestTimeTooSkewed",
        403,
        "The difference between the request time and the current time is too large.",
      );
    }
  } else if (q.get("X-Amz-Algorithm") !== undefined) {
    if (q.get("X-Amz-Algorithm") !== "AWS4-HMAC-SHA256")
      throw new S3Error("AuthorizationQueryParametersError", 400, "X-Amz-Algorithm must be AWS4-HMAC-SHA256");
    const cred = q.get("X-Amz-Credential");
    const signed = q.get("X-Amz-SignedHeaders");
    const sig = q.get("X-Amz-Signature");
    const amzDate = q.get("X-Amz-Date");
    const expires = Number(q.get("X-Amz-Expires"));
    if (!cred || !signed || !sig || !amzDate || !Number.isInteger(expires)) {
      throw new S3Error("AuthorizationQueryParametersError", 400, "incomplete presigned URL");
    }
    // a lifetime of 0 or less is an expired URL (what AWS answers); beyond 7 days a malformed one
    if (expires < 1) throw new S3Error("AccessDenied", 403, "Request has expired");
    // beyond 7 days: refused as Ceph RGW refuses it and ceph/s3-tests checks (AWS answers 400
    // AuthorizationQueryParametersError)
    if (expires > MAX_PRESIGN_SECONDS) {
      throw new S3Error("AccessDenied", 403, "X-Amz-Expires must be less than a week (in seconds) that is 604800");
    }
    parsed = credential(cred, signed, sig, amzDate, "UNSIGNED-PAYLOAD", true);
    const t = parseAmzDate(amzDate);
    if (t - now > MAX_SKEW_MS) throw new S3Error("AccessDenied", 403, "Request is not valid yet");
    if (now > t + expires * 1000) throw new S3Error("AccessDenied", 403, "Request has expired");
  } else {
    throw new S3Error("AccessDenied", 403, "Anonymous access is not allowed");
  }
  return parsed;
}

function credential(
  cred: string,
  signed: string,
  sig: string,
  amzDate: string,
  payload: string,
  presigned: boolean,
): ParsedAuth {
  const parts = cred.split("/");
  if (parts.length !== 5 || parts[3] !== "s3" || parts[4] !== "aws4_request" || !/^\d{8}$/.test(parts[1] as string)) {
    throw new S3Error("AuthorizationHeaderMalformed", 400, "malformed credential scope");
  }
  if (!amzDate.startsWith(parts[1] as string)) {
    throw new S3Error("AuthorizationHeaderMalformed", 400, "the credential date does not match the request date");
  }
  if (!/^[0-9a-f]{64}$/.test(sig)) throw new S3Error("SignatureDoesNotMatch", 403, "malformed signature");
  return {
    accessKeyId: parts[0] as string,
    scope: parts.slice(1).join("/"),
    amzDate,
    signedHeaders: signed.split(";"),
    signature: sig,
    payload,
    presigned,
  };
}

function headerValue(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(",") : v;
}

/** The canonical request of S3 SigV4 for this request. */
export function canonicalRequest(
  req: IncomingMessage,
  rawPath: string,
  query: [string, string][],
  auth: ParsedAuth,
): string {
  const path = rawPath
    .split("/")
    .map((seg) => awsEncode(safeDecode(seg)))
    .join("/");
  const q = query
    .filter(([k]) => !(auth.presigned && k === "X-Amz-Signature"))
    .map(([k, v]) => [awsEncode(k), awsEncode(v)] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join("&");
  const values = new Map<string, string[]>();
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = (req.rawHeaders[i] as string).toLowerCase();
    const list = values.get(name) ?? [];
    list.push((req.rawHeaders[i + 1] as string).trim().replace(/\s+/g, " "));
    values.set(name, list);
  }
  const headers = auth.signedHeaders.map((h) => {
    const v = values.get(h);
    if (v === undefined) throw new S3Error("SignatureDoesNotMatch", 403, `signed header ${h} is missing`);
    return `${h}:${v.join(",")}\n`;
  });
  if (!auth.signedHeaders.includes("host"))
    throw new S3Error("AuthorizationHeaderMalformed", 400, "host must be signed");
  return [req.method, path, q, headers.join(""), auth.signedHeaders.join(";"), auth.payload].join("\n");
}

/** The signing key of a scope (yyyymmdd/region/s3/aws4_request). */
export function signingKey(secret: Buffer, scope: string): Buffer {
  const [date, region, service] = scope.split("/") as [string, string, string];
  const k0 = Buffer.concat([Buffer.from("AWS4"), secret]);
  const k1 = hmac(k0, date);
  const k2 = hmac(k1, region);
  const k3 = hmac(k2, service);
  const key = hmac(k3, "aws4_request");
  zero(k0, k1, k2, k3);
  return key;
}

export function stringToSign(auth: ParsedAuth, canonical: string): string {
  return ["AWS4-HMAC-SHA256", auth.amzDate, auth.scope, sha256hex(canonical)].join("\n");
}

export function signatureMatches(key: Buffer, toSign: string, signature: string): boolean {
  return constantTimeEqual(Buffer.from(createHmac("sha256", key).update(toSign).digest("hex")), Buffer.from(signature));
}

/** The check the login service runs with the key's secret; on success `signingKey()` returns the derived key. */
export function verifier(
  auth: ParsedAuth,
  canonical: string,
): { verify(secret: Buffer): boolean; signingKey(): Buffer | undefined } {
  let derived: Buffer | undefined;
  return {
    verify(secret) {
      const key = signingKey(secret, auth.scope);
      const ok = signatureMatches(key, stringToSign(auth, canonical), auth.signature);
      if (ok) derived = key;
      else zero(key);
      return ok;
    },
    signingKey: () => derived,
  };
}

/** The string a chunk signature of aws-chunked (STREAMING-AWS4-HMAC-SHA256-PAYLOAD) signs. */
export function chunkStringToSign(auth: ParsedAuth, previous: string, chunkSha256: string): string {
  return ["AWS4-HMAC-SHA256-PAYLOAD", auth.amzDate, auth.scope, previous, EMPTY_SHA256, chunkSha256].join("\n");
}
