// Versioned schema, one list for both drivers (PostgreSQL's text columns are all COLLATE "C", see migrationsFor). Append new entries; never edit a released one (what an entry renders
// for SQLite stays byte for byte what it was). Index = version - 1. Each entry is written once over the column types
// and the few additions only PostgreSQL needs:
// - nodes.seq: SQLite's rowid, the key cursor's stable order within a key_ref (src/store/sql/key-jobs.ts);
// - cluster_nodes and trigger_executions.lease_owner: several server processes share one PostgreSQL store, so a
//   running execution is leased to the node that claimed it and taken over when that node stops heartbeating.
import type { Dialect } from "./sql.ts";

export interface DialectTypes {
  /** Binary column. */
  blob: string;
  /** 64-bit integer column (SQLite INTEGER is 64-bit; PostgreSQL INTEGER is not). */
  int: string;
  /** Integer primary key assigned in insertion order. */
  serial: string;
  /** `text` in PostgreSQL, nothing in SQLite. */
  pg(text: string): string;
  /** The first text in SQLite, the second in PostgreSQL. */
  either(sqlite: string, postgres: string): string;
}

const TYPES: Record<Dialect, DialectTypes> = {
  sqlite: { blob: "BLOB", int: "INTEGER", serial: "INTEGER PRIMARY KEY AUTOINCREMENT", pg: () => "", either: (s) => s },
  postgres: { blob: "BYTEA", int: "BIGINT", serial: "BIGSERIAL PRIMARY KEY", pg: (text) => text, either: (_, p) => p },
};

const list: ((d: DialectTypes) => string)[] = [
  (d) =>
    `CREATE TABLE settings (key TEXT PRIMARY KEY, value ${d.blob} NOT NULL);
   CREATE TABLE users (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL UNIQUE,
     password_hash TEXT,
     public_keys TEXT NOT NULL,
     home TEXT NOT NULL,
     permissions TEXT NOT NULL,
     groups TEXT NOT NULL,
     quota_bytes ${d.int} NOT NULL DEFAULT 0,
     quota_files ${d.int} NOT NULL DEFAULT 0,
     used_bytes ${d.int} NOT NULL DEFAULT 0,
     used_files ${d.int} NOT NULL DEFAULT 0,
     created_at TEXT NOT NULL
   );
   CREATE TABLE nodes (
     id TEXT PRIMARY KEY,
     parent_id TEXT REFERENCES nodes(id),
     name_mac ${d.blob} NOT NULL,
     name_ct ${d.blob} NOT NULL,
     kind TEXT NOT NULL CHECK (kind IN ('file', 'dir')),
     attrs_ct ${d.blob} NOT NULL,
     blob_id TEXT UNIQUE,
     content_id TEXT,
     key_ref TEXT,
     owner_id TEXT${d.pg(",\n     seq BIGSERIAL NOT NULL UNIQUE")}
   );
   CREATE UNIQUE INDEX nodes_child ON nodes(parent_id, name_mac);
   CREATE INDEX nodes_key_ref ON nodes(key_ref${d.pg(", seq")});${d.pg(`
   CREATE TABLE cluster_nodes (id TEXT PRIMARY KEY, started_at BIGINT NOT NULL, seen_at BIGINT NOT NULL);`)}`,
  // 2: roles (DESIGN §2), per-user KEK, and the folder and group registries (DESIGN §3 KEK mapping, PGP folders).
  () =>
    `ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'user'
     CHECK (role IN ('admin', 'custodian', 'auditor', 'user'));
   ALTER TABLE users ADD COLUMN kek TEXT;
   CREATE TABLE groups (
     name TEXT PRIMARY KEY,
     options TEXT NOT NULL,
     created_at TEXT NOT NULL
   );
   CREATE TABLE folders (
     path TEXT PRIMARY KEY,
     options TEXT NOT NULL,
     created_at TEXT NOT NULL
   );`,
  // 3: OpenPGP public keys of users and groups (src/pgp). Public material only; checked again at every use.
  (d) =>
    `CREATE TABLE pgp_keys (
     fingerprint TEXT PRIMARY KEY,
     owner_kind TEXT NOT NULL CHECK (owner_kind IN ('user', 'group')),
     owner_name TEXT NOT NULL,
     armored TEXT NOT NULL,
     user_ids TEXT NOT NULL,
     algorithm TEXT NOT NULL,
     created_at TEXT NOT NULL,
     expires_at TEXT,
     revoked ${d.int} NOT NULL DEFAULT 0,
     certified_by TEXT NOT NULL,
     source TEXT NOT NULL CHECK (source IN ('import', 'generated')),
     imported_at TEXT NOT NULL
   );
   CREATE INDEX pgp_keys_owner ON pgp_keys(owner_kind, owner_name);`,
  // 4: key jobs (rewrap / reencrypt progress, resumable) and blobs a job has written but not yet committed, which the
  // startup sweep must keep (src/keys).
  (d) =>
    `CREATE TABLE key_jobs (
     id TEXT PRIMARY KEY,
     kind TEXT NOT NULL CHECK (kind IN ('rewrap', 'reencrypt')),
     scope TEXT NOT NULL,
     state TEXT NOT NULL CHECK (state IN ('running', 'done')),
     cursor TEXT NOT NULL DEFAULT '',
     total ${d.int} NOT NULL DEFAULT 0,
     done ${d.int} NOT NULL DEFAULT 0,
     skipped ${d.int} NOT NULL DEFAULT 0,
     failed ${d.int} NOT NULL DEFAULT 0,
     bytes ${d.int} NOT NULL DEFAULT 0,
     started_at TEXT NOT NULL,
     updated_at TEXT NOT NULL
   );
   CREATE INDEX key_jobs_open ON key_jobs(kind, scope, state);
   CREATE TABLE pending_blobs (
     blob_id TEXT PRIMARY KEY,
     job_id TEXT NOT NULL,
     created_at TEXT NOT NULL
   );`,
  // 5: events: trigger rules (secrets sealed under the events key), the durable execution queue, history, dead letters.
  (d) =>
    `CREATE TABLE trigger_rules (
     name TEXT PRIMARY KEY,
     spec TEXT NOT NULL,
     secrets ${d.blob},
     enabled ${d.int} NOT NULL,
     last_fired_at ${d.int},
     created_at TEXT NOT NULL,
     updated_at TEXT NOT NULL
   );
   CREATE TABLE trigger_executions (
     seq ${d.serial},
     id TEXT NOT NULL UNIQUE,
     rule TEXT NOT NULL,
     state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'dead')),
     step ${d.int} NOT NULL,
     attempts ${d.int} NOT NULL,
     due_at ${d.int} NOT NULL,
     error_code TEXT,
     data ${d.blob} NOT NULL,
     created_at ${d.int} NOT NULL,
     updated_at ${d.int} NOT NULL${d.pg(",\n     lease_owner TEXT")}
   );
   CREATE INDEX trigger_executions_due ON trigger_executions(state, due_at);
   CREATE INDEX trigger_executions_rule ON trigger_executions(rule, seq);`,
  // 6: login bans of the brute-force defender (src/service/defender.ts): shared by every process on the data dir, so
  // `atrest defender list|unban` see and lift what the server decided.
  (d) =>
    `CREATE TABLE bans (
     kind TEXT NOT NULL CHECK (kind IN ('ip', 'user')),
     subject TEXT NOT NULL,
     since ${d.int} NOT NULL,
     until ${d.int} NOT NULL,
     count ${d.int} NOT NULL,
     expiry_audited ${d.int} NOT NULL DEFAULT 0,
     PRIMARY KEY (kind, subject)
   );`,
  // 7: API tokens of the HTTPS API (src/service/tokens.ts): only a SHA-256 of the secret is kept; shown once at creation.
  (d) =>
    `CREATE TABLE api_tokens (
     id TEXT PRIMARY KEY,
     user_name TEXT NOT NULL,
     name TEXT NOT NULL,
     secret_hash ${d.blob} NOT NULL,
     scopes TEXT NOT NULL,
     paths TEXT NOT NULL,
     created_at ${d.int} NOT NULL,
     expires_at ${d.int} NOT NULL,
     last_used_at ${d.int}
   );
   CREATE INDEX api_tokens_user ON api_tokens(user_name);`,
  // 8: S3 access keys (src/service/s3-keys.ts): the secret is sealed under the service-secrets key, access key id as AAD.
  (d) =>
    `CREATE TABLE s3_keys (
     access_key_id TEXT PRIMARY KEY,
     user_id TEXT NOT NULL,
     user_name TEXT NOT NULL,
     secret_ct ${d.blob} NOT NULL,
     created_at TEXT NOT NULL
   );
   CREATE INDEX s3_keys_user ON s3_keys(user_name);`,
  // 9: metadata at rest (issue 11 item 9): users, groups and folders become sealed rows (src/store/sealing.ts) looked
  // up by a blind index. The clear tables are kept as legacy_* until the store is unlocked with the metadata key,
  // which seals their rows into the new tables and drops them (sqlite/legacy.ts): SQL alone cannot seal.
  (d) =>
    `${d.either(
      `ALTER TABLE users RENAME TO legacy_users;
   ALTER TABLE groups RENAME TO legacy_groups;
   ALTER TABLE folders RENAME TO legacy_folders;`,
      // a PostgreSQL store starts at this version's code: there are no clear rows to carry over
      "DROP TABLE users;\n   DROP TABLE groups;\n   DROP TABLE folders;",
    )}
   CREATE TABLE users (
     id TEXT PRIMARY KEY,
     name_index ${d.blob} NOT NULL UNIQUE,
     sealed ${d.blob} NOT NULL,
     usage ${d.blob} NOT NULL
   );
   CREATE TABLE groups (
     name_index ${d.blob} PRIMARY KEY,
     sealed ${d.blob} NOT NULL
   );
   CREATE TABLE folders (
     path_index ${d.blob} PRIMARY KEY,
     sealed ${d.blob} NOT NULL
   );`,
  // 10: E2EE sync (src/sync/server, docs/sync-protocol.md): devices, device chains, regions, members, signed manifests,
  // key envelopes, blobs. Everything here is public key material or opaque to the server (signed, encrypted JSON).
  // Plain SQL for both drivers (PostgreSQL: INTEGER columns holding sizes and times become BIGINT).
  (d) =>
    `CREATE TABLE sync_devices (
     id TEXT PRIMARY KEY,
     user_name TEXT NOT NULL,
     cert TEXT NOT NULL,
     state TEXT NOT NULL CHECK (state IN ('pending', 'active', 'revoked')),
     token_id TEXT NOT NULL UNIQUE,
     created_at ${d.int} NOT NULL
   );
   CREATE INDEX sync_devices_user ON sync_devices(user_name);
   CREATE TABLE sync_chain (
     user_name TEXT NOT NULL,
     seq ${d.int} NOT NULL,
     link TEXT NOT NULL,
     PRIMARY KEY (user_name, seq)
   );
   CREATE TABLE sync_regions (
     id TEXT PRIMARY KEY,
     owner TEXT NOT NULL,
     version ${d.int} NOT NULL,
     keep_versions ${d.int} NOT NULL,
     legal_hold ${d.int} NOT NULL DEFAULT 0,
     used_bytes ${d.int} NOT NULL DEFAULT 0,
     created_at ${d.int} NOT NULL
   );
   CREATE INDEX sync_regions_owner ON sync_regions(owner);
   CREATE TABLE sync_members (
     region_id TEXT NOT NULL,
     user_name TEXT NOT NULL,
     PRIMARY KEY (region_id, user_name)
   );
   CREATE INDEX sync_members_user ON sync_members(user_name);
   CREATE TABLE sync_manifests (
     region_id TEXT NOT NULL,
     version ${d.int} NOT NULL,
     hash TEXT NOT NULL,
     body TEXT NOT NULL,
     author TEXT NOT NULL,
     created_at ${d.int} NOT NULL,
     PRIMARY KEY (region_id, version)
   );
   CREATE TABLE sync_envelopes (
     region_id TEXT NOT NULL,
     epoch ${d.int} NOT NULL,
     recipient TEXT NOT NULL,
     body TEXT NOT NULL,
     created_at ${d.int} NOT NULL,
     PRIMARY KEY (region_id, epoch, recipient)
   );
   CREATE TABLE sync_blobs (
     region_id TEXT NOT NULL,
     hash TEXT NOT NULL,
     blob_id TEXT NOT NULL,
     size ${d.int} NOT NULL,
     created_at ${d.int} NOT NULL,
     PRIMARY KEY (region_id, hash)
   );`,
  // 11: share links (src/service/shares.ts): only a SHA-256 of the link secret; the entry by node id, no path in clear;
  // the owner by user id only (user names are sealed, migration 9).
  (d) =>
    `CREATE TABLE shares (
     id TEXT PRIMARY KEY,
     secret_hash ${d.blob} NOT NULL,
     owner_id TEXT NOT NULL,
     node_id TEXT NOT NULL,
     kind TEXT NOT NULL CHECK (kind IN ('file', 'dir')),
     password_hash TEXT,
     expires_at ${d.int},
     allow_download ${d.int} NOT NULL,
     allow_upload ${d.int} NOT NULL,
     max_downloads ${d.int} NOT NULL DEFAULT 0,
     downloads ${d.int} NOT NULL DEFAULT 0,
     max_uploads ${d.int} NOT NULL DEFAULT 0,
     uploads ${d.int} NOT NULL DEFAULT 0,
     allow_from TEXT NOT NULL,
     created_at ${d.int} NOT NULL,
     last_used_at ${d.int}
   );
   CREATE INDEX shares_owner_id ON shares(owner_id);`,
  // 12: share links of E2EE sync regions: the payload is sealed under the link key, which only the URL fragment holds.
  (d) =>
    `CREATE TABLE sync_links (
     id TEXT PRIMARY KEY,
     region_id TEXT NOT NULL,
     blob_hash TEXT NOT NULL,
     payload TEXT NOT NULL,
     expires_at ${d.int} NOT NULL,
     revoked ${d.int} NOT NULL DEFAULT 0,
     created_by TEXT NOT NULL,
     created_at ${d.int} NOT NULL,
     uses ${d.int} NOT NULL DEFAULT 0
   );
   CREATE INDEX sync_links_region ON sync_links(region_id);`,
  // 13: metadata at rest, continued (issue 11 item 9): API tokens (owner, label, scopes, path prefixes), S3 access
  // keys (owner name) and bans (banned address or user name) become sealed rows found by blind indexes; the clear tables
  // are legacy_* until the store is unlocked (sql/legacy.ts seals their rows and drops them).
  (d) =>
    `ALTER TABLE api_tokens RENAME TO legacy_api_tokens;
   ALTER TABLE s3_keys RENAME TO legacy_s3_keys;
   ALTER TABLE bans RENAME TO legacy_bans;
   CREATE TABLE api_tokens (
     id TEXT PRIMARY KEY,
     user_index ${d.blob} NOT NULL,
     sealed ${d.blob} NOT NULL,
     secret_hash ${d.blob} NOT NULL,
     created_at ${d.int} NOT NULL,
     expires_at ${d.int} NOT NULL,
     last_used_at ${d.int}
   );
   CREATE INDEX api_tokens_user_index ON api_tokens(user_index);
   CREATE TABLE s3_keys (
     access_key_id TEXT PRIMARY KEY,
     user_id TEXT NOT NULL,
     user_index ${d.blob} NOT NULL,
     owner ${d.blob} NOT NULL,
     secret_ct ${d.blob} NOT NULL,
     created_at TEXT NOT NULL
   );
   CREATE INDEX s3_keys_user_index ON s3_keys(user_index);
   CREATE TABLE bans (
     kind TEXT NOT NULL CHECK (kind IN ('ip', 'user')),
     subject_index ${d.blob} NOT NULL,
     subject ${d.blob} NOT NULL,
     since ${d.int} NOT NULL,
     until ${d.int} NOT NULL,
     count ${d.int} NOT NULL,
     expiry_audited ${d.int} NOT NULL DEFAULT 0,
     PRIMARY KEY (kind, subject_index)
   );`,
  // 14: E2EE sync retention by age too (keep the last N manifests or those younger than D days).
  (d) => `ALTER TABLE sync_regions ADD COLUMN keep_days ${d.int} NOT NULL DEFAULT 0;`,
  // 15: metadata at rest, continued (issue 11 item 9): OpenPGP public keys are sealed rows (owner name, user ids with
  // their e-mail addresses, the key itself); only the fingerprint stays in clear. legacy_pgp_keys until unlock.
  (d) =>
    `ALTER TABLE pgp_keys RENAME TO legacy_pgp_keys;
   CREATE TABLE pgp_keys (
     fingerprint TEXT PRIMARY KEY,
     sealed ${d.blob} NOT NULL
   );`,
  // 16: metadata at rest, continued (issue 11 item 9): a trigger rule's spec (the paths, users and URLs it names) is
  // sealed, AAD = the rule's name; legacy_trigger_rules until unlock (sql/legacy.ts).
  (d) =>
    `ALTER TABLE trigger_rules RENAME TO legacy_trigger_rules;
   CREATE TABLE trigger_rules (
     name TEXT PRIMARY KEY,
     spec ${d.blob} NOT NULL,
     secrets ${d.blob},
     enabled ${d.int} NOT NULL,
     last_fired_at ${d.int},
     created_at TEXT NOT NULL,
     updated_at TEXT NOT NULL
   );`,
  // 17: metadata at rest, continued (issue 11 item 9): a share link's argon2id password hash and its source allow list
  // are one sealed record, AAD = the share id; legacy_shares until unlock (sql/legacy.ts).
  (d) =>
    `ALTER TABLE shares RENAME TO legacy_shares;
   DROP INDEX shares_owner_id;
   CREATE TABLE shares (
     id TEXT PRIMARY KEY,
     secret_hash ${d.blob} NOT NULL,
     owner_id TEXT NOT NULL,
     node_id TEXT NOT NULL,
     kind TEXT NOT NULL CHECK (kind IN ('file', 'dir')),
     sealed ${d.blob} NOT NULL,
     expires_at ${d.int},
     allow_download ${d.int} NOT NULL,
     allow_upload ${d.int} NOT NULL,
     max_downloads ${d.int} NOT NULL DEFAULT 0,
     downloads ${d.int} NOT NULL DEFAULT 0,
     max_uploads ${d.int} NOT NULL DEFAULT 0,
     uploads ${d.int} NOT NULL DEFAULT 0,
     created_at ${d.int} NOT NULL,
     last_used_at ${d.int}
   );
   CREATE INDEX shares_owner_id ON shares(owner_id);`,
  // 18: metadata at rest, continued (issue 11 item 9): the E2EE sync tables' user names (devices, chains, members,
  // region owners) become the user's blind index plus the sealed name, a region's used bytes one fixed-width sealed
  // record; legacy_sync_* until unlock (sql/legacy.ts).
  (d) =>
    `ALTER TABLE sync_devices RENAME TO legacy_sync_devices;
   ALTER TABLE sync_chain RENAME TO legacy_sync_chain;
   ALTER TABLE sync_regions RENAME TO legacy_sync_regions;
   ALTER TABLE sync_members RENAME TO legacy_sync_members;
   DROP INDEX sync_devices_user;
   DROP INDEX sync_regions_owner;
   DROP INDEX sync_members_user;
   CREATE TABLE sync_devices (
     id TEXT PRIMARY KEY,
     user_index ${d.blob} NOT NULL,
     user_sealed ${d.blob} NOT NULL,
     cert TEXT NOT NULL,
     state TEXT NOT NULL CHECK (state IN ('pending', 'active', 'revoked')),
     token_id TEXT NOT NULL UNIQUE,
     created_at ${d.int} NOT NULL
   );
   CREATE INDEX sync_devices_user_index ON sync_devices(user_index);
   CREATE TABLE sync_chain (
     user_index ${d.blob} NOT NULL,
     user_sealed ${d.blob} NOT NULL,
     seq ${d.int} NOT NULL,
     link TEXT NOT NULL,
     PRIMARY KEY (user_index, seq)
   );
   CREATE TABLE sync_regions (
     id TEXT PRIMARY KEY,
     owner_index ${d.blob} NOT NULL,
     owner_sealed ${d.blob} NOT NULL,
     version ${d.int} NOT NULL,
     keep_versions ${d.int} NOT NULL,
     keep_days ${d.int} NOT NULL DEFAULT 0,
     legal_hold ${d.int} NOT NULL DEFAULT 0,
     used ${d.blob} NOT NULL,
     created_at ${d.int} NOT NULL
   );
   CREATE INDEX sync_regions_owner_index ON sync_regions(owner_index);
   CREATE TABLE sync_members (
     region_id TEXT NOT NULL,
     user_index ${d.blob} NOT NULL,
     user_sealed ${d.blob} NOT NULL,
     PRIMARY KEY (region_id, user_index)
   );
   CREATE INDEX sync_members_user_index ON sync_members(user_index);`,
  // 19: files whose content is a sequence of containers (an S3 multipart object kept as its parts): each piece's blob
  // and content id, in order, under the file version's content id. Clear like nodes.blob_id/content_id (random ids):
  // the startup sweep and rewrap (which run without the metadata key) find the blobs here; the order and the sizes
  // are sealed in the version's attributes (a reordered row fails the read).
  (d) =>
    `CREATE TABLE file_pieces (
     content_id TEXT NOT NULL,
     seq ${d.int} NOT NULL,
     blob_id TEXT NOT NULL UNIQUE,
     piece_content_id TEXT NOT NULL,
     PRIMARY KEY (content_id, seq)
   );`,
  // 20: versioned folders (S3 bucket versioning, src/vfs/versions.ts): a folder's state (Enabled / Suspended), and the
  // noncurrent versions and delete markers of the files under it, keyed by the folder's node id and the blind index of
  // the file's path below it (no name in clear: key_ct and attrs_ct are sealed like a node's name and attributes).
  // The current version of a file stays its node; blob_id/content_id are here for the startup sweep and the reads.
  (d) =>
    `CREATE TABLE versioned_dirs (dir_id TEXT PRIMARY KEY, state TEXT NOT NULL CHECK (state IN ('Enabled', 'Suspended')));
   CREATE TABLE file_versions (
     id TEXT PRIMARY KEY,
     dir_id TEXT NOT NULL,
     key_mac ${d.blob} NOT NULL,
     key_ct ${d.blob} NOT NULL,
     version_id TEXT NOT NULL,
     seq ${d.int} NOT NULL,
     marker ${d.int} NOT NULL,
     attrs_ct ${d.blob} NOT NULL,
     blob_id TEXT UNIQUE,
     content_id TEXT,
     key_ref TEXT,
     owner_id TEXT
   );
   CREATE UNIQUE INDEX file_versions_key ON file_versions(dir_id, key_mac, version_id);
   CREATE INDEX file_versions_seq ON file_versions(dir_id, key_mac, seq);`,
  // 21: the global S3 bucket namespace (src/service/s3-buckets.ts): one owner per bucket name server-wide. Found by
  // the name's blind index; the name and the owner sealed (AAD = the index), the owner's blind index for listings.
  (d) =>
    `CREATE TABLE s3_buckets (
     name_index ${d.blob} PRIMARY KEY,
     owner_index ${d.blob} NOT NULL,
     sealed ${d.blob} NOT NULL,
     created_at ${d.int} NOT NULL
   );
   CREATE INDEX s3_buckets_owner_index ON s3_buckets(owner_index);`,
  // 22: the key jobs walk kept versions by key_ref too (src/store/sql/key-jobs.ts: rewrap, reencrypt, shred-report
  // cover old S3 versions), in (key_ref, id) order.
  () => "CREATE INDEX file_versions_key_ref ON file_versions(key_ref, id);",
];

/** The migrations as `dialect` runs them. */
export function migrationsFor(dialect: Dialect): string[] {
  const sql = list.map((m) => m(TYPES[dialect]));
  // PostgreSQL compares text by the database's collation, SQLite by bytes: key_ref ranges ("kek:a:" to "kek:a;") and
  // every ORDER BY must mean the same in both, so every text column is byte-ordered ("C") there.
  return dialect === "postgres" ? sql.map((m) => m.replace(/\bTEXT\b/g, 'TEXT COLLATE "C"')) : sql;
}

/** The SQLite rendering (what the SQLite driver runs; tests write old schemas with it). */
export const migrations: string[] = migrationsFor("sqlite");
