// The malicious-server suite (issue 14 "proven by", docs/sync-protocol.md §12): a real server whose stores the test
// tampers with directly (its metadata database and blob files) the way a compromised server would, one attack class
// at a time. Each time the client must detect it, refuse with a clear message and leave the user's files as they
// were; once the tampering is undone it syncs again.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, before, describe, test } from "node:test";
import { canonical } from "../../src/sync/core/canonical.ts";
import { genesisLink, makeDeviceCert } from "../../src/sync/core/chain.ts";
import { generateDeviceKeys, signObject } from "../../src/sync/core/keys.ts";
import type { Manifest } from "../../src/sync/core/manifest.ts";
import { newRegionKey, sealEnvelope } from "../../src/sync/core/region.ts";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { Device, treeOf } from "./helpers.ts";

describe("sync against a malicious server: every attack class is detected and refused, local files kept", () => {
  let dir: string;
  let data: string;
  let server: RunningServer;
  let db: DatabaseSync;
  let region: string;
  let other: string;
  let a1: Device;
  let b1: Device;
  let c1: Device;

  const latest = (r: string) =>
    db.prepare("SELECT version, body FROM sync_manifests WHERE region_id = ? ORDER BY version DESC LIMIT 1").get(r) as {
      version: number;
      body: string;
    };
  /** Replaces a stored manifest, its hash column too (a server covering its tracks). */
  const setBody = (r: string, version: number, body: string) =>
    db
      .prepare("UPDATE sync_manifests SET body = ?, hash = ? WHERE region_id = ? AND version = ?")
      .run(body, createHash("sha256").update(body).digest("hex"), r, version);
  /** Rewrites the latest manifest of `region` with `edit` (its signature is left as it was). */
  const editLatest = (edit: (m: Manifest) => unknown): (() => void) => {
    const { version, body } = latest(region);
    setBody(region, version, canonical(edit(JSON.parse(body) as Manifest)).toString());
    return () => setBody(region, version, body);
  };
  let edits = 0;
  /** Alice publishes a new version (one more file, a delta), which the server then rewrites with `edit`. */
  const editNext = async (edit: (m: Manifest) => unknown): Promise<() => void> => {
    edits++;
    await writeFile(join(a1.dir, `edit ${edits}.txt`), `edit ${edits}`);
    await a1.sync(region);
    return editLatest(edit);
  };

  /** Runs bob's sync against the tampered server: refused with `message`, his files untouched; then undo, sync again. */
  const refusedAndKept = async (message: RegExp, undo: () => void | Promise<void>) => {
    const before = await treeOf(b1.dir);
    try {
      await assert.rejects(b1.sync(region), message);
      assert.deepEqual(await treeOf(b1.dir), before, "the user's files are as they were");
    } finally {
      await undo();
    }
    await b1.sync(region);
  };

  before(async () => {
    dir = await tempDir("atrest-sync-evil-");
    data = join(dir, "data");
    await cli(["init", "--data", data]);
    for (const u of ["alice", "bob", "carol"])
      await cli(["user", "add", u, "--password-stdin", "--data", data], `${u}-pw\n`);
    server = await startServer(data);
    const url = `https://127.0.0.1:${server.httpPort}`;
    const ca = join(data, "tls", "server.crt");
    a1 = new Device(dir, "alice", "laptop");
    b1 = new Device(dir, "bob", "desk");
    c1 = new Device(dir, "carol", "tablet");
    await a1.enroll(url, ca, "alice-pw");
    await b1.enroll(url, ca, "bob-pw");
    await c1.enroll(url, ca, "carol-pw");
    region = (await a1.run(["region", "create", "shared"])).stdout.trim();
    other = (await a1.run(["region", "create", "private"])).stdout.trim();
    await writeFile(join(a1.dir, "a.txt"), "alpha");
    await writeFile(join(a1.dir, "big.bin"), Buffer.alloc(200_000, 7));
    await a1.sync(region);
    await a1.run(["verify", "bob", b1.root]);
    await a1.run(["share", region, "bob"]);
    await b1.run(["verify", "alice", a1.root]);
    await b1.sync(region);
    db = new DatabaseSync(join(data, "meta.db"));
    db.exec("PRAGMA busy_timeout = 5000");
  });
  after(async () => {
    db?.close();
    await server?.stop();
    await removeDir(dir);
  });

  test("tamper a chunk; reorder, drop or duplicate chunks: refused before anything is written", async () => {
    await writeFile(join(a1.dir, "big.bin"), Buffer.alloc(200_000, 8));
    await a1.sync(region);
    const row = db
      .prepare("SELECT blob_id FROM sync_blobs WHERE region_id = ? ORDER BY created_at DESC LIMIT 1")
      .get(region) as {
      blob_id: string;
    };
    const file = join(data, "sync", "blobs", row.blob_id.slice(0, 2), row.blob_id);
    const good = await readFile(file);
    const seg = 65_536 + 28;
    const h = good.length - 3 * seg - ((good.length - 512) % seg || seg);
    const flipped = Buffer.from(good);
    flipped[good.length - 50] ^= 1;
    const swapped = Buffer.concat([
      good.subarray(0, h),
      good.subarray(h + seg, h + 2 * seg),
      good.subarray(h, h + seg),
      good.subarray(h + 2 * seg),
    ]);
    const dropped = Buffer.concat([good.subarray(0, h), good.subarray(h + seg)]);
    const duplicated = Buffer.concat([
      good.subarray(0, h + seg),
      good.subarray(h, h + seg),
      good.subarray(h + 2 * seg),
    ]);
    for (const bad of [flipped, swapped, dropped, duplicated]) {
      await writeFile(file, bad);
      const before = await treeOf(b1.dir);
      await assert.rejects(b1.sync(region), /integrity|authentication|hash|signed size|segment|length/i);
      assert.deepEqual(await treeOf(b1.dir), before);
    }
    await writeFile(file, good);
    await b1.sync(region);
    assert.deepEqual(await readFile(join(b1.dir, "big.bin")), Buffer.alloc(200_000, 8));
  });

  test("roll back the manifest, replay an old signed update: refused", async () => {
    const { version, body } = latest(region);
    db.prepare("UPDATE sync_regions SET version = ? WHERE id = ?").run(version - 1, region);
    await refusedAndKept(
      /rollback/,
      () => void db.prepare("UPDATE sync_regions SET version = ? WHERE id = ?").run(version, region),
    );
    const old = db
      .prepare("SELECT body FROM sync_manifests WHERE region_id = ? AND version = ?")
      .get(region, version - 1) as { body: string };
    setBody(region, version, old.body);
    await refusedAndKept(/rollback/, () => void setBody(region, version, body));
  });

  test("alter metadata (size), move or rename a file, inject a file or a folder entry, drop the signature: refused", async () => {
    await refusedAndKept(
      /forged|signature/,
      await editNext((m) => ({
        ...m,
        entries: m.entries.map((e) => (e.kind === "file" ? { ...e, size: e.size + 1 } : e)),
      })),
    );
    await refusedAndKept(
      /forged|signature/,
      await editNext((m) => {
        const dir = {
          ...m.entries[0],
          id: "d".repeat(32),
          kind: "dir" as const,
          hash: "",
          size: 0,
          blobSize: 0,
          parent: "",
        };
        const moved = m.entries.map((e) => ({ ...e, parent: dir.id }));
        return { ...m, entries: [...moved, dir].sort((a, b) => (a.id < b.id ? -1 : 1)) };
      }),
    );
    await refusedAndKept(
      /forged|signature/,
      await editNext((m) => ({ ...m, entries: [...m.entries, { ...m.entries[0], id: "f".repeat(32) }] })),
    );
    await refusedAndKept(/unexpected fields/, await editNext(({ sig: _s, ...rest }) => rest));
  });

  test("downgrade the protocol version: refused (no negotiation, the version is signed)", async () => {
    await refusedAndKept(/unsupported protocol version/, await editNext((m) => ({ ...m, v: 0 })));
    // the version 1 form (whole trees, no root) after version 2: refused before its signature is even looked at
    await refusedAndKept(
      /downgrade refused/,
      await editNext(({ form: _f, root: _r, ckpt: _c, drop: _d, ...m }) => ({
        ...m,
        v: 1,
        entries: m.entries.map(({ dv: _dv, dt: _dt, ...e }) => e),
      })),
    );
  });

  test("deltas: drop one, replay one in another place, swap a delta for a full tree without an entry: refused", async () => {
    // alice publishes two deltas; the server hides the first (serves the second in its place)
    await writeFile(join(a1.dir, "d1.txt"), "first delta");
    await a1.sync(region);
    await writeFile(join(a1.dir, "d2.txt"), "second delta");
    await a1.sync(region);
    const top = latest(region);
    const first = db
      .prepare("SELECT body FROM sync_manifests WHERE region_id = ? AND version = ?")
      .get(region, top.version - 1) as { body: string };
    setBody(region, top.version - 1, top.body);
    await refusedAndKept(/does not follow/, () => void setBody(region, top.version - 1, first.body));
    // a delta of the region replayed as the next version (signed, but not chained to what bob verified)
    await writeFile(join(a1.dir, "d3.txt"), "third delta");
    await a1.sync(region);
    const third = latest(region);
    setBody(region, third.version, first.body);
    await refusedAndKept(/older|rollback|does not follow|fork/, () => void setBody(region, third.version, third.body));
    // bob's tree must be what the deltas say: every file alice published is there
    assert.equal(await readFile(join(b1.dir, "d3.txt"), "utf8"), "third delta");
    assert.equal(await readFile(join(b1.dir, "d1.txt"), "utf8"), "first delta");
  });

  test("serve another region's manifest: refused", async () => {
    const mine = latest(region);
    setBody(region, mine.version, latest(other).body);
    await refusedAndKept(/another region/, () => void setBody(region, mine.version, mine.body));
  });

  test("swap or replace key material: another device's envelope, a key the server made: refused", async () => {
    const bobDevice = b1.id;
    const rows = db.prepare("SELECT recipient, epoch, body FROM sync_envelopes WHERE region_id = ?").all(region) as {
      recipient: string;
      epoch: number;
      body: string;
    }[];
    const mine = rows.find((r) => r.recipient === bobDevice) as { epoch: number; body: string };
    const alices = rows.find((r) => r.recipient === a1.id) as { body: string };
    const put = (body: string) =>
      db
        .prepare("UPDATE sync_envelopes SET body = ? WHERE region_id = ? AND recipient = ? AND epoch = ?")
        .run(body, region, bobDevice, mine.epoch);
    put(alices.body);
    await refusedAndKept(/another device/, () => void put(mine.body));
    // a key of the server's own, wrapped to bob by a device the server made up under alice's name
    const evil = generateDeviceKeys();
    const evilCert = makeDeviceCert("alice", "server", evil.pub, evil.secrets.sign);
    const bobCert = JSON.parse(
      (db.prepare("SELECT cert FROM sync_devices WHERE id = ?").get(bobDevice) as { cert: string }).cert,
    );
    const injected = sealEnvelope(newRegionKey(), region, mine.epoch, bobCert, {
      id: evilCert.id,
      signKey: evil.secrets.sign,
    });
    put(canonical(injected).toString());
    await refusedAndKept(/no member's chain/, () => void put(mine.body));
  });

  test("substitute a public key during sharing: the share is refused", async () => {
    await a1.run(["verify", "carol", c1.root]);
    // user names are sealed (schema 18): carol's genesis link is the one whose device certificate names her
    const real = (
      db.prepare("SELECT user_index, link FROM sync_chain WHERE seq = 0").all() as {
        user_index: Uint8Array;
        link: string;
      }[]
    ).find((r) => r.link.includes('"carol"')) as { user_index: Uint8Array; link: string };
    assert.ok(real);
    const evil = generateDeviceKeys();
    const fake = genesisLink(makeDeviceCert("carol", "tablet", evil.pub, evil.secrets.sign), evil.secrets.sign);
    db.prepare("UPDATE sync_chain SET link = ? WHERE user_index = ? AND seq = 0").run(
      canonical(fake).toString(),
      real.user_index,
    );
    try {
      await assert.rejects(a1.run(["share", region, "carol"]), /another root key|key substitution/);
    } finally {
      db.prepare("UPDATE sync_chain SET link = ? WHERE user_index = ? AND seq = 0").run(real.link, real.user_index);
    }
    // and a chain link of another protocol version
    const link0 = JSON.parse(real.link);
    db.prepare("UPDATE sync_chain SET link = ? WHERE user_index = ? AND seq = 0").run(
      canonical(signObject("chain", { ...link0, v: 2 }, evil.secrets.sign)).toString(),
      real.user_index,
    );
    try {
      await assert.rejects(a1.run(["share", region, "carol"]), /unsupported protocol version/);
    } finally {
      db.prepare("UPDATE sync_chain SET link = ? WHERE user_index = ? AND seq = 0").run(real.link, real.user_index);
    }
  });

  test("inject a folder: a region pushed to bob by someone he never verified is not synced", async () => {
    const carolRegion = (await c1.run(["region", "create", "bait"])).stdout.trim();
    await c1.run(["share", carolRegion, "bob", "--unverified"]);
    const bait = join(dir, "bait");
    await assert.rejects(b1.run(["run", bait, "--region", carolRegion, "--once"]), /not verified/);
    assert.deepEqual(await treeOf(bait), {});
  });

  test("fork: the server shows alice one history and bob another, then joins them: refused as a fork", async () => {
    const forked = (await a1.run(["region", "create", "forked"])).stdout.trim();
    await a1.run(["share", forked, "bob"]);
    const ad = join(dir, "fork-alice");
    const bd = join(dir, "fork-bob");
    await mkdir(ad);
    await mkdir(bd);
    const syncA = () => a1.run(["run", ad, "--region", forked, "--once"]);
    const syncB = () => b1.run(["run", bd, "--region", forked, "--once"]);
    await writeFile(join(ad, "common.txt"), "both see this");
    await syncA();
    await syncB();
    // alice publishes; the server hides that from bob (drops it, winds the region back) and lets him go on
    await writeFile(join(ad, "alice.txt"), "only in alice's history");
    await syncA();
    const v = latest(forked).version;
    db.prepare("DELETE FROM sync_manifests WHERE region_id = ? AND version = ?").run(forked, v);
    db.prepare("UPDATE sync_regions SET version = ? WHERE id = ?").run(v - 1, forked);
    for (const n of [1, 2, 3]) {
      await writeFile(join(bd, `bob ${n}.txt`), `bob ${n}`);
      await syncB();
    }
    // then it shows alice bob's history: two versions past hers, each signed by a member, but not following hers
    assert.equal(latest(forked).version, v + 2);
    const before = await treeOf(ad);
    await assert.rejects(syncA(), /fork/);
    assert.deepEqual(await treeOf(ad), before, "alice's files, her upload the server dropped too, are as they were");
    assert.equal(await readFile(join(ad, "alice.txt"), "utf8"), "only in alice's history");
  });
});
