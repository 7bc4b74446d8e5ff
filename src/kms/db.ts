// The KMS's own database (never the file server's): a SQLite file (kms.db, the default) or a PostgreSQL schema shared
// by several KMS nodes (`--store postgres://…?schema=kms`, docs/kms.md "High availability"). Holds key metadata and
// KEK material sealed under the master key; nothing in it is usable without the master key. The schema lives here.

import { closeSync, openSync } from "node:fs";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { AtrestError } from "../errors.ts";
import type { KeyVersionInfo } from "./api/types.ts";
import type { KeyType } from "./key-types.ts";
import { PgSync } from "./store/pg-sync.ts";

export type KeyState = KeyVersionInfo["state"];
export const KEY_STATES: readonly KeyState[] = ["pre-active", "active", "deactivated", "compromised", "destroyed"];

export type RotationPolicy = "auto" | "manual" | "none";
export type KeyOrigin = "generated" | "imported";

export interface KeyRow {
  name: string;
  currentVersion: number;
  minDecryptionVersion: number;
  minEncryptionVersion: number;
  createdAt: string;
  rotation: RotationPolicy;
  /** Cryptoperiod for `auto` rotation. */
  rotationDays: number | null;
  origin: KeyOrigin;
  /** What the key's material is and does (key-types.ts); fixed at creation. */
  type: KeyType;
}

export interface VersionRow {
  name: string;
  version: number;
  state: KeyState;
  createdAt: string;
  stateChangedAt: string;
  /** null once destroyed: destruction removes the material itself. */
  sealed: Uint8Array | null;
  /** Scheduled destruction time (ISO), set when a destroy request reached its quorum. */
  destroyAt: string | null;
  /** The approved request that scheduled the destruction. */
  destroyRequest: string | null;
}

// Numbered migrations; PRAGMA user_version records how many ran. Append only, never edit a shipped one.
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE meta (
     k TEXT PRIMARY KEY,
     v BLOB NOT NULL
   ) STRICT;
   CREATE TABLE keys (
     name TEXT PRIMARY KEY,
     current_version INTEGER NOT NULL,
     min_decryption_version INTEGER NOT NULL DEFAULT 1 CHECK (min_decryption_version >= 1),
     created_at TEXT NOT NULL
   ) STRICT;
   CREATE TABLE key_versions (
     name TEXT NOT NULL REFERENCES keys(name),
     version INTEGER NOT NULL CHECK (version >= 1),
     state TEXT NOT NULL CHECK (state IN ('pre-active', 'active', 'deactivated', 'compromised', 'destroyed')),
     created_at TEXT NOT NULL,
     state_changed_at TEXT NOT NULL,
     sealed BLOB,
     PRIMARY KEY (name, version),
     CHECK ((state = 'destroyed') = (sealed IS NULL))
   ) STRICT;`,
  // 2: key lifecycle and governance (rotation policy, min encryption version, BYOK origin, scheduled deletion,
  //    per-client policies, dual-control requests and approvals, BYOK import tokens).
  `ALTER TABLE keys ADD COLUMN min_encryption_version INTEGER NOT NULL DEFAULT 1 CHECK (min_encryption_version >= 1);
   ALTER TABLE keys ADD COLUMN rotation TEXT NOT NULL DEFAULT 'manual' CHECK (rotation IN ('auto', 'manual', 'none'));
   ALTER TABLE keys ADD COLUMN rotation_days INTEGER CHECK (rotation_days IS NULL OR rotation_days >= 1);
   ALTER TABLE keys ADD COLUMN origin TEXT NOT NULL DEFAULT 'generated' CHECK (origin IN ('generated', 'imported'));
   ALTER TABLE key_versions ADD COLUMN destroy_at TEXT;
   ALTER TABLE key_versions ADD COLUMN destroy_request TEXT;
   CREATE TABLE client_policies (
     client TEXT PRIMARY KEY,
     policy TEXT NOT NULL,
     updated_at TEXT NOT NULL,
     updated_by TEXT NOT NULL
   ) STRICT;
   CREATE TABLE requests (
     id TEXT PRIMARY KEY,
     kind TEXT NOT NULL CHECK (kind IN ('destroy', 'export', 'client-policy', 'master-rotation')),
     target TEXT NOT NULL,
     params TEXT NOT NULL,
     requester TEXT NOT NULL,
     requester_role TEXT NOT NULL,
     reason TEXT NOT NULL,
     quorum INTEGER NOT NULL CHECK (quorum >= 1),
     created_at TEXT NOT NULL,
     expires_at TEXT NOT NULL,
     status TEXT NOT NULL CHECK (status IN ('pending', 'executed', 'rejected', 'failed')),
     decided_at TEXT,
     result TEXT,
     result_blob BLOB
   ) STRICT;
   CREATE TABLE approvals (
     request_id TEXT NOT NULL REFERENCES requests(id),
     custodian TEXT NOT NULL,
     decision TEXT NOT NULL CHECK (decision IN ('approve', 'reject')),
     reason TEXT NOT NULL,
     at TEXT NOT NULL,
     PRIMARY KEY (request_id, custodian)
   ) STRICT;
   CREATE TABLE import_tokens (
     id TEXT PRIMARY KEY,
     key_name TEXT NOT NULL,
     private_sealed BLOB NOT NULL,
     created_at TEXT NOT NULL,
     expires_at TEXT NOT NULL,
     used_at TEXT
   ) STRICT;`,
  // 3: client certificates issued by the KMS CA (`kms client issue|list|revoke`); mTLS identity = a row here.
  `CREATE TABLE clients (
     fingerprint TEXT PRIMARY KEY,
     name TEXT NOT NULL,
     role TEXT NOT NULL CHECK (role IN ('server', 'operator', 'custodian', 'auditor', 'admin')),
     serial TEXT NOT NULL,
     issued_at TEXT NOT NULL,
     not_after TEXT NOT NULL,
     revoked_at TEXT
   ) STRICT;
   CREATE INDEX clients_name ON clients (name);`,
  // 4: key types for the application APIs (encrypt/decrypt on AES keys, HMAC keys, Ed25519 and ECDSA P-256 signing
  //    keys), and versioned application secrets (secrets.ts): each version's value sealed under the master key.
  `ALTER TABLE keys ADD COLUMN type TEXT NOT NULL DEFAULT 'aes-256-gcm'
     CHECK (type IN ('aes-256-gcm', 'hmac-sha256', 'ed25519', 'ecdsa-p256'));
   CREATE TABLE secrets (
     name TEXT PRIMARY KEY,
     current_version INTEGER NOT NULL CHECK (current_version >= 1),
     rotate_after_days INTEGER CHECK (rotate_after_days IS NULL OR rotate_after_days >= 1),
     created_at TEXT NOT NULL,
     deleted_at TEXT
   ) STRICT;
   CREATE TABLE secret_versions (
     name TEXT NOT NULL REFERENCES secrets(name),
     version INTEGER NOT NULL CHECK (version >= 1),
     sealed BLOB,
     created_at TEXT NOT NULL,
     created_by TEXT NOT NULL,
     destroyed_at TEXT,
     PRIMARY KEY (name, version),
     CHECK ((destroyed_at IS NULL) = (sealed IS NOT NULL))
   ) STRICT;`,
  // 5: the version of a secret whose rotation reminder was already audited (one warning per version).
  `ALTER TABLE secrets ADD COLUMN warned_version INTEGER;`,
  // 6: objects managed over KMIP (kmip-objects.ts): AES keys and secret data, each value sealed under the master key
  //    (label kmip:<uid>) and gone once destroyed; KMIP attributes and lifecycle state beside it.
  `CREATE TABLE kmip_objects (
     uid TEXT PRIMARY KEY,
     object_type TEXT NOT NULL CHECK (object_type IN ('symmetric-key', 'secret-data')),
     name TEXT,
     algorithm TEXT CHECK (algorithm IS NULL OR algorithm = 'AES'),
     length INTEGER NOT NULL CHECK (length >= 0),
     usage_mask INTEGER NOT NULL,
     secret_type INTEGER,
     state TEXT NOT NULL CHECK (state IN ('pre-active', 'active', 'deactivated', 'compromised', 'destroyed',
       'destroyed-compromised')),
     sealed BLOB,
     owner TEXT NOT NULL,
     created_at TEXT NOT NULL,
     activated_at TEXT,
     deactivated_at TEXT,
     compromised_at TEXT,
     destroyed_at TEXT,
     revocation_reason INTEGER,
     destroy_request TEXT,
     CHECK ((state IN ('destroyed', 'destroyed-compromised')) = (sealed IS NULL))
   ) STRICT;
   CREATE INDEX kmip_objects_name ON kmip_objects (name);`,
  // 7: high-water marks of file servers' audit logs (audit-marks.ts): per (client, log), the value (seq, hash, time)
  //    sealed under the master key (label audit-mark:<client>:<log>).
  `CREATE TABLE audit_marks (
     client TEXT NOT NULL,
     log TEXT NOT NULL,
     sealed BLOB NOT NULL,
     updated_at TEXT NOT NULL,
     PRIMARY KEY (client, log)
   ) STRICT;`,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/** The same migrations in PostgreSQL's words: STRICT tables are SQLite's, BYTEA is BLOB. */
const PG_MIGRATIONS: readonly string[] = MIGRATIONS.map((m) =>
  m.replace(/\)\s*STRICT;/g, ");").replace(/\bBLOB\b/g, "BYTEA"),
);

export type SqlValue = string | number | bigint | null | Uint8Array;

/** What the KMS's modules run their SQL through (node:sqlite's StatementSync has this shape). */
export interface KmsStatement {
  get(...params: SqlValue[]): Record<string, unknown> | undefined;
  all(...params: SqlValue[]): Record<string, unknown>[];
  run(...params: SqlValue[]): { changes: number | bigint };
}

/** One of the two drivers. Synchronous both: over PostgreSQL through a worker (store/pg-sync.ts). */
interface Backend {
  readonly kind: "sqlite" | "postgres";
  prepare(sql: string): KmsStatement;
  begin(): void;
  commit(): void;
  rollback(): void;
  readonly inTransaction: boolean;
  readonly isOpen: boolean;
  /** Moves when a commit is seen that may not be this connection's own (SQLite: another connection's only). */
  dataVersion(): number;
  /** Applies the migrations not yet applied (under the write lock); throws if the store is newer than this build. */
  migrate(): void;
  close(): void;
}

const newerSchema = (found: number) =>
  new AtrestError(
    "UNSUPPORTED",
    `KMS database schema version ${found} is newer than this build supports (${MIGRATIONS.length})`,
  );

class SqliteBackend implements Backend {
  readonly kind = "sqlite";
  readonly #db: DatabaseSync;
  readonly #dataVersion: StatementSync;

  constructor(path: string) {
    // Pre-create with 0600: SQLite would otherwise use 0644, and its -wal/-shm files copy the main file's mode.
    closeSync(openSync(path, "a", 0o600));
    this.#db = new DatabaseSync(path, { enableForeignKeyConstraints: true });
    this.#db.exec("PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;");
    this.#dataVersion = this.#db.prepare("PRAGMA data_version");
    this.#dataVersion.setReturnArrays(true);
  }

  prepare(sql: string): KmsStatement {
    return this.#db.prepare(sql);
  }
  /** BEGIN IMMEDIATE takes the write lock up front, so read-then-write (e.g. next version number) cannot race. */
  begin(): void {
    this.#db.exec("BEGIN IMMEDIATE");
  }
  commit(): void {
    this.#db.exec("COMMIT");
  }
  rollback(): void {
    if (this.#db.isTransaction) this.#db.exec("ROLLBACK");
  }
  get inTransaction(): boolean {
    return this.#db.isTransaction;
  }
  get isOpen(): boolean {
    return this.#db.isOpen;
  }
  dataVersion(): number {
    return (this.#dataVersion.get() as unknown as [number])[0];
  }
  #userVersion(): number {
    return (this.#db.prepare("PRAGMA user_version").get() as { user_version: number }).user_version;
  }
  migrate(): void {
    if (this.#userVersion() > MIGRATIONS.length) throw newerSchema(this.#userVersion());
    if (this.#userVersion() === MIGRATIONS.length) return;
    // Re-read the version under the write lock: another process (a concurrent init) may have migrated meanwhile.
    this.begin();
    try {
      const from = this.#userVersion();
      if (from > MIGRATIONS.length) throw newerSchema(from);
      for (let v = from; v < MIGRATIONS.length; v++) this.#db.exec(MIGRATIONS[v] as string);
      this.#db.exec(`PRAGMA user_version = ${MIGRATIONS.length}`);
      this.commit();
    } catch (e) {
      this.rollback();
      throw e;
    }
  }
  close(): void {
    if (this.#db.isOpen) this.#db.close();
  }
}

// A transaction holds a per-schema advisory lock for its whole length: writes are serialised across every node as
// SQLite's single writer serialises processes, so read-check-write sequences (next version number, a request's
// state, a due destruction) happen once even when two nodes' schedulers race.
class PostgresBackend implements Backend {
  readonly kind = "postgres";
  readonly #pg: PgSync;
  #inTx = false;

  constructor(url: string) {
    this.#pg = new PgSync(url);
  }

  prepare(sql: string): KmsStatement {
    const pg = this.#pg;
    const params = (p: SqlValue[]) => p.map((v) => (typeof v === "bigint" ? Number(v) : v));
    return {
      get: (...p) => pg.query(sql, params(p)).rows[0],
      all: (...p) => pg.query(sql, params(p)).rows,
      run: (...p) => ({ changes: pg.query(sql, params(p)).changes }),
    };
  }
  begin(): void {
    this.#pg.call({ op: "begin" });
    this.#inTx = true;
  }
  commit(): void {
    this.#inTx = false;
    this.#pg.call({ op: "commit" });
  }
  rollback(): void {
    if (!this.#inTx) return;
    this.#inTx = false;
    this.#pg.call({ op: "rollback" });
  }
  get inTransaction(): boolean {
    return this.#inTx;
  }
  get isOpen(): boolean {
    return this.#pg.isOpen;
  }
  dataVersion(): number {
    return this.#pg.changes();
  }
  migrate(): void {
    const from = this.#pg.call({ op: "migrate", migrations: [...PG_MIGRATIONS] }).version ?? 0;
    if (from > MIGRATIONS.length) throw newerSchema(from);
  }
  close(): void {
    this.#pg.close();
  }
}

/** In a KMS directory whose database is a PostgreSQL store: its URL without the password (PGPASSWORD gives it). */
export const KMS_STORE_FILE = "store.url";

/** Whether a KMS store location is a PostgreSQL URL (else a SQLite file path). */
export const isPostgresStore = (location: string): boolean => /^postgres(ql)?:\/\//.test(location);

/** Version metadata without the sealed material. */
const VERSION_META = "name, version, state, created_at, state_changed_at, NULL AS sealed, destroy_at, destroy_request";

interface RawKey {
  name: string;
  current_version: number;
  min_decryption_version: number;
  min_encryption_version: number;
  created_at: string;
  rotation: RotationPolicy;
  rotation_days: number | null;
  origin: KeyOrigin;
  type: KeyType;
}
interface RawVersion {
  name: string;
  version: number;
  state: KeyState;
  created_at: string;
  state_changed_at: string;
  sealed: Uint8Array | null;
  destroy_at: string | null;
  destroy_request: string | null;
}

const toKey = (r: RawKey): KeyRow => ({
  name: r.name,
  currentVersion: r.current_version,
  minDecryptionVersion: r.min_decryption_version,
  minEncryptionVersion: r.min_encryption_version,
  createdAt: r.created_at,
  rotation: r.rotation,
  rotationDays: r.rotation_days,
  origin: r.origin,
  type: r.type,
});
const toVersion = (r: RawVersion): VersionRow => ({
  name: r.name,
  version: r.version,
  state: r.state,
  createdAt: r.created_at,
  stateChangedAt: r.state_changed_at,
  sealed: r.sealed,
  destroyAt: r.destroy_at,
  destroyRequest: r.destroy_request,
});

export class KmsDb {
  /**
   * Runs first in every transaction, under the write lock (the keyring checks there that the master key it holds is
   * still the store's: another node may have rotated it).
   */
  onTransaction: (() => void) | undefined;
  readonly #db: Backend;
  readonly #s: Record<string, KmsStatement>;
  readonly #extra = new Map<string, KmsStatement>();

  /** `location`: a SQLite file path, or a postgres:// URL with `?schema=`. */
  constructor(location: string) {
    this.#db = isPostgresStore(location) ? new PostgresBackend(location) : new SqliteBackend(location);
    try {
      this.#db.migrate();
    } catch (e) {
      this.#db.close();
      throw e;
    }
    const p = (sql: string) => this.#guarded(this.#db.prepare(sql));
    this.#s = {
      getMeta: p("SELECT v FROM meta WHERE k = ?"),
      setMeta: p("INSERT INTO meta (k, v) VALUES (?, ?)"),
      getKey: p("SELECT * FROM keys WHERE name = ?"),
      listKeys: p("SELECT * FROM keys ORDER BY name"),
      insertKey: p(
        "INSERT INTO keys (name, current_version, min_decryption_version, created_at) VALUES (?, ?, 1, ?) ON CONFLICT DO NOTHING",
      ),
      setCurrent: p("UPDATE keys SET current_version = ? WHERE name = ?"),
      setMinDec: p("UPDATE keys SET min_decryption_version = ? WHERE name = ?"),
      versions: p(`SELECT ${VERSION_META} FROM key_versions WHERE name = ? ORDER BY version`),
      allVersions: p(`SELECT ${VERSION_META} FROM key_versions ORDER BY name, version`),
      getVersion: p("SELECT * FROM key_versions WHERE name = ? AND version = ?"),
      maxVersion: p("SELECT MAX(version) AS v FROM key_versions WHERE name = ?"),
      insertVersion: p(
        "INSERT INTO key_versions (name, version, state, created_at, state_changed_at, sealed) VALUES (?, ?, ?, ?, ?, ?)",
      ),
      setKeyPolicy: p(
        "UPDATE keys SET rotation = ?, rotation_days = ?, min_decryption_version = ?, min_encryption_version = ? WHERE name = ?",
      ),
      setOrigin: p("UPDATE keys SET origin = ? WHERE name = ?"),
      setType: p("UPDATE keys SET type = ? WHERE name = ?"),
      setState: p("UPDATE key_versions SET state = ?, state_changed_at = ? WHERE name = ? AND version = ?"),
      destroy: p(
        "UPDATE key_versions SET state = 'destroyed', state_changed_at = ?, sealed = NULL, destroy_at = NULL WHERE name = ? AND version = ?",
      ),
      scheduleDestroy: p("UPDATE key_versions SET destroy_at = ?, destroy_request = ? WHERE name = ? AND version = ?"),
      resealVersion: p("UPDATE key_versions SET sealed = ? WHERE name = ? AND version = ?"),
      sealedVersions: p("SELECT name, version, sealed FROM key_versions WHERE sealed IS NOT NULL"),
      dueDestroy: p(
        `SELECT ${VERSION_META} FROM key_versions WHERE destroy_at IS NOT NULL AND destroy_at <= ? ORDER BY destroy_at`,
      ),
      autoKeys: p("SELECT * FROM keys WHERE rotation = 'auto' ORDER BY name"),
      replaceMeta: p("INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v"),
    };
  }

  /**
   * A write outside a transaction runs as a transaction of its own once a keyring watches them (onTransaction), so
   * its master-key check covers lone writes too (a value sealed under a master another node just replaced must not
   * land).
   */
  #guarded(st: KmsStatement): KmsStatement {
    return {
      get: (...p) => st.get(...p),
      all: (...p) => st.all(...p),
      run: (...p) =>
        this.onTransaction === undefined || this.#db.inTransaction
          ? st.run(...p)
          : this.transaction(() => st.run(...p)),
    };
  }

  /** "sqlite" (kms.db) or "postgres" (a store shared by several nodes). */
  get kind(): "sqlite" | "postgres" {
    return this.#db.kind;
  }

  /** A transaction holding the write lock from its start (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock). */
  transaction<T>(fn: () => T): T {
    // A nested call joins the enclosing transaction (kms init writes the seal configuration and the first key as one).
    if (this.#db.inTransaction) return fn();
    this.#db.begin();
    try {
      this.onTransaction?.();
      const out = fn();
      this.#db.commit();
      return out;
    } catch (e) {
      this.#db.rollback();
      throw e;
    }
  }

  /**
   * Changes whenever another connection (another process, e.g. the CLI, or another KMS node) commits; cheap enough
   * for every call (PostgreSQL: a counter in shared memory, no round trip).
   */
  dataVersion(): number {
    return this.#db.dataVersion();
  }

  getMeta(k: string): Uint8Array | undefined {
    return (this.#s.getMeta.get(k) as { v: Uint8Array } | undefined)?.v;
  }
  setMeta(k: string, v: Uint8Array): void {
    this.#s.setMeta.run(k, v);
  }
  /** Inserts or overwrites. */
  putMeta(k: string, v: Uint8Array): void {
    this.#s.replaceMeta.run(k, v);
  }

  /**
   * A prepared statement for the KMS's own modules (policies, approvals, BYOK), cached by text. They keep their SQL
   * beside their logic; the schema stays in MIGRATIONS above.
   */
  prepare(sql: string): KmsStatement {
    let st = this.#extra.get(sql);
    if (!st) {
      st = this.#guarded(this.#db.prepare(sql));
      this.#extra.set(sql, st);
    }
    return st;
  }

  getKey(name: string): KeyRow | undefined {
    const r = this.#s.getKey.get(name) as RawKey | undefined;
    return r && toKey(r);
  }
  listKeys(): KeyRow[] {
    return (this.#s.listKeys.all() as unknown as RawKey[]).map(toKey);
  }
  /** Returns false if the key already exists. */
  insertKey(name: string, currentVersion: number, createdAt: string): boolean {
    return Number(this.#s.insertKey.run(name, currentVersion, createdAt).changes) === 1;
  }
  setCurrentVersion(name: string, version: number): void {
    this.#s.setCurrent.run(version, name);
  }
  setMinDecryptionVersion(name: string, version: number): void {
    this.#s.setMinDec.run(version, name);
  }

  /** Version metadata without the sealed material. */
  listVersions(name?: string): VersionRow[] {
    const rows = name === undefined ? this.#s.allVersions.all() : this.#s.versions.all(name);
    return (rows as unknown as RawVersion[]).map(toVersion);
  }
  getVersion(name: string, version: number): VersionRow | undefined {
    const r = this.#s.getVersion.get(name, version) as RawVersion | undefined;
    return r && toVersion(r);
  }
  maxVersion(name: string): number {
    return (this.#s.maxVersion.get(name) as { v: number | null }).v ?? 0;
  }
  insertVersion(name: string, version: number, state: KeyState, at: string, sealed: Uint8Array | null): void {
    this.#s.insertVersion.run(name, version, state, at, at, sealed);
  }

  setKeyPolicy(
    name: string,
    p: Pick<KeyRow, "rotation" | "rotationDays" | "minDecryptionVersion" | "minEncryptionVersion">,
  ): void {
    this.#s.setKeyPolicy.run(p.rotation, p.rotationDays, p.minDecryptionVersion, p.minEncryptionVersion, name);
  }
  setOrigin(name: string, origin: KeyOrigin): void {
    this.#s.setOrigin.run(origin, name);
  }
  setType(name: string, type: KeyType): void {
    this.#s.setType.run(type, name);
  }
  setVersionState(name: string, version: number, state: Exclude<KeyState, "destroyed">, at: string): void {
    this.#s.setState.run(state, at, name, version);
  }
  /** Erases the sealed material for good; the row stays so wrapped blobs naming it get a clear error. */
  destroyVersion(name: string, version: number, at: string): void {
    this.#s.destroy.run(at, name, version);
  }
  /** `at` null cancels. */
  scheduleDestroy(name: string, version: number, at: string | null, requestId: string | null): void {
    this.#s.scheduleDestroy.run(at, requestId, name, version);
  }
  dueDestructions(now: string): VersionRow[] {
    return (this.#s.dueDestroy.all(now) as unknown as RawVersion[]).map(toVersion);
  }
  autoRotatedKeys(): KeyRow[] {
    return (this.#s.autoKeys.all() as unknown as RawKey[]).map(toKey);
  }
  sealedVersions(): { name: string; version: number; sealed: Uint8Array }[] {
    return this.#s.sealedVersions.all() as unknown as { name: string; version: number; sealed: Uint8Array }[];
  }
  resealVersion(name: string, version: number, sealed: Uint8Array): void {
    this.#s.resealVersion.run(sealed, name, version);
  }

  close(): void {
    if (this.#db.isOpen) this.#db.close();
  }
}
