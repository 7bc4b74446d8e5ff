// Typed errors shared by every layer. Protocol adapters map `code` once (SFTP status, HTTP problem, S3 error).
// Messages must never contain secrets or plaintext: name key ids, paths and sizes only.

export type ErrorCode =
  | "INTEGRITY"
  | "KEY_UNAVAILABLE"
  | "NOT_FOUND"
  | "EXISTS"
  | "NOT_EMPTY"
  | "NOT_A_DIRECTORY"
  | "IS_A_DIRECTORY"
  | "PERMISSION_DENIED"
  | "QUOTA_EXCEEDED"
  | "INVALID_PATH"
  | "INVALID_INPUT"
  // A read or write on a handle that is closed, aborted or unknown: a client bug or a race with close, not bad data.
  | "HANDLE_CLOSED"
  // The request is well formed but the target's state no longer allows it (a request already decided or expired, a
  // one-time token already used, an unseal share already submitted): retrying the same request cannot succeed.
  | "CONFLICT"
  | "UNSUPPORTED"
  | "AUTH_FAILED"
  // A policy refused the operation (e.g. an OpenPGP recipient is expired, an upload is not an OpenPGP message); the
  // message says why and is safe to show to the client.
  | "REFUSED"
  // The audit log cannot be written and audit.failClosed is on.
  | "AUDIT_UNAVAILABLE"
  // The file system holding the data (blobs, metadata) is full, or the OS user's disk quota is reached.
  | "NO_SPACE"
  // The object is encrypted with a customer-provided key (S3 SSE-C) and the request did not bring it.
  | "KEY_REQUIRED"
  // A resource bound was reached (open files per user, buffered bytes, connections): retrying later may succeed.
  | "LIMIT_EXCEEDED"
  // A service the server stores in does not answer (the metadata database, the object store): retrying later may
  // succeed, nothing was changed by the refused operation that a retry could double.
  | "UNAVAILABLE";

export class AtrestError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Ciphertext, header or metadata failed authentication. No plaintext is ever returned alongside it. */
export class IntegrityError extends AtrestError {
  constructor(message = "integrity check failed", options?: ErrorOptions) {
    super("INTEGRITY", message, options);
  }
}

/** The key manager cannot (or will not) provide the key: sealed, unreachable, key destroyed or version retired. */
export class KeyUnavailableError extends AtrestError {
  constructor(message: string, options?: ErrorOptions) {
    super("KEY_UNAVAILABLE", message, options);
  }
}

export class NotFoundError extends AtrestError {
  constructor(what: string) {
    super("NOT_FOUND", `no such file or directory: ${what}`);
  }
}

export class PermissionDeniedError extends AtrestError {
  constructor(permission: string, path: string) {
    super("PERMISSION_DENIED", `permission denied: ${permission} on ${path}`);
  }
}

export class QuotaExceededError extends AtrestError {
  constructor(message: string) {
    super("QUOTA_EXCEEDED", message);
  }
}

/**
 * A write's precondition did not hold when it committed (S3 conditional PutObject: If-Match / If-None-Match): the
 * name keeps what it had. A CONFLICT to every door; the S3 door answers it 412 PreconditionFailed.
 */
export class PreconditionFailedError extends AtrestError {
  constructor(message = "the precondition of the write did not hold") {
    super("CONFLICT", message);
  }
}

export class HandleClosedError extends AtrestError {
  constructor(message = "handle is closed") {
    super("HANDLE_CLOSED", message);
  }
}

/** The disk (or the OS disk quota) is full; what was being written is not stored, nothing else changed. */
export class NoSpaceError extends AtrestError {
  constructor(options?: ErrorOptions) {
    super("NO_SPACE", "no space left on device", options);
  }
}

/**
 * The typed error for a full disk when `err` is one (ENOSPC, EDQUOT, SQLite's "database or disk is full"), else `err`
 * itself. Storage drivers pass what they throw through this, so every door can say what happened.
 */
export function noSpaceOr(err: unknown): unknown {
  if (err instanceof AtrestError) return err;
  const e = err as { code?: unknown; errcode?: unknown } | null;
  if (e && (e.code === "ENOSPC" || e.code === "EDQUOT" || (e.code === "ERR_SQLITE_ERROR" && e.errcode === 13))) {
    return new NoSpaceError({ cause: err });
  }
  return err;
}

export class InvalidPathError extends AtrestError {
  constructor(reason: string) {
    super("INVALID_PATH", `invalid path: ${reason}`);
  }
}
