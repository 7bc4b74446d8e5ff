// The whole MetaStore contract over one `Sql`: every driver composes the same aggregate files.
import type { RowSealer } from "../sealing.ts";
import type { MetaTx } from "../types.ts";
import { apiTokens } from "./api-tokens.ts";
import { bans } from "./bans.ts";
import { folders } from "./folders.ts";
import { groups } from "./groups.ts";
import { keyJobs } from "./key-jobs.ts";
import { nodes } from "./nodes.ts";
import { pgpKeys } from "./pgp-keys.ts";
import { s3Buckets } from "./s3-buckets.ts";
import { s3Keys } from "./s3-keys.ts";
import { settings } from "./settings.ts";
import { shares } from "./shares.ts";
import type { Sql } from "./sql.ts";
import { sync } from "./sync.ts";
import { type ExecutionLease, triggers } from "./triggers.ts";
import { users } from "./users.ts";

/** Driver-specific parts of otherwise shared operations. */
export interface DriverParts {
  /** The row keys of sealed users, groups and folders (throws KEY_UNAVAILABLE until the store is unlocked). */
  sealer: () => RowSealer;
  /** The PostgreSQL driver's trigger-queue lease (owner = this node); absent in SQLite (one process per data dir). */
  lease?: ExecutionLease;
  /** The operations run inside one write transaction (per-transaction memos are safe; PostgreSQL sets it). */
  inTransaction?: boolean;
}

export function operations(sql: Sql, parts: DriverParts): MetaTx {
  return {
    ...settings(sql),
    ...users(sql, parts.sealer, parts.inTransaction),
    ...groups(sql, parts.sealer),
    ...folders(sql, parts.sealer),
    ...pgpKeys(sql, parts.sealer),
    ...nodes(sql),
    ...keyJobs(sql),
    ...bans(sql, parts.sealer),
    ...apiTokens(sql, parts.sealer),
    ...s3Keys(sql, parts.sealer),
    ...s3Buckets(sql, parts.sealer),
    ...shares(sql, parts.sealer),
    ...triggers(sql, parts.sealer, parts.lease),
    ...sync(sql, parts.sealer),
  };
}
