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
