import "./threadpool.ts";
import assert from "node:assert/strict";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { HEADER_PROBE_BYTES, parseHeader } from "../../src/format/header.ts";
import { rewrap } from "../../src/keys/rewrap.ts";
import { shredReport } from "../../src/keys/shred-report.ts";
import type { VfsSession } from "../../src/vfs/types.ts";
import { cli, cliProcess } from "../helpers/atrest.ts";
import { content, type Fixture, fixture, get, info, makeFiles, put } from "./helpers.ts";

// More than one key-manager batch (1000) here, and more than the crash test's three batches of 250; the 10k-file
// load is bench/keys.ts (`npm run bench keys`).
const N = Number(process.env.KEYS_TEST_FILES ?? 1_500);

describe("keys rewrap (embedded key manager)", () => {
  let f: Fixture;
  let s: VfsSession;
  const deps = () => ({
    store: f.app.store,
    blobs: f.app.vfs.blobs,
    keys: f.app.keys,
    dir: f.app.paths.keys,
  });

  before(async () => {
    f = await fixture();
    await f.app.addUser({ name: "alice", password: "correct horse" });
    s = await f.app.openSession("alice", info);
  });
  after(async () => {
    await s.close();
    await f.close();
  });

  it(`rewraps ${N} files to the current version without touching data, then they read`, async () => {
    await makeFiles(s, "/bulk", N, 64);
    const before = await f.app.store.keyRefCounts();
    assert.deepEqual(before, [{ keyRef: "kek:default:v1", files: N }]);
    const blob0 = (await readdir(join(f.dir, "blobs"))).length;
    assert.ok(blob0 > 0);

    await f.app.keys.rotateKey("default");
    await put(s, "/after-rotation", Buffer.from("new on v2"));
    // Retire v1 first: files (and service keys) still on v1 stop opening until they are rewrapped.
    await f.app.embeddedKms.setMinDecryptionVersion("default", 2);
    await assert.rejects(get(s, "/bulk/f0"), (e: Error & { code?: string }) => {
      assert.equal(e.code, "KEY_UNAVAILABLE");
      assert.match(e.message, /kek:default:v1 is below the minimum decryption version v2/);
      return true;
    });
    assert.deepEqual(await get(s, "/after-rotation"), Buffer.from("new on v2"));
    const progress: number[] = [];
    const report = await rewrap(deps(), { onProgress: (p) => progress.push(p.done) });
    const k = report.keys.find((r) => r.key === "default");
    assert.ok(k);
    assert.equal(k.done, N);
    assert.equal(k.failed, 0);
    assert.equal(k.version, 2);
    assert.ok(progress.length >= N / 1000, "progress reported per batch");
    const rate = N / report.seconds;
    console.log(`rewrap: ${N} files in ${report.seconds.toFixed(2)} s = ${Math.round(rate)} files/s`);
    assert.deepEqual(await f.app.store.keyRefCounts(), [{ keyRef: "kek:default:v2", files: N + 1 }]);
    assert.deepEqual(report.serviceKeys.sort(), ["audit.checkpoint.wrap", "audit.key", "metadata.key"]);

    // The headers really name v2 now: everything reads again, and the server restarts on its rewrapped service keys.
    await s.close();
    await f.reopen();
    s = await f.app.openSession("alice", info);
    for (const i of [0, 1, 77, 4242, N - 1].filter((i) => i < N)) {
      assert.deepEqual(await get(s, `/bulk/f${i}`), content(i));
    }
    let read = 0;
    for (let i = 0; i < N; i += 7) {
      assert.deepEqual(await get(s, `/bulk/f${i}`), content(i));
      read++;
    }
    assert.ok(read > N / 10);
    assert.deepEqual(await get(s, "/after-rotation"), Buffer.from("new on v2"));
    // A second run has nothing left to do.
    const again = await rewrap(deps(), {});
    assert.equal(again.keys.find((r) => r.key === "default")?.done, 0);
    // Nothing journaled is left behind.
    assert.deepEqual(await readdir(join(f.app.paths.keys, "journal")), []);
  });

  it("shred-report lists exactly the files under a version, with decrypted paths and bytes", async () => {
    await f.app.keys.createKey("hr");
    await f.app.putFolder("/alice/hr", { key: "hr" });
    await put(s, "/hr/payroll.csv", Buffer.from("name,salary\n"));
    await put(s, "/hr/reviews.txt", Buffer.from("confidential"));
    const r = await shredReport(f.app.store, f.app.vfs.tree, "hr", 1);
    assert.deepEqual(
      r.files.map((x) => [x.path, x.size, x.owner]),
      [
        ["/alice/hr/payroll.csv", 12, "alice"],
        ["/alice/hr/reviews.txt", 12, "alice"],
      ],
    );
    assert.equal(r.count, 2);
    assert.equal(r.bytes, 24);
    assert.equal((await shredReport(f.app.store, f.app.vfs.tree, "hr", 2)).count, 0);
    assert.equal((await shredReport(f.app.store, f.app.vfs.tree, "default", 1)).count, 0);
  });

  it("survives a crash mid-run (kill -9) and a torn header: the rerun repairs from the journal and finishes", async () => {
    await f.app.keys.rotateKey("default"); // v3: all N+1 files are stale again
    const data = f.dir;
    await f.app.close();
    const env = {
      ...process.env,
      ATREST_TEST_MODE: "1",
      ATREST_TEST_CRASH_REWRAP_AFTER_BATCHES: "3",
    };
    // a process: the test hook kills it with SIGKILL after the third batch
    const crashed = await cliProcess(
      ["keys", "rewrap", "--key", "default", "--batch", "250", "--data", data],
      undefined,
      env,
    ).then(
      () => undefined,
      (e: { signal?: string; code?: unknown }) => e,
    );
    assert.ok(crashed, "the run was killed");
    assert.equal(crashed.signal, "SIGKILL", JSON.stringify(crashed));
    const journal = join(data, "keys", "journal");
    const files = await readdir(journal);
    assert.ok(files.length >= 1, "a journal is left behind");
    // Tear one journaled header: garbage over its wrapped DEK, as a power cut mid-write could leave it.
    const { readFile, open } = await import("node:fs/promises");
    const last = files.sort().at(-1) as string;
    const entry = JSON.parse((await readFile(join(journal, last), "utf8")).split("\n")[1] as string);
    const blobPath = join(data, "blobs", entry.b.slice(0, 2), entry.b);
    const fh = await open(blobPath, "r+");
    await fh.write(Buffer.alloc(40, 0xa5), 0, 40, 90);
    await fh.close();

    const { stdout } = await cli(["keys", "rewrap", "--key", "default", "--data", data, "--json"]);
    const report = JSON.parse(stdout);
    assert.ok(report.repaired >= 1, "the torn header was rewritten from the journal");
    f.app = await (await import("../../src/app.ts")).App.open(data, { dekCacheSeconds: 0 });
    s = await f.app.openSession("alice", info);
    const counts = await f.app.store.keyRefCounts();
    assert.deepEqual(
      counts.filter((c) => c.keyRef?.startsWith("kek:default")),
      [{ keyRef: "kek:default:v3", files: N + 1 }],
    );
    // Every header names v3 and every file reads.
    const blob = await f.app.vfs.blobs.open(entry.b);
    const head = parseHeader(await blob.read(0, HEADER_PROBE_BYTES));
    await blob.close();
    assert.equal(f.app.keys.keyRefOf(head.wrappedDek), "kek:default:v3");
    for (let i = 0; i < N; i += 3) assert.deepEqual(await get(s, `/bulk/f${i}`), content(i));
  });
});
