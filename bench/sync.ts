// E2EE sync vs rclone: the first sync of a tree (default 1 GiB in 5,000 files) and an incremental sync of one changed
// file, `atrest sync run --once` (client-side encryption, signing, its own HTTPS API) against `rclone copy` of the
// same tree to atrest's own SFTP door, same server, same run; plus the sync client's peak RSS.
import { execFile } from "node:child_process";
import { createCipheriv, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { freePort, run, spawnTracked, stop, waitForLine } from "./lib/proc.ts";
import { GiB, MiB, mbps, ratio, seconds, size } from "./lib/report.ts";
import { startRssSampler } from "./lib/rss.ts";
import { generateKey } from "./lib/ssh.ts";
import type { BenchContext, BenchModule, BenchSection } from "./lib/types.ts";

const TARGET_RATIO = 1.25;
const RSS_TARGET_MB = 200;

function runInput(cmd: string, args: string[], input: string, env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { env, maxBuffer: 16 << 20 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${args.slice(0, 4).join(" ")}: ${stderr || err.message}`)) : resolve(stdout),
    );
    child.stdin?.end(input);
  });
}

/** `count` files of random bytes totalling about `total`: 99% small (equal) ones, 1% large ones holding the rest. */
function makeTree(dir: string, count: number, total: number): number {
  const cipher = createCipheriv("aes-128-ctr", randomBytes(16), randomBytes(16));
  const big = Math.max(1, Math.floor(count / 100));
  const small = count - big;
  const smallSize = Math.floor((total * 0.3) / small);
  const bigSize = Math.floor((total - smallSize * small) / big);
  let bytes = 0;
  for (let i = 0; i < count; i++) {
    const sub = join(dir, `d${String(i % 50).padStart(2, "0")}`);
    mkdirSync(sub, { recursive: true });
    const n = i < big ? bigSize : smallSize;
    writeFileSync(join(sub, `f${String(i).padStart(5, "0")}.bin`), cipher.update(Buffer.alloc(n)));
    bytes += n;
  }
  return bytes;
}

/** utime + stime of a process, seconds (/proc/PID/stat, clock ticks of 1/100 s). */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8");
  const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return (Number(rest[11]) + Number(rest[12])) / 100;
}

/**
 * `atrest sync run <tree> --region R` kept running: after its first step, `n` times one file rewritten and the time
 * until the run prints that it published (its step: scan, upload, publish, pin); best of n, with the CPU the run used
 * for that change.
 */
async function continuous(
  node: string,
  atrest: string,
  tree: string,
  region: string,
  env: NodeJS.ProcessEnv,
  n: number,
): Promise<{ s: number; cpu: number }> {
  const child = spawnTracked(node, [atrest, "sync", "run", tree, "--region", region, "--interval", "3600"], { env });
  const lines: string[] = [];
  let waiter: (() => void) | undefined;
  let buf = "";
  child.stdout?.on("data", (b: Buffer) => {
    buf += b.toString();
    for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
      waiter?.();
    }
  });
  const err: Buffer[] = [];
  child.stderr?.on("data", (b: Buffer) => err.push(b));
  const synced = (seen: number) =>
    new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`sync run: no step after 120 s: ${Buffer.concat(err).toString().slice(-300)}`)),
        120_000,
      );
      waiter = () => {
        if (lines.slice(seen).some((l) => l.startsWith("synced "))) {
          clearTimeout(timer);
          waiter = undefined;
          resolve();
        }
      };
      waiter();
    });
  try {
    await synced(0);
    let best = { s: Infinity, cpu: Infinity };
    for (let i = 0; i < n; i++) {
      await new Promise((r) => setTimeout(r, 1500));
      const seen = lines.length;
      const cpu0 = cpuSeconds(child.pid as number);
      const t0 = performance.now();
      writeFileSync(join(tree, "d07", "f00107.bin"), randomBytes(4096 + 100 + i));
      await synced(seen);
      const s = (performance.now() - t0) / 1000;
      const cpu = cpuSeconds(child.pid as number) - cpu0;
      if (s < best.s) best = { s, cpu };
    }
    return best;
  } finally {
    child.kill("SIGTERM");
    await new Promise((r) => child.once("close", r));
  }
}

export const sync: BenchModule = {
  name: "sync",
  title: "E2EE sync: atrest sync vs rclone copy to atrest SFTP",
  method: [
    "**Sync**: one atrest server (`atrest server`, SFTP and HTTPS on free loopback ports, blobs in the page cache with " +
      "atrest's usual fsync per blob). The tree: 5,000 random files, 1 GiB (1% large files hold 70% of the bytes, the rest " +
      "equal small ones) in 50 folders. `atrest sync run <tree> --region R --once` (the `atrest` command, bin/atrest.js; a fresh region per run: enrol once, " +
      "then every byte encrypted on the client into the container format under a random per-file key wrapped to the " +
      "region key, the manifest signed with Ed25519, 4 uploads at once over HTTPS) against `rclone copy <tree> " +
      ":sftp:<fresh dir>` (`--transfers 4 --checkers 8 --sftp-disable-hashcheck`) to the same server's SFTP door, " +
      "interleaved, best of 2. Incremental: one small file rewritten, then the same two commands again (rclone compares " +
      "size and mtime; atrest sync rescans and uploads the one file and a new manifest). Both times include process " +
      "start-up. Ratio = atrest sync time / rclone time (target ≤ 1.25). Client CPU: user + system seconds of each " +
      "client process (`/usr/bin/time`), best of 2. Client RSS: peak `VmRSS` of the `atrest sync` process (and the " +
      "`/usr/bin/time` around it), sampled every 100 ms (target < 200 MB). Kept running: `atrest sync run <tree> --region R` " +
      "without `--once` (file watching), one small file rewritten after its first step, timed from the write to the " +
      "run printing that it published; best of 3, the run's CPU for that change from /proc/PID/stat; its ratio is " +
      "against the same rclone incremental copy (which starts, lists and compares everything each time).",
  ],
  async run(ctx: BenchContext): Promise<BenchSection> {
    const count = ctx.quick ? 500 : 5000;
    const total = ctx.quick ? 64 * MiB : GiB;
    const tree = join(ctx.tmp, "tree");
    const bytes = makeTree(tree, count, total);
    ctx.log(`tree: ${count} files, ${size(bytes)}`);
    const node = process.execPath;
    const cli = join(ctx.root, "src", "cli", "main.ts");
    // the sync client as a device runs it: the `atrest` command (bin/atrest.js, which runs `atrest sync` in its own
    // process with the compile cache on from the start)
    const atrest = join(ctx.root, "bin", "atrest.js");
    const data = join(ctx.tmp, "data");
    const env = {
      ...process.env,
      NODE_ENV: "production",
      ATREST_SYNC_PASSPHRASE: "bench passphrase",
      ATREST_SYNC_STATE: join(ctx.tmp, "sync-state"),
      RCLONE_CONFIG: "/dev/null",
    };
    const key = await generateKey(join(ctx.tmp, "ssh"));
    await run(node, [cli, "init", "--data", data], { env });
    await runInput(
      node,
      [cli, "user", "add", "bench", "--public-key", key.publicKey, "--password-stdin", "--data", data],
      "bench-pw\n",
      env,
    );
    const sftpPort = await freePort();
    const httpPort = await freePort();
    const server = spawnTracked(
      node,
      [
        cli,
        "server",
        "--data",
        data,
        "--sftp-port",
        String(sftpPort),
        "--http-port",
        String(httpPort),
        // the S3 door is on by default (port 9000): off, it would clash with other runs and is not measured here
        "--s3-port",
        "0",
        "--host",
        "127.0.0.1",
      ],
      { env },
    );
    try {
      await waitForLine(server, /atrest: https listening on 127\.0\.0\.1:\d+/, 60_000);
      const url = `https://127.0.0.1:${httpPort}`;
      await runInput(
        node,
        [
          atrest,
          "sync",
          "device",
          "enroll",
          "--server",
          url,
          "--ca",
          join(data, "tls", "server.crt"),
          "--user",
          "bench",
          "--name",
          "bench",
          "--password-stdin",
        ],
        "bench-pw\n",
        env,
      );
      const rcloneArgs = (dest: string) => [
        "copy",
        tree,
        `:sftp:${dest}`,
        "--sftp-host",
        "127.0.0.1",
        "--sftp-port",
        String(sftpPort),
        "--sftp-user",
        "bench",
        "--sftp-key-file",
        key.privateKey,
        "--sftp-disable-hashcheck",
        "--sftp-shell-type",
        "none",
        "--transfers",
        "4",
        "--checkers",
        "8",
        "-q",
      ];
      // CPU seconds (user + system) of a command run under /usr/bin/time: on 2 shared cores the wall time of a
      // short step is mostly waiting for a core, the CPU time is what the step costs
      const cpuOf = (stderr: string): number => {
        const m = /^cpu ([\d.]+) ([\d.]+)$/m.exec(stderr);
        return m ? Number(m[1]) + Number(m[2]) : Number.NaN;
      };
      const syncOnce = async (region: string): Promise<{ s: number; rss: number; cpu: number }> => {
        const start = performance.now();
        const child = spawnTracked(
          "/usr/bin/time",
          ["-f", "cpu %U %S", node, atrest, "sync", "run", tree, "--region", region, "--once"],
          { env },
        );
        // the node process and the 1-2 MB of /usr/bin/time around it
        const sampler = startRssSampler(child.pid as number, { intervalMs: 100, tree: true });
        const err: Buffer[] = [];
        child.stderr?.on("data", (b: Buffer) => err.push(b));
        const code = await new Promise<number | null>((r) => child.on("close", (c) => r(c)));
        const rss = sampler.stop().peakBytes;
        const stderr = Buffer.concat(err).toString();
        if (code !== 0) throw new Error(`atrest sync run failed: ${stderr.split("\n").slice(-3).join(" ")}`);
        return { s: (performance.now() - start) / 1000, rss, cpu: cpuOf(stderr) };
      };
      const rcloneOnce = async (dest: string) => {
        const r = await run("/usr/bin/time", ["-f", "cpu %U %S", "rclone", ...rcloneArgs(dest)], { env });
        return { seconds: r.seconds, cpu: cpuOf(r.stderr) };
      };
      const best = {
        sync: Infinity,
        rclone: Infinity,
        syncInc: Infinity,
        rcloneInc: Infinity,
        rss: 0,
        cpu: Infinity,
        rcloneCpu: Infinity,
        cpuInc: Infinity,
        rcloneCpuInc: Infinity,
      };
      let lastRegion = "";
      for (let r = 0; r < ctx.runs; r++) {
        const region = (await run(node, [atrest, "sync", "region", "create", `bench ${r}`], { env })).stdout.trim();
        lastRegion = region;
        const first = await syncOnce(region);
        best.sync = Math.min(best.sync, first.s);
        best.cpu = Math.min(best.cpu, first.cpu);
        best.rss = Math.max(best.rss, first.rss);
        const rc = await rcloneOnce(`r${r}`);
        best.rclone = Math.min(best.rclone, rc.seconds);
        best.rcloneCpu = Math.min(best.rcloneCpu, rc.cpu);
        ctx.log(
          `run ${r + 1}: atrest sync ${first.s.toFixed(1)} s (RSS ${size(first.rss)}), rclone ${rc.seconds.toFixed(1)} s`,
        );
        writeFileSync(join(tree, "d07", "f00107.bin"), randomBytes(4096 + r));
        const inc = await syncOnce(region);
        best.syncInc = Math.min(best.syncInc, inc.s);
        best.cpuInc = Math.min(best.cpuInc, inc.cpu);
        best.rss = Math.max(best.rss, inc.rss);
        const rcInc = await rcloneOnce(`r${r}`);
        best.rcloneInc = Math.min(best.rcloneInc, rcInc.seconds);
        best.rcloneCpuInc = Math.min(best.rcloneCpuInc, rcInc.cpu);
        ctx.log(
          `run ${r + 1} incremental: atrest sync ${inc.s.toFixed(2)} s (CPU ${inc.cpu.toFixed(2)} s, RSS ${size(inc.rss)}), rclone ${rcInc.seconds.toFixed(2)} s (CPU ${rcInc.cpu.toFixed(2)} s)`,
        );
      }
      // a device that keeps `sync run` going (no --once): the unlock, start-up and region load are paid once, then a
      // change on disk reaches the server through the watcher; timed from the write to the run saying it published
      const cont = await continuous(node, atrest, tree, lastRegion, env, ctx.runs + 1);
      ctx.log(`continuous run: change on disk → on the server ${cont.s.toFixed(2)} s (CPU ${cont.cpu.toFixed(2)} s)`);
      const rssMb = best.rss / 1e6;
      const firstRatio = best.sync / best.rclone;
      return {
        table: [
          ["workload", "atrest sync", "rclone → atrest SFTP", "atrest sync / rclone", "target"],
          [
            `first sync, ${count} files, ${size(bytes)}`,
            `${seconds(best.sync)} (${mbps(bytes, best.sync)})`,
            `${seconds(best.rclone)} (${mbps(bytes, best.rclone)})`,
            ratio(best.sync, best.rclone),
            `≤ ${TARGET_RATIO} ${firstRatio <= TARGET_RATIO ? "met" : "missed"}`,
          ],
          [
            "incremental, 1 changed file",
            seconds(best.syncInc),
            seconds(best.rcloneInc),
            ratio(best.syncInc, best.rcloneInc),
            `≤ ${TARGET_RATIO} ${best.syncInc / best.rcloneInc <= TARGET_RATIO ? "met" : "missed"}`,
          ],
          [
            "1 changed file, `sync run` kept running: change → on the server",
            seconds(cont.s),
            seconds(best.rcloneInc),
            ratio(cont.s, best.rcloneInc),
            `≤ ${TARGET_RATIO} ${cont.s / best.rcloneInc <= TARGET_RATIO ? "met" : "missed"}`,
          ],
          [
            "client CPU s (user + system): first / incremental",
            `${best.cpu.toFixed(2)} / ${best.cpuInc.toFixed(2)}`,
            `${best.rcloneCpu.toFixed(2)} / ${best.rcloneCpuInc.toFixed(2)}`,
            `${ratio(best.cpu, best.rcloneCpu)} / ${ratio(best.cpuInc, best.rcloneCpuInc)}`,
            "",
          ],
          [
            "sync client peak RSS",
            `${rssMb.toFixed(0)} MB`,
            "",
            "",
            `< ${RSS_TARGET_MB} MB ${rssMb < RSS_TARGET_MB ? "met" : "missed"}`,
          ],
        ],
        notes: [
          "atrest sync encrypts every byte on the client (the server cannot read it) and rclone does not; rclone's files are " +
            "encrypted at rest by the server instead, under its key manager.",
        ],
        summary: [
          `sync: first ${seconds(best.sync)} vs rclone ${seconds(best.rclone)} (${ratio(best.sync, best.rclone)}), incremental ${seconds(best.syncInc)} vs ${seconds(best.rcloneInc)}, client RSS ${rssMb.toFixed(0)} MB`,
        ],
      };
    } finally {
      await stop(server);
    }
  },
};
