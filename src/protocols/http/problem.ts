// The one place where errors become RFC 9457 application/problem+json answers of the HTTPS API. AtrestErrors from the
// layers below keep their message (they never carry secrets: src/errors.ts); Fastify's own refusals (malformed JSON,
// body too large, wrong content type) keep theirs; anything else is "internal error" to the client and logged.
import { AtrestError, type ErrorCode } from "../../errors.ts";
import { SignatureRequiredError } from "../../kms/api/relayed.ts";
import { SyncRefusal } from "../../sync/server/errors.ts";

export const PROBLEM_CONTENT_TYPE = "application/problem+json";
const TYPE_BASE = "urn:atrest:problem:";

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  /** Stable for clients: an AtrestError code, or an HTTP-level one (NOT_ACCEPTABLE, RANGE_NOT_SATISFIABLE …). */
  code: string;
  /** KMS_SIGNATURE_REQUIRED (428): the statement to sign. */
  statement?: string;
}

const STATUS: Record<ErrorCode, [number, string]> = {
  NOT_FOUND: [404, "not found"],
  EXISTS: [409, "already exists"],
  NOT_EMPTY: [409, "directory not empty"],
  NOT_A_DIRECTORY: [409, "not a directory"],
  IS_A_DIRECTORY: [409, "is a directory"],
  PERMISSION_DENIED: [403, "forbidden"],
  AUTH_FAILED: [401, "unauthorized"],
  QUOTA_EXCEEDED: [507, "quota exceeded"],
  INTEGRITY: [500, "integrity check failed"],
  KEY_UNAVAILABLE: [503, "key manager unavailable"],
  INVALID_PATH: [400, "invalid path"],
  INVALID_INPUT: [400, "invalid input"],
  HANDLE_CLOSED: [409, "conflict"],
  CONFLICT: [409, "conflict"],
  UNSUPPORTED: [501, "not implemented"],
  REFUSED: [422, "refused by policy"],
  AUDIT_UNAVAILABLE: [503, "audit log unavailable"],
  NO_SPACE: [507, "no space left on device"],
  KEY_REQUIRED: [403, "encrypted with a customer-provided key (S3 SSE-C): read it over S3 with that key"],
  LIMIT_EXCEEDED: [429, "too many requests"],
  UNAVAILABLE: [503, "service unavailable"],
};

/** A refusal decided by the door itself (no such route, a Range past the end, a missing header). */
export class HttpProblem extends AtrestError {
  readonly status: number;
  readonly title: string;
  readonly slug: string;
  readonly headers: Record<string, string>;
  constructor(
    status: number,
    slug: string,
    detail: string,
    options: { code?: ErrorCode; headers?: Record<string, string> } = {},
  ) {
    super(options.code ?? "INVALID_INPUT", detail);
    this.status = status;
    this.slug = slug;
    this.title = slug.replace(/_/g, " ").toLowerCase();
    this.headers = options.headers ?? {};
  }
}

function problem(status: number, slug: string, title: string, detail: string): Problem {
  return { type: `${TYPE_BASE}${slug.toLowerCase().replace(/_/g, "-")}`, title, status, detail, code: slug };
}

/** Fastify's own errors (FST_ERR_CTP_*, FST_ERR_VALIDATION …) carry a 4xx statusCode and a message safe to show. */
function fastifyError(err: unknown): { status: number; message: string; code: string } | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const e = err as { statusCode?: unknown; code?: unknown; message?: unknown };
  if (typeof e.statusCode !== "number" || e.statusCode < 400 || e.statusCode > 499) return undefined;
  if (typeof e.code !== "string" || !e.code.startsWith("FST_")) return undefined;
  return { status: e.statusCode, message: String(e.message), code: e.code };
}

const FASTIFY_SLUGS: Record<number, string> = {
  400: "INVALID_INPUT",
  404: "NOT_FOUND",
  405: "METHOD_NOT_ALLOWED",
  406: "NOT_ACCEPTABLE",
  413: "PAYLOAD_TOO_LARGE",
  415: "UNSUPPORTED_MEDIA_TYPE",
};

export interface MappedProblem {
  problem: Problem;
  headers: Record<string, string>;
  /** Not an expected, typed error: the caller logs it. */
  internal: boolean;
}

export function problemOf(err: unknown): MappedProblem {
  if (err instanceof HttpProblem) {
    return { problem: problem(err.status, err.slug, err.title, err.message), headers: err.headers, internal: false };
  }
  if (err instanceof SignatureRequiredError) {
    // the caller signs `statement` with their custody key and repeats the request (src/kms/api/relayed.ts)
    const p = problem(428, "KMS_SIGNATURE_REQUIRED", "signature required", err.message);
    return { problem: { ...p, statement: err.statement }, headers: {}, internal: false };
  }
  if (err instanceof SyncRefusal) {
    // the sync server's refusals keep their own slug (DEVICE_REVOKED, STALE_MANIFEST …): the sync client acts on it
    return {
      problem: problem(err.status, err.slug, err.slug.replace(/_/g, " ").toLowerCase(), err.message),
      headers: {},
      internal: false,
    };
  }
  if (err instanceof AtrestError) {
    const [status, title] = STATUS[err.code] ?? [500, "internal error"];
    // An integrity failure names what failed in the server log, not to the client.
    const detail = err.code === "INTEGRITY" ? "integrity check failed" : err.message;
    return { problem: problem(status, err.code, title, detail), headers: {}, internal: err.code === "INTEGRITY" };
  }
  const f = fastifyError(err);
  if (f) {
    const slug = FASTIFY_SLUGS[f.status] ?? "BAD_REQUEST";
    return {
      problem: problem(f.status, slug, slug.replace(/_/g, " ").toLowerCase(), f.message),
      headers: {},
      internal: false,
    };
  }
  return { problem: problem(500, "INTERNAL", "internal error", "internal error"), headers: {}, internal: true };
}
