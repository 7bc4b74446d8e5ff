// The PostgreSQL side of the KMS store (pg-sync.ts): runs in a worker thread so the facade can block on it with
// Atomics.wait while the KMS's code stays synchronous, as it is over SQLite. Two connections: one runs the
// statements (one at a time: the facade waits for each reply), one LISTENs on the store's channel and counts the
// commits of every node (this one included) in shared memory, which the caches read without a round trip.
import { workerData } from "node:worker_threads";
import pg from "pg";
import { CHANGES, type PgReply, type PgRequest, type PgWorkerData, REPLY_READY } from "./pg-protocol.ts";

const data = workerData as PgWorkerData;
const flags = new Int32Array(data.shared);
const schema = data.schema;
const channel = `atrest_kms_${schema}`;
// One lock per KMS schema, the KMS's counterpart of SQLite's single writer: every transaction holds it.
const lockKey = `atrest-kms:${schema}`;

// int8 (COUNT(*)) as a number: every value the KMS stores is below 2^53.
const types = {
  getTypeParser: ((oid: number, format?: "text" | "binary") =>
    oid === 20
      ? (v: string) => Number(v)
      : pg.types.getTypeParser(oid, format as "text")) as typeof pg.types.getTypeParser,
};

let client: pg.Client | undefined;
// The connection a transaction began on: if it drops, the statements after must fail, not run in autocommit.
let txClient: pg.Client | undefined;
let inTx = false;
let dirty = false;
let closing = false;

async function connect(): Promise<pg.Client> {
  if (client) return client;
  const c = new pg.Client({
    connectionString: data.connectionString,
    types,
    connectionTimeoutMillis: data.timeoutMs,
    keepAlive: true,
    application_name: "atrest-kms",
  });
  c.on("error", () => {
    if (client === c) client = undefined;
  });
  await c.connect();
  try {
    // A node that stops mid-transaction (frozen, cut off) must not hold the schema's lock for longer than this.
    await c.query(
      `SET statement_timeout = ${data.timeoutMs}; SET lock_timeout = ${data.timeoutMs}; ` +
        `SET idle_in_transaction_session_timeout = ${data.timeoutMs}`,
    );
    // Two nodes starting at once would both try CREATE SCHEMA; the lock makes the second a no-op.
    await c.query("BEGIN");
    await c.query("SELECT pg_advisory_xact_lock(hashtext($1))", [lockKey]);
    await c.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    await c.query("COMMIT");
    await c.query(`SET search_path TO ${schema}`);
  } catch (e) {
    await c.end().catch(() => undefined);
    throw e;
  }
  client = c;
  return c;
}

const numbered = new Map<string, string>();
function text(sql: string): string {
  let t = numbered.get(sql);
  if (t === undefined) {
    let n = 0;
    t = sql.replace(/\?/g, () => `$${++n}`);
    numbered.set(sql, t);
  }
  return t;
}

const isRead = (sql: string) => /^\s*SELECT\b/i.test(sql);

async function notify(c: pg.Client): Promise<void> {
  await c.query("SELECT pg_notify($1, '')", [channel]);
}

async function handle(m: PgRequest): Promise<Omit<PgReply, "id">> {
  if (m.op === "close") {
    closing = true;
    await Promise.all([client?.end(), listener?.end()].map((p) => p?.catch(() => undefined)));
    client = undefined;
    return { rows: [], changes: 0 };
  }
  if (m.op === "rollback") {
    const c = txClient;
    inTx = false;
    txClient = undefined;
    if (c && c === client) await c.query("ROLLBACK");
    return { rows: [], changes: 0 };
  }
  if (inTx && (client === undefined || client !== txClient)) {
    throw new Error("connection to the key store lost inside a transaction");
  }
  const c = await connect();
  switch (m.op) {
    case "begin":
      await c.query("BEGIN");
      inTx = true;
      txClient = c;
      dirty = false;
      try {
        await c.query("SELECT pg_advisory_xact_lock(hashtext($1))", [lockKey]);
      } catch (e) {
        await c.query("ROLLBACK").catch(() => undefined);
        inTx = false;
        txClient = undefined;
        throw e;
      }
      return { rows: [], changes: 0 };
    case "commit":
      // NOTIFY inside the transaction is delivered at COMMIT, so no node hears of a change before it is visible.
      inTx = false;
      txClient = undefined;
      if (dirty) await notify(c);
      await c.query("COMMIT");
      return { rows: [], changes: 0 };
    case "migrate":
      return await migrate(c, m.migrations);
    case "query": {
      const values = m.params.map((v) => (v instanceof Uint8Array && !Buffer.isBuffer(v) ? Buffer.from(v) : v));
      if (inTx || isRead(m.sql)) {
        const r = await c.query({ text: text(m.sql), values });
        if (inTx && !isRead(m.sql)) dirty = true;
        return { rows: r.rows as Record<string, unknown>[], changes: r.rowCount ?? 0 };
      }
      // A write outside a transaction takes the lock too, as SQLite's autocommit write takes its write lock: else it
      // could slip between another node's locked read and write.
      await c.query("BEGIN");
      try {
        await c.query("SELECT pg_advisory_xact_lock(hashtext($1))", [lockKey]);
        const r = await c.query({ text: text(m.sql), values });
        await notify(c);
        await c.query("COMMIT");
        return { rows: r.rows as Record<string, unknown>[], changes: r.rowCount ?? 0 };
      } catch (e) {
        await c.query("ROLLBACK").catch(() => undefined);
        throw e;
      }
    }
  }
}

/** Runs the migrations not yet applied, under the schema's lock; replies with the version found before. */
async function migrate(c: pg.Client, migrations: string[]): Promise<Omit<PgReply, "id">> {
  await c.query("BEGIN");
  try {
    await c.query("SELECT pg_advisory_xact_lock(hashtext($1))", [lockKey]);
    await c.query("CREATE TABLE IF NOT EXISTS kms_schema (version INTEGER NOT NULL)");
    const r = await c.query<{ version: number }>("SELECT version FROM kms_schema");
    const from = r.rows[0]?.version ?? 0;
    if (r.rows.length === 0) await c.query("INSERT INTO kms_schema (version) VALUES (0)");
    if (from < migrations.length) {
      for (let v = from; v < migrations.length; v++) await c.query(migrations[v] as string);
      await c.query("UPDATE kms_schema SET version = $1", [migrations.length]);
      await notify(c);
    }
    await c.query("COMMIT");
    return { rows: [], changes: 0, version: from };
  } catch (e) {
    await c.query("ROLLBACK").catch(() => undefined);
    throw e;
  }
}

let listener: pg.Client | undefined;
async function listen(): Promise<void> {
  while (!closing) {
    const l = new pg.Client({
      connectionString: data.connectionString,
      connectionTimeoutMillis: data.timeoutMs,
      keepAlive: true,
      application_name: "atrest-kms-listen",
    });
    try {
      const ended = new Promise<void>((resolve) => {
        l.on("error", () => resolve());
        l.on("end", () => resolve());
      });
      await l.connect();
      l.on("notification", () => Atomics.add(flags, CHANGES, 1));
      await l.query(`LISTEN ${channel}`);
      listener = l;
      // Whatever was committed while no one listened counts as a change.
      Atomics.add(flags, CHANGES, 1);
      await ended;
    } catch {
      // reconnect below
    }
    listener = undefined;
    await l.end().catch(() => undefined);
    Atomics.add(flags, CHANGES, 1);
    if (!closing) await new Promise((r) => setTimeout(r, 250));
  }
}
void listen();

data.port.on("message", (m: PgRequest) => {
  handle(m)
    .then(
      (reply) => data.port.postMessage({ id: m.id, ...reply }),
      (err: unknown) => {
        const e = err as { message?: string; code?: string };
        data.port.postMessage({ id: m.id, error: { message: String(e?.message ?? err), code: e?.code } });
      },
    )
    .finally(() => {
      Atomics.store(flags, REPLY_READY, 1);
      Atomics.notify(flags, REPLY_READY);
    });
});
