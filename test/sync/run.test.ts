// `atrest sync run <dir> --region R` as the long-running process a user leaves on (watch + periodic rescan), on two
// devices at once: edits, renames, moves and deletes on either side reach the other, and SIGTERM stops a run with a
// consistent state whether it is idle or in the middle of an upload. The step's own stop points (before publishing:
// nothing sent; after: the base saved, the rest left to the next step) are hit deterministically in-process below.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { rmSync, writeFileSync } from "node:fs";
import { access, mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { syncStep } from "../../src/sync/client/engine.ts";
import { Session } from "../../src/sync/client/session.ts";
import type { RegionState } from "../../src/sync/client/state.ts";
import { CLI, cli, ROOT, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { Device, treeOf } from "./helpers.ts";

/** A `sync run` child process with its output kept. */
class Run {
  readonly proc: ChildProcess;
  stdout = "";
  stderr = "";
  readonly exited: Promise<number | null>;

  constructor(d: Device, region: string) {
    this.proc = spawn(
      process.execPath,
      [CLI, "sync", "run", d.dir, "--region", region, "--interval", "1", "--state", d.state],
      { cwd: ROOT, env: d.env, stdio: ["ignore", "pipe", "pipe"] },
    );
    this.proc.stdout?.on("data", (c: Buffer) => {
      this.stdout += c.toString();
    });
    this.proc.stderr?.on("data", (c: Buffer) => {
      this.stderr += c.toString();
    });
    this.exited = new Promise((r) => this.proc.once("exit", (code) => r(code)));
  }

  /** SIGTERM, and the exit code. */
  async stop(): Promise<number | null> {
    this.proc.kill("SIGTERM");
    return this.exited;
  }
}

/** Waits (polling; generous for a loaded machine) until `ok` holds; the failure says what was last seen. */
async function until(what: string, ok: () => Promise<boolean>, seen: () => Promise<unknown>, ms = 240_000) {
  const end = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > end) assert.fail(`${what}: not within ${ms / 1000} s; last seen ${JSON.stringify(await seen())}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** treeOf while a run may be changing the tree: a file gone between listing and reading means "not yet". */
const liveTree = (dir: string) => treeOf(dir).catch(() => undefined);
const files = (t: Record<string, string>) => Object.fromEntries(Object.entries(t).filter(([, h]) => h !== "dir"));
const same = async (a: Device, b: Device) =>
  JSON.stringify(await treeOf(a.dir)) === JSON.stringify(await treeOf(b.dir));
const regionState = async (d: Device, region: string) =>
  JSON.parse(await readFile(join(d.state, "regions", `${region}.json`), "utf8")) as RegionState;
const exists = (p: string) =>
  access(p).then(
    () => true,
    () => false,
  );

describe("sync run: continuous two-way sync on two devices, stopped cleanly", () => {
  let dir: string;
  let server: RunningServer;
  let a1: Device;
  let a2: Device;
  let region: string;

  before(async () => {
    dir = await tempDir("atrest-sync-run-");
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
    region = (await a1.run(["region", "create", "r"])).stdout.trim();
  });
  after(async () => {
    await server?.stop();
    await removeDir(dir);
  });

  test("edits, renames, moves and deletes on either device reach the other; SIGTERM when idle", async () => {
    await writeFile(join(a1.dir, "a.txt"), "a v1");
    await writeFile(join(a1.dir, "b.txt"), "b v1");
    await mkdir(join(a1.dir, "docs"));
    await writeFile(join(a1.dir, "docs", "c.txt"), "c v1");
    const r1 = new Run(a1, region);
    const r2 = new Run(a2, region);
    try {
      const converged = async (what: string, expect: Record<string, string>) => {
        await until(
          what,
          async () =>
            JSON.stringify(await liveTree(a1.dir)) === JSON.stringify(expect) &&
            JSON.stringify(await liveTree(a2.dir)) === JSON.stringify(expect),
          async () => ({
            laptop: await liveTree(a1.dir),
            phone: await liveTree(a2.dir),
            laptopOut: r1.stderr.slice(-2000),
            phoneOut: r2.stderr.slice(-2000),
          }),
        );
      };
      await converged("first sync", await treeOf(a1.dir));

      // on the laptop: edit, rename, move into a folder, delete, new folder with a file
      await writeFile(join(a1.dir, "a.txt"), "a v2");
      await rename(join(a1.dir, "b.txt"), join(a1.dir, "b renamed.txt"));
      await rename(join(a1.dir, "docs", "c.txt"), join(a1.dir, "c moved.txt"));
      await mkdir(join(a1.dir, "new folder"));
      await writeFile(join(a1.dir, "new folder", "d.txt"), "d v1");
      const expect1 = await treeOf(a1.dir);
      await converged("the laptop's changes on the phone", expect1);

      // on the phone: edit, delete, delete a folder
      await writeFile(join(a2.dir, "b renamed.txt"), "b v2 from the phone");
      await rm(join(a2.dir, "c moved.txt"));
      await rm(join(a2.dir, "docs"), { recursive: true });
      const expect2 = await treeOf(a2.dir);
      assert.deepEqual(Object.keys(expect2).sort(), ["a.txt", "b renamed.txt", "new folder", "new folder/d.txt"]);
      await converged("the phone's changes on the laptop", expect2);
      assert.equal(await readFile(join(a1.dir, "b renamed.txt"), "utf8"), "b v2 from the phone");
      assert.deepEqual(
        Object.keys(expect2).filter((p) => p.includes("(conflict ")),
        [],
        "one writer at a time makes no conflict copy",
      );
      assert.match(r1.stdout, /renamed \d/, "the renames went as renames");
    } finally {
      const [c1, c2] = await Promise.all([r1.stop(), r2.stop()]);
      assert.equal(c1, 0, r1.stderr);
      assert.equal(c2, 0, r2.stderr);
    }
    for (const [d, r] of [
      [a1, r1],
      [a2, r2],
    ] as const) {
      assert.match(r.stderr, /SIGTERM: stopping/);
      assert.match(r.stderr, /atrest sync: stopped\n/);
      assert.equal(await exists(join(d.state, "run.lock")), false, "the run released its lock");
      assert.equal((await regionState(d, region)).pending, undefined, "no publish intent left");
    }
    // and nothing is left to do
    for (const d of [a1, a2]) assert.match((await d.sync(region)).stdout, /up 0 .*down 0/);
  });

  test("SIGTERM in the middle of a large upload: it stops, the state is consistent, the next run finishes", async () => {
    const big = randomBytes(48 << 20);
    await writeFile(join(a1.dir, "big.bin"), big);
    const r1 = new Run(a1, region);
    await until(
      "the upload started",
      async () => r1.stderr.includes("↑ big.bin") || r1.stdout.includes("synced"),
      async () => r1.stderr,
    );
    const code = await r1.stop();
    assert.equal(code, 0, r1.stderr);
    assert.match(r1.stderr, /SIGTERM: stopping/);
    assert.equal(await exists(join(a1.state, "run.lock")), false);
    const st = await regionState(a1, region);
    assert.equal(st.pending, undefined, "no publish intent left");
    // the step either stopped before publishing (nothing sent, big.bin not in the base) or had published (in it)
    const inBase = Object.values(st.base).some((b) => b.path === "big.bin");
    if (r1.stderr.includes("stopped before publishing")) assert.equal(inBase, false);
    else assert.equal(inBase, true, r1.stderr);
    assert.deepEqual(await readdir(join(a1.state, "tmp")), [], "no upload left half-encrypted");
    await a1.sync(region);
    await a2.sync(region);
    assert.ok(await same(a1, a2));
    assert.ok(big.equals(await readFile(join(a2.dir, "big.bin"))), "the phone has the whole file");
    assert.ok(big.equals(await readFile(join(a1.dir, "big.bin"))), "the laptop's file untouched");
  });

  test("the server goes down and comes back: both runs retry and converge", async () => {
    const data = join(dir, "data");
    const r1 = new Run(a1, region);
    const r2 = new Run(a2, region);
    try {
      await until(
        "both runs did their first step",
        async () => r1.stdout.includes("synced") && r2.stdout.includes("synced"),
        async () => ({ laptop: r1.stderr, phone: r2.stderr }),
      );
      const port = server.httpPort;
      await server.stop();
      await writeFile(join(a1.dir, "while down.txt"), "written while the server was down");
      await until(
        "the laptop's step failed and is retried",
        async () => /step failed \(.*\): again in/.test(r1.stderr),
        async () => r1.stderr,
      );
      server = await startServer(data, ["--http-port", String(port)]);
      await until(
        "the file on the phone",
        async () =>
          (await readFile(join(a2.dir, "while down.txt"), "utf8").catch(() => "")) ===
          "written while the server was down",
        async () => ({ laptop: r1.stderr.slice(-1500), phone: r2.stderr.slice(-1500) }),
      );
    } finally {
      const [c1, c2] = await Promise.all([r1.stop(), r2.stop()]);
      assert.equal(c1, 0, r1.stderr);
      assert.equal(c2, 0, r2.stderr);
    }
    assert.ok(await same(a1, a2));
  });
});

describe("sync step stopped by its signal: before publishing nothing is sent, after it the rest waits", () => {
  let dir: string;
  let server: RunningServer;
  let a1: Device;
  let a2: Device;
  let region: string;

  before(async () => {
    dir = await tempDir("atrest-sync-stop-");
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
    region = (await a1.run(["region", "create", "s"])).stdout.trim();
  });
  after(async () => {
    await server?.stop();
    await removeDir(dir);
  });

  /** One step of `d` in this process, aborted when `when` says so on a progress line (`on`: the user meanwhile). */
  async function stoppedStep(d: Device, when: (line: string) => boolean, on?: (line: string) => void) {
    const s = await Session.open(d.state, d.env.ATREST_SYNC_PASSPHRASE as string);
    const stop = new AbortController();
    try {
      return await syncStep(s, region, {
        dir: d.dir,
        signal: stop.signal,
        progress: (line) => {
          on?.(line);
          if (when(line)) stop.abort();
        },
      });
    } finally {
      await s.close();
    }
  }

  test("stopped while uploading: nothing published, nothing changed here, the next step sends it", async () => {
    await writeFile(join(a1.dir, "one.txt"), "one v1");
    const v0 = (await a1.sync(region)).stdout;
    await writeFile(join(a1.dir, "one.txt"), "one v2");
    await writeFile(join(a1.dir, "two.txt"), "two v1");
    const before = await treeOf(a1.dir);
    const baseBefore = (await regionState(a1, region)).base;
    await assert.rejects(
      stoppedStep(a1, (l) => l.startsWith("↑ ")),
      (err: Error) => err.name === "AbortError",
    );
    assert.deepEqual(await treeOf(a1.dir), before, "the local tree is as it was");
    const st = await regionState(a1, region);
    assert.deepEqual(st.base, baseBefore, "the base is as it was");
    assert.equal(st.pending, undefined, "no publish intent: the step stopped before it");
    // the server's version did not move: the phone's step sees the old content
    const p = await a2.sync(region);
    assert.equal(/version (\d+)/.exec(p.stdout)?.[1], /version (\d+)/.exec(v0)?.[1], p.stdout);
    assert.equal(await readFile(join(a2.dir, "one.txt"), "utf8"), "one v1");
    const next = await a1.sync(region);
    assert.match(next.stdout, /up 2 /, next.stdout);
    await a2.sync(region);
    assert.deepEqual(await treeOf(a2.dir), before);
  });

  test("stopped after publishing, between deletes and downloads: the base keeps what waits, nothing comes back", async () => {
    for (const n of ["x", "y", "z"]) await writeFile(join(a2.dir, `${n}.txt`), `${n} v1`);
    await a2.sync(region);
    await a1.sync(region);
    // the phone deletes two files and writes two; the laptop's step stops after its first local delete
    await rm(join(a2.dir, "x.txt"));
    await rm(join(a2.dir, "y.txt"));
    await writeFile(join(a2.dir, "n1.txt"), "n1");
    await writeFile(join(a2.dir, "n2.txt"), "n2");
    await a2.sync(region);
    // and the laptop has an edit of its own to publish
    await writeFile(join(a1.dir, "z.txt"), "z v2 from the laptop");
    const r = await stoppedStep(a1, (l) => l.startsWith("✗ "));
    assert.equal(r.deletedLocal, 1, "one delete applied before the stop");
    assert.ok(r.skipped >= 3, `the other delete and the two downloads wait (${r.skipped} skipped)`);
    assert.equal(r.uploaded, 1, "its own edit was published");
    const st = await regionState(a1, region);
    assert.equal(st.pending, undefined);
    const left = (await readdir(a1.dir)).filter((n) => n === "x.txt" || n === "y.txt");
    assert.equal(left.length, 1, "one of the deleted files is still here");
    assert.ok(
      Object.values(st.base).some((b) => b.path === left[0]),
      "the file whose delete waits is still in the base (else the next step would upload it as new)",
    );
    await a1.sync(region);
    const again = await a1.sync(region);
    assert.match(again.stdout, /up 0 .*down 0/, again.stdout);
    await a2.sync(region);
    const tree = await treeOf(a1.dir);
    assert.deepEqual(Object.keys(files(tree)).sort(), ["n1.txt", "n2.txt", "one.txt", "two.txt", "z.txt"]);
    assert.equal(await readFile(join(a2.dir, "z.txt"), "utf8"), "z v2 from the laptop");
    assert.deepEqual(await treeOf(a2.dir), tree);
  });

  test("a file deleted or edited right after its download, before the step ends: the next step sends that", async () => {
    await writeFile(join(a2.dir, "gone.txt"), "gone v1");
    await writeFile(join(a2.dir, "edited.txt"), "edited v1");
    await a2.sync(region);
    // the user deletes one and edits the other as soon as each is in place, before the step saves its base
    const r = await stoppedStep(
      a1,
      () => false,
      (line) => {
        if (line.startsWith("↓ gone.txt")) rmSync(join(a1.dir, "gone.txt"));
        if (line.startsWith("↓ edited.txt")) writeFileSync(join(a1.dir, "edited.txt"), "edited v2 on the laptop");
      },
    );
    assert.equal(r.downloaded, 2);
    const next = await a1.sync(region);
    assert.match(next.stdout, /up 1 .*deleted 0 here, 1 there/, next.stdout);
    assert.match((await a1.sync(region)).stdout, /up 0 .*down 0/);
    await a2.sync(region);
    for (const d of [a1, a2]) {
      const t = await treeOf(d.dir);
      assert.equal(t["gone.txt"], undefined, `${d.name}: the deleted file does not come back`);
      assert.deepEqual(
        Object.keys(t).filter((p) => p.includes("(conflict ")),
        [],
        `${d.name}: no conflict copy of the laptop's own download`,
      );
      assert.equal(await readFile(join(d.dir, "edited.txt"), "utf8"), "edited v2 on the laptop");
    }
  });
});
