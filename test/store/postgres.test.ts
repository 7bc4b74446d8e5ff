import assert from "node:assert/strict";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import {
  installPostgresSnapshot,
  openPostgresStore,
  type PostgresStore,
  parsePostgresUrl,
  redactPostgresUrl,
} from "../../src/store/postgres/index.ts";
import { tempDir } from "../helpers/atrest.ts";
import { dropTestSchemas, pgSkip, pgUrl, testSchema } from "../helpers/pg.ts";
import { testSealer } from "../helpers/store.ts";
import { metaStoreContract } from "./contract.ts";

const skip = await pgSkip();
const dirs: string[] = [];
after(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  if (!skip.skip) await dropTestSchemas();
});

async function unlocked(url: string): Promise<PostgresStore> {
  const store = openPostgresStore(url);
  await store.ready();
  await store.unlock(testSealer());
  return store;
}

const fresh = () => unlocked(pgUrl(testSchema()));

if (skip.skip) {
  describe("MetaStore contract: postgres", skip, () => {});
} else {
  metaStoreContract({
    name: "postgres",
    open: fresh,
    async snapshotPath() {
      const dir = await tempDir();
      dirs.push(dir);
      return join(dir, "snapshot.jsonl");
    },
    async restore(snapshot) {
      const url = pgUrl(testSchema());
      await installPostgresSnapshot(snapshot, url);
      return unlocked(url);
    },
  });
}

describe("postgres URL", () => {
  it("takes the schema and pool size from the query, refuses other schemes and odd identifiers", () => {
    const p = parsePostgresUrl("postgres://u:pw@db.example:5433/atrest?schema=prod&pool=4&sslmode=require");
    assert.equal(p.schema, "prod");
    assert.equal(p.max, 4);
    assert.equal(p.connectionString, "postgres://u:pw@db.example:5433/atrest?sslmode=require");
    assert.equal(parsePostgresUrl("postgresql://h/db").schema, "public");
    assert.throws(() => parsePostgresUrl("mysql://h/db"), /postgres:\/\//);
    assert.throws(() => parsePostgresUrl("postgres://h/db?schema=x;drop"), /identifier/);
    assert.equal(redactPostgresUrl("postgres://u:pw@h/db?schema=a"), "postgres://u@h/db?schema=a");
  });
});

describe("postgres: upgrade of a schema-12 store (migration 13 seals tokens, S3 key owners and bans)", skip, () => {
  it("keeps the rows and holds none of their names in clear", async () => {
    const { default: pg } = await import("pg");
    const { migrationsFor } = await import("../../src/store/sql/migrations.ts");
    const { TEST_PG } = await import("../helpers/pg.ts");
    const schema = testSchema();
    const c = new pg.Client({ connectionString: TEST_PG });
    await c.connect();
    try {
      await c.query(`CREATE SCHEMA ${schema}`);
      await c.query(`SET search_path = ${schema}`);
      for (const m of migrationsFor("postgres").slice(0, 12)) await c.query(m);
      await c.query("CREATE TABLE schema_version (version INTEGER NOT NULL)");
      await c.query("INSERT INTO schema_version (version) VALUES (12)");
      await c.query(
        `INSERT INTO api_tokens (id, user_name, name, secret_hash, scopes, paths, created_at, expires_at)
         VALUES ('t1', 'pg-token-owner', 'pg-label', '\\x00', '[]', '["/pg-path"]', 1, 2)`,
      );
      await c.query(
        "INSERT INTO s3_keys (access_key_id, user_id, user_name, secret_ct, created_at) VALUES ('AK', 'u', 'pg-s3-owner', '\\x01', 't')",
      );
      await c.query("INSERT INTO bans (kind, subject, since, until, count) VALUES ('user', 'pg-banned', 1, 9, 1)");
    } finally {
      await c.end();
    }
    const store = await unlocked(pgUrl(schema));
    try {
      assert.equal((await store.getApiToken("t1"))?.user, "pg-token-owner");
      assert.deepEqual((await store.getApiToken("t1"))?.paths, ["/pg-path"]);
      assert.equal((await store.getS3Key("AK"))?.userName, "pg-s3-owner");
      assert.equal((await store.getBan("user", "pg-banned"))?.until, 9);
      const dir = await tempDir();
      dirs.push(dir);
      await store.snapshot(join(dir, "dump"));
      const { readFile } = await import("node:fs/promises");
      const dump = await readFile(join(dir, "dump"), "utf8");
      for (const canary of ["pg-token-owner", "pg-label", "pg-path", "pg-s3-owner", "pg-banned", "legacy_"]) {
        assert.equal(dump.includes(canary), false, canary);
      }
    } finally {
      await store.close();
    }
  });
});
