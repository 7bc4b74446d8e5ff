// The one place where vfs error codes become SFTP v3 status codes. v3 has few codes, so the reason goes in the
// message (OpenSSH's sftp prints it). Unknown errors never leak their detail to the client; the caller logs it.
import { AtrestError, type ErrorCode } from "../../errors.ts";
import { BadMessage, STATUS, type StatusCode } from "./protocol/packets.ts";

export interface SftpStatus {
  code: StatusCode;
  message: string;
  /** true when the error was not an expected, typed one and deserves an error log. */
  internal: boolean;
}

const MAP: Record<ErrorCode, [StatusCode, string | undefined]> = {
  NOT_FOUND: [STATUS.NO_SUCH_FILE, "no such file"],
  PERMISSION_DENIED: [STATUS.PERMISSION_DENIED, "permission denied"],
  AUTH_FAILED: [STATUS.PERMISSION_DENIED, "permission denied"],
  QUOTA_EXCEEDED: [STATUS.FAILURE, "quota exceeded"],
  INTEGRITY: [STATUS.FAILURE, "integrity check failed"],
  KEY_UNAVAILABLE: [STATUS.FAILURE, "key manager unavailable"],
  EXISTS: [STATUS.FAILURE, "file exists"],
  NOT_EMPTY: [STATUS.FAILURE, "directory not empty"],
  NOT_A_DIRECTORY: [STATUS.FAILURE, "not a directory"],
  IS_A_DIRECTORY: [STATUS.FAILURE, "is a directory"],
  INVALID_PATH: [STATUS.BAD_MESSAGE, undefined],
  INVALID_INPUT: [STATUS.BAD_MESSAGE, undefined],
  HANDLE_CLOSED: [STATUS.BAD_MESSAGE, undefined],
  CONFLICT: [STATUS.FAILURE, undefined],
  UNSUPPORTED: [STATUS.OP_UNSUPPORTED, undefined],
  REFUSED: [STATUS.PERMISSION_DENIED, undefined],
  AUDIT_UNAVAILABLE: [STATUS.FAILURE, "audit log unavailable: operation refused"],
  NO_SPACE: [STATUS.FAILURE, "no space left on device"],
  KEY_REQUIRED: [
    STATUS.PERMISSION_DENIED,
    "encrypted with a customer-provided key (S3 SSE-C): read it over S3 with that key",
  ],
  LIMIT_EXCEEDED: [STATUS.FAILURE, undefined],
  UNAVAILABLE: [STATUS.FAILURE, "storage unavailable, try again later"],
};

export function toStatus(err: unknown): SftpStatus {
  if (err instanceof AtrestError) {
    const entry = MAP[err.code];
    if (entry) return { code: entry[0], message: entry[1] ?? err.message, internal: false };
  }
  if (err instanceof BadMessage) return { code: STATUS.BAD_MESSAGE, message: err.message, internal: false };
  return { code: STATUS.FAILURE, message: "internal error", internal: true };
}
