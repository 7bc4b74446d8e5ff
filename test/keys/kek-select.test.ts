import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ROOT_ID } from "../../src/vfs/tree.ts";
import type { VfsSession } from "../../src/vfs/types.ts";
import { cli } from "../helpers/atrest.ts";
import { type Fixture, fixture, get, info, put } from "./helpers.ts";

describe("KEK selection: folder > user > first group with a key > default", () => {
  let f: Fixture;
  const sessions: VfsSession[] = [];
  const keyRefOf = async (globalPath: string) => (await f.app.vfs.tree.resolve(ROOT_ID, globalPath)).keyRef;

  before(async () => {
    f = await fixture();
    for (const k of ["finance", "eng", "ops", "carol-key"]) await f.app.keys.createKey(k);
    await f.app.keys.rotateKey("finance"); // finance is on v2
    await f.app.putGroup("eng", { key: "eng" });
    await f.app.putGroup("ops", { key: "ops" });
    await f.app.putGroup("nokey", {});
    await f.app.putFolder("/shared/finance", { key: "finance" });
    await f.app.putFolder("/shared/finance/public", {}); // a more specific folder without a key: falls through
    await f.app.addUser({ name: "alice", password: "pw-alice-1", home: "/" }); // no key, no groups
    await f.app.addUser({ name: "bob", password: "pw-bob-123", home: "/", groups: ["nokey", "ops", "eng"] });
    await f.app.addUser({ name: "carol", password: "pw-carol-1", home: "/", groups: ["eng"], kek: "carol-key" });
  });
  after(async () => {
    for (const s of sessions) await s.close();
    await f.close();
  });

  it("records the chosen key per file", async () => {
    const alice = await f.app.openSession("alice", info);
    const bob = await f.app.openSession("bob", info);
    const carol = await f.app.openSession("carol", info);
    sessions.push(alice, bob, carol);
    await alice.mkdir("/tmp");
    await put(alice, "/tmp/a.txt", Buffer.from("a"));
    await put(bob, "/tmp/b.txt", Buffer.from("b"));
    await put(carol, "/tmp/c.txt", Buffer.from("c"));
    await put(alice, "/shared/finance/a.txt", Buffer.from("fa"));
    await put(bob, "/shared/finance/b.txt", Buffer.from("fb"));
    await put(carol, "/shared/finance/c.txt", Buffer.from("fc"));
    await put(carol, "/shared/finance/public/c.txt", Buffer.from("fpc"));

    assert.equal(await keyRefOf("/tmp/a.txt"), "kek:default:v1"); // server default
    assert.equal(await keyRefOf("/tmp/b.txt"), "kek:ops:v1"); // first group (in bob's order) that has a key
    assert.equal(await keyRefOf("/tmp/c.txt"), "kek:carol-key:v1"); // user key beats the group
    for (const who of ["a", "b", "c"]) assert.equal(await keyRefOf(`/shared/finance/${who}.txt`), "kek:finance:v2");
    // The key-less folder inside does not pick a key: the user's rule applies.
    assert.equal(await keyRefOf("/shared/finance/public/c.txt"), "kek:carol-key:v1");
    for (const [s, p, want] of [
      [alice, "/tmp/a.txt", "a"],
      [bob, "/shared/finance/b.txt", "fb"],
      [carol, "/tmp/c.txt", "c"],
    ] as const) {
      assert.deepEqual(await get(s, p), Buffer.from(want));
    }
  });

  it("keeps the key of a moved file (no re-encryption on rename)", async () => {
    const alice = sessions[0] as VfsSession;
    await alice.rename("/tmp/a.txt", "/shared/finance/moved.txt", false);
    assert.equal(await keyRefOf("/shared/finance/moved.txt"), "kek:default:v1");
    assert.deepEqual(await get(alice, "/shared/finance/moved.txt"), Buffer.from("a"));
  });

  it("a folder key the key manager does not know fails the upload clearly and leaves nothing", async () => {
    await f.app.putFolder("/typo", { key: "no-such-key" });
    const alice = sessions[0] as VfsSession;
    await assert.rejects(put(alice, "/typo/x.txt", Buffer.from("x")), (e: Error & { code?: string }) => {
      assert.equal(e.code, "KEY_UNAVAILABLE");
      assert.match(e.message, /kek:no-such-key/);
      return true;
    });
    await assert.rejects(alice.stat("/typo/x.txt"), { code: "NOT_FOUND" });
  });

  it("who-can-decrypt shows the key of a file and the rule for new files", async () => {
    await f.app.close();
    const { stdout } = await cli(["keys", "who-can-decrypt", "/shared/finance/moved.txt", "--json", "--data", f.dir]);
    const info1 = JSON.parse(stdout);
    assert.equal(info1.keyRef, "kek:default:v1");
    assert.equal(info1.headerKeyRef, "kek:default:v1");
    assert.equal(info1.keyState, "active");
    assert.equal(info1.newFilesKey, "kek:finance");
    assert.equal(info1.newFilesRule, "folder /shared/finance");
    assert.match(info1.keyManager, /embedded/);
    assert.deepEqual(info1.unwrapClients, ["embedded (server)"]);
    const text = (await cli(["keys", "who-can-decrypt", "/tmp/b.txt", "--data", f.dir])).stdout;
    assert.match(text, /keyRef\s+kek:ops:v1/);
    assert.match(text, /newFilesRule\s+group ops/);
    f.app = await (await import("../../src/app.ts")).App.open(f.dir, { dekCacheSeconds: 0 });
  });
});
