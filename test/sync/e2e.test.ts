// End-to-end sync (issue 14 "proven by"): two users, three devices — each with its own state and directory, one
// server. Create, edit, rename, move, delete, conflicting edits while a device is offline (both versions kept),
// restore from the trash, share to the second user, revoke a device (new epoch, its copy wiped on next contact, the
// others go on), and a canary scan of the server's data directory for plaintext names and content.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, before, describe, test } from "node:test";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { Device, plaintextHits, treeOf } from "./helpers.ts";

describe("sync end to end: two users, three devices", () => {
  let dir: string;
  let data: string;
  let server: RunningServer;
  let url: string;
  let ca: string;
  let region: string;
  let a1: Device;
  let a2: Device;
  let b1: Device;
  const big = randomBytes(300_000);

  before(async () => {
    dir = await tempDir("atrest-sync-e2e-");
    data = join(dir, "data");
    await cli(["init", "--data", data]);
    await cli(["user", "add", "alice", "--password-stdin", "--data", data], "alice-pw\n");
    await cli(["user", "add", "bob", "--password-stdin", "--data", data], "bob-pw\n");
    server = await startServer(data);
    url = `https://127.0.0.1:${server.httpPort}`;
    ca = join(data, "tls", "server.crt");
    a1 = new Device(dir, "alice", "laptop");
    a2 = new Device(dir, "alice", "phone");
    b1 = new Device(dir, "bob", "desk");
  });
  after(async () => {
    await server?.stop();
    await removeDir(dir);
  });

  test("enrol: first device self-signed, second approved after comparing its fingerprint", async () => {
    const r1 = await a1.enroll(url, ca, "alice-pw");
    assert.doesNotMatch(r1.stdout, /pending/);
    // the second device checks its user's root fingerprint (shown by the first) against the chain the server serves
    await assert.rejects(
      new Device(dir, "alice", "fake").enroll(url, ca, "alice-pw", ["--expect-root", "1".repeat(64)]),
      /not the expected one/,
    );
    const r2 = await a2.enroll(url, ca, "alice-pw", ["--expect-root", a1.root]);
    assert.match(r2.stdout, /pending/);
    assert.equal(a2.root, a1.root);
    // a wrong fingerprint is refused
    await assert.rejects(a1.run(["device", "approve", a2.id, "--fingerprint", "0".repeat(64)]), /fingerprint differs/);
    await a1.run(["device", "approve", a2.id, "--fingerprint", a2.fingerprint]);
    const list = (await a2.run(["devices", "list"])).stdout;
    assert.match(list, /active\tlaptop/);
    assert.match(list, /active\tphone.*this device/);
    await b1.enroll(url, ca, "bob-pw");
  });

  test("create, edit, rename, move, delete across two devices (separate processes)", async () => {
    region = (await a1.run(["region", "create", "team docs"])).stdout.trim();
    assert.match(region, /^[0-9a-f]{32}$/);
    await mkdir(join(a1.dir, "sub"), { recursive: true });
    await writeFile(join(a1.dir, "a canary-name-7f3a.txt"), "CANARY-CONTENT-91b2 first");
    await writeFile(join(a1.dir, "sub", "big.bin"), big);
    await mkdir(join(a1.dir, "empty dir"));
    await a1.sync(region, { proc: true });
    await a2.sync(region, { proc: true });
    assert.deepEqual(await treeOf(a2.dir), await treeOf(a1.dir));

    // rename and move on the phone (no re-upload), a new folder and file, a delete
    await rename(join(a2.dir, "a canary-name-7f3a.txt"), join(a2.dir, "notes.txt"));
    await mkdir(join(a2.dir, "moved"));
    await rename(join(a2.dir, "sub", "big.bin"), join(a2.dir, "moved", "big.bin"));
    await writeFile(join(a2.dir, "moved", "c.txt"), "see");
    await rm(join(a2.dir, "empty dir"), { recursive: true });
    const out = (await a2.sync(region)).stdout;
    assert.match(out, /up 1 \(/, "only the new file is uploaded: renames and moves are not");
    await a1.sync(region);
    assert.deepEqual(await treeOf(a1.dir), await treeOf(a2.dir));
    assert.equal((await readFile(join(a1.dir, "moved", "big.bin"))).equals(big), true);
  });

  test("conflicting edits while one device is offline: both versions kept, nothing lost; restore from the trash", async () => {
    await writeFile(join(a1.dir, "notes.txt"), "edited on the laptop, offline");
    await writeFile(join(a2.dir, "notes.txt"), "edited on the phone");
    await a2.sync(region);
    const r = await a1.sync(region, { proc: true });
    assert.match(r.stdout, /conflicts kept: notes \(conflict laptop \d{4}-\d\d-\d\d \d{6}\)\.txt/);
    await a2.sync(region);
    const t1 = await treeOf(a1.dir);
    assert.deepEqual(await treeOf(a2.dir), t1);
    assert.equal(await readFile(join(a1.dir, "notes.txt"), "utf8"), "edited on the phone");
    const copy = Object.keys(t1).find((p) => p.startsWith("notes (conflict laptop"));
    assert.ok(copy);
    assert.equal(await readFile(join(a2.dir, copy), "utf8"), "edited on the laptop, offline");
    // a second step changes nothing (no flood of conflict copies)
    assert.match((await a1.sync(region)).stdout, /up 0 .*down 0/);

    // delete on one device, edit on the other: the edit wins, nothing is lost
    await rm(join(a1.dir, "moved", "c.txt"));
    await writeFile(join(a2.dir, "moved", "c.txt"), "see, edited");
    await a1.sync(region);
    await a2.sync(region);
    await a1.sync(region);
    assert.equal(await readFile(join(a1.dir, "moved", "c.txt"), "utf8"), "see, edited");

    // a plain delete goes to the trash; restore brings the old version back
    const before = (await a2.sync(region)).stdout;
    const version = Number(/version (\d+)/.exec(before)?.[1]);
    await rm(join(a2.dir, "moved", "c.txt"));
    await a2.sync(region);
    await a1.sync(region);
    await assert.rejects(readFile(join(a1.dir, "moved", "c.txt")));
    const restored = await a1.run([
      "restore",
      "moved/c.txt",
      "--region",
      region,
      "--version",
      String(version),
      "--dir",
      a1.dir,
    ]);
    assert.match(restored.stdout, /as moved\/c.txt/);
    await a1.sync(region);
    await a2.sync(region);
    assert.equal(await readFile(join(a2.dir, "moved", "c.txt"), "utf8"), "see, edited");
  });

  test("share with bob: refused until his fingerprint is verified, then his device syncs both ways", async () => {
    await assert.rejects(a1.run(["share", region, "bob"]), /not verified/);
    await a1.run(["verify", "bob", b1.root]);
    await a1.run(["share", region, "bob"]);
    // bob syncs only a region whose owner he verified
    await assert.rejects(b1.sync(region), /not verified/);
    await b1.run(["verify", "alice", a1.root]);
    await b1.sync(region, { proc: true });
    assert.deepEqual(await treeOf(b1.dir), await treeOf(a1.dir));
    await writeFile(join(b1.dir, "from bob.txt"), "hi alice");
    await b1.sync(region);
    await a1.sync(region);
    assert.equal(await readFile(join(a1.dir, "from bob.txt"), "utf8"), "hi alice");
  });

  test("revoke the phone: new epoch, it cannot read what comes after and wipes its copy; the others go on", async () => {
    await a2.sync(region);
    assert.ok(Object.keys(await treeOf(a2.dir)).length > 3);
    // the phone's last version before its revocation, which bob (away) has not seen: kept and flagged (§7b)
    await writeFile(join(a2.dir, "last from the phone.txt"), "before revocation");
    await a2.sync(region);
    await a1.run(["devices", "revoke", a2.id]);
    // the new epoch's key was wrapped to the remaining devices only
    const db = new DatabaseSync(join(data, "meta.db"));
    try {
      const epochs = (who: string) =>
        (
          db.prepare("SELECT epoch FROM sync_envelopes WHERE region_id = ? AND recipient = ?").all(region, who) as {
            epoch: number;
          }[]
        ).map((r) => r.epoch);
      assert.deepEqual(epochs(a2.id), [1]);
      assert.deepEqual(epochs(a1.id).sort(), [1, 2]);
      assert.deepEqual(epochs(b1.id).sort(), [1, 2]);
    } finally {
      db.close();
    }
    await writeFile(join(a1.dir, "after revocation.txt"), "CANARY-CONTENT-91b2 after");
    await a1.sync(region);
    await assert.rejects(a2.sync(region, { proc: true }), /revoked: its synced copy was wiped/);
    assert.deepEqual(await treeOf(a2.dir), {});
    const bob = await b1.sync(region);
    assert.match(bob.stdout, new RegExp(`signed by alice's device ${a2.id}, revoked since: kept`));
    assert.equal(await readFile(join(b1.dir, "last from the phone.txt"), "utf8"), "before revocation");
    assert.equal(await readFile(join(b1.dir, "after revocation.txt"), "utf8"), "CANARY-CONTENT-91b2 after");
    assert.deepEqual(await treeOf(b1.dir), await treeOf(a1.dir));
  });

  test("unshare bob: new epoch without his devices; he is refused, his copy stays", async () => {
    const before = await treeOf(b1.dir);
    await a1.run(["unshare", region, "bob"]);
    await writeFile(join(a1.dir, "after unshare.txt"), "not for bob");
    await a1.sync(region);
    await assert.rejects(b1.sync(region), /no such region|NOT_MEMBER/);
    assert.deepEqual(await treeOf(b1.dir), before);
  });

  test("canary scan: the server's data directory holds no plaintext name or content", async () => {
    const hits = await plaintextHits(data, [
      "canary-name-7f3a",
      "CANARY-CONTENT-91b2",
      "notes.txt",
      "edited on the phone",
      "from bob",
    ]);
    assert.deepEqual(hits, []);
  });
});
