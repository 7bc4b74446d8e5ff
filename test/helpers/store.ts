// Stores for tests that drive the metadata store without an App: unlocked with a fixed test metadata key, so users,
// groups and folders (sealed rows) work and a reopened store reads what an earlier one wrote.
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
