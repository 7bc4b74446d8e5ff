// Versioned schema. Append new entries; never edit a released one. Index = version - 1.
export const migrations: string[] = [
  `CREATE TABLE settings (key TEXT PRIMARY KEY, value BLOB NOT NULL);
   CREATE TABLE users (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL UNIQUE,
     password_hash TEXT,
     public_keys TEXT NOT NULL,
     home TEXT NOT NULL,
     permissions TEXT NOT NULL,
     groups TEXT NOT NULL,
     quota_bytes INTEGER NOT NULL DEFAULT 0,
     quota_files INTEGER NOT NULL DEFAULT 0,
     used_bytes INTEGER NOT NULL DEFAULT 0,
     used_files INTEGER NOT NULL DEFAULT 0,
     created_at TEXT NOT NULL
   );
   CREATE TABLE nodes (
     id TEXT PRIMARY KEY,
     parent_id TEXT REFERENCES nodes(id),
     name_mac BLOB NOT NULL,
     name_ct BLOB NOT NULL,
     kind TEXT NOT NULL CHECK (kind IN ('file', 'dir')),
     attrs_ct BLOB NOT NULL,
     blob_id TEXT UNIQUE,
     content_id TEXT,
     key_ref TEXT,
     owner_id TEXT
   );
   CREATE UNIQUE INDEX nodes_child ON nodes(parent_id, name_mac);
   CREATE INDEX nodes_key_ref ON nodes(key_ref);`,
  // 2: roles (DESIGN §2), per-user KEK, and the folder and group registries (DESIGN §3 KEK mapping, PGP folders).
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
  `CREATE TABLE pgp_keys (
     fingerprint TEXT PRIMARY KEY,
     owner_kind TEXT NOT NULL CHECK (owner_kind IN ('user', 'group')),
     owner_name TEXT NOT NULL,
     armored TEXT NOT NULL,
     user_ids TEXT NOT NULL,
     algorithm TEXT NOT NULL,
     created_at TEXT NOT NULL,
     expires_at TEXT,
     revoked INTEGER NOT NULL DEFAULT 0,
     certified_by TEXT NOT NULL,
     source TEXT NOT NULL CHECK (source IN ('import', 'generated')),
     imported_at TEXT NOT NULL
   );
   CREATE INDEX pgp_keys_owner ON pgp_keys(owner_kind, owner_name);`,
  // 4: key jobs (rewrap / reencrypt progress, resumable) and blobs a job has written but not yet committed, which the
  // startup sweep must keep (src/keys).
  `CREATE TABLE key_jobs (
     id TEXT PRIMARY KEY,
     kind TEXT NOT NULL CHECK (kind IN ('rewrap', 'reencrypt')),
     scope TEXT NOT NULL,
     state TEXT NOT NULL CHECK (state IN ('running', 'done')),
     cursor TEXT NOT NULL DEFAULT '',
     total INTEGER NOT NULL DEFAULT 0,
     done INTEGER NOT NULL DEFAULT 0,
     skipped INTEGER NOT NULL DEFAULT 0,
     failed INTEGER NOT NULL DEFAULT 0,
     bytes INTEGER NOT NULL DEFAULT 0,
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
  `CREATE TABLE trigger_rules (
     name TEXT PRIMARY KEY,
     spec TEXT NOT NULL,
     secrets BLOB,
     enabled INTEGER NOT NULL,
     last_fired_at INTEGER,
     created_at TEXT NOT NULL,
     updated_at TEXT NOT NULL
   );
   CREATE TABLE trigger_executions (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     id TEXT NOT NULL UNIQUE,
     rule TEXT NOT NULL,
     state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'dead')),
     step INTEGER NOT NULL,
     attempts INTEGER NOT NULL,
     due_at INTEGER NOT NULL,
     error_code TEXT,
     data BLOB NOT NULL,
     created_at INTEGER NOT NULL,
     updated_at INTEGER NOT NULL
   );
   CREATE INDEX trigger_executions_due ON trigger_executions(state, due_at);
   CREATE INDEX trigger_executions_rule ON trigger_executions(rule, seq);`,
  // 6: login bans of the brute-force defender (src/service/defender.ts): shared by every process on the data dir, so
  // `atrest defender list|unban` see and lift what the server decided.
  `CREATE TABLE bans (
     kind TEXT NOT NULL CHECK (kind IN ('ip', 'user')),
     subject TEXT NOT NULL,
     since INTEGER NOT NULL,
     until INTEGER NOT NULL,
     count INTEGER NOT NULL,
     expiry_audited INTEGER NOT NULL DEFAULT 0,
     PRIMARY KEY (kind, subject)
   );`,
  // 7: API tokens of the HTTPS API (src/service/tokens.ts): only a SHA-256 of the secret is kept; shown once at creation.
  `CREATE TABLE api_tokens (
     id TEXT PRIMARY KEY,
     user_name TEXT NOT NULL,
     name TEXT NOT NULL,
     secret_hash BLOB NOT NULL,
     scopes TEXT NOT NULL,
     paths TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     expires_at INTEGER NOT NULL,
     last_used_at INTEGER
   );
   CREATE INDEX api_tokens_user ON api_tokens(user_name);`,
  // 8: S3 access keys (src/service/s3-keys.ts): the secret is sealed under the service-secrets key, access key id as AAD.
  `CREATE TABLE s3_keys (
     access_key_id TEXT PRIMARY KEY,
     user_id TEXT NOT NULL,
     user_name TEXT NOT NULL,
     secret_ct BLOB NOT NULL,
     created_at TEXT NOT NULL
   );
   CREATE INDEX s3_keys_user ON s3_keys(user_name);`,
  // 9: metadata at rest (issue 11 item 9): users, groups and folders become sealed rows (src/store/sealing.ts) looked
  // up by a blind index. The clear tables are kept as legacy_* until the store is unlocked with the metadata key,
  // which seals their rows into the new tables and drops them (sqlite/legacy.ts): SQL alone cannot seal.
  `ALTER TABLE users RENAME TO legacy_users;
   ALTER TABLE groups RENAME TO legacy_groups;
   ALTER TABLE folders RENAME TO legacy_folders;
   CREATE TABLE users (
     id TEXT PRIMARY KEY,
     name_index BLOB NOT NULL UNIQUE,
     sealed BLOB NOT NULL,
     usage BLOB NOT NULL
   );
   CREATE TABLE groups (
     name_index BLOB PRIMARY KEY,
     sealed BLOB NOT NULL
   );
   CREATE TABLE folders (
     path_index BLOB PRIMARY KEY,
     sealed BLOB NOT NULL
   );`,
  // 10: E2EE sync (src/sync/server, docs/sync-protocol.md): devices, device chains, regions, members, signed manifests,
  // key envelopes, blobs. Everything here is public key material or opaque to the server (signed, encrypted JSON).
  // Plain SQL for both drivers (PostgreSQL: INTEGER columns holding sizes and times become BIGINT).
  `CREATE TABLE sync_devices (
     id TEXT PRIMARY KEY,
     user_name TEXT NOT NULL,
     cert TEXT NOT NULL,
     state TEXT NOT NULL CHECK (state IN ('pending', 'active', 'revoked')),
     token_id TEXT NOT NULL UNIQUE,
     created_at INTEGER NOT NULL
   );
   CREATE INDEX sync_devices_user ON sync_devices(user_name);
   CREATE TABLE sync_chain (
     user_name TEXT NOT NULL,
     seq INTEGER NOT NULL,
     link TEXT NOT NULL,
     PRIMARY KEY (user_name, seq)
   );
   CREATE TABLE sync_regions (
     id TEXT PRIMARY KEY,
     owner TEXT NOT NULL,
     version INTEGER NOT NULL,
     keep_versions INTEGER NOT NULL,
     legal_hold INTEGER NOT NULL DEFAULT 0,
     used_bytes INTEGER NOT NULL DEFAULT 0,
     created_at INTEGER NOT NULL
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
     version INTEGER NOT NULL,
     hash TEXT NOT NULL,
     body TEXT NOT NULL,
     author TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     PRIMARY KEY (region_id, version)
   );
   CREATE TABLE sync_envelopes (
     region_id TEXT NOT NULL,
     epoch INTEGER NOT NULL,
     recipient TEXT NOT NULL,
     body TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     PRIMARY KEY (region_id, epoch, recipient)
   );
   CREATE TABLE sync_blobs (
     region_id TEXT NOT NULL,
     hash TEXT NOT NULL,
     blob_id TEXT NOT NULL,
     size INTEGER NOT NULL,
     created_at INTEGER NOT NULL,
     PRIMARY KEY (region_id, hash)
   );`,
  // 11: share links (src/service/shares.ts): only a SHA-256 of the link secret; the entry by node id, no path in clear;
  // the owner by user id only (user names are sealed, migration 9).
  `CREATE TABLE shares (
     id TEXT PRIMARY KEY,
     secret_hash BLOB NOT NULL,
     owner_id TEXT NOT NULL,
     node_id TEXT NOT NULL,
     kind TEXT NOT NULL CHECK (kind IN ('file', 'dir')),
     password_hash TEXT,
     expires_at INTEGER,
     allow_download INTEGER NOT NULL,
     allow_upload INTEGER NOT NULL,
     max_downloads INTEGER NOT NULL DEFAULT 0,
     downloads INTEGER NOT NULL DEFAULT 0,
     max_uploads INTEGER NOT NULL DEFAULT 0,
     uploads INTEGER NOT NULL DEFAULT 0,
     allow_from TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     last_used_at INTEGER
   );
   CREATE INDEX shares_owner_id ON shares(owner_id);`,
];
