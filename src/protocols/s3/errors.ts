// The one place where errors become S3 error responses (XML with an exact S3 code and HTTP status). Unknown errors
// never leak their detail to the client; the caller logs them.
import { AtrestError, type ErrorCode, PreconditionFailedError } from "../../errors.ts";

/** An error the S3 door answers with a given S3 code. */
export class S3Error extends Error {
  readonly code: string;
  readonly status: number;
  /** Headers the error answer carries (a delete marker's x-amz-delete-marker and version id). */
  readonly headers?: Record<string, string>;
  constructor(code: string, status: number, message: string, headers?: Record<string, string>) {
    super(message);
    this.code = code;
    this.status = status;
    if (headers) this.headers = headers;
  }
}

export interface S3Failure {
  code: string;
  status: number;
  message: string;
  internal: boolean;
  headers?: Record<string, string>;
}

const MAP: Record<ErrorCode, [string, number, string | undefined]> = {
  NOT_FOUND: ["NoSuchKey", 404, "The specified key does not exist."],
  PERMISSION_DENIED: ["AccessDenied", 403, "Access Denied"],
  AUTH_FAILED: ["AccessDenied", 403, "Access Denied"],
  REFUSED: ["AccessDenied", 403, "Access Denied"],
  QUOTA_EXCEEDED: ["QuotaExceeded", 403, "quota exceeded"],
  INTEGRITY: ["InternalError", 500, "integrity check failed"],
  KEY_UNAVAILABLE: ["ServiceUnavailable", 503, "key manager unavailable"],
  AUDIT_UNAVAILABLE: ["ServiceUnavailable", 503, "audit log unavailable: request refused"],
  EXISTS: ["InvalidRequest", 409, "an object or folder of that name exists"],
  NOT_EMPTY: ["BucketNotEmpty", 409, "The bucket you tried to delete is not empty"],
  NOT_A_DIRECTORY: ["InvalidRequest", 409, "a key prefix names an object"],
  IS_A_DIRECTORY: ["InvalidRequest", 409, "the key names a folder"],
  INVALID_PATH: ["InvalidArgument", 400, undefined],
  INVALID_INPUT: ["InvalidArgument", 400, undefined],
  HANDLE_CLOSED: ["InternalError", 500, "internal error"],
  CONFLICT: ["OperationAborted", 409, undefined],
  UNSUPPORTED: ["NotImplemented", 501, undefined],
  // AWS's answer for a request it will not take now; clients back off and retry
  LIMIT_EXCEEDED: ["SlowDown", 503, undefined],
  NO_SPACE: ["ServiceUnavailable", 503, "no space left on device"],
  UNAVAILABLE: ["ServiceUnavailable", 503, "storage unavailable, please retry"],
  KEY_REQUIRED: [
    "InvalidRequest",
    400,
    "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.",
  ],
};

const PRECONDITION = "At least one of the pre-conditions you specified did not hold";

export function toS3Error(err: unknown): S3Failure {
  if (err instanceof S3Error) {
    return {
      code: err.code,
      status: err.status,
      message: err.message,
      internal: false,
      ...(err.headers ? { headers: err.headers } : {}),
    };
  }
  if (err instanceof PreconditionFailedError) {
    return { code: "PreconditionFailed", status: 412, message: PRECONDITION, internal: false };
  }
  if (err instanceof AtrestError) {
    const [code, status, message] = MAP[err.code];
    return { code, status, message: message ?? err.message, internal: false };
  }
  return {
    code: "InternalError",
    status: 500,
    message: "We encountered an internal error. Please try again.",
    internal: true,
  };
}

export const noSuchBucket = () => new S3Error("NoSuchBucket", 404, "The specified bucket does not exist");
export const accessDenied = () => new S3Error("AccessDenied", 403, "Access Denied");
