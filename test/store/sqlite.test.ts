import assert from "node:assert/strict";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, describe, it } from "node:test";
import { installSqliteSnapshot, openSqliteStore } from "../../src/store/sqlite/index.ts";
import { KEY_CURSOR_START } from "../../src/store/types.ts";
import { tempDir } from "../helpers/atrest.ts";
import { openTestStore } from "../helpers/store.ts";
import { fileNode, metaStoreContract } from "./contract.ts";

const dirs: string[] = [];
after(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

metaStoreContract({
  name: "sqlite",
  async open() {
    const dir = await tempDir();
    dirs.push(dir);
    return openTestStore(join(dir, "meta.db"));
  },
  async snapshotPath() {
    const dir = await tempDir();
    dirs.push(dir);
    return join(dir, "snapshot.db");
  },
  async restore(snapshot) {
    const dir = await tempDir();
    dirs.push(dir);
    await installSqliteSnapshot(snapshot, join(dir, "meta.db"));
    return openTestStore(join(dir, "meta.db"));
  },
});

describe("sqlite key cursors", () => {
  it("reads the `rowid:key_ref` cursors key jobs persisted before cursors were opaque", async () => {
    const dir = await tempDir();
    dirs.push(dir);
    const path = join(dir, "meta.db");
    const store = openSqliteStore(path);
    const files = [fileNode(null, "kek:a:v1"), fileNode(null, "kek:a:v1"), fileNode(null, "kek:b:v1")];
    await store.transaction(async (tx) => {
      for (const f of files) await tx.insertNode(f);
    });
    await store.close();
    const db = new DatabaseSync(path);
    const rowid = (db.prepare("SELECT rowid FROM nodes WHERE id = ?").get(files[0]?.id ?? "") as { rowid: number })
      .rowid;
    const insert = db.prepare(
      "INSERT INTO key_jobs (id, kind, scope, state, cursor, started_at, updated_at) VALUES (?, 'rewrap', ?, 'running', ?, 't', 't')",
    );
    insert.run("old", "key=a", `${rowid}:kek:a:v1`);
    insert.run("fresh", "key=b", "");
    db.close();
    const reopened = openSqliteStore(path);
    try {
      const range = { from: "", to: "\uffff" };
      const old = await reopened.getKeyJob("old");
      assert.deepEqual(
        (await reopened.filesByKeyRef(range, old?.cursor ?? KEY_CURSOR_START, 10)).map((r) => r.node.id),
        [files[1]?.id, files[2]?.id],
      );
      const fresh = await reopened.getKeyJob("fresh");
      assert.equal((await reopened.filesByKeyRef(range, fresh?.cursor ?? KEY_CURSOR_START, 10)).length, 3);
    } finally {
      await reopened.close();
    }
  });
});
