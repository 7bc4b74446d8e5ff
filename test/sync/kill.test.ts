// Kill -9 a sync client mid-step, again and again (issue 14 "proven by": 20 times, ATREST_SYNC_KILLS to change):
// between kills the test changes the tree (new, edited, renamed, deleted files and a 2 MiB file rewritten each round so
// a step takes a while); afterwards one clean step converges, a second device gets the same tree, and every file the
// test wrote is there with the content it last wrote (SHA-256 of every file).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { CLI, cli, ROOT, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { Device, treeOf } from "./helpers.ts";

const KILLS = Number(process.env.ATREST_SYNC_KILLS ?? 20);

describe(`sync client killed -9 mid-step ${KILLS} times: it resumes and nothing is lost`, () => {
  let dir: string;
  let server: RunningServer;
  let a1: Device;
  let a2: Device;
  let region: string;

  before(async () => {
    dir = await tempDir("atrest-sync-kill-");
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

  test("kill, change, kill …, then converge", { timeout: 600_000 }, async () => {
    const model = new Map<string, string>();
    const sha = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");
    const put = async (p: string, b: Buffer | string) => {
      await writeFile(join(a1.dir, p), b);
      model.set(p, sha(b));
    };
    let killedMidway = 0;
    // How long a whole run takes here, learnt from the runs that finished: a fixed 0.6–3 s timer killed 0 of 20 runs on
    // a quiet machine (a run takes ~1 s) and nearly all on a loaded one, so the kill is drawn within the run's length.
    let typical = 0;
    for (let i = 0; i < KILLS; i++) {
      await put(`new ${i}.txt`, `file ${i}`);
      await put("big.bin", randomBytes(2 << 20));
      if (i > 0) await put(`new ${i - 1}.txt`, `file ${i - 1}, edited`);
      if (i > 1 && i % 3 === 0) {
        await rename(join(a1.dir, `new ${i - 2}.txt`), join(a1.dir, `renamed ${i - 2}.txt`));
        model.set(`renamed ${i - 2}.txt`, model.get(`new ${i - 2}.txt`) as string);
        model.delete(`new ${i - 2}.txt`);
      }
      if (i > 3 && i % 5 === 0) {
        await rm(join(a1.dir, `new ${i - 4}.txt`), { force: true });
        model.delete(`new ${i - 4}.txt`);
      }
      const child = spawn(
        process.execPath,
        [CLI, "sync", "run", a1.dir, "--region", region, "--once", "--state", a1.state],
        {
          cwd: ROOT,
          env: a1.env,
          stdio: "ignore",
        },
      );
      const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
      const started = performance.now();
      const delay = typical
        ? Math.floor(typical * (0.5 + 0.45 * Math.random()))
        : 600 + Math.floor(Math.random() * 2400);
      const timer = setTimeout(() => child.kill("SIGKILL"), delay);
      const code = await exited;
      clearTimeout(timer);
      const took = performance.now() - started;
      if (code === null) killedMidway++;
      else typical = typical ? (typical + took) / 2 : took;
    }
    // converge: a clean step (twice: the second must find nothing to do)
    await a1.sync(region);
    const second = await a1.sync(region);
    assert.match(second.stdout, /up 0 .*down 0/, second.stdout);
    const tree = await treeOf(a1.dir);
    const files = Object.fromEntries(Object.entries(tree).filter(([, h]) => h !== "dir"));
    assert.deepEqual(files, Object.fromEntries(model), "every file as last written, nothing lost, nothing extra");
    await a2.sync(region);
    assert.deepEqual(await treeOf(a2.dir), tree);
    assert.ok(
      killedMidway >= Math.min(5, KILLS),
      `only ${killedMidway} of ${KILLS} runs were killed before they finished`,
    );
  });
});
