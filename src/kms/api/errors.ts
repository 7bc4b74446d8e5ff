// The error codes of the key manager API, one list for both ends: the service answers with them (problem+json `code`,
// a batch item's `error.code`) and the client maps each back to the AtrestError the embedded key manager would have
// thrown, so a caller cannot tell an embedded from a remote key manager by its errors.

import { AtrestError, type ErrorCode, IntegrityError, KeyUnavailableError } from "../../errors.ts";

/** Every AtrestError code, plus INTERNAL for an unexpected failure (whose message the service never echoes). */
export type KmsErrorCode = ErrorCode | "INTERNAL";

/** HTTP status and problem title per code. A Record, so a new ErrorCode does not compile until it has a row here. */
export const KMS_ERRORS: Readonly<Record<KmsErrorCode, { status: number; title: string }>> = {
  INVALID_INPUT: { status: 400, title: "invalid input" },
  INVALID_PATH: { status: 400, title: "invalid path" },
  AUTH_FAILED: { status: 401, title: "authentication failed" },
  PERMISSION_DENIED: { status: 403, title: "permission denied" },
  NOT_FOUND: { status: 404, title: "not found" },
  EXISTS: { status: 409, title: "already exists" },
  NOT_EMPTY: { status: 409, title: "not empty" },
  NOT_A_DIRECTORY: { status: 409, title: "not a directory" },
  IS_A_DIRECTORY: { status: 409, title: "is a directory" },
  // Not sent by the key manager today (it has no handles); a state conflict for any HTTP door.
  HANDLE_CLOSED: { status: 409, title: "handle closed" },
  CONFLICT: { status: 409, title: "conflict" },
  // Known key, unusable now (version below the minimum, destroyed, deactivated for encryption …).
  KEY_UNAVAILABLE: { status: 409, title: "key unavailable" },
  QUOTA_EXCEEDED: { status: 413, title: "too large" },
  // Authentication of a wrapped key failed: almost always the wrong encryption context.
  INTEGRITY: { status: 422, title: "integrity check failed" },
  UNSUPPORTED: { status: 501, title: "unsupported" },
  REFUSED: { status: 422, title: "refused" },
  // The audit log cannot be written and fail-closed is on.
  AUDIT_UNAVAILABLE: { status: 503, title: "audit log unavailable" },
  // The key manager's disk is full: nothing was stored.
  NO_SPACE: { status: 507, title: "insufficient storage" },
  KEY_REQUIRED: { status: 403, title: "customer key required" },
  // A resource bound of the server was reached; retrying later may succeed.
  LIMIT_EXCEEDED: { status: 429, title: "too many" },
  // A store the service depends on does not answer: retrying (another node) may succeed.
  UNAVAILABLE: { status: 503, title: "service unavailable" },
  INTERNAL: { status: 500, title: "internal error" },
};

export const KMS_ERROR_CODES = Object.keys(KMS_ERRORS) as readonly KmsErrorCode[];

export function isKmsErrorCode(code: unknown): code is KmsErrorCode {
  return typeof code === "string" && Object.hasOwn(KMS_ERRORS, code);
}

/** What a client is told of an unexpected failure: its own text could carry anything, so it stays in the KMS log. */
export const INTERNAL_ERROR_MESSAGE = "internal error (see the KMS log)";

/** A batch item that failed; the other items of the batch are unaffected. */
export interface KmsItemError {
  error: { code: KmsErrorCode; message: string };
}

/** The code to send for `err`: its own, or INTERNAL for anything that is not an AtrestError. */
export function kmsErrorCode(err: unknown): KmsErrorCode {
  return err instanceof AtrestError ? err.code : "INTERNAL";
}

/**
 * The same error class the embedded key manager would have thrown for `code`. INTERNAL, a missing code (a proxy's
 * answer) and a code this client does not know all read as "key unavailable": the key could not be had.
 */
export function errorFromCode(code: string | undefined, message: string): AtrestError {
  if (code === "KEY_UNAVAILABLE") return new KeyUnavailableError(message);
  if (code === "INTEGRITY") return new IntegrityError(message);
  if (isKmsErrorCode(code) && code !== "INTERNAL") return new AtrestError(code, message);
  return new KeyUnavailableError(message);
}
