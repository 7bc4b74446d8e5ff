// Refusals of the sync server, each with a stable slug the HTTPS door turns into its problem `code` (and status).
import { AtrestError, type ErrorCode } from "../../errors.ts";

export const SYNC_REFUSALS = {
  BAD_OBJECT: [400, "INVALID_INPUT"],
  HASH_MISMATCH: [400, "INTEGRITY"],
  BAD_SIGNATURE: [403, "PERMISSION_DENIED"],
  DEVICE_UNKNOWN: [403, "PERMISSION_DENIED"],
  DEVICE_REVOKED: [403, "PERMISSION_DENIED"],
  NOT_OWNER: [403, "PERMISSION_DENIED"],
  NOT_MEMBER: [404, "NOT_FOUND"],
  NO_SUCH_REGION: [404, "NOT_FOUND"],
  NO_SUCH_VERSION: [404, "NOT_FOUND"],
  NO_SUCH_BLOB: [404, "NOT_FOUND"],
  NO_SUCH_LINK: [404, "NOT_FOUND"],
  LINK_GONE: [410, "NOT_FOUND"],
  REGION_EXISTS: [409, "EXISTS"],
  CHAIN_CONFLICT: [409, "CONFLICT"],
  STALE_MANIFEST: [409, "CONFLICT"],
  MISSING_BLOB: [409, "CONFLICT"],
  QUOTA_EXCEEDED: [507, "QUOTA_EXCEEDED"],
} as const satisfies Record<string, readonly [number, ErrorCode]>;

export type SyncSlug = keyof typeof SYNC_REFUSALS;

export class SyncRefusal extends AtrestError {
  readonly slug: SyncSlug;
  readonly status: number;
  constructor(slug: SyncSlug, message: string) {
    const [status, code] = SYNC_REFUSALS[slug];
    super(code, message);
    this.slug = slug;
    this.status = status;
  }
}
