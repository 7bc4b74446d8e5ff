// Errors → RFC 9457 problem+json, in one place. Codes, statuses and titles come from the API's one list
// (../api/errors.ts), which the client uses to map `code` back to the same AtrestError classes.

import { AtrestError, type ErrorCode } from "../../errors.ts";
import { INTERNAL_ERROR_MESSAGE, KMS_ERRORS, type KmsErrorCode } from "../api/errors.ts";
import { StoreUnavailableError } from "../store/pg-sync.ts";
import { NodeUnavailableError } from "../unavailable.ts";

export const PROBLEM_CONTENT_TYPE = "application/problem+json";
const TYPE_BASE = "urn:atrest:kms:problem:";

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  /** The AtrestError code, stable for clients. */
  code: KmsErrorCode;
}

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
  if (err instanceof NodeUnavailableError) {
    if (!(err instanceof StoreUnavailableError)) {
      return {
        type: `${TYPE_BASE}node-unavailable`,
        title: "node unavailable",
        status: 503,
        detail: err.message,
        code: err.code,
      };
    }
    return {
      type: `${TYPE_BASE}store-unavailable`,
      title: "store unavailable",
      status: 503,
      detail: err.message,
      code: err.code,
    };
  }
  if (err instanceof HttpError) {
    const slug = err.title.replace(/\s+/g, "-");
    return { type: `${TYPE_BASE}${slug}`, title: err.title, status: err.status, detail: err.message, code: err.code };
  }
  if (err instanceof AtrestError) {
    return {
      type: `${TYPE_BASE}${err.code.toLowerCase().replace(/_/g, "-")}`,
      title: KMS_ERRORS[err.code].title,
      status: KMS_ERRORS[err.code].status,
      detail: err.message,
      code: err.code,
    };
  }
  // Never echo an unexpected error's message: it could come from anywhere. The server logs it.
  return {
    type: `${TYPE_BASE}internal`,
    title: KMS_ERRORS.INTERNAL.title,
    status: KMS_ERRORS.INTERNAL.status,
    detail: INTERNAL_ERROR_MESSAGE,
    code: "INTERNAL",
  };
}
