// SFTP throughput: OpenSSH sshd (internal-sftp) vs atrest, same `sftp -b` client, interleaved, best of N.
import { createCipheriv, createHash, randomBytes } from "node:crypto";
import {
  closeSync,
  createReadStream,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { container } from "./container.ts";
import { ATREST_USER, startAtrest } from "./lib/atrest.ts";
import { GiB, MiB, mbps, ratio, seconds, size } from "./lib/report.ts";
import { processTree, startRssSampler } from "./lib/rss.ts";
import { generateKey, type KeyPair, quote, type SftpServer, sftpBatch, startOpenSsh } from "./lib/ssh.ts";
import type { BenchContext, BenchModule, BenchSection } from "./lib/types.ts";

const RSS_TARGET_MB = 200;
const RSS_CONCURRENT_TARGET_MB = 500;
/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ; 100 on Linux). */
const CLK_TCK = 100;

/**
 * CPU seconds a server has used so far: its own user+system time, its reaped children's (sshd forks per connection)
 * and its live descendants'. The difference over a run is the server's CPU for that run, which the other loads on a
 * shared machine change much less than wall time.
 */
function cpuSeconds(pid: number): number {
  let ticks = 0;
  for (const p of processTree(pid)) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, "utf8");
      // Fields after the ")" that closes the command name start at field 3; utime..cstime are fields 14..17.
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    } catch {
      // exited while reading
    }
  }
  return ticks / CLK_TCK;
}

interface Workload {
  label: string;
  bytes: number;
  /** Batch commands for run `n` (remote paths relative to the server's base dir). */
  commands(n: number, server: SftpServer, client?: number): string[];
  /** Checked once per server after its first run; returns an error message or undefined. */
  verify?(n: number, server: SftpServer): Promise<string | undefined>;
  /** Frees what run `n` left on the client side (untimed). */
  after?(n: number, server: SftpServer): void;
  /** Sample the server's RSS during this workload. */
  sampleRss: boolean;
  /** Parallel `sftp -b` clients, each running commands(n, server, client). Default 1. */
  clients?: number;
}

/** SHA-256 of a file (node:crypto uses OpenSSL's SHA extensions; coreutils sha256sum does not). */
async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MiB })) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

function sha256Dir(dir: string): string {
  const hash = createHash("sha256");
  for (const name of readdirSync(dir).sort()) {
    hash.update(name);
    hash.update(readFileSync(join(dir, name)));
  }
  return hash.digest("hex");
}

/** Writes `bytes` of AES-CTR keystream (incompressible, ~GB/s) and returns its SHA-256. */
function makeBigFile(path: string, bytes: number): string {
  const cipher = createCipheriv("aes-128-ctr", randomBytes(16), randomBytes(16));
  const zeros = Buffer.alloc(8 * MiB);
  const hash = createHash("sha256");
  const fd = openSync(path, "w");
  try {
    for (let done = 0; done < bytes; done += zeros.length) {
      const block = cipher.update(zeros.subarray(0, Math.min(zeros.length, bytes - done)));
      hash.update(block);
      writeSync(fd, block);
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest("hex");
}

function makeSmallFiles(dir: string, count: number, each: number): void {
  mkdirSync(dir, { recursive: true });
  const pool = randomBytes(count * each);
  for (let i = 0; i < count; i++) {
    writeFileSync(join(dir, `f${String(i).padStart(5, "0")}.bin`), pool.subarray(i * each, (i + 1) * each));
  }
}

export const sftp: BenchModule = {
  name: "sftp",
  title: "SFTP: atrest vs OpenSSH",
  method: [
    "**SFTP**: OpenSSH `sshd` (`/usr/sbin/sshd -D -e -f <tmp config>`, `Subsystem sftp internal-sftp`, own host key, " +
      "`UsePAM no`, `MaxStartups 200`) and atrest (`node src/cli/main.ts server`) each on a free 127.0.0.1 port, both storing under " +
      "the same temp dir (page cache, no fsync forced). One client for both: OpenSSH `sftp -b <batch> " +
      "-o Ciphers=aes128-gcm@openssh.com` (default 32 KiB requests, 64 in flight), one new SSH connection per " +
      "workload run, so the handshake is inside the timing for both servers.",
    "Workloads: put and get of one random (incompressible) file of 1 GiB, and `put -r` / `get -r` of a directory " +
      "of 2,000 × 4 KiB files. Runs are interleaved (OpenSSH, atrest, OpenSSH, atrest) and the best of 2 is kept. " +
      "The downloaded 1 GiB file's SHA-256 and the small files' contents are verified once per server.",
    "Ratio = OpenSSH time / atrest time: **> 1 means atrest is faster**. MB/s = 10^6 bytes per second.",
    "Peak RSS: `VmRSS` from `/proc/<pid>/status` of the server process and its descendants, sampled every " +
      "100 ms during the 1 GiB transfers (target for atrest: < 200 MB) and the concurrent sessions (< 500 MB).",
    "Concurrent sessions: 100 `sftp -b` clients started at once, each with its own SSH connection, each putting " +
      "its own copy of one 50 MB file; the time is until the last one ends, MB/s is the total over all clients.",
    "Server CPU s/GiB: user + system time of the server process and its descendants (for sshd also its reaped " +
      "per-connection children) over the run, from `/proc/<pid>/stat`, per GiB moved. The machine is shared: wall " +
      "time moves with the other load, CPU seconds much less. Load = `/proc/loadavg` (1 min) at the start of " +
      "the workload's first run.",
    "Container: atrest's segment seal/open in memory against `openssl speed -evp aes-256-gcm` at 16 KiB, the same " +
      "measurement as the container section.",
    "`--profile` starts the atrest server with `node --cpu-prof`; the profile (written when the server stops) " +
      "goes to `.cache/profiles/` and its path is printed.",
  ],
  async run(ctx: BenchContext): Promise<BenchSection> {
    const bigBytes = ctx.quick ? 128 * MiB : GiB;
    const smallCount = ctx.quick ? 500 : 2000;
    const smallEach = 4096;
    const concurrent = ctx.quick ? 10 : 100;
    const concurrentBytes = ctx.quick ? 10 * 1e6 : 50 * 1e6;
    const local = join(ctx.tmp, "local");
    mkdirSync(local, { recursive: true });

    ctx.log(`generating ${size(bigBytes)} random file and ${smallCount} × ${size(smallEach)} files`);
    const big = join(local, "big.bin");
    const genStart = performance.now();
    const bigSha = makeBigFile(big, bigBytes);
    const smallDir = join(local, "small");
    makeSmallFiles(smallDir, smallCount, smallEach);
    const smallSha = sha256Dir(smallDir);
    const mid = join(local, "mid.bin");
    makeBigFile(mid, concurrentBytes);
    ctx.log(`  generated in ${((performance.now() - genStart) / 1000).toFixed(1)} s`);

    const key: KeyPair = await generateKey(join(ctx.tmp, "client"));
    const notes: string[] = [];
    const servers: SftpServer[] = [await startOpenSsh(join(ctx.tmp, "openssh"), key)];
    ctx.log(`OpenSSH sshd on port ${servers[0].port}`);
    if (ctx.selfTest) {
      servers.push(await startOpenSsh(join(ctx.tmp, "openssh-2"), key, "OpenSSH #2 (self-test)"));
      notes.push("Harness self-test: a second OpenSSH sshd stands in for atrest.");
    } else {
      const profileDir = join(ctx.root, ".cache", "profiles");
      const nodeArgs = ctx.profile ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : [];
      if (ctx.profile) mkdirSync(profileDir, { recursive: true });
      // The peer sshd runs with MaxStartups 200; atrest gets the same room for the 100-session workload (its defaults,
      // 8 unauthenticated connections per source IP and 32 sessions per user, would refuse most of them).
      const atrest = await startAtrest(ctx.root, join(ctx.tmp, "atrest"), key, [], nodeArgs, {
        ATREST_MAX_STARTUPS: "200:30:400",
        ATREST_MAX_STARTUPS_PER_SOURCE: "0",
        ATREST_MAX_CONNECTIONS_PER_SOURCE: "0",
        ATREST_MAX_CONNECTIONS_PER_USER: "0",
      });
      if (typeof atrest === "string") {
        ctx.log(`skipping atrest: ${atrest}`);
        notes.push(`atrest skipped: ${atrest.split("\n")[0]}`);
      } else {
        ctx.log(`atrest on port ${atrest.port} (user ${ATREST_USER})`);
        servers.push(atrest);
        // The start line says which SSH transport crypto the server uses (native binding or pure JS).
        await new Promise((r) => setTimeout(r, 300));
        const crypto = /sftp transport crypto: (.*)/.exec(atrest.output())?.[1];
        notes.push(`atrest SSH transport crypto: ${crypto ?? "not printed"}.`);
        if (ctx.profile) notes.push("CPU profile of the atrest server: .cache/profiles/ (written when it stopped).");
      }
    }
    const [peer, subject] = servers;

    const workloads: Workload[] = [
      {
        label: `put ${size(bigBytes)}`,
        bytes: bigBytes,
        sampleRss: true,
        commands: (n) => [`put ${quote(big)} big-${n}.bin`],
      },
      {
        label: `get ${size(bigBytes)}`,
        bytes: bigBytes,
        sampleRss: true,
        commands: (n, s) => [`get big-1.bin ${quote(join(local, `got-${s.port}-${n}.bin`))}`],
        verify: async (n, s) => {
          const got = await sha256File(join(local, `got-${s.port}-${n}.bin`));
          return got === bigSha ? undefined : `SHA-256 mismatch on get from ${s.label}`;
        },
        after: (n, s) => rmSync(join(local, `got-${s.port}-${n}.bin`), { force: true }),
      },
      {
        label: `put ${smallCount.toLocaleString("en")} × ${size(smallEach)}`,
        bytes: smallCount * smallEach,
        sampleRss: false,
        commands: (n) => [`put -r ${quote(smallDir)} small-${n}`],
      },
      {
        label: `get ${smallCount.toLocaleString("en")} × ${size(smallEach)}`,
        bytes: smallCount * smallEach,
        sampleRss: false,
        commands: (n, s) => [`get -r small-1 ${quote(join(local, `gotsmall-${s.port}-${n}`))}`],
        verify: async (n, s) => {
          const got = sha256Dir(join(local, `gotsmall-${s.port}-${n}`));
          return got === smallSha ? undefined : `small files differ on get from ${s.label}`;
        },
        after: (n, s) => rmSync(join(local, `gotsmall-${s.port}-${n}`), { recursive: true, force: true }),
      },
      {
        label: `${concurrent} sessions × put ${(concurrentBytes / 1e6).toFixed(0)} MB`,
        bytes: concurrent * concurrentBytes,
        sampleRss: true,
        clients: concurrent,
        commands: (n, _s, c = 0) => [`put ${quote(mid)} mid-${n}-${c}.bin`],
      },
    ];

    // ATREST_BENCH_SFTP_ONLY=<substring>[,<substring>...]: only the workloads whose label contains one of them (a quick
    // loop while working on one path; such a run's section says so and should not be landed as the figures).
    const only = process.env.ATREST_BENCH_SFTP_ONLY?.split(",").filter((x) => x !== "");
    if (only) {
      const kept = workloads.filter((w) => only.some((o) => w.label.includes(o)));
      workloads.splice(0, workloads.length, ...kept);
      notes.push(`Only the workloads matching ATREST_BENCH_SFTP_ONLY=${only.join(",")}.`);
    }
    const best = new Map<string, number>(); // `${workload}|${port}` → best seconds
    const failed = new Set<string>(); // `${workload}|${port}`: a failed workload is not retried on that server
    const peakRss = new Map<string, number>(); // `${workload}|${port}` → peak bytes
    const cpu = new Map<string, number>(); // `${workload}|${port}` → server CPU s of the best run
    const load = new Map<string, number>(); // workload → 1-min loadavg at its first run
    const scratch = join(ctx.tmp, "batches");
    mkdirSync(scratch, { recursive: true });

    for (const w of workloads) {
      for (let n = 1; n <= ctx.runs; n++) {
        for (const s of servers) {
          if (failed.has(`${w.label}|${s.port}`)) continue;
          if (!load.has(w.label)) load.set(w.label, loadavg()[0]);
          const sampler = w.sampleRss ? startRssSampler(s.pid, { tree: true }) : undefined;
          try {
            const cpuBefore = cpuSeconds(s.pid);
            const started = performance.now();
            // A hung transfer must not stall the run: allow 60 s plus 4 MB/s.
            const clients = Array.from({ length: w.clients ?? 1 }, (_, c) =>
              sftpBatch(s, key, scratch, w.commands(n, s, c), 60_000 + w.bytes / 4e3),
            );
            const results = await Promise.allSettled(clients);
            const bad = results.find((x): x is PromiseRejectedResult => x.status === "rejected");
            if (bad) throw bad.reason;
            const secs = w.clients
              ? (performance.now() - started) / 1000
              : (results[0] as PromiseFulfilledResult<{ seconds: number }>).value.seconds;
            const cpuUsed = cpuSeconds(s.pid) - cpuBefore;
            const problem = n === 1 && w.verify ? await w.verify(n, s) : undefined;
            if (problem) throw new Error(problem);
            const k = `${w.label}|${s.port}`;
            if (secs < (best.get(k) ?? Number.POSITIVE_INFINITY)) {
              best.set(k, secs);
              cpu.set(k, cpuUsed);
            }
            ctx.log(
              `  ${w.label.padEnd(20)} ${s.label.padEnd(8)} run ${n}: ${secs.toFixed(2)} s, server CPU ${cpuUsed.toFixed(2)} s, load ${loadavg()[0].toFixed(1)}`,
            );
          } catch (e) {
            const why = (e as Error).message.replace(/^sftp .*? (exited|timed out)/, "sftp $1");
            const msg = `${s.label} failed "${w.label}": ${why.split("\n").slice(0, 3).join(" ")}`;
            ctx.log(`  ${msg}\n${s.output().trim().split("\n").slice(-5).join("\n")}`);
            failed.add(`${w.label}|${s.port}`);
            notes.push(msg);
          } finally {
            if (sampler) {
              const k = `${w.label}|${s.port}`;
              peakRss.set(k, Math.max(peakRss.get(k) ?? 0, sampler.stop().peakBytes));
            }
            w.after?.(n, s);
          }
        }
      }
    }
    for (const s of servers) await s.stop();

    const subjectLabel = subject?.label ?? "atrest";
    const table = [
      [
        "workload",
        `${peer.label} s`,
        `${peer.label} MB/s`,
        `${subjectLabel} s`,
        `${subjectLabel} MB/s`,
        "ratio (OpenSSH s / atrest s)",
        `${peer.label} CPU s/GiB`,
        `${subjectLabel} CPU s/GiB`,
        "load",
      ],
    ];
    const perGiB = (w: Workload, port: number | undefined) => {
      const v = port === undefined ? undefined : cpu.get(`${w.label}|${port}`);
      return v === undefined ? "–" : (v / (w.bytes / GiB)).toFixed(2);
    };
    const summary: string[] = [];
    for (const w of workloads) {
      const a = best.get(`${w.label}|${peer.port}`);
      const b = subject ? best.get(`${w.label}|${subject.port}`) : undefined;
      const cpuA = perGiB(w, peer.port);
      const cpuB = perGiB(w, subject?.port);
      const l = load.get(w.label)?.toFixed(1) ?? "–";
      table.push([w.label, seconds(a), mbps(w.bytes, a), seconds(b), mbps(w.bytes, b), ratio(a, b), cpuA, cpuB, l]);
      summary.push(
        `sftp ${w.label}: ${peer.label} ${seconds(a)} s, ${subjectLabel} ${seconds(b)} s, ratio ${ratio(a, b)}; ` +
          `server CPU s/GiB ${cpuA} vs ${cpuB}; load ${l}`,
      );
    }
    const rssMb = (w: Workload, port: number | undefined) => {
      const v = port === undefined ? undefined : peakRss.get(`${w.label}|${port}`);
      return v === undefined ? "–" : `${(v / 1e6).toFixed(0)} MB`;
    };
    for (const w of workloads.filter((x) => x.sampleRss)) {
      table.push([
        `peak RSS during ${w.label}`,
        rssMb(w, peer.port),
        "",
        rssMb(w, subject?.port),
        "",
        `target < ${w.clients ? RSS_CONCURRENT_TARGET_MB : RSS_TARGET_MB} MB`,
        "",
        "",
        "",
      ]);
      summary.push(
        `sftp peak RSS during ${w.label}: ${peer.label} ${rssMb(w, peer.port)}, ${subjectLabel} ${rssMb(w, subject?.port)}`,
      );
    }
    if (!ctx.selfTest && (!only || only.some((o) => "container".includes(o)))) {
      ctx.log("container seal/open vs openssl speed");
      const c = await container.run({ ...ctx, tmp: join(ctx.tmp, "container"), log: ctx.log });
      for (const row of c.table.slice(1)) {
        // The peer's MB/s column holds OpenSSL's, atrest's holds the container's; the ratio is atrest / OpenSSL here.
        table.push([`container ${row[0]} ÷ openssl aes-256-gcm 16 KiB`, "", row[1], "", row[2], row[3], "", "", ""]);
      }
      summary.push(...c.summary);
    }
    if (ctx.quick) notes.push("`--quick`: smaller sizes and one run each; not comparable with full runs.");
    return { table, notes, summary: summary.concat(notes.map((n) => `note: ${n}`)) };
  },
};
