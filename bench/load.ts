// Load: 200 concurrent SFTP sessions x 100 small uploads each (issue 11), atrest with its default limits against
// OpenSSH sshd (internal-sftp), one ssh2 client process driving both. Figures: errors, per-upload latency p50/p99,
// uploads/s, server CPU per 1,000 uploads, peak RSS and open file descriptors of the server (process tree for sshd,
// which forks per connection).
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { percentile, runLoad } from "../test/helpers/load.ts";
import { ATREST_USER, startAtrest } from "./lib/atrest.ts";
import { run } from "./lib/proc.ts";
import { MB, ratio } from "./lib/report.ts";
import { processTree, startRssSampler } from "./lib/rss.ts";
import { generateKey, type SftpServer, startOpenSsh } from "./lib/ssh.ts";
import type { BenchContext, BenchModule, BenchSection } from "./lib/types.ts";

/** Users the sessions are spread over (the default limit is 32 connections per user). */
const USERS = 10;
const BYTES = 4096;

/** utime + stime of a process and its live descendants, in seconds. */
function cpuSeconds(pid: number): number {
  const tick = 100; // USER_HZ on Linux
  let total = 0;
  for (const p of processTree(pid)) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      total += (Number(fields[11]) + Number(fields[12])) / tick;
    } catch {
      // exited
    }
  }
  return total;
}

function fdCount(pid: number): number {
  let n = 0;
  for (const p of processTree(pid)) {
    try {
      n += readdirSync(`/proc/${p}/fd`).length;
    } catch {
      // exited
    }
  }
  return n;
}

interface Figures {
  errors: number;
  errorMessages: string[];
  uploads: number;
  p50: number;
  p99: number;
  perSecond: number;
  cpuMsPerUpload: number;
  cpuSecondsTotal: number;
  peakRss: number;
  peakFds: number;
  connectS: number;
  load: string;
}

async function measure(
  server: SftpServer,
  key: string,
  sessions: number,
  perSession: number,
  users: (i: number) => string,
): Promise<Figures> {
  const load = readFileSync("/proc/loadavg", "utf8").split(" ")[0];
  const rss = startRssSampler(server.pid, { tree: true, intervalMs: 250 });
  let peakFds = fdCount(server.pid);
  const fdTimer = setInterval(() => {
    peakFds = Math.max(peakFds, fdCount(server.pid));
  }, 500);
  let cpuStart = 0;
  let cpuEnd = 0;
  const base = server.remoteBase ? `${server.remoteBase}/` : "/";
  try {
    cpuStart = cpuSeconds(server.pid);
    const r = await runLoad({
      port: server.port,
      user: users,
      privateKeyFile: key,
      sessions,
      uploadsPerSession: perSession,
      bytesPerUpload: BYTES,
      path: (i, j) => `${base}s${i}-u${j}.bin`,
      // one address per session, as many clients would have
      localAddress: (i) => `127.0.${3 + Math.floor(i / 250)}.${(i % 250) + 1}`,
      connectConcurrency: 16,
      timeoutMs: 300_000,
      beforeClose: () => {
        cpuEnd = cpuSeconds(server.pid);
        peakFds = Math.max(peakFds, fdCount(server.pid));
      },
    });
    const cpu = cpuEnd - cpuStart;
    return {
      errors: r.errors,
      errorMessages: r.errorMessages,
      uploads: r.uploads,
      p50: percentile(r.latencies, 50),
      p99: percentile(r.latencies, 99),
      perSecond: r.uploads / (r.uploadMs / 1000),
      cpuMsPerUpload: (cpu * 1000) / Math.max(1, r.uploads),
      cpuSecondsTotal: cpu,
      peakRss: rss.stop().peakBytes,
      peakFds,
      connectS: r.connectMs / 1000,
      load,
    };
  } finally {
    clearInterval(fdTimer);
    rss.stop();
  }
}

export const load: BenchModule = {
  name: "load",
  title: "Load: 200 concurrent SFTP sessions x 100 small uploads (atrest default limits vs OpenSSH)",
  method: [
    "**load**: one Node process with ssh2's client logs in 200 sessions (16 at a time, each from its own 127.0.x.y address, spread over 10 users for atrest) and then uploads 100 files of 4 KiB per session, all sessions at once, each file OPEN → WRITE → CLOSE; latency is per file from OPEN to CLOSE's reply (for atrest the commit: fsync, metadata transaction, audit record). atrest runs with its default limits; OpenSSH sshd gets `MaxStartups 64:30:256` (its default 10:30:100 drops part of a 16-wide login wave). CPU is utime+stime of the server (sshd: its process tree) over the upload phase; RSS and fds are peaks sampled every 250/500 ms. `--quick`: 20 x 10.",
  ],
  async run(ctx: BenchContext): Promise<BenchSection> {
    const sessions = ctx.quick ? 20 : 200;
    const perSession = ctx.quick ? 10 : 100;
    const key = await generateKey(join(ctx.tmp, "client"));
    const results: { label: string; f?: Figures; skip?: string }[] = [];

    const openssh = await startOpenSsh(join(ctx.tmp, "openssh"), key, "OpenSSH", ["MaxStartups 64:30:256"]);
    try {
      ctx.log(`OpenSSH: ${sessions} x ${perSession}`);
      results.push({
        label: "OpenSSH",
        f: await measure(openssh, key.privateKey, sessions, perSession, () => openssh.user),
      });
    } finally {
      await openssh.stop();
    }

    const atrest = await startAtrest(ctx.root, join(ctx.tmp, "atrest"), key, ["--log-level", "warn"]);
    if (typeof atrest === "string") results.push({ label: "atrest", skip: atrest });
    else {
      try {
        const cli = join(ctx.root, "src", "cli", "main.ts");
        const data = join(ctx.tmp, "atrest", "data");
        for (let u = 1; u < USERS; u++) {
          await run(
            process.execPath,
            [cli, "user", "add", `${ATREST_USER}${u}`, "--public-key", key.publicKey, "--data", data],
            {
              timeoutMs: 60_000,
            },
          );
        }
        const users = (i: number) => (i % USERS === 0 ? ATREST_USER : `${ATREST_USER}${i % USERS}`);
        ctx.log(`atrest: ${sessions} x ${perSession}`);
        results.push({ label: "atrest", f: await measure(atrest, key.privateKey, sessions, perSession, users) });
      } finally {
        await atrest.stop();
      }
    }

    const table: string[][] = [
      [
        "server",
        "uploads",
        "errors",
        "p50 ms",
        "p99 ms",
        "uploads/s",
        "server CPU ms/upload",
        "peak RSS",
        "peak fds",
        "login phase s",
        "load at start",
      ],
    ];
    for (const r of results) {
      if (!r.f) {
        table.push([r.label, "—", r.skip ?? "", "", "", "", "", "", "", "", ""]);
        continue;
      }
      const f = r.f;
      table.push([
        r.label,
        String(f.uploads),
        String(f.errors),
        f.p50.toFixed(1),
        f.p99.toFixed(1),
        f.perSecond.toFixed(0),
        f.cpuMsPerUpload.toFixed(2),
        `${(f.peakRss / MB).toFixed(0)} MB`,
        String(f.peakFds),
        f.connectS.toFixed(1),
        f.load,
      ]);
    }
    const o = results.find((r) => r.label === "OpenSSH")?.f;
    const a = results.find((r) => r.label === "atrest")?.f;
    const notes: string[] = [];
    if (o && a) {
      notes.push(
        `Ratios (OpenSSH / atrest): p50 latency ${ratio(o.p50, a.p50)}, uploads/s ${ratio(a.perSecond, o.perSecond)} (atrest/OpenSSH), CPU per upload ${ratio(o.cpuMsPerUpload, a.cpuMsPerUpload)}.`,
      );
    }
    for (const r of results)
      if (r.f && r.f.errors > 0) notes.push(`${r.label} errors: ${r.f.errorMessages.join("; ")}`);
    notes.push(
      "Figures taken on a shared 2-core machine: wall-clock latency depends on the load shown; CPU per upload less so.",
    );
    return {
      table,
      notes,
      summary: results.map((r) =>
        r.f
          ? `load ${r.label}: ${r.f.uploads} uploads, ${r.f.errors} errors, p50 ${r.f.p50.toFixed(1)} ms, p99 ${r.f.p99.toFixed(1)} ms`
          : `load ${r.label}: skipped (${r.skip})`,
      ),
    };
  },
};
