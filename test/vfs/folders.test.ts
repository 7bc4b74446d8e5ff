import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, before, describe, it } from "node:test";
import { App } from "../../src/app.ts";
import { migrations } from "../../src/store/sql/migrations.ts";
import type { MetaStore } from "../../src/store/types.ts";
import { Folders, globalPath } from "../../src/vfs/folders.ts";
import { cli, removeDir, tempDir } from "../helpers/atrest.ts";
import { openTestStore } from "../helpers/store.ts";

describe("folders", () => {
  let dir: string;
  let store: MetaStore;
  before(async () => {
    dir = await tempDir();
    store = await openTestStore(join(dir, "meta.db"));
  });
  after(async () => {
    await store.close();
    await removeDir(dir);
  });

  it("maps a user's path to the global tree", () => {
    assert.equal(globalPath("/alice", "/docs/x"), "/alice/docs/x");
    assert.equal(globalPath("/alice", "/"), "/alice");
    assert.equal(globalPath("/", "/docs/../x"), "/x");
    assert.equal(globalPath("/alice/", "/../../etc"), "/alice/etc");
  });

  it("picks the longest matching folder and never a sibling with a common prefix", async () => {
    const folders = new Folders(store);
    await folders.put("/shared", { key: "dept" });
    await folders.put("/shared/outbox/", { key: "outbox" });
    assert.equal((await folders.match("/shared/outbox/a.csv"))?.options.key, "outbox");
    assert.equal((await folders.match("/shared/outbox"))?.options.key, "outbox");
    assert.equal((await folders.match("/shared/outboxes/a"))?.options.key, "dept");
    assert.equal((await folders.match("/shared"))?.options.key, "dept");
    assert.equal(await folders.match("/sharedx/a"), undefined);
    assert.equal(await folders.match("/alice/a"), undefined);
  });

  it("replaces options in place and removes rules", async () => {
    const folders = new Folders(store);
    const first = await folders.put("/r", { key: "a" });
    const second = await folders.put("/r", { key: "b" });
    assert.equal(second.createdAt, first.createdAt);
    assert.equal((await store.getFolder("/r"))?.options.key, "b");
    await folders.remove("/r");
    assert.equal(await folders.match("/r/x"), undefined);
    await assert.rejects(folders.remove("/r"), { code: "NOT_FOUND" });
  });

  it("refuses the root, relative paths and bad key names", async () => {
    const folders = new Folders(store);
    await assert.rejects(folders.put("/", {}), { code: "INVALID_INPUT", message: /root/ });
    await assert.rejects(folders.put("outbox", {}), { code: "INVALID_INPUT", message: /absolute/ });
    await assert.rejects(folders.put("/x", { key: "Bad Key" }), { code: "INVALID_INPUT", message: /key name/ });
  });

  it("sees a folder added by another process within the cache time", async () => {
    let now = 0;
    const reader = new Folders(store, () => now);
    assert.equal(await reader.match("/late/x"), undefined);
    const other = await openTestStore(join(dir, "meta.db"));
    await new Folders(other).put("/late", { key: "late" });
    await other.close();
    assert.equal(await reader.match("/late/x"), undefined, "cached");
    now += 1001;
    assert.equal((await reader.match("/late/x"))?.options.key, "late");
  });
});

describe("schema upgrade to roles and registries", () => {
  it("keeps users of a version-1 database, as role user without a key", async () => {
    const dir = await tempDir();
    try {
      const path = join(dir, "meta.db");
      const db = new DatabaseSync(path);
      db.exec(migrations[0]);
      db.exec("PRAGMA user_version = 1");
      db.prepare(
        `INSERT INTO users (id, name, password_hash, public_keys, home, permissions, groups, created_at)
         VALUES ('u1', 'old', NULL, '[]', '/old', '{}', '["g"]', '2026-01-01T00:00:00Z')`,
      ).run();
      db.close();
      const store = await openTestStore(path);
      const user = await store.getUser("old");
      assert.equal(user?.role, "user");
      assert.equal(user?.kek, null);
      assert.deepEqual(user?.groups, ["g"]);
      assert.deepEqual(await store.listFolders(), []);
      await store.close();
    } finally {
      await removeDir(dir);
    }
  });
});

describe("folder, group and role commands", () => {
  let data: string;
  before(async () => {
    data = await tempDir();
    await cli(["init", "--data", data]);
  });
  after(() => removeDir(data));

  it("adds, lists and removes folders and groups, and records each change in the audit", async () => {
    const added = await cli(["folder", "add", "/shared/outbox", "--key", "outbox", "--data", data]);
    assert.match(added.stdout, /folder \/shared\/outbox: key=outbox/);
    await cli(["group", "add", "finance", "--key", "fin", "--data", data]);
    await cli(
      ["user", "add", "carol", "--password-stdin", "--group", "finance", "--role", "custodian", "--data", data],
      "pw-carol-1",
    );
    const folders = JSON.parse((await cli(["folder", "list", "--json", "--data", data])).stdout);
    assert.deepEqual(
      folders.map((f: { path: string; options: object }) => [f.path, f.options]),
      [["/shared/outbox", { key: "outbox" }]],
    );
    const groups = JSON.parse((await cli(["group", "list", "--json", "--data", data])).stdout);
    assert.deepEqual(groups[0].members, ["carol"]);
    assert.equal(groups[0].options.key, "fin");
    const users = JSON.parse((await cli(["user", "list", "--json", "--data", data])).stdout);
    assert.equal(users.find((u: { name: string }) => u.name === "carol").role, "custodian");

    // The folder's directory exists in the tree, so an admin with home / can list it.
    const app = await App.open(data);
    try {
      const admin = await app.addUser({ name: "root_admin", password: "pw-admin-1", home: "/", role: "admin" });
      const session = await app.openSession(admin.name, { protocol: "cli", sessionId: "t" });
      assert.deepEqual(
        (await session.list("/shared")).map((e) => e.name),
        ["outbox"],
      );
    } finally {
      await app.close();
    }

    await cli(["folder", "rm", "/shared/outbox", "--data", data]);
    await cli(["group", "rm", "finance", "--data", data]);
    assert.equal((await cli(["folder", "list", "--data", data])).stdout, "");
    const tail = (await cli(["audit", "tail", "--data", data, "-n", "20"])).stdout;
    assert.match(tail, /folder\.change/);
    assert.match(tail, /group\.change/);
  });

  it("rejects a bad role, group name or key with a one-line error", async () => {
    await assert.rejects(cli(["user", "add", "dave", "--password-stdin", "--role", "root", "--data", data], "pw"), {
      stderr: /unknown role "root"/,
    });
    await assert.rejects(cli(["group", "add", "Bad Group", "--data", data]), { stderr: /invalid group name/ });
    await assert.rejects(cli(["folder", "add", "/x", "--key", "no good", "--data", data]), {
      stderr: /invalid key name/,
    });
    await assert.rejects(cli(["folder", "rm", "/nothing", "--data", data]), { stderr: /no such folder/ });
  });
});
