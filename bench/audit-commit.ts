// Audit append on the critical path: records/s and per-operation latency of the audit log's append modes, in-process
// (the AuditLog alone, on this machine's disk), and the SFTP upload latency with fail-closed audit off vs on.
import { randomBytes } from "node:crypto";
import { fdatasyncSync, mkdirSync, openSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { uploadLatency } from "./audit.ts";
import type { BenchContext, BenchModule, BenchSection } from "./lib/types.ts";

interface Result {
  records: number;
  seconds: number;
  cpuSeconds: number;
  p50: number;
  p99: number;
}

const event = (i: number) => ({
  action: "upload" as const,
  outcome: "success" as const,
  user: "alice",
  effectiveUser: "alice",
  protocol: "sftp" as const,
  sourceIp: "192.0.2.10",
  sessionId: "7d0c3a6e-4f1b-4c55-9d59-0d6f1d3c2b11",
  path: `/inbox/2026/report-${i}.csv`,
  size: 4096 + i,
  keyRef: "kek:default:v1",
});

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
}

/**
 * `producers` concurrent loops, each doing `per` operations: admit, then append the record in `mode`, and count the
 * operation done when the append says so (latency = that wait).
 */
async function measure(
  dir: string,
  mode: "write-through" | "write-through+fdatasync" | "group" | "group-fail-closed",
  producers: number,
  per: number,
): Promise<Result> {
  const { AuditLog } = await import("../src/audit/log.ts");
  mkdirSync(dir, { recursive: true });
  const path = join(dir, "audit.log");
  const log = new AuditLog(path, randomBytes(32), {
    groupCommit: mode.startsWith("group"),
    failClosed: mode === "group-fail-closed",
  });
  const syncFd = mode === "write-through+fdatasync" ? openSync(path, "r+") : undefined;
  const lat: number[] = [];
  let n = 0;
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  await Promise.all(
    Array.from({ length: producers }, async () => {
      for (let i = 0; i < per; i++) {
        const t = performance.now();
        await log.admit();
        const done = log.commit(event(n++));
        if (done) await done;
        else if (syncFd !== undefined) fdatasyncSync(syncFd);
        lat.push(performance.now() - t);
        // an operation's own work between records: a turn of the event loop
        await new Promise((r) => setImmediate(r));
      }
    }),
  );
  log.flush();
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  await log.close();
  lat.sort((a, b) => a - b);
  return {
    records: n,
    seconds,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    p50: quantile(lat, 0.5),
    p99: quantile(lat, 0.99),
  };
}

export const auditCommit: BenchModule = {
  name: "audit-commit",
  title: "Audit append: records/s and per-operation latency by append mode; SFTP upload latency, fail-closed off/on",
  method: [
    "**Append modes** (in-process, one AuditLog on the data disk, P concurrent producers, each: `admit()`, append one " +
      "upload record, wait as the mode requires, then yield one event-loop turn): *write-through* (the key " +
      "manager's mode: one locked write per record), *write-through + fdatasync* (the naive durable append: a sync " +
      "per record), *group* (the file server's fail-open mode: one locked write per event-loop turn, nobody waits), " +
      "*group fail-closed* (`commit`: the producer waits until the write carrying its record and an fdatasync after " +
      "it have completed; concurrent producers share both). Latency = the producer's wait for admit + append.",
    "**Upload latency**: `sftp -b` with 200 `put`s of a 4 KiB file in one session, atrest with `audit.failClosed` " +
      "false vs true; best of 2, milliseconds per upload.",
  ],
  async run(ctx: BenchContext): Promise<BenchSection> {
    const table: string[][] = [
      ["mode", "producers", "records", "records/s", "p50 ms", "p99 ms", "CPU µs/record", "load"],
    ];
    const summary: string[] = [];
    const notes: string[] = [];
    const per = ctx.quick ? 200 : 2000;
    for (const [mode, producers] of [
      ["write-through", 1],
      ["write-through+fdatasync", 1],
      ["group", 1],
      ["group-fail-closed", 1],
      ["write-through+fdatasync", 16],
      ["group", 16],
      ["group-fail-closed", 16],
      ["group-fail-closed", 64],
    ] as const) {
      const count = producers === 1 ? per : Math.max(50, Math.floor((per * 4) / producers));
      const load = loadavg()[0]?.toFixed(2) ?? "";
      const r = await measure(join(ctx.tmp, `${mode}-${producers}`), mode, producers, count);
      const rps = r.records / r.seconds;
      ctx.log(
        `  ${mode} × ${producers}: ${Math.round(rps)} records/s, p50 ${r.p50.toFixed(3)} ms, p99 ${r.p99.toFixed(3)} ms`,
      );
      table.push([
        mode,
        String(producers),
        String(r.records),
        Math.round(rps).toLocaleString("en-US"),
        r.p50.toFixed(3),
        r.p99.toFixed(3),
        ((r.cpuSeconds / r.records) * 1e6).toFixed(1),
        load,
      ]);
      if (mode === "group-fail-closed") {
        summary.push(
          `audit-commit: fail-closed × ${producers}: ${Math.round(rps)} records/s, p50 ${r.p50.toFixed(2)} ms`,
        );
      }
    }
    const count = ctx.quick ? 50 : 200;
    const off = await uploadLatency(ctx, join(ctx.tmp, "fc-off"), count);
    const on = await uploadLatency(ctx, join(ctx.tmp, "fc-on"), count, { audit: { failClosed: true } });
    const load = loadavg()[0]?.toFixed(2) ?? "";
    if (typeof off === "string" || typeof on === "string") {
      notes.push(`upload latency skipped: ${typeof off === "string" ? off : on}`);
    } else {
      for (const [name, v] of [
        ["sftp put 4 KiB, failClosed false (ms/upload)", off],
        ["sftp put 4 KiB, failClosed true (ms/upload)", on],
      ] as const) {
        table.push([name, "1", String(count), "", (v * 1000).toFixed(2), "", "", load]);
      }
      summary.push(
        `audit-commit: sftp 4 KiB put ${(off * 1000).toFixed(2)} ms fail-open, ${(on * 1000).toFixed(2)} ms fail-closed`,
      );
      notes.push(
        `Fail-closed adds ${((on - off) * 1000).toFixed(2)} ms per sequential 4 KiB upload (load ${load}): the ` +
          "fdatasync of its record (and of its download-started or login record) that a single client waits for alone.",
      );
    }
    return { table, notes, summary };
  },
};
