// PostgreSQL for tests: ATREST_TEST_PG (a postgres:// URL of a database the tests may create schemas in), else the
// machine's local server (127.0.0.1:5432, database `test`). Each test gets its own schema, dropped after it. Where
// no server answers, PostgreSQL tests skip (the embedded default never needs one), except in CI, where they fail.
import { randomBytes } from "node:crypto";
import pg from "pg";

export const TEST_PG = process.env.ATREST_TEST_PG || "postgres://postgres@127.0.0.1:5432/test";

let reachable: Promise<boolean> | undefined;

/** Whether the test server answers (once per process). */
export function pgReachable(): Promise<boolean> {
  reachable ??= (async () => {
    const c = new pg.Client({ connectionString: TEST_PG, connectionTimeoutMillis: 2000 });
    try {
      await c.connect();
      await c.query("SELECT 1");
      return true;
    } catch (err) {
      if (process.env.CI === "true" || process.env.ATREST_TEST_PG) {
        throw new Error(`PostgreSQL test server ${TEST_PG} unreachable: ${(err as Error).message}`);
      }
      return false;
    } finally {
      await c.end().catch(() => undefined);
    }
  })();
  return reachable;
}

/** `{ skip }` for describe/it: a reason when PostgreSQL is not there. */
export async function pgSkip(): Promise<{ skip?: string }> {
  return (await pgReachable()) ? {} : { skip: `no PostgreSQL at ${TEST_PG} (set ATREST_TEST_PG)` };
}

/** The test server's URL with `?schema=` set (and more query parameters, e.g. pool). */
export function pgUrl(schema: string, extra: Record<string, string> = {}): string {
  const u = new URL(TEST_PG);
  u.searchParams.set("schema", schema);
  for (const [k, v] of Object.entries(extra)) u.searchParams.set(k, v);
  return u.toString();
}

const made = new Set<string>();

/** A new schema name (created by the store at open), dropped by dropTestSchemas(). */
export function testSchema(): string {
  const name = `t_${randomBytes(8).toString("hex")}`;
  made.add(name);
  return name;
}

export async function dropSchema(name: string): Promise<void> {
  const c = new pg.Client({ connectionString: TEST_PG });
  await c.connect();
  try {
    await c.query(`DROP SCHEMA IF EXISTS ${name} CASCADE`);
  } finally {
    await c.end();
  }
}

export async function dropTestSchemas(): Promise<void> {
  for (const name of made) await dropSchema(name);
  made.clear();
}
