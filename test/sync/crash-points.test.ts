// A sync step that dies at the two points where the server and the device's state disagree (docs/sync-protocol.md
// §11): after the server took the new manifest but before the device saved its base, and after the device wrote its
// publish intent but before the server took the manifest. The step runs in this process and the crash is the state
// write (or the publish) throwing there; the next step is the real CLI. kill.test.ts hits these points by chance,
// this test every time. Found by kill.test.ts: the device's own upload met its next local edit as a conflict copy,
// and a file deleted here came back.
import assert from "node:assert/strict";
import { readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { syncStep } from "../../src/sync/client/engine.ts";
import { Session } from "../../src/sync/client/session.ts";
import type { RegionState } from "../../src/sync/client/state.ts";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { Device, treeOf } from "./helpers.ts";

class Crash extends Error {}

/** One step of `d` in this process that dies where `at` says. */
async function crashedStep(d: Device, region: string, at: "after-publish" | "before-publish"): Promise<void> {
  const s = await Session.open(d.state, d.env.ATREST_SYNC_PASSPHRASE as string);
  const write = s.state.writeRegion.bind(s.state);
  let intent = false;
  s.state.writeRegion = async (r: RegionState) => {
    if (r.pending) intent = true;
    else if (intent) throw new Crash("killed before the base was saved");
    return write(r);
  };
  if (at === "before-publish") {
    s.api.putManifest = async () => {
      throw new Crash("killed before the manifest reached the server");
    };
  }
  try {
    await assert.rejects(syncStep(s, region, { dir: d.dir }), Crash);
    assert.ok(intent, "the step wrote its publish intent first");
  } finally {
    await s.close();
  }
}

const noConflicts = (tree: Record<string, string>) => Object.keys(tree).filter((p) => p.includes("(conflict "));

describe("sync step killed between server and state: the next step converges without conflicts", () => {
  let dir: string;
  let server: RunningServer;
  let a1: Device;
  let a2: Device;
  let region: string;

  before(async () => {
    dir = await tempDir("atrest-sync-crash-");
    const data = join(dir, "data");
    await cli(["init", "--data", data]);
    await cli(["user", "add", "alice", "--password-stdin", "--data", data], "alice-pw\n");
    server = await startServer(data);
    const url = `https://127.0.0.1:${server.httpPort}`;
    const ca = join(data, "tls", "server.crt");
    a1 = new Device(dir, "alice", "laptop");
    a2 = new Device(dir, "alice", "phone");
    await a1.enroll(url, ca, "alice-pw");
    await a2.enroll(url, ca, "alice-pw", ["--expect-root", a1.root]);
    await a1.run(["device", "approve", a2.id, "--fingerprint", a2.fingerprint]);
    region = (await a1.run(["region", "create", "k"])).stdout.trim();
  });
  after(async () => {
    await server?.stop();
    await removeDir(dir);
  });

  test("after the server took the manifest: own uploads are base, later edits and deletes win", async () => {
    await writeFile(join(a1.dir, "big.bin"), "v1");
    await writeFile(join(a1.dir, "doomed.txt"), "doomed v1");
    await a1.sync(region);
    // the crashed step uploads an edit of both and a new file
    await writeFile(join(a1.dir, "big.bin"), "v2");
    await writeFile(join(a1.dir, "doomed.txt"), "doomed v2");
    await writeFile(join(a1.dir, "new.txt"), "new v1");
    await crashedStep(a1, region, "after-publish");
    const left = JSON.parse(await readFile(join(a1.state, "regions", `${region}.json`), "utf8")) as RegionState;
    assert.deepEqual(Object.keys(left.pending ?? {}).length, 3, "the intent names the three uploads");
    // then, before the next step: edit again, delete the other, edit the new one
    await writeFile(join(a1.dir, "big.bin"), "v3");
    await rm(join(a1.dir, "doomed.txt"));
    await writeFile(join(a1.dir, "new.txt"), "new v2");
    await a1.sync(region);
    const again = await a1.sync(region);
    assert.match(again.stdout, /up 0 .*down 0/, again.stdout);
    const tree = await treeOf(a1.dir);
    assert.deepEqual(noConflicts(tree), [], "no conflict copy of the device's own upload");
    assert.deepEqual((await readdir(a1.dir)).sort(), ["big.bin", "new.txt"], "the deleted file stays deleted");
    assert.equal(await readFile(join(a1.dir, "big.bin"), "utf8"), "v3");
    assert.equal(await readFile(join(a1.dir, "new.txt"), "utf8"), "new v2");
    const st = JSON.parse(await readFile(join(a1.state, "regions", `${region}.json`), "utf8")) as RegionState;
    assert.equal(st.pending, undefined, "a completed step leaves no intent");
    await a2.sync(region);
    assert.deepEqual(await treeOf(a2.dir), tree);
  });

  test("before the server took it: the intent is ignored and everything goes up once", async () => {
    await writeFile(join(a1.dir, "big.bin"), "v4");
    await writeFile(join(a1.dir, "other.txt"), "other v1");
    await crashedStep(a1, region, "before-publish");
    await writeFile(join(a1.dir, "other.txt"), "other v2");
    await a1.sync(region);
    const tree = await treeOf(a1.dir);
    assert.deepEqual(noConflicts(tree), []);
    assert.equal(await readFile(join(a1.dir, "big.bin"), "utf8"), "v4");
    await a2.sync(region);
    assert.deepEqual(await treeOf(a2.dir), tree);
    assert.equal(await readFile(join(a2.dir, "other.txt"), "utf8"), "other v2");
  });

  test("killed after publishing, then again before publishing: the first step's uploads stay base", async () => {
    await writeFile(join(a1.dir, "twice.bin"), "t1");
    await writeFile(join(a1.dir, "twice-doomed.txt"), "d1");
    await a1.sync(region);
    await writeFile(join(a1.dir, "twice.bin"), "t2");
    await writeFile(join(a1.dir, "twice-doomed.txt"), "d2");
    await crashedStep(a1, region, "after-publish");
    // the next step adopts those uploads, writes its own intent (t3) and dies before the server takes it
    await writeFile(join(a1.dir, "twice.bin"), "t3");
    await crashedStep(a1, region, "before-publish");
    await writeFile(join(a1.dir, "twice.bin"), "t4");
    await rm(join(a1.dir, "twice-doomed.txt"));
    await a1.sync(region);
    const tree = await treeOf(a1.dir);
    assert.deepEqual(noConflicts(tree), [], JSON.stringify(tree));
    assert.equal(await readFile(join(a1.dir, "twice.bin"), "utf8"), "t4");
    assert.ok(!("twice-doomed.txt" in tree), "the file deleted after its crashed edit stays deleted");
    await a2.sync(region);
    assert.deepEqual(await treeOf(a2.dir), tree);
  });

  test("another device's edit after the crashed upload is still a conflict: both versions kept", async () => {
    await writeFile(join(a1.dir, "shared.txt"), "laptop v1");
    await crashedStep(a1, region, "after-publish");
    await a2.sync(region);
    assert.equal(await readFile(join(a2.dir, "shared.txt"), "utf8"), "laptop v1");
    await writeFile(join(a2.dir, "shared.txt"), "phone v2");
    await a2.sync(region);
    await writeFile(join(a1.dir, "shared.txt"), "laptop v2");
    await a1.sync(region);
    const tree = await treeOf(a1.dir);
    const copies = noConflicts(tree).filter((p) => p.startsWith("shared ("));
    assert.equal(copies.length, 1, JSON.stringify(tree));
    const contents = [
      await readFile(join(a1.dir, "shared.txt"), "utf8"),
      await readFile(join(a1.dir, copies[0] as string), "utf8"),
    ].sort();
    assert.deepEqual(contents, ["laptop v2", "phone v2"]);
  });
});
