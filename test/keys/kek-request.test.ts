// A write naming its KEK (S3 SSE-KMS through OpenWriteOptions.key): allowed keys, refused keys, what stat and the audit
// say, and that a later rewrite without a key goes back to the rule.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ROOT_ID } from "../../src/vfs/tree.ts";
import type { VfsSession } from "../../src/vfs/types.ts";
import { cli } from "../helpers/atrest.ts";
import { type Fixture, fixture, get, info } from "./helpers.ts";

async function putWith(s: VfsSession, path: string, data: Buffer, key?: string): Promise<void> {
  const h = await s.openWrite(path, {
    truncate: true,
    key,
    encryptionNote: key ? `sse aws:kms key ${key}` : undefined,
  });
  await h.write(0, data);
  await h.close();
}

describe("a write that names its KEK", () => {
  let f: Fixture;
  let alice: VfsSession;
  const keyRefOf = async (p: string) => (await f.app.vfs.tree.resolve(ROOT_ID, p)).keyRef;

  before(async () => {
    f = await fixture();
    for (const k of ["eng", "finance", "extra", "other"]) await f.app.keys.createKey(k);
    await f.app.putGroup("eng", { key: "eng" });
    await f.app.putFolder("/b/fin", { key: "finance", allowKeys: ["extra"] });
    await f.app.addUser({ name: "alice", password: "pw-alice-1", home: "/", groups: ["eng"] });
    alice = await f.app.openSession("alice", info);
  });
  after(async () => {
    await alice.close();
    await f.close();
  });

  it("gets a key the rule could reach, or one the folder allows, and keyOf tells it was named", async () => {
    await putWith(alice, "/b/plain.txt", Buffer.from("p"));
    assert.equal(await keyRefOf("/b/plain.txt"), "kek:eng:v1");
    assert.deepEqual(await alice.keyOf?.("/b/plain.txt"), { kek: "eng", requested: false, customerKey: false });
    assert.equal(await alice.keyOf?.("/b"), undefined);
    await putWith(alice, "/b/default.txt", Buffer.from("d"), "default"); // the server default is always reachable
    assert.equal(await keyRefOf("/b/default.txt"), "kek:default:v1");
    assert.deepEqual(await alice.keyOf?.("/b/default.txt"), { kek: "default", requested: true, customerKey: false });
    await putWith(alice, "/b/fin/x.txt", Buffer.from("x"), "extra"); // listed in the folder's allowKeys
    assert.equal(await keyRefOf("/b/fin/x.txt"), "kek:extra:v1");
    await putWith(alice, "/b/fin/g.txt", Buffer.from("g"), "eng"); // her group's key, under a folder with its own
    assert.equal(await keyRefOf("/b/fin/g.txt"), "kek:eng:v1");
    assert.deepEqual(await get(alice, "/b/fin/x.txt"), Buffer.from("x"));
    // rewritten without naming a key: the rule again
    await putWith(alice, "/b/fin/x.txt", Buffer.from("x2"));
    assert.equal(await keyRefOf("/b/fin/x.txt"), "kek:finance:v1");
  });

  it("refuses a key outside the rule and the folder's list before anything is written", async () => {
    await assert.rejects(putWith(alice, "/b/other.txt", Buffer.from("o"), "other"), { code: "PERMISSION_DENIED" });
    await assert.rejects(putWith(alice, "/b/fin/o.txt", Buffer.from("o"), "other"), { code: "PERMISSION_DENIED" });
    await assert.rejects(putWith(alice, "/b/bad.txt", Buffer.from("o"), "Bad Name"), { code: "INVALID_INPUT" });
    await assert.rejects(alice.stat("/b/other.txt"), { code: "NOT_FOUND" });
  });

  it("audits the named key and the note on upload, the key on download; who-can-decrypt shows it", async () => {
    await alice.close();
    await f.app.close();
    const { stdout } = await cli(["audit", "tail", "-n", "200", "--format", "json", "--data", f.dir]);
    const records = stdout
      .split("\n")
      .filter((l) => l.trim())
      .map((l) => JSON.parse(l));
    const up = records.find((r) => r.action === "upload" && r.path === "/b/default.txt" && r.outcome === "success");
    assert.equal(up?.keyRef, "kek:default:v1");
    assert.equal(up?.detail, "sse aws:kms key default");
    const down = records.find((r) => r.action === "download" && r.path === "/b/fin/x.txt" && r.size === 1);
    assert.equal(down?.keyRef, "kek:extra:v1");
    const who = JSON.parse(
      (await cli(["keys", "who-can-decrypt", "/b/default.txt", "--json", "--data", f.dir])).stdout,
    );
    assert.equal(who.keyRef, "kek:default:v1");
    assert.equal(who.headerKeyRef, "kek:default:v1");
    f.app = await (await import("../../src/app.ts")).App.open(f.dir, { dekCacheSeconds: 0 });
    alice = await f.app.openSession("alice", info);
  });
});
