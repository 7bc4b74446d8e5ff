// The KMS's own SQLite database (never the file server's). Holds key metadata and KEK material sealed under the
// master key; nothing in it is usable without the master key. All SQL lives here so a server can reuse it.

import { closeSync, openSync } from "node:fs";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { AtrestError } from "../errors.ts";
import type { KeyVersionInfo } from "./types.ts";

export type KeyState = KeyVersionInfo["state"];
export const KEY_STATES: readonly KeyState[] = ["pre-active", "active", "deactivated", "compromised", "destroyed"];

export interface KeyRow {
  name: string;
  currentVersion: number;
  minDecryptionVersion: number;
  createdAt: string;
}

export interface VersionRow {
  name: string;
  version: number;
  state: KeyState;
  createdAt: string;
  stateChangedAt: string;
  /** null once destroyed: destruction removes the material itself. */
  sealed: Uint8Array | null;
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
];

export const SCHEMA_VERSION = MIGRATIONS.length;

interface RawKey {
  name: string;
  current_version: number;
  min_decryption_version: number;
  created_at: string;
}
interface RawVersion {
  name: string;
  version: number;
  state: KeyState;
  created_at: string;
  state_changed_at: string;
  sealed: Uint8Array | null;
}

const toKey = (r: RawKey): KeyRow => ({
  name: r.name,
  currentVersion: r.current_version,
  minDecryptionVersion: r.min_decryption_version,
  createdAt: r.created_at,
});
const toVersion = (r: RawVersion): VersionRow => ({
  name: r.name,
  version: r.version,
  state: r.state,
  createdAt: r.created_at,
  stateChangedAt: r.state_changed_at,
  sealed: r.sealed,
});

export class KmsDb {
  readonly #db: DatabaseSync;
  readonly #s: Record<string, StatementSync>;

  constructor(path: string) {
    // Pre-create with 0600: SQLite would otherwise use 0644, and its -wal/-shm files copy the main file's mode.
    closeSync(openSync(path, "a", 0o600));
    this.#db = new DatabaseSync(path, { enableForeignKeyConstraints: true });
    this.#db.exec("PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;");
    this.#migrate();
    const p = (sql: string) => this.#db.prepare(sql);
    this.#s = {
      dataVersion: p("PRAGMA data_version"),
      getMeta: p("SELECT v FROM meta WHERE k = ?"),
      setMeta: p("INSERT INTO meta (k, v) VALUES (?, ?)"),
      getKey: p("SELECT * FROM keys WHERE name = ?"),
      listKeys: p("SELECT * FROM keys ORDER BY name"),
      insertKey: p(
        "INSERT INTO keys (name, current_version, min_decryption_version, created_at) VALUES (?, ?, 1, ?) ON CONFLICT DO NOTHING",
      ),
      setCurrent: p("UPDATE keys SET current_version = ? WHERE name = ?"),
      setMinDec: p("UPDATE keys SET min_decryption_version = ? WHERE name = ?"),
      versions: p(
        "SELECT name, version, state, created_at, state_changed_at, NULL AS sealed FROM key_versions WHERE name = ? ORDER BY version",
      ),
      allVersions: p(
        "SELECT name, version, state, created_at, state_changed_at, NULL AS sealed FROM key_versions ORDER BY name, version",
      ),
      getVersion: p("SELECT * FROM key_versions WHERE name = ? AND version = ?"),
      maxVersion: p("SELECT MAX(version) AS v FROM key_versions WHERE name = ?"),
      insertVersion: p(
        "INSERT INTO key_versions (name, version, state, created_at, state_changed_at, sealed) VALUES (?, ?, ?, ?, ?, ?)",
      ),
    };
    this.#s.dataVersion.setReturnArrays(true);
  }

  #userVersion(): number {
    return (this.#db.prepare("PRAGMA user_version").get() as { user_version: number }).user_version;
  }

  #migrate(): void {
    const newer = () =>
      new AtrestError(
        "UNSUPPORTED",
        `KMS database schema version ${this.#userVersion()} is newer than this build supports (${MIGRATIONS.length})`,
      );
    if (this.#userVersion() > MIGRATIONS.length) throw newer();
    if (this.#userVersion() === MIGRATIONS.length) return;
    // Re-read the version under the write lock: another process (a concurrent init) may have migrated meanwhile.
    this.transaction(() => {
      const from = this.#userVersion();
      if (from > MIGRATIONS.length) throw newer();
      for (let v = from; v < MIGRATIONS.length; v++) this.#db.exec(MIGRATIONS[v]);
      this.#db.exec(`PRAGMA user_version = ${MIGRATIONS.length}`);
    });
  }

  /** BEGIN IMMEDIATE takes the write lock up front, so read-then-write (e.g. next version number) cannot race. */
  transaction<T>(fn: () => T): T {
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      const out = fn();
      this.#db.exec("COMMIT");
      return out;
    } catch (e) {
      if (this.#db.isTransaction) this.#db.exec("ROLLBACK");
      throw e;
    }
  }

  /** Changes whenever another connection (another process, e.g. the CLI) commits; cheap enough for every call. */
  dataVersion(): number {
    return (this.#s.dataVersion.get() as unknown as [number])[0];
  }

  getMeta(k: string): Uint8Array | undefined {
    return (this.#s.getMeta.get(k) as { v: Uint8Array } | undefined)?.v;
  }
  setMeta(k: string, v: Uint8Array): void {
    this.#s.setMeta.run(k, v);
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

  close(): void {
    if (this.#db.isOpen) this.#db.close();
  }
}
