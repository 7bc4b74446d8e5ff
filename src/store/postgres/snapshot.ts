// A PostgreSQL store's snapshot file: JSON lines, a header with the schema version, then one line per row
// (`{"t": table, "r": {column: value}}`, binary columns as `{"$b": base64}`). Streamed both ways (a cursor on the
// way out, a line reader on the way in): memory stays flat however many files the tree has. Node liveness
// (cluster_nodes) is not part of it.
import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import type pg from "pg";
import { AtrestError } from "../../errors.ts";

const FORMAT = "atrest-meta-postgres";
const SKIP = new Set(["cluster_nodes", "schema_version"]);
const BATCH = 500;
const IDENT = /^[a-z_][a-z0-9_]{0,62}$/;

async function tablesOf(client: pg.ClientBase): Promise<string[]> {
  const r = await client.query<{ table_name: string }>(
    `SELECT table_name FROM information_schema.tables
       WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name`,
  );
  return r.rows.map((t) => t.table_name).filter((t) => !SKIP.has(t));
}

function encode(row: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(row)) out[k] = Buffer.isBuffer(v) ? { $b: v.toString("base64") } : v;
  return out;
}

function decode(row: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(row)) {
    out[k] = v !== null && typeof v === "object" && "$b" in v ? Buffer.from(String(v.$b), "base64") : v;
  }
  return out;
}

/** Writes every table of the current schema (the caller holds a REPEATABLE READ transaction on `client`). */
export async function dumpSchema(
  client: pg.ClientBase,
  version: number,
  write: (line: string) => Promise<void>,
): Promise<void> {
  const tables = await tablesOf(client);
  await write(`${JSON.stringify({ format: FORMAT, version, tables })}\n`);
  for (const table of tables) {
    await client.query(`DECLARE atrest_dump NO SCROLL CURSOR FOR SELECT * FROM "${table}"`);
    for (;;) {
      const { rows } = await client.query(`FETCH ${BATCH} FROM atrest_dump`);
      if (rows.length === 0) break;
      await write(rows.map((r) => `${JSON.stringify({ t: table, r: encode(r) })}\n`).join(""));
    }
    await client.query("CLOSE atrest_dump");
  }
}

/**
 * Replaces the tables of `schema` with the snapshot's rows, in one transaction: the tables are dropped, the schema
 * is rebuilt up to the snapshot's version, the rows go in, the later migrations run, sequences continue after the
 * highest restored value.
 */
export async function loadSchema(client: pg.Client, schema: string, file: string, migrations: string[]): Promise<void> {
  const lines = createInterface({ input: createReadStream(file, "utf8"), crlfDelay: Number.POSITIVE_INFINITY });
  const it = lines[Symbol.asyncIterator]();
  const first = await it.next();
  const header = first.done ? undefined : (JSON.parse(first.value) as { format?: string; version?: number });
  if (header?.format !== FORMAT || !Number.isInteger(header.version)) {
    throw new AtrestError("INVALID_INPUT", "not a PostgreSQL metadata snapshot");
  }
  const version = header.version as number;
  if (version > migrations.length) {
    throw new AtrestError("UNSUPPORTED", `snapshot schema version ${version} is newer than this atrest`);
  }
  await client.query("BEGIN");
  try {
    await client.query("SELECT pg_advisory_xact_lock(hashtext($1))", [`atrest.migrate:${schema}`]);
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    await client.query(`SET LOCAL search_path = ${schema}`);
    for (const t of await client
      .query<{ table_name: string }>(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 AND table_type = 'BASE TABLE'",
        [schema],
      )
      .then((r) => r.rows)) {
      await client.query(`DROP TABLE IF EXISTS "${t.table_name}" CASCADE`);
    }
    await client.query("CREATE TABLE schema_version (version INTEGER NOT NULL)");
    for (let v = 0; v < version; v++) await client.query(migrations[v] as string);
    const known = new Set(await tablesOf(client));
    for (;;) {
      const next = await it.next();
      if (next.done) break;
      if (next.value === "") continue;
      const { t, r } = JSON.parse(next.value) as { t: string; r: Record<string, unknown> };
      const row = decode(r);
      const cols = Object.keys(row);
      if (!known.has(t) || !cols.every((c) => IDENT.test(c))) {
        throw new AtrestError("INVALID_INPUT", "snapshot names a table or column this schema does not have");
      }
      await client.query(
        `INSERT INTO "${t}" (${cols.map((c) => `"${c}"`).join(", ")}) VALUES (${cols.map((_, i) => `$${i + 1}`).join(", ")})`,
        cols.map((c) => row[c]),
      );
    }
    for (let v = version; v < migrations.length; v++) await client.query(migrations[v] as string);
    await client.query("INSERT INTO schema_version (version) VALUES ($1)", [migrations.length]);
    const serials = await client.query<{ table_name: string; column_name: string }>(
      `SELECT table_name, column_name FROM information_schema.columns
         WHERE table_schema = $1 AND column_default LIKE 'nextval(%'`,
      [schema],
    );
    for (const s of serials.rows) {
      await client.query(
        `SELECT setval(pg_get_serial_sequence($1, $2), (SELECT COALESCE(MAX("${s.column_name}"), 0) + 1 FROM "${s.table_name}"), false)`,
        [`${schema}.${s.table_name}`, s.column_name],
      );
    }
    await client.query("COMMIT");
  } catch (err) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw err;
  } finally {
    lines.close();
  }
}
