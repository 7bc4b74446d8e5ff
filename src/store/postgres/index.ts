// The PostgreSQL driver of the metadata store (scale-out: several server processes on one database). It runs the
// same aggregate files and the same migrations as the SQLite driver (src/store/sql/), over a `pg` pool:
// - reads outside a transaction run on any pooled connection;
// - a transaction holds one connection and, for its whole length, a transaction-level advisory lock per schema:
//   write transactions are serialised across every connection and every node, exactly as SQLite's single writer
//   serialises them, so read-check-write sequences (quotas, key job cursors, the trigger queue) hold across nodes
//   without per-query locking. Write transactions are short (no I/O but the database's inside them: blobs are written
//   and fsynced before the commit that references them);
// - each process registers itself in cluster_nodes and heartbeats; trigger executions it claims are leased to it and
//   taken over by the other nodes once it stops heartbeating (src/store/sql/triggers.ts);
// - named leases (holdLease: key jobs) are session advisory locks on a connection of their own, gone with the holder.
import { randomUUID } from "node:crypto";
import { open } from "node:fs/promises";
import { createRequire } from "node:module";
import type pg from "pg";
import { AtrestError, NoSpaceError } from "../../errors.ts";
import { type RowSealer, requireSealer } from "../sealing.ts";
import { legacyTables, sealLegacyRows } from "../sql/legacy.ts";
import { migrationsFor } from "../sql/migrations.ts";
import { operations } from "../sql/operations.ts";
import { bound, type Row, type Sql, type Value } from "../sql/sql.ts";
import type { LeaseResult, MetaReads, MetaStore, MetaTx } from "../types.ts";
import { dumpSchema, loadSchema } from "./snapshot.ts";

/** A node that has not heartbeaten for this long is gone: its leases are taken over. */
export const NODE_TIMEOUT_MS = 30_000;
const HEARTBEAT_MS = 5_000;

export interface PostgresStoreOptions {
  /** This process's id in cluster_nodes and in leases; default a random one per process. */
  nodeId?: string;
  /** Pooled connections (default 10, or `?pool=N` in the URL). */
  max?: number;
}

export interface PostgresStore extends MetaStore {
  readonly nodeId: string;
  /** The schema the store lives in. */
  readonly schema: string;
  /** Resolves once connected and migrated (every operation waits for it; this surfaces a failure early). */
  ready(): Promise<void>;
  holdLease(name: string): Promise<LeaseResult>;
}

/** Where a `postgres://` URL points: the connection string for `pg` and the schema (`?schema=`, default public). */
export function parsePostgresUrl(url: string): { connectionString: string; schema: string; max?: number } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new AtrestError("INVALID_INPUT", "metadata store: not a postgres:// URL");
  }
  if (u.protocol !== "postgres:" && u.protocol !== "postgresql:") {
    throw new AtrestError("INVALID_INPUT", "metadata store: not a postgres:// URL");
  }
  const schema = u.searchParams.get("schema") ?? "public";
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) {
    throw new AtrestError("INVALID_INPUT", "metadata store: schema must be a lowercase SQL identifier");
  }
  const pool = u.searchParams.get("pool");
  u.searchParams.delete("schema");
  u.searchParams.delete("pool");
  const max = pool === null ? undefined : Number(pool);
  if (max !== undefined && !(Number.isInteger(max) && max >= 1 && max <= 1000)) {
    throw new AtrestError("INVALID_INPUT", "metadata store: pool must be 1-1000 connections");
  }
  return { connectionString: u.toString(), schema, ...(max ? { max } : {}) };
}

/** The URL without its password (for reports and the data directory's record of it). */
export function redactPostgresUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "";
    return u.toString();
  } catch {
    return "postgres://(invalid)";
  }
}

// `pg` (16 modules) is loaded by the first store opened on PostgreSQL: a server on SQLite, and every command that only
// imports this file for its URL helpers, never pays for it (idle RSS)
let pgModule: typeof pg | undefined;
const loadPg = (): typeof pg => {
  pgModule ??= createRequire(import.meta.url)("pg") as typeof pg;
  return pgModule;
};

// int8 (COUNT(*), BIGINT columns) as a number: every value atrest stores is below 2^53.
const types = {
  getTypeParser: ((oid: number, format?: "text" | "binary") =>
    oid === 20
      ? (v: string) => Number(v)
      : loadPg().types.getTypeParser(oid, format as "text")) as typeof pg.types.getTypeParser,
};

/** `?` placeholders numbered for PostgreSQL (the shared SQL has no `?` inside literals). */
const numbered = new Map<string, { text: string; name: string }>();
function prepared(sql: string): { text: string; name: string } {
  let q = numbered.get(sql);
  if (!q) {
    let n = 0;
    q = { text: sql.replace(/\?/g, () => `$${++n}`), name: `atrest_${numbered.size}` };
    numbered.set(sql, q);
  }
  return q;
}

/** Socket-level failures reaching the database (node:net codes). */
const NETWORK = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
]);

function mapError(err: unknown): unknown {
  if (err instanceof AtrestError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (code === "53100") return new NoSpaceError({ cause: err });
  const message = (err as { message?: unknown } | null)?.message;
  // the database is away (refused, reset, shut down, restarting) rather than the query being wrong: class 08
  // connection exceptions, 57P01-57P03 shutdowns, and the driver's own "Connection terminated …"
  if (
    (typeof code === "string" && (NETWORK.has(code) || code.startsWith("08") || /^57P0[123]$/.test(code))) ||
    (typeof message === "string" && message.startsWith("Connection terminated"))
  ) {
    return new AtrestError("UNAVAILABLE", "metadata store unavailable", { cause: err });
  }
  return err;
}

function params(values: Value[]): unknown[] {
  return values.map((v) => (v instanceof Uint8Array && !Buffer.isBuffer(v) ? Buffer.from(v) : v));
}

function sqlOver(q: pg.Pool | pg.PoolClient, ready: () => Promise<void>): Sql {
  const query = async (sql: string, values: Value[]): Promise<pg.QueryResult<Row>> => {
    await ready();
    const { text, name } = prepared(sql);
    try {
      return await q.query<Row>({ text, name, values: params(values) });
    } catch (err) {
      throw mapError(err);
    }
  };
  return {
    dialect: "postgres",
    get: async (sql, ...values) => (await query(sql, values)).rows[0],
    all: async (sql, ...values) => (await query(sql, values)).rows,
    run: async (sql, ...values) => (await query(sql, values)).rowCount ?? 0,
  };
}

/** A per-schema advisory lock key (two schemas in one database do not serialise each other). */
function lockKey(purpose: string, schema: string): string {
  return `atrest.${purpose}:${schema}`;
}

async function migrate(client: pg.PoolClient, schema: string): Promise<void> {
  const list = migrationsFor("postgres");
  await client.query("BEGIN");
  try {
    // two nodes starting at once: one migrates, the other waits and finds the schema current
    await client.query("SELECT pg_advisory_xact_lock(hashtext($1))", [lockKey("migrate", schema)]);
    await client.query("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
    const row = (await client.query<{ version: number }>("SELECT version FROM schema_version")).rows[0];
    if (!row) await client.query("INSERT INTO schema_version (version) VALUES (0)");
    const current = row?.version ?? 0;
    if (current > list.length) {
      throw new AtrestError(
        "UNSUPPORTED",
        `metadata schema version ${current} is newer than this atrest (${list.length})`,
      );
    }
    for (let v = current; v < list.length; v++) {
      await client.query(list[v] as string);
    }
    if (current < list.length) await client.query("UPDATE schema_version SET version = $1", [list.length]);
    await client.query("COMMIT");
  } catch (err) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw err;
  }
}

/**
 * Opens the store at `url` (`postgres://user@host:port/db?schema=name&pool=N`). Returns at once; the connection and
 * the migrations run in the background and every operation waits for them (`ready()` to wait explicitly). The schema
 * is created if missing.
 */
export function openPostgresStore(url: string, options: PostgresStoreOptions = {}): PostgresStore {
  const target = parsePostgresUrl(url);
  const schema = target.schema;
  const nodeId = options.nodeId ?? randomUUID();
  const pool = new (loadPg().Pool)({
    connectionString: target.connectionString,
    max: options.max ?? target.max ?? 10,
    options: `-c search_path=${schema}`,
    types,
    // a dropped connection is replaced; an idle one is kept a while (each node keeps a few open)
    idleTimeoutMillis: 30_000,
  });
  // an idle client's error (server restart) must not crash the process; the next query reconnects
  pool.on("error", () => undefined);

  let heartbeat: NodeJS.Timeout | undefined;
  let closed = false;
  const startup = (async () => {
    const client = await pool.connect();
    try {
      if (schema !== "public") await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
      await migrate(client, schema);
      const now = Date.now();
      await client.query(
        `INSERT INTO cluster_nodes (id, started_at, seen_at) VALUES ($1, $2, $2)
         ON CONFLICT (id) DO UPDATE SET started_at = excluded.started_at, seen_at = excluded.seen_at`,
        [nodeId, now],
      );
    } finally {
      client.release();
    }
    heartbeat = setInterval(() => {
      // an upsert: the row comes back if someone deleted it meanwhile (a node must never look dead while it runs)
      pool
        .query(
          `INSERT INTO cluster_nodes (id, started_at, seen_at) VALUES ($1, $2, $2)
           ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at`,
          [nodeId, Date.now()],
        )
        .catch(() => undefined);
    }, HEARTBEAT_MS);
    heartbeat.unref();
  })();
  startup.catch(() => undefined);
  const ready = () => startup;
  const lease = { owner: nodeId, liveAfter: () => Date.now() - NODE_TIMEOUT_MS };
  let sealer: RowSealer | undefined;
  const parts = { lease, sealer: (): RowSealer => requireSealer(sealer) };

  const reads: MetaReads = operations(sqlOver(pool, ready), parts);
  let queue: Promise<unknown> = Promise.resolve();
  const serially = <T>(run: () => Promise<T>): Promise<T> => {
    const next = queue.then(run, run);
    queue = next.catch(() => undefined);
    return next;
  };

  // one transaction at a time per process (as in SQLite: the pool stays free for reads), one per schema across
  // processes (the advisory lock)
  const inTransaction = <T>(fn: (sql: Sql) => Promise<T>): Promise<T> =>
    serially(async () => {
      await ready();
      const client = await pool.connect().catch((err) => {
        throw mapError(err);
      });
      let open = true;
      let broken = false;
      try {
        // one round trip for both (simple protocol; the key is ours and the schema a checked identifier): the lock is
        // held for the whole transaction, so every round trip inside it is one that every node's writers wait for
        await client.query(`BEGIN; SELECT pg_advisory_xact_lock(hashtext('${lockKey("write", schema)}'))`);
        const result = await fn(bound(sqlOver(client, ready), () => open));
        await client.query("COMMIT");
        return result;
      } catch (err) {
        await client.query("ROLLBACK").catch(() => {
          broken = true;
        });
        throw mapError(err);
      } finally {
        open = false;
        client.release(broken);
      }
    });

  return {
    ...reads,
    nodeId,
    schema,
    ready,

    async unlock(s: RowSealer): Promise<void> {
      sealer = s;
      // rows a store kept in clear before migration 13 (9 predates PostgreSQL stores): sealed now, tables dropped
      // (their dead tuples go with the next VACUUM, which autovacuum runs)
      await ready();
      if ((await legacyTables(sqlOver(pool, ready))).length === 0) return;
      await inTransaction((sql) => sealLegacyRows(sql, operations(sql, parts)));
    },

    transaction<T>(fn: (tx: MetaTx) => Promise<T>): Promise<T> {
      return inTransaction((sql) => fn(operations(sql, { ...parts, inTransaction: true })));
    },

    async snapshot(dest: string): Promise<void> {
      await ready();
      const client = await pool.connect();
      const fh = await open(dest, "wx", 0o600);
      try {
        // a REPEATABLE READ transaction sees every transaction committed before it and none after: a concurrent
        // write transaction is in the copy wholly or not at all
        await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
        try {
          await dumpSchema(client, migrationsFor("postgres").length, (line) => fh.write(line).then(() => undefined));
        } finally {
          await client.query("ROLLBACK").catch(() => undefined);
        }
        await fh.sync();
      } finally {
        await fh.close();
        client.release();
      }
    },

    async holdLease(name: string): Promise<LeaseResult> {
      await ready();
      // a session-level advisory lock on a connection of its own: PostgreSQL drops it the moment that connection ends,
      // so a holder killed (or its host gone: the keepalives below notice within ~25 s) frees it for the others
      const client = new (loadPg().Client)({
        connectionString: target.connectionString,
        application_name: `atrest:${nodeId}`.slice(0, 63),
        keepAlive: true,
        keepAliveInitialDelayMillis: 10_000,
        types,
      });
      let lost = false;
      client.on("error", () => {
        lost = true;
      });
      client.on("end", () => {
        lost = true;
      });
      await client.connect();
      try {
        await client.query(
          "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3",
        );
        const key = lockKey(`lease.${name}`, schema);
        const got = await client.query<{ ok: boolean }>("SELECT pg_try_advisory_lock(hashtext($1)) AS ok", [key]);
        if (!got.rows[0]?.ok) {
          const who = await client.query<{ name: string }>(
            `SELECT a.application_name AS name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
               AND l.classid = ((hashtext($1)::bigint >> 32) & 4294967295)::oid
               AND l.objid = (hashtext($1)::bigint & 4294967295)::oid`,
            [key],
          );
          await client.end().catch(() => undefined);
          const holder = who.rows[0]?.name.replace(/^atrest:/, "");
          return { held: false, ...(holder ? { holder } : {}) };
        }
      } catch (err) {
        await client.end().catch(() => undefined);
        throw mapError(err);
      }
      let released = false;
      return {
        held: true,
        lost: () => lost && !released,
        release: async () => {
          if (released) return;
          released = true;
          // ending the session releases the lock
          await client.end().catch(() => undefined);
        },
      };
    },

    async close() {
      if (closed) return;
      closed = true;
      await queue;
      clearInterval(heartbeat);
      await startup.catch(() => undefined);
      await pool.query("DELETE FROM cluster_nodes WHERE id = $1", [nodeId]).catch(() => undefined);
      await pool.end();
      sealer?.destroy();
    },
  };
}

/**
 * Replaces the content of the store at `url` with a file written by `snapshot()` (the snapshot's tables, at its
 * schema version, then the migrations since). Nothing else may use that schema meanwhile.
 */
export async function installPostgresSnapshot(snapshot: string, url: string): Promise<void> {
  const target = parsePostgresUrl(url);
  const client = new (loadPg().Client)({ connectionString: target.connectionString, types });
  await client.connect();
  try {
    await loadSchema(client, target.schema, snapshot, migrationsFor("postgres"));
  } finally {
    await client.end();
  }
}
