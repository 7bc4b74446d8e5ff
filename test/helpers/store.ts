// Stores for tests that drive the metadata store without an App: unlocked with a fixed test metadata key, so users,
// groups and folders (sealed rows) work and a reopened store reads what an earlier one wrote.
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { dataPaths, openStore } from "../../src/app.ts";
import { RowSealer } from "../../src/store/sealing.ts";
import { openSqliteStore, type SqliteStore } from "../../src/store/sqlite/index.ts";

export const TEST_META_KEY = Buffer.alloc(32, 0x4d);

export function testSealer(): RowSealer {
  return new RowSealer(TEST_META_KEY);
}

export async function openTestStore(path: string): Promise<SqliteStore> {
  const store = openSqliteStore(path);
  await store.unlock(testSealer());
  return store;
}

/**
 * Every byte the data dir's metadata store holds, for "is X stored anywhere" scans: meta.db as it is, or (the
 * PostgreSQL matrix) every column value of a snapshot, binary columns decoded back to their bytes.
 */
export async function storeBytes(data: string): Promise<Buffer> {
  const file = join(data, "meta.db");
  if (existsSync(file)) return readFile(file);
  const dir = await mkdtemp(join(tmpdir(), "atrest-dump-"));
  const store = openStore(dataPaths(data));
  try {
    await store.snapshot(join(dir, "dump"));
    const parts: Buffer[] = [];
    for (const line of (await readFile(join(dir, "dump"), "utf8")).split("\n")) {
      if (!line) continue;
      const row = (JSON.parse(line) as { r?: Record<string, unknown> }).r ?? {};
      for (const v of Object.values(row)) {
        const b = v !== null && typeof v === "object" && "$b" in v ? Buffer.from(String(v.$b), "base64") : undefined;
        parts.push(b ?? Buffer.from(String(v)), Buffer.from("\n"));
      }
    }
    return Buffer.concat(parts);
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
}
