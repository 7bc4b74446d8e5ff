// Browser sessions shared through a real metadata store (SQLite here; PostgreSQL in test/scaleout/sessions-nodes):
// two session tables on one store stand for two nodes, with a clock the test moves. The admin's list is every node's
// sessions (a stopped node's included), and the rows no session can use any more (idle or absolute timeout, older
// than the user's "log out everywhere") are deleted by the list and by the periodic sweep, whichever node runs it.
import assert from "node:assert/strict";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { SealedCookies } from "../../../src/protocols/http/sealed-cookie.ts";
import { DEFAULT_SESSIONS, SessionTable } from "../../../src/protocols/http/sessions.ts";
import type { SqliteStore } from "../../../src/store/sqlite/index.ts";
import { tempDir } from "../../helpers/atrest.ts";
import { openTestStore } from "../../helpers/store.ts";

const MIN = 60_000;

describe("browser sessions in the store, seen from two nodes", () => {
  let dir: string;
  let store: SqliteStore;
  let clock = Date.UTC(2026, 11, 7, 12);
  const ended: string[] = [];
  const key = Buffer.alloc(32, 7);

  before(async () => {
    dir = await tempDir("atrest-sessions-");
    store = await openTestStore(join(dir, "meta.db"));
  });
  after(async () => {
    await store?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const rows = () => ({
    getSetting: (k: string) => store.getSetting(k),
    setSetting: (k: string, v: Buffer) => store.transaction((tx) => tx.setSetting(k, v)),
    deleteSetting: (k: string) => store.transaction((tx) => tx.deleteSetting(k)),
    listSettings: (p: string) => store.listSettings(p),
  });
  const node = () =>
    new SessionTable(
      { ...DEFAULT_SESSIONS, idleMs: 30 * MIN, absoluteMs: 12 * 60 * MIN },
      (s) => ended.push(s.id),
      () => clock,
      { rows: rows(), cookies: new SealedCookies(Buffer.from(key)) },
    );
  const stored = async () => (await store.listSettings("http.session.")).length;

  it("lists every node's sessions, a stopped node's too, and never their cookie or CSRF token", async () => {
    const a = node();
    const b = node();
    const onA = await a.create("alice", "192.0.2.1", "sess-a");
    await b.create("bob", "192.0.2.2", "sess-b");
    await a.endAll(); // node a stops: its sessions live on in the store
    const seen = await b.listAll();
    assert.deepEqual(seen.map((s) => `${s.id} ${s.user} ${s.sourceIp}`).sort(), [
      "sess-a alice 192.0.2.1",
      "sess-b bob 192.0.2.2",
    ]);
    assert.deepEqual(
      b.list().map((s) => s.id),
      ["sess-b"],
      "b's own table holds only what it created",
    );
    assert.ok(!(await store.listSettings("http.session.")).some((r) => r.value.toString().includes(onA.cookie)));
    await b.end(onA.cookie);
    assert.deepEqual(
      (await b.listAll()).map((s) => s.id),
      ["sess-b"],
      "a session ended through b is gone from the list at once",
    );
    await b.endUser("bob");
  });

  it("deletes the rows of sessions that timed out on a node that is gone, keeping the live ones", async () => {
    const dead = node();
    await dead.create("carol", "192.0.2.3", "idle");
    clock += 10 * MIN;
    await dead.create("carol", "192.0.2.3", "used");
    await dead.endAll(); // the node died: nobody holds these sessions in memory
    const live = node();
    const kept = await live.create("dave", "192.0.2.4", "live");
    assert.equal(await stored(), 3);
    // 'idle' is idle 31 min: within the grace for a last use not yet written back (up to a minute), so still listed
    clock += 21 * MIN;
    assert.equal((await live.lookup(kept.cookie))?.id, "live");
    assert.deepEqual((await live.listAll()).map((s) => s.id).sort(), ["idle", "live", "used"]);
    clock += 2 * MIN;
    assert.deepEqual((await live.listAll()).map((s) => s.id).sort(), ["live", "used"]);
    assert.equal(await stored(), 2, "the idle row of the dead node is deleted");
    // the periodic sweep does the same without anyone looking at the list
    clock += 10 * MIN;
    assert.equal((await live.lookup(kept.cookie))?.id, "live");
    await live.sweep();
    assert.equal(await stored(), 1, "the sweep deleted the other timed-out row");
    assert.deepEqual(
      (await live.listAll()).map((s) => s.id),
      ["live"],
    );
    // absolute timeout: even a session in use goes at 12 h
    for (let t = 0; t < 12 * 60; t += 20) {
      clock += 20 * MIN;
      if (!(await live.lookup(kept.cookie))) break;
    }
    assert.deepEqual(await live.listAll(), []);
    assert.equal(await stored(), 0);
    assert.ok(ended.includes("live"), "the end of the live node's own session is told (audited)");
  });

  it("drops the rows older than their user's log-out-everywhere, then the cut-off row once it refuses nothing", async () => {
    const a = node();
    const b = node();
    const old = await a.create("erin", "192.0.2.5", "old");
    await a.endAll();
    clock += MIN;
    assert.equal(await b.endUser("erin"), 0, "b held none of erin's sessions");
    clock += 1;
    await b.create("erin", "192.0.2.5", "new");
    assert.deepEqual(
      (await b.listAll()).map((s) => s.id),
      ["new"],
    );
    assert.equal(await a.lookup(old.cookie), undefined);
    assert.equal((await store.listSettings("http.sessions.since.")).length, 1);
    clock += 13 * 60 * MIN;
    assert.deepEqual(await b.listAll(), []);
    assert.equal((await store.listSettings("http.sessions.since.")).length, 0);
    assert.equal(await stored(), 0);
  });
});
