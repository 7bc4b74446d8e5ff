// Retention on the server and in the trash (docs/sync-protocol.md §10): the blob sweep deletes blobs no kept version
// names and releases their quota, but spares a blob uploaded for a publish still in flight (grace period); a deleted
// entry leaves the tree once its deletion is past the region's retention, never under legal hold; a region's
// history is replayable from its checkpoints after all that (a fresh device gets the same tree).
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { SyncApiError } from "../../src/sync/client/api.ts";
import { Session } from "../../src/sync/client/session.ts";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { Device, treeOf } from "./helpers.ts";

const GRACE_S = 2;

describe("sync retention: blob sweep with a grace period, trash expiry, legal hold", () => {
  let dir: string;
  let server: RunningServer;
  let a1: Device;
  let a2: Device;
  let region: string;

  before(async () => {
    dir = await tempDir("atrest-sync-retention-");
    const data = join(dir, "data");
    await cli(["init", "--data", data]);
    await cli(["user", "add", "alice", "--password-stdin", "--data", data], "alice-pw\n");
    server = await startServer(data, [], { ATREST_SYNC_BLOB_GRACE_SECONDS: String(GRACE_S) });
    a1 = new Device(dir, "alice", "laptop");
    const url = `https://127.0.0.1:${server.httpPort}`;
    const ca = join(data, "tls", "server.crt");
    await a1.enroll(url, ca, "alice-pw");
    a2 = new Device(dir, "alice", "phone");
    await a2.enroll(url, ca, "alice-pw", ["--expect-root", a1.root]);
    await a1.run(["device", "approve", a2.id, "--fingerprint", a2.fingerprint]);
    region = (await a1.run(["region", "create", "kept"])).stdout.trim();
    await writeFile(join(a1.dir, "a.txt"), "alpha");
    await writeFile(join(a1.dir, "b.txt"), "beta");
    await a1.sync(region);
  });
  after(async () => {
    await server?.stop();
    await removeDir(dir);
  });

  /** Runs `fn` with alice's session (the CLI is not running meanwhile: one client per state directory). */
  const withSession = async <T>(fn: (s: Session) => Promise<T>): Promise<T> => {
    const s = await Session.open(a1.state, a1.env.ATREST_SYNC_PASSPHRASE as string);
    try {
      return await fn(s);
    } finally {
      await s.close();
    }
  };
  const used = () =>
    withSession(
      async (s) => ((await s.api.regions()).find((r) => r.id === region) as unknown as { usedBytes: number }).usedBytes,
    );
  const hasBlob = (hash: string) =>
    withSession(async (s) => {
      try {
        (await s.api.getBlob(region, hash)).destroy();
        return true;
      } catch (err) {
        if (err instanceof SyncApiError && err.status === 404) return false;
        throw err;
      }
    });
  /** Entries of the current tree, as this device verified it (deleted ones included). */
  const tree = () => withSession(async (s) => (await s.region(region)).manifest.entries);

  test("an unreferenced blob survives the sweep within its grace period, then goes and its bytes are released", async () => {
    const blob = randomBytes(5000);
    const hash = createHash("sha256").update(blob).digest("hex");
    const before = await used();
    await withSession((s) => s.api.putBlob(region, hash, blob));
    assert.equal(await used(), before + 5000);
    // a publish in flight: uploaded, named by no manifest yet
    assert.match((await a1.run(["sweep", region])).stdout, /0 blob\(s\) removed/);
    assert.equal(await hasBlob(hash), true);
    await sleep(GRACE_S * 1000 + 300);
    const out = (await a1.run(["sweep", region])).stdout;
    assert.match(out, /1 blob\(s\) removed/);
    assert.equal(await hasBlob(hash), false);
    assert.equal(await used(), before);
    // what the tree names stays: the files still come down to another device
    await a1.sync(region);
    await a2.sync(region);
    assert.equal(await readFile(join(a2.dir, "a.txt"), "utf8"), "alpha");
  });

  test("trash expiry: a deleted file leaves the tree past retention, then its blob goes; legal hold keeps it", async () => {
    await a1.run(["retention", region, "--keep-versions", "1"]);
    const entryOf = async (sha: string) =>
      (await tree()).find((e) => e.kind === "file" && e.size === sha.length && e.deleted);
    const aBlob = (await tree()).find((e) => e.kind === "file" && e.size === 5 && !e.deleted)?.hash as string;
    assert.ok(aBlob);
    await rm(join(a1.dir, "a.txt"));
    await a1.sync(region);
    assert.ok(await entryOf("alpha"), "in the trash first (restorable)");
    assert.equal(await hasBlob(aBlob), true);
    // the next publish is past keepVersions 1: the entry leaves the tree (dropped by the delta)
    await writeFile(join(a1.dir, "c.txt"), "gamma");
    await a1.sync(region);
    assert.equal(await entryOf("alpha"), undefined);
    // once a checkpoint no longer needs the versions that named it, the blob goes (within at most 4 versions here)
    for (let i = 0; i < 5 && (await hasBlob(aBlob)); i++) {
      await writeFile(join(a1.dir, `n${i}.txt`), `n${i}`);
      await a1.sync(region);
    }
    assert.equal(await hasBlob(aBlob), false, "swept once no kept version names it");
    const versions = await withSession((s) => s.api.versions(region));
    assert.ok(versions.length <= 5, `versions kept: ${versions.join(",")}`);

    // legal hold: nothing expires, nothing is swept
    await a1.run(["retention", region, "--keep-versions", "1", "--legal-hold", "on"]);
    const bBlob = (await tree()).find((e) => e.kind === "file" && e.size === 4 && !e.deleted)?.hash as string;
    await rm(join(a1.dir, "b.txt"));
    await a1.sync(region);
    for (let i = 0; i < 5; i++) {
      await writeFile(join(a1.dir, `h${i}.txt`), `h${i}`);
      await a1.sync(region);
    }
    assert.ok(await entryOf("beta"), "still in the trash under legal hold");
    assert.equal(await hasBlob(bBlob), true);
    // the other device, away all along, replays the region from a checkpoint and gets the same live tree; and again
    // without its cached tree (from the checkpoint its pin builds on, or the latest one)
    await a2.sync(region);
    assert.deepEqual(await treeOf(a2.dir), await treeOf(a1.dir));
    await writeFile(join(a1.dir, "last.txt"), "last");
    await a1.sync(region);
    await rm(join(a2.state, "regions", `${region}.tree.json`));
    await a2.sync(region);
    assert.deepEqual(await treeOf(a2.dir), await treeOf(a1.dir));
  });
});

describe("sync retention: the server's timed sweep (ATREST_SYNC_SWEEP_SECONDS)", () => {
  let dir: string;
  let data: string;
  let server: RunningServer;
  let a1: Device;
  let region: string;

  before(async () => {
    dir = await tempDir("atrest-sync-timed-sweep-");
    data = join(dir, "data");
    await cli(["init", "--data", data]);
    await cli(["user", "add", "alice", "--password-stdin", "--data", data], "alice-pw\n");
    server = await startServer(data, [], { ATREST_SYNC_BLOB_GRACE_SECONDS: "1", ATREST_SYNC_SWEEP_SECONDS: "1" });
    a1 = new Device(dir, "alice", "laptop");
    await a1.enroll(`https://127.0.0.1:${server.httpPort}`, join(data, "tls", "server.crt"), "alice-pw");
    region = (await a1.run(["region", "create", "timed"])).stdout.trim();
    await writeFile(join(a1.dir, "a.txt"), "alpha");
    await a1.sync(region);
  });
  after(async () => {
    await server?.stop();
    await removeDir(dir);
  });

  test("a blob a dead step left (named by nothing) goes without anyone calling sweep; audited as the server's", async () => {
    const s = await Session.open(a1.state, a1.env.ATREST_SYNC_PASSPHRASE as string);
    try {
      const used = async () =>
        ((await s.api.regions()).find((r) => r.id === region) as unknown as { usedBytes: number }).usedBytes;
      const before = await used();
      const blob = randomBytes(3000);
      const hash = createHash("sha256").update(blob).digest("hex");
      await s.api.putBlob(region, hash, blob);
      assert.equal(await used(), before + 3000);
      let gone = false;
      for (let i = 0; i < 40 && !gone; i++) {
        await sleep(250);
        gone = await s.api.getBlob(region, hash).then(
          (r) => {
            r.destroy();
            return false;
          },
          (err) => err instanceof SyncApiError && err.status === 404,
        );
      }
      assert.ok(gone, "swept by the timer once past its grace");
      assert.equal(await used(), before);
      // what the tree names stays
      const m = (await s.region(region)).manifest;
      const kept = m.entries.find((e) => e.kind === "file")?.hash as string;
      (await s.api.getBlob(region, kept)).destroy();
    } finally {
      await s.close();
    }
    const { stdout } = await cli(["audit", "tail", "-n", "400", "--data", data]);
    const line = stdout.split("\n").find((l) => l.includes("timed sweep") && l.includes(region));
    assert.ok(line, "the timed sweep is audited");
    assert.match(line, /1 blobs removed/);
    assert.match(line, /atrest/);
    assert.doesNotMatch(stdout, /a\.txt/);
  });
});
