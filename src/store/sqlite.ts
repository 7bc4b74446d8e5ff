import { DatabaseSync, type SQLInputValue, type StatementSync } from "node:sqlite";
import type { PgpKeyRow } from "../pgp/types.ts";
import { migrations } from "./migrations.ts";
import {
  type FolderRow,
  type GroupRow,
  KEY_CURSOR_START,
  type KeyCursor,
  type KeyJobRow,
  type KeyRefRange,
  type MetaStore,
  type NodePatch,
  type NodeRow,
  type Role,
  type UserRow,
} from "./types.ts";

type Row = Record<string, SQLInputValue>;

/** Raw statements on the store's connection, for feature stores that keep their own tables (src/events/store.ts). */
export interface SqlAccess {
  get(sql: string, ...params: SQLInputValue[]): Row | undefined;
  all(sql: string, ...params: SQLInputValue[]): Row[];
  /** Returns the number of changed rows. */
  run(sql: string, ...params: SQLInputValue[]): number;
}

const nodeColumns: Record<keyof Omit<NodeRow, "id">, string> = {
  parentId: "parent_id",
  nameMac: "name_mac",
  nameCt: "name_ct",
  kind: "kind",
  attrsCt: "attrs_ct",
  blobId: "blob_id",
  contentId: "content_id",
  keyRef: "key_ref",
  ownerId: "owner_id",
};

function buf(v: unknown): Buffer {
  return Buffer.from(v as Uint8Array);
}

function toNode(r: Row): NodeRow {
  return {
    id: r.id as string,
    parentId: r.parent_id as string | null,
    nameMac: buf(r.name_mac),
    nameCt: buf(r.name_ct),
    kind: r.kind as "file" | "dir",
    attrsCt: buf(r.attrs_ct),
    blobId: r.blob_id as string | null,
    contentId: r.content_id as string | null,
    keyRef: r.key_ref as string | null,
    ownerId: r.owner_id as string | null,
  };
}

function toUser(r: Row): UserRow {
  return {
    id: r.id as string,
    name: r.name as string,
    passwordHash: r.password_hash as string | null,
    publicKeys: JSON.parse(r.public_keys as string),
    home: r.home as string,
    permissions: JSON.parse(r.permissions as string),
    groups: JSON.parse(r.groups as string),
    role: r.role as Role,
    kek: (r.kek as string | null) ?? null,
    quotaBytes: Number(r.quota_bytes),
    quotaFiles: Number(r.quota_files),
    usedBytes: Number(r.used_bytes),
    usedFiles: Number(r.used_files),
    createdAt: r.created_at as string,
  };
}

function toGroup(r: Row): GroupRow {
  return { name: r.name as string, options: JSON.parse(r.options as string), createdAt: r.created_at as string };
}

function toFolder(r: Row): FolderRow {
  return { path: r.path as string, options: JSON.parse(r.options as string), createdAt: r.created_at as string };
}

function toPgpKey(r: Row): PgpKeyRow {
  return {
    fingerprint: r.fingerprint as string,
    ownerKind: r.owner_kind as PgpKeyRow["ownerKind"],
    ownerName: r.owner_name as string,
    armored: r.armored as string,
    userIds: JSON.parse(r.user_ids as string),
    algorithm: r.algorithm as string,
    createdAt: r.created_at as string,
    expiresAt: r.expires_at as string | null,
    revoked: Number(r.revoked) === 1,
    certifiedBy: JSON.parse(r.certified_by as string),
    source: r.source as PgpKeyRow["source"],
    importedAt: r.imported_at as string,
  };
}

function parseCursor(text: string): KeyCursor {
  const at = text.indexOf(":");
  return at < 0 ? { ...KEY_CURSOR_START } : { rowid: Number(text.slice(0, at)), keyRef: text.slice(at + 1) };
}

function toKeyJob(r: Row): KeyJobRow {
  return {
    id: r.id as string,
    kind: r.kind as KeyJobRow["kind"],
    scope: r.scope as string,
    state: r.state as KeyJobRow["state"],
    cursor: parseCursor(r.cursor as string),
    total: Number(r.total),
    done: Number(r.done),
    skipped: Number(r.skipped),
    failed: Number(r.failed),
    bytes: Number(r.bytes),
    startedAt: r.started_at as string,
    updatedAt: r.updated_at as string,
  };
}

function userParams(u: UserRow): SQLInputValue[] {
  return [
    u.name,
    u.passwordHash,
    JSON.stringify(u.publicKeys),
    u.home,
    JSON.stringify(u.permissions),
    JSON.stringify(u.groups),
    u.quotaBytes,
    u.quotaFiles,
    u.usedBytes,
    u.usedFiles,
    u.createdAt,
    u.role,
    u.kek,
    u.id,
  ];
}

/**
 * Metadata in one SQLite file. WAL with synchronous=NORMAL: a commit is atomic and survives a process crash; a power
 * loss may roll back the last commits (to a consistent earlier state), never tear one. Blobs are fsynced before the
 * commit that references them, so any metadata that survives points at complete blobs. FULL would add one fsync
 * (~1.6 ms measured) to every upload.
 */
export class SqliteStore implements MetaStore {
  readonly #db: DatabaseSync;
  #queue: Promise<unknown> = Promise.resolve();
  // Compiling a statement costs more than running these small queries; the set of SQL strings is fixed.
  readonly #statements = new Map<string, StatementSync>();

  constructor(path: string) {
    this.#db = new DatabaseSync(path);
    this.#db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;");
    this.#db.exec("PRAGMA busy_timeout = 5000;");
    this.#migrate();
  }

  #migrate(): void {
    const current = Number((this.#db.prepare("PRAGMA user_version").get() as Row).user_version);
    if (current > migrations.length) {
      throw new Error(`metadata schema version ${current} is newer than this atrest (${migrations.length})`);
    }
    for (let v = current; v < migrations.length; v++) {
      this.#db.exec("BEGIN");
      try {
        this.#db.exec(migrations[v]);
        this.#db.exec(`PRAGMA user_version = ${v + 1}`);
        this.#db.exec("COMMIT");
      } catch (err) {
        this.#db.exec("ROLLBACK");
        throw err;
      }
    }
  }

  #prepare(sql: string): StatementSync {
    let statement = this.#statements.get(sql);
    if (!statement) {
      statement = this.#db.prepare(sql);
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  #get(sql: string, ...params: SQLInputValue[]): Row | undefined {
    return this.#prepare(sql).get(...params) as Row | undefined;
  }

  #all(sql: string, ...params: SQLInputValue[]): Row[] {
    return this.#prepare(sql).all(...params) as Row[];
  }

  #run(sql: string, ...params: SQLInputValue[]): number {
    return Number(this.#prepare(sql).run(...params).changes);
  }

  /** Same connection and statement cache; writes belong inside `transaction()` so they never interleave with one. */
  sql(): SqlAccess {
    return {
      get: (sql, ...params) => this.#get(sql, ...params),
      all: (sql, ...params) => this.#all(sql, ...params),
      run: (sql, ...params) => this.#run(sql, ...params),
    };
  }

  async getSetting(key: string): Promise<Buffer | undefined> {
    const r = this.#get("SELECT value FROM settings WHERE key = ?", key);
    return r ? buf(r.value) : undefined;
  }

  async setSetting(key: string, value: Buffer): Promise<void> {
    this.#run(
      "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
      key,
      value,
    );
  }

  async getUser(name: string): Promise<UserRow | undefined> {
    const r = this.#get("SELECT * FROM users WHERE name = ?", name);
    return r ? toUser(r) : undefined;
  }

  async getUserById(id: string): Promise<UserRow | undefined> {
    const r = this.#get("SELECT * FROM users WHERE id = ?", id);
    return r ? toUser(r) : undefined;
  }

  async listUsers(): Promise<UserRow[]> {
    return this.#all("SELECT * FROM users ORDER BY name").map(toUser);
  }

  async insertUser(u: UserRow): Promise<void> {
    this.#run(
      `INSERT INTO users (name, password_hash, public_keys, home, permissions, groups, quota_bytes, quota_files,
         used_bytes, used_files, created_at, role, kek, id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ...userParams(u),
    );
  }

  async updateUser(u: UserRow): Promise<void> {
    this.#run(
      `UPDATE users SET name = ?, password_hash = ?, public_keys = ?, home = ?, permissions = ?, groups = ?,
         quota_bytes = ?, quota_files = ?, used_bytes = ?, used_files = ?, created_at = ?, role = ?, kek = ?
         WHERE id = ?`,
      ...userParams(u),
    );
  }

  async deleteUser(name: string): Promise<boolean> {
    return this.#run("DELETE FROM users WHERE name = ?", name) > 0;
  }

  async addUsage(userId: string, bytes: number, files: number): Promise<void> {
    this.#run(
      "UPDATE users SET used_bytes = MAX(0, used_bytes + ?), used_files = MAX(0, used_files + ?) WHERE id = ?",
      bytes,
      files,
      userId,
    );
  }

  async listGroups(): Promise<GroupRow[]> {
    return this.#all("SELECT * FROM groups ORDER BY name").map(toGroup);
  }

  async getGroup(name: string): Promise<GroupRow | undefined> {
    const r = this.#get("SELECT * FROM groups WHERE name = ?", name);
    return r ? toGroup(r) : undefined;
  }

  async putGroup(g: GroupRow): Promise<void> {
    this.#run(
      `INSERT INTO groups (name, options, created_at) VALUES (?, ?, ?)
       ON CONFLICT(name) DO UPDATE SET options = excluded.options`,
      g.name,
      JSON.stringify(g.options),
      g.createdAt,
    );
  }

  async deleteGroup(name: string): Promise<boolean> {
    return this.#run("DELETE FROM groups WHERE name = ?", name) > 0;
  }

  async listFolders(): Promise<FolderRow[]> {
    return this.#all("SELECT * FROM folders ORDER BY path").map(toFolder);
  }

  async getFolder(path: string): Promise<FolderRow | undefined> {
    const r = this.#get("SELECT * FROM folders WHERE path = ?", path);
    return r ? toFolder(r) : undefined;
  }

  async putFolder(f: FolderRow): Promise<void> {
    this.#run(
      `INSERT INTO folders (path, options, created_at) VALUES (?, ?, ?)
       ON CONFLICT(path) DO UPDATE SET options = excluded.options`,
      f.path,
      JSON.stringify(f.options),
      f.createdAt,
    );
  }

  async deleteFolder(path: string): Promise<boolean> {
    return this.#run("DELETE FROM folders WHERE path = ?", path) > 0;
  }

  async listPgpKeys(): Promise<PgpKeyRow[]> {
    return this.#all("SELECT * FROM pgp_keys ORDER BY owner_kind, owner_name, fingerprint").map(toPgpKey);
  }

  async getPgpKey(fingerprint: string): Promise<PgpKeyRow | undefined> {
    const r = this.#get("SELECT * FROM pgp_keys WHERE fingerprint = ?", fingerprint);
    return r ? toPgpKey(r) : undefined;
  }

  async putPgpKey(k: PgpKeyRow): Promise<void> {
    this.#run(
      `INSERT OR REPLACE INTO pgp_keys (fingerprint, owner_kind, owner_name, armored, user_ids, algorithm, created_at,
         expires_at, revoked, certified_by, source, imported_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      k.fingerprint,
      k.ownerKind,
      k.ownerName,
      k.armored,
      JSON.stringify(k.userIds),
      k.algorithm,
      k.createdAt,
      k.expiresAt,
      k.revoked ? 1 : 0,
      JSON.stringify(k.certifiedBy),
      k.source,
      k.importedAt,
    );
  }

  async deletePgpKey(fingerprint: string): Promise<boolean> {
    return this.#run("DELETE FROM pgp_keys WHERE fingerprint = ?", fingerprint) > 0;
  }

  async getNode(id: string): Promise<NodeRow | undefined> {
    const r = this.#get("SELECT * FROM nodes WHERE id = ?", id);
    return r ? toNode(r) : undefined;
  }

  async findChild(parentId: string, nameMac: Buffer): Promise<NodeRow | undefined> {
    const r = this.#get("SELECT * FROM nodes WHERE parent_id = ? AND name_mac = ?", parentId, nameMac);
    return r ? toNode(r) : undefined;
  }

  async listChildren(parentId: string): Promise<NodeRow[]> {
    return this.#all("SELECT * FROM nodes WHERE parent_id = ?", parentId).map(toNode);
  }

  async hasChildren(parentId: string): Promise<boolean> {
    return this.#get("SELECT 1 FROM nodes WHERE parent_id = ? LIMIT 1", parentId) !== undefined;
  }

  async insertNode(n: NodeRow): Promise<void> {
    this.#run(
      `INSERT INTO nodes (id, parent_id, name_mac, name_ct, kind, attrs_ct, blob_id, content_id, key_ref, owner_id)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      n.id,
      n.parentId,
      n.nameMac,
      n.nameCt,
      n.kind,
      n.attrsCt,
      n.blobId,
      n.contentId,
      n.keyRef,
      n.ownerId,
    );
  }

  async updateNode(id: string, patch: NodePatch): Promise<void> {
    const keys = Object.keys(patch) as (keyof NodePatch)[];
    if (keys.length === 0) return;
    const sets = keys.map((k) => `${nodeColumns[k]} = ?`).join(", ");
    this.#run(`UPDATE nodes SET ${sets} WHERE id = ?`, ...keys.map((k) => patch[k] as SQLInputValue), id);
  }

  async deleteNode(id: string): Promise<void> {
    this.#run("DELETE FROM nodes WHERE id = ?", id);
  }

  async blobIds(): Promise<Set<string>> {
    return new Set(
      this.#all("SELECT blob_id FROM nodes WHERE blob_id IS NOT NULL UNION SELECT blob_id FROM pending_blobs").map(
        (r) => r.blob_id as string,
      ),
    );
  }

  async filesByKeyRef(range: KeyRefRange, after: KeyCursor, limit: number) {
    // Two index range scans (rest of the current key_ref by rowid, then the following key_refs) instead of one
    // row-value comparison, which SQLite turns into a scan from the start of the key_ref: quadratic over a big job.
    const exclude = range.exclude ?? "";
    const rows: Row[] = [];
    if (after.keyRef >= range.from && after.keyRef < range.to && after.keyRef !== exclude) {
      rows.push(
        ...this.#all(
          `SELECT rowid AS _rowid, * FROM nodes INDEXED BY nodes_key_ref
             WHERE key_ref = ? AND rowid > ? AND kind = 'file' ORDER BY rowid LIMIT ?`,
          after.keyRef,
          after.rowid,
          limit,
        ),
      );
    }
    if (rows.length < limit) {
      rows.push(
        ...this.#all(
          `SELECT rowid AS _rowid, * FROM nodes INDEXED BY nodes_key_ref
             WHERE key_ref > ? AND key_ref >= ? AND key_ref < ? AND key_ref != ? AND kind = 'file'
             ORDER BY key_ref, rowid LIMIT ?`,
          after.keyRef,
          range.from,
          range.to,
          exclude,
          limit - rows.length,
        ),
      );
    }
    return rows.map((r) => ({ cursor: { keyRef: r.key_ref as string, rowid: Number(r._rowid) }, node: toNode(r) }));
  }

  async keyRefCounts(): Promise<{ keyRef: string | null; files: number }[]> {
    return this.#all(
      "SELECT key_ref, COUNT(*) AS n FROM nodes WHERE kind = 'file' GROUP BY key_ref ORDER BY key_ref",
    ).map((r) => ({ keyRef: r.key_ref as string | null, files: Number(r.n) }));
  }

  async updateNodeIfBlob(id: string, blobId: string, patch: NodePatch): Promise<boolean> {
    const keys = Object.keys(patch) as (keyof NodePatch)[];
    if (keys.length === 0) return false;
    const sets = keys.map((k) => `${nodeColumns[k]} = ?`).join(", ");
    return (
      this.#run(
        `UPDATE nodes SET ${sets} WHERE id = ? AND blob_id = ?`,
        ...keys.map((k) => patch[k] as SQLInputValue),
        id,
        blobId,
      ) > 0
    );
  }

  async getKeyJob(id: string): Promise<KeyJobRow | undefined> {
    const r = this.#get("SELECT * FROM key_jobs WHERE id = ?", id);
    return r ? toKeyJob(r) : undefined;
  }

  async openKeyJob(kind: KeyJobRow["kind"], scope: string): Promise<KeyJobRow | undefined> {
    const r = this.#get(
      "SELECT * FROM key_jobs WHERE kind = ? AND scope = ? AND state = 'running' ORDER BY started_at DESC LIMIT 1",
      kind,
      scope,
    );
    return r ? toKeyJob(r) : undefined;
  }

  async putKeyJob(j: KeyJobRow): Promise<void> {
    this.#run(
      `INSERT INTO key_jobs (id, kind, scope, state, cursor, total, done, skipped, failed, bytes, started_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT(id) DO UPDATE SET state = excluded.state, cursor = excluded.cursor, total = excluded.total,
         done = excluded.done, skipped = excluded.skipped, failed = excluded.failed, bytes = excluded.bytes,
         updated_at = excluded.updated_at`,
      j.id,
      j.kind,
      j.scope,
      j.state,
      `${j.cursor.rowid}:${j.cursor.keyRef}`,
      j.total,
      j.done,
      j.skipped,
      j.failed,
      j.bytes,
      j.startedAt,
      j.updatedAt,
    );
  }

  async addPendingBlob(blobId: string, jobId: string): Promise<void> {
    this.#run(
      "INSERT OR IGNORE INTO pending_blobs (blob_id, job_id, created_at) VALUES (?, ?, ?)",
      blobId,
      jobId,
      new Date().toISOString(),
    );
  }

  async removePendingBlob(blobId: string): Promise<void> {
    this.#run("DELETE FROM pending_blobs WHERE blob_id = ?", blobId);
  }

  async pendingBlobs(jobId: string): Promise<string[]> {
    return this.#all("SELECT blob_id FROM pending_blobs WHERE job_id = ?", jobId).map((r) => r.blob_id as string);
  }

  transaction<T>(fn: () => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => {
      this.#db.exec("BEGIN IMMEDIATE");
      try {
        const result = await fn();
        this.#db.exec("COMMIT");
        return result;
      } catch (err) {
        this.#db.exec("ROLLBACK");
        throw err;
      }
    };
    const next = this.#queue.then(run, run);
    this.#queue = next.catch(() => undefined);
    return next;
  }

  async close(): Promise<void> {
    await this.#queue;
    this.#db.close();
  }
}
