// Signed key-manager calls relayed by a file server: how a person who holds no TLS connection to the key manager
// (a custodian in the browser) still acts at it under their own identity. The person's key (ECDSA P-256, in the
// browser: WebCrypto, non-extractable) signs one statement naming the exact call (method, path, body), the key
// manager it is meant for (`aud`: the SHA-256 of that KMS's CA certificate), a time and a nonce; the key manager's CA
// certified that key (`atrest kms client issue NAME --role custodian --public-key FILE`). The file server only carries
// the envelope: it cannot make or change one, so it cannot act for the person. docs/kms.md "Signed calls" has the
// threat analysis; the key manager's side is src/kms/server/relay.ts.

import { createHash, X509Certificate } from "node:crypto";
import { AtrestError } from "../../errors.ts";

/** The file server's request header carrying a base64url JSON envelope (SignedKmsCall). */
export const KMS_SIGNED_HEADER = "atrest-kms-signed";
/** A statement is accepted this long after (and before, for clock skew) its `created` time. */
export const STATEMENT_MAX_AGE_MS = 120_000;
const MAX_ENVELOPE_CHARS = 16_384;

export type RelayMethod = "GET" | "POST" | "PUT";

export interface KmsStatement {
  v: 1;
  /** Hex SHA-256 of the DER of the key manager's CA certificate. */
  aud: string;
  method: RelayMethod;
  /** Path with its query, as the key manager serves it (`/v1/requests/ID/approve`). */
  path: string;
  /** The JSON body (null for none). */
  body: unknown;
  /** Unix time, ms. */
  created: number;
  /** 16 random bytes, base64url: the key manager refuses a nonce it has seen. */
  nonce: string;
}

export interface SignedKmsCall {
  /** The statement's exact JSON text (what was signed). */
  statement: string;
  /** ECDSA P-256 / SHA-256 over the statement's UTF-8 bytes, IEEE P1363 (r‖s, what WebCrypto produces), base64url. */
  signature: string;
  /** The signer's certificate (PEM), issued by the key manager's CA. */
  certificate: string;
}

/** The audience value of a key manager: SHA-256 of its CA certificate (PEM → DER). */
export function audienceOf(caPem: string): string {
  return createHash("sha256").update(new X509Certificate(caPem).raw).digest("hex");
}

/** The statement text for a call; key order fixed so the same call always reads the same. */
export function statementFor(
  aud: string,
  method: RelayMethod,
  path: string,
  body: unknown,
  nonce: string,
  now = Date.now(),
): string {
  const s: KmsStatement = { v: 1, aud, method, path, body: body ?? null, created: now, nonce };
  return JSON.stringify(s);
}

const B64URL = /^[A-Za-z0-9_-]+$/;

/** JSON with sorted keys (and undefined members dropped): two bodies are the same call when these match. */
export function canonicalBody(v: unknown): string {
  const walk = (x: unknown): unknown =>
    Array.isArray(x)
      ? x.map(walk)
      : x && typeof x === "object"
        ? Object.fromEntries(
            Object.keys(x)
              .sort()
              .filter((k) => (x as Record<string, unknown>)[k] !== undefined)
              .map((k) => [k, walk((x as Record<string, unknown>)[k])]),
          )
        : x;
  return JSON.stringify(walk(v ?? null));
}

/** Parses and shape-checks a statement's text (not its signature, time or nonce). */
export function parseStatement(text: string): KmsStatement {
  let s: unknown;
  try {
    s = JSON.parse(text);
  } catch {
    throw new AtrestError("INVALID_INPUT", "the signed statement is not JSON");
  }
  const o = s as Partial<KmsStatement> | null;
  if (
    !o ||
    typeof o !== "object" ||
    o.v !== 1 ||
    typeof o.aud !== "string" ||
    !/^[0-9a-f]{64}$/.test(o.aud) ||
    (o.method !== "GET" && o.method !== "POST" && o.method !== "PUT") ||
    typeof o.path !== "string" ||
    !o.path.startsWith("/v1/") ||
    o.path.length > 512 ||
    typeof o.created !== "number" ||
    !Number.isSafeInteger(o.created) ||
    typeof o.nonce !== "string" ||
    o.nonce.length < 16 ||
    o.nonce.length > 64 ||
    !B64URL.test(o.nonce) ||
    !("body" in o)
  ) {
    throw new AtrestError(
      "INVALID_INPUT",
      "the signed statement is malformed (expected v, aud, method, path, body, created, nonce)",
    );
  }
  return o as KmsStatement;
}

/** The envelope from its header form, shape-checked. */
export function decodeSignedCall(header: string): SignedKmsCall {
  if (header.length > MAX_ENVELOPE_CHARS || !B64URL.test(header)) {
    throw new AtrestError(
      "INVALID_INPUT",
      `${KMS_SIGNED_HEADER} must be base64url JSON of at most ${MAX_ENVELOPE_CHARS} characters`,
    );
  }
  return checkSignedCall(
    (() => {
      try {
        return JSON.parse(Buffer.from(header, "base64url").toString("utf8")) as unknown;
      } catch {
        throw new AtrestError("INVALID_INPUT", `${KMS_SIGNED_HEADER} is not base64url JSON`);
      }
    })(),
  );
}

export function checkSignedCall(v: unknown): SignedKmsCall {
  const o = v as Partial<SignedKmsCall> | null;
  if (
    !o ||
    typeof o !== "object" ||
    typeof o.statement !== "string" ||
    o.statement.length > 8192 ||
    typeof o.signature !== "string" ||
    !B64URL.test(o.signature) ||
    o.signature.length > 128 ||
    typeof o.certificate !== "string" ||
    o.certificate.length > 8192 ||
    !o.certificate.includes("-----BEGIN CERTIFICATE-----")
  ) {
    throw new AtrestError(
      "INVALID_INPUT",
      "a signed call needs statement, signature (base64url) and certificate (PEM)",
    );
  }
  return { statement: o.statement, signature: o.signature, certificate: o.certificate };
}

export function encodeSignedCall(call: SignedKmsCall): string {
  return Buffer.from(JSON.stringify(call), "utf8").toString("base64url");
}

/**
 * Refusal of a custodian call that must be signed by the person: carries the statement to sign (the client signs it
 * and sends the same request again with the envelope in the `atrest-kms-signed` header).
 */
export class SignatureRequiredError extends AtrestError {
  readonly statement: string;
  constructor(statement: string, message: string) {
    super("AUTH_FAILED", message);
    this.statement = statement;
  }
}
