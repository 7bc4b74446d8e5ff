// The SQLite driver of the metadata store (the embedded default): one connection running the aggregate files and the
// migrations of src/store/sql/, which the PostgreSQL driver (src/store/postgres/) runs too.
import { type FileHandle, open, rename, rm } from "node:fs/promises";
import { DatabaseSync, type SQLInputValue, type StatementSync } from "node:sqlite";
import { AtrestError, noSpaceOr } from "../../errors.ts";
import { type RowSealer, requireSealer } from "../sealing.ts";
import { legacyTables, sealLegacyRows } from "../sql/legacy.ts";
import { migrations } from "../sql/migrations.ts";
import { operations } from "../sql/operations.ts";
import { bound, type Row, type Sql } from "../sql/sql.ts";
import type { MetaReads, MetaStore, MetaTx } from "../types.ts";

/** The SQLite store is the contract and nothing more (no raw SQL escapes the driver). */
export type SqliteStore = MetaStore;

/** Compiling a statement costs more than running these small queries; the set of SQL strings is fixed. */
function statementCache(db: DatabaseSync): Sql {
  const statements = new Map<string, StatementSync>();
  const prepare = (sql: string): StatementSync => {
    let statement = statements.get(sql);
    if (!statement) {
      statement = db.prepare(sql);
      statements.set(sql, statement);
    }
    return statement;
  };
  return {
    dialect: "sqlite",
    get: async (sql, ...params) => prepare(sql).get(...(params as SQLInputValue[])) as Row | undefined,
    all: async (sql, ...params) => prepare(sql).all(...(params as SQLInputValue[])) as Row[],
    run: async (sql, ...params) => Number(prepare(sql).run(...(params as SQLInputValue[])).changes),
  };
}

const TWO_24 = 2 ** 24;

/**
 * SQL functions the aggregate files use on SQLite. atrest_xor48(blob): the XOR of the first 48 bits of each value
 * (store.childNamesDigest), kept in a JS number as two 24-bit halves (exact below 2^53; a sum would overflow).
 */
function registerFunctions(db: DatabaseSync): void {
  db.aggregate("atrest_xor48", {
    start: 0,
    deterministic: true,
    step: (acc, v) => {
      if (!(v instanceof Uint8Array) || v.length < 6) return acc;
      const hi = (v[0] << 16) | (v[1] << 8) | v[2];
      const lo = (v[3] << 16) | (v[4] << 8) | v[5];
      const a = acc as number;
      return (Math.floor(a / TWO_24) ^ hi) * TWO_24 + ((a % TWO_24) ^ lo);
    },
  });
}

function migrate(db: DatabaseSync): void {
  const current = Number((db.prepare("PRAGMA user_version").get() as { user_version: number }).user_version);
  if (current > migrations.length) {
    throw new AtrestError(
      "UNSUPPORTED",
      `metadata schema version ${current} is newer than this atrest (${migrations.length})`,
    );
  }
  for (let v = current; v < migrations.length; v++) {
    db.exec("BEGIN");
    try {
      db.exec(migrations[v]);
      db.exec(`PRAGMA user_version = ${v + 1}`);
      db.exec("COMMIT");
    } catch (err) {
      db.exec("ROLLBACK");
      throw err;
    }
  }
}

/**
 * Metadata in one SQLite file. WAL with synchronous=NORMAL: a commit is atomic and survives a process crash; a power
 * loss may roll back the last commits (to a consistent earlier state), never tear one. Blobs are fsynced before the
 * commit that references them, so any metadata that survives points at complete blobs. FULL would add one fsync
 * (~1.6 ms measured) to every upload.
 */
export function openSqliteStore(path: string): SqliteStore {
  const db = new DatabaseSync(path);
  db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;");
  db.exec("PRAGMA busy_timeout = 5000;");
  // SQLite's page cache, 2 MB by default, is smaller than the node table of one 10,000-entry folder (4.6 MB): a page
  // of such a folder fetched by id re-read most of its pages from the file (19 ms per 1,000 rows, 9.5 with 16 MiB).
  // Only pages actually read fill it, so a small store stays small.
  db.exec("PRAGMA cache_size = -16384;");
  // deleted and overwritten records are zeroed in the file, not left in free space for a disk thief (metadata at
  // rest, docs/threat-model.md)
  db.exec("PRAGMA secure_delete = ON;");
  migrate(db);
  registerFunctions(db);
  const sql = statementCache(db);
  let queue: Promise<unknown> = Promise.resolve();
  let sealer: RowSealer | undefined;
  const currentSealer = (): RowSealer => requireSealer(sealer);

  // Only the reads are exposed outside a transaction (the write functions exist on the object but not in its type).
  const reads: MetaReads = operations(sql, { sealer: currentSealer });

  // Group sync of the WAL: one fdatasync covers every commit written before it started; callers arriving while one
  // runs share the next. (synchronous=NORMAL writes the WAL without syncing it at each commit.)
  let syncing: Promise<void> | undefined;
  let next: Promise<void> | undefined;
  const syncWal = async (): Promise<void> => {
    let fh: FileHandle;
    try {
      fh = await open(`${path}-wal`, "r");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw err;
    }
    try {
      await fh.datasync();
    } finally {
      await fh.close();
    }
  };
  const durable = (): Promise<void> => {
    if (!syncing) {
      syncing = syncWal().finally(() => {
        syncing = undefined;
      });
      return syncing;
    }
    next ??= syncing
      .catch(() => undefined)
      .then(() => {
        next = undefined;
        return durable();
      });
    return next;
  };

  const store: SqliteStore = {
    ...reads,
    durable,

    async unlock(s: RowSealer): Promise<void> {
      sealer = s;
      if ((await legacyTables(sql)).length === 0) return;
      const moved = await store.transaction((tx) => sealLegacyRows(sql, tx));
      if (moved === 0) return;
      // the clear rows are gone from the tables; rewrite the file and empty the WAL so no page image keeps them
      const compact = async () => {
        try {
          db.exec("VACUUM");
          db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
        } catch {
          // another connection holds a read: secure_delete has zeroed the freed pages already; a later VACUUM tidies
        }
      };
      const next = queue.then(compact, compact);
      queue = next.catch(() => undefined);
      await next;
    },

    transaction<T>(fn: (tx: MetaTx) => Promise<T>): Promise<T> {
      const run = async (): Promise<T> => {
        let open = true;
        try {
          db.exec("BEGIN IMMEDIATE");
        } catch (err) {
          throw noSpaceOr(err);
        }
        try {
          const result = await fn(
            operations(
              bound(sql, () => open),
              { sealer: currentSealer },
            ),
          );
          db.exec("COMMIT");
          return result;
        } catch (err) {
          // A COMMIT that failed for a full disk may have rolled back already: a second ROLLBACK would hide why.
          if (db.isTransaction) db.exec("ROLLBACK");
          throw noSpaceOr(err);
        } finally {
          open = false;
        }
      };
      const next = queue.then(run, run);
      queue = next.catch(() => undefined);
      return next;
    },

    snapshot(dest: string): Promise<void> {
      // VACUUM cannot run inside a transaction: queue it behind the open ones on this connection.
      const run = async () => {
        db.exec(`VACUUM INTO '${dest.replaceAll("'", "''")}'`);
      };
      const next = queue.then(run, run);
      queue = next.catch(() => undefined);
      return next;
    },

    async close() {
      await queue;
      db.close();
      sealer?.destroy();
    },
  };
  return store;
}

/**
 * Puts a file written by `snapshot()` in place as the database at `path` (which must not be open), dropping the old
 * database's WAL and shared-memory files: replayed onto the snapshot they would corrupt it.
 */
export async function installSqliteSnapshot(snapshot: string, path: string): Promise<void> {
  for (const ext of ["-wal", "-shm"]) await rm(`${path}${ext}`, { force: true });
  await rename(snapshot, path);
}
