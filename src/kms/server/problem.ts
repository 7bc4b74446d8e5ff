// Errors → RFC 9457 problem+json, in one place. The client (src/kms/client.ts) maps `code` back to the same
// AtrestError classes, so a caller cannot tell an embedded from a remote key manager by its errors.

import { AtrestError, type ErrorCode } from "../../errors.ts";

export const PROBLEM_CONTENT_TYPE = "application/problem+json";
const TYPE_BASE = "urn:atrest:kms:problem:";

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  /** The AtrestError code, stable for clients. */
  code: ErrorCode | "INTERNAL";
}

const STATUS: Record<ErrorCode, number> = {
  INVALID_INPUT: 400,
  INVALID_PATH: 400,
  AUTH_FAILED: 401,
  PERMISSION_DENIED: 403,
  NOT_FOUND: 404,
  EXISTS: 409,
  NOT_EMPTY: 409,
  NOT_A_DIRECTORY: 409,
  IS_A_DIRECTORY: 409,
  // Known key, unusable now (version below the minimum, destroyed, deactivated for encryption …).
  KEY_UNAVAILABLE: 409,
  QUOTA_EXCEEDED: 413,
  // Authentication of a wrapped key failed: almost always the wrong encryption context.
  INTEGRITY: 422,
  UNSUPPORTED: 501,
  REFUSED: 422,
  // The audit log cannot be written and fail-closed is on.
  AUDIT_UNAVAILABLE: 503,
};

const TITLE: Record<ErrorCode, string> = {
  INVALID_INPUT: "invalid input",
  INVALID_PATH: "invalid path",
  AUTH_FAILED: "authentication failed",
  PERMISSION_DENIED: "permission denied",
  NOT_FOUND: "not found",
  EXISTS: "already exists",
  NOT_EMPTY: "not empty",
  NOT_A_DIRECTORY: "not a directory",
  IS_A_DIRECTORY: "is a directory",
  KEY_UNAVAILABLE: "key unavailable",
  QUOTA_EXCEEDED: "too large",
  INTEGRITY: "integrity check failed",
  UNSUPPORTED: "unsupported",
  REFUSED: "refused",
  AUDIT_UNAVAILABLE: "audit log unavailable",
};

/** Thrown by the server for a key operation while sealed; maps to 503 "sealed". */
export class SealedError extends AtrestError {
  constructor(remaining: number) {
    super(
      "KEY_UNAVAILABLE",
      remaining > 0
        ? `key manager is sealed: unseal with ${remaining} more share(s)`
        : "key manager is sealed: unseal it (atrest kms unseal)",
    );
  }
}

/** An HTTP-level refusal that is not an AtrestError from below (unknown route, wrong method, body too large). */
export class HttpError extends AtrestError {
  readonly status: number;
  readonly title: string;
  constructor(status: number, title: string, code: ErrorCode, detail: string) {
    super(code, detail);
    this.status = status;
    this.title = title;
  }
}

export function problemOf(err: unknown): Problem {
  if (err instanceof SealedError) {
    return { type: `${TYPE_BASE}sealed`, title: "sealed", status: 503, detail: err.message, code: err.code };
  }
  if (err instanceof HttpError) {
    const slug = err.title.replace(/\s+/g, "-");
    return { type: `${TYPE_BASE}${slug}`, title: err.title, status: err.status, detail: err.message, code: err.code };
  }
  if (err instanceof AtrestError) {
    return {
      type: `${TYPE_BASE}${err.code.toLowerCase().replace(/_/g, "-")}`,
      title: TITLE[err.code],
      status: STATUS[err.code],
      detail: err.message,
      code: err.code,
    };
  }
  // Never echo an unexpected error's message: it could come from anywhere. The server logs it.
  return {
    type: `${TYPE_BASE}internal`,
    title: "internal error",
    status: 500,
    detail: "internal error (see the KMS log)",
    code: "INTERNAL",
  };
}
