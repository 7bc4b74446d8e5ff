// Audit pipeline: events/s delivered to rsyslog over TLS with zero loss, and the added latency of an upload with the
// SIEM pipeline on vs off.
import { randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeCa, startRsyslog } from "../test/audit/receivers.ts";
import { startAtrest } from "./lib/atrest.ts";
import { generateKey, sftpBatch } from "./lib/ssh.ts";
import type { BenchContext, BenchModule, BenchSection } from "./lib/types.ts";

const TARGET_EPS = 50_000;

interface Throughput {
  events: number;
  received: number;
  recordSeconds: number;
  deliverSeconds: number;
  /** CPU time of this process (producer + sender) per event: what one dedicated core would allow. */
  cpuMicrosPerEvent: number;
}

/** Records `n` upload events as fast as the producer can, until rsyslog (TLS) has written all of them. */
async function deliverToRsyslog(
  ctx: BenchContext,
  dir: string,
  n: number,
  driver: "gtls" | "ossl",
): Promise<Throughput> {
  const { AuditLog } = await import("../src/audit/log.ts");
  const { AuditPipeline } = await import("../src/audit/pipeline.ts");
  const { aeadKey } = await import("../src/crypto/aead.ts");
  const { openSqliteStore } = await import("../src/store/sqlite/index.ts");
  const { silentLogger } = await import("../src/logger.ts");
  mkdirSync(dir, { recursive: true });
  const ca = await makeCa(join(dir, "pki"));
  const rs = await startRsyslog(join(dir, "rsyslog"), { driver, ca });
  const key = randomBytes(32);
  const store = openSqliteStore(join(dir, "meta.db"));
  const audit = new AuditLog(join(dir, "audit", "audit.log"), Buffer.from(key), { groupCommit: true });
  const pipeline = await AuditPipeline.start(
    {
      failClosed: false,
      destinations: [{ name: "rsyslog", transport: "tls", host: "127.0.0.1", port: rs.port, format: "cef", ca: ca.ca }],
    },
    { audit, key: aeadKey(key), store, logger: silentLogger },
  );
  try {
    await rs.waitFor(1); // the audit.config.change record: connected
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    for (let i = 0; i < n; i++) {
      audit.record({
        action: "upload",
        outcome: "success",
        user: "alice",
        effectiveUser: "alice",
        protocol: "sftp",
        sourceIp: "192.0.2.10",
        sessionId: "7d0c3a6e-4f1b-4c55-9d59-0d6f1d3c2b11",
        path: `/inbox/2026/report-${i}.csv`,
        size: 4096 + i,
        keyRef: "kek:default:v1",
      });
      // yield now and then, like a server between requests: the sender shares the event loop
      if (i % 512 === 511) await new Promise((r) => setImmediate(r));
    }
    audit.flush();
    const t1 = performance.now();
    const lines = await rs.waitFor(n + 1, 300_000);
    const t2 = performance.now();
    const cpu = process.cpuUsage(cpu0);
    const cpuMicrosPerEvent = (cpu.user + cpu.system) / n;
    ctx.log(
      `  ${driver}: ${n} events recorded in ${((t1 - t0) / 1000).toFixed(2)} s, delivered in ` +
        `${((t2 - t0) / 1000).toFixed(2)} s, atrest CPU ${cpuMicrosPerEvent.toFixed(1)} µs/event`,
    );
    return {
      events: n,
      received: lines.length - 1,
      recordSeconds: (t1 - t0) / 1000,
      deliverSeconds: (t2 - t0) / 1000,
      cpuMicrosPerEvent,
    };
  } finally {
    await pipeline.stop(1000);
    await audit.close();
    await store.close();
    await rs.stop();
  }
}

/** Seconds per upload of a small file, `count` puts in one sftp session, with the given server args. */
export async function uploadLatency(
  ctx: BenchContext,
  dir: string,
  count: number,
  config?: object,
): Promise<number | string> {
  mkdirSync(dir, { recursive: true });
  const key = await generateKey(dir);
  const args: string[] = [];
  if (config) {
    const file = join(dir, "config.json");
    writeFileSync(file, JSON.stringify(config));
    args.push("--config", file);
  }
  const server = await startAtrest(ctx.root, join(dir, "atrest"), key, args);
  if (typeof server === "string") return server;
  try {
    const local = join(dir, "small.bin");
    writeFileSync(local, randomBytes(4096));
    const puts = Array.from({ length: count }, (_, i) => `put ${local} f${i}.bin`);
    await sftpBatch(server, key, dir, puts.slice(0, 5)); // warm-up
    let best = Number.POSITIVE_INFINITY;
    for (let r = 0; r < ctx.runs; r++) {
      const t = performance.now();
      const res = await sftpBatch(server, key, dir, puts);
      if (res.code !== 0) return `sftp failed: ${res.stderr.split("\n")[0]}`;
      best = Math.min(best, (performance.now() - t) / 1000 / count);
    }
    return best;
  } finally {
    await server.stop();
  }
}

export const audit: BenchModule = {
  name: "audit",
  title: "Audit pipeline: events/s to rsyslog over TLS, upload latency with the pipeline on vs off",
  method: [
    "**Audit delivery**: one process records N upload events (`AuditLog.record`, yielding to the event loop every " +
      "512) while its SIEM pipeline sends them as CEF over TLS (octet counting) to a real rsyslogd (imtcp, gtls and " +
      "ossl drivers, omfile `%rawmsg%`) on loopback; events/s = N / time until rsyslog's file holds all N lines. Zero " +
      "loss = lines counted equal N. Target ≥ 50,000 events/s on 2 cores.",
    "**Upload latency**: `sftp -b` with 200 `put`s of a 4 KiB file in one session, atrest without SIEM destinations vs " +
      "with one TLS destination to rsyslog (the local audit log is written in both); best of 2, seconds per upload.",
  ],
  async run(ctx: BenchContext): Promise<BenchSection> {
    const n = ctx.quick ? 50_000 : 300_000;
    const table: string[][] = [
      ["workload", "events", "received", "record s", "deliver s", "events/s", "vs target", "atrest CPU µs/event"],
    ];
    const summary: string[] = [];
    const notes: string[] = [];
    for (const driver of ["gtls", "ossl"] as const) {
      ctx.log(`deliver ${n} events to rsyslog (${driver})`);
      const r = await deliverToRsyslog(ctx, join(ctx.tmp, `deliver-${driver}`), n, driver);
      const eps = r.received / r.deliverSeconds;
      table.push([
        `CEF over TLS to rsyslog (${driver})`,
        String(r.events),
        String(r.received),
        r.recordSeconds.toFixed(2),
        r.deliverSeconds.toFixed(2),
        Math.round(eps).toLocaleString("en-US"),
        `${(eps / TARGET_EPS).toFixed(2)}×`,
        r.cpuMicrosPerEvent.toFixed(1),
      ]);
      summary.push(`audit: ${Math.round(eps)} events/s to rsyslog ${driver} over TLS, ${r.events - r.received} lost`);
      if (r.received !== r.events) notes.push(`LOSS with ${driver}: ${r.events - r.received} events missing`);
    }
    const count = ctx.quick ? 50 : 200;
    ctx.log(`upload latency, ${count} puts, pipeline off`);
    const off = await uploadLatency(ctx, join(ctx.tmp, "latency-off"), count);
    const ca = await makeCa(join(ctx.tmp, "latency-pki"));
    const rs = await startRsyslog(join(ctx.tmp, "latency-rsyslog"), { driver: "gtls", ca });
    let on: number | string;
    try {
      ctx.log(`upload latency, ${count} puts, pipeline on`);
      on = await uploadLatency(ctx, join(ctx.tmp, "latency-on"), count, {
        audit: {
          destinations: [
            { name: "rsyslog", transport: "tls", host: "127.0.0.1", port: rs.port, format: "cef", ca: ca.ca },
          ],
        },
      });
    } finally {
      await rs.stop();
    }
    if (typeof off === "string" || typeof on === "string") {
      notes.push(`upload latency skipped: ${typeof off === "string" ? off : on}`);
    } else {
      table.push([
        "upload 4 KiB, pipeline off (ms/upload)",
        String(count),
        "",
        "",
        (off * 1000).toFixed(2),
        "",
        "",
        "",
      ]);
      table.push(["upload 4 KiB, pipeline on (ms/upload)", String(count), "", "", (on * 1000).toFixed(2), "", "", ""]);
      ctx.log(`  upload: ${(off * 1000).toFixed(2)} ms off, ${(on * 1000).toFixed(2)} ms on`);
      summary.push(`audit: upload latency +${((on - off) * 1000).toFixed(2)} ms with the SIEM pipeline on`);
      notes.push(`Added latency per 4 KiB upload with the pipeline on: ${((on - off) * 1000).toFixed(2)} ms.`);
    }
    return { table, notes, summary };
  },
};
