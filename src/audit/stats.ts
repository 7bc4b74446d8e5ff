// `atrest audit stats`: the running server's figures (stats.json, rewritten every second by the pipeline), or, when
// no server is running, what can be computed from the spool cursors and the log head.
import { closeSync, openSync, readdirSync, readFileSync, readSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { alive } from "../fsutil/process.ts";
import { readChainHead } from "./chain.ts";
import { readCursor, spoolDir } from "./destination.ts";
import { STATS_FILE, type StatsSnapshot } from "./pipeline.ts";

export interface StatsView {
  /** true: figures from a running server; false: computed from the spool (rates unknown). */
  live: boolean;
  snapshot: StatsSnapshot;
}

/** Records (not checkpoints) in the log after byte `offset`, counted without the key. */
export function recordsAfter(logPath: string, offset: number): number {
  let fd: number;
  try {
    fd = openSync(logPath, "r");
  } catch {
    return 0;
  }
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    let pos = offset;
    let count = 0;
    let atLineStart = true;
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, pos);
      if (n === 0) return count;
      let i = 0;
      for (; i < n; i++) {
        if (atLineStart) {
          if (i + 3 >= n && n === buf.length) break; // the line's prefix straddles the chunk: re-read from it
          // records are "v2:r:…", checkpoints "v2:c:…"
          if (buf[i] === 0x76 && buf[i + 3] === 0x72) count++;
        }
        atLineStart = buf[i] === 0x0a;
      }
      pos += i;
    }
  } finally {
    closeSync(fd);
  }
}

export function readStats(logPath: string, now = Date.now()): StatsView {
  const auditDir = dirname(logPath);
  try {
    const snap = JSON.parse(readFileSync(join(auditDir, STATS_FILE), "utf8")) as StatsSnapshot;
    if (now - Date.parse(snap.updated) < 5000 && alive(snap.pid)) return { live: true, snapshot: snap };
  } catch {}
  const logSeq = readChainHead(logPath).seq;
  let names: string[] = [];
  try {
    names = readdirSync(join(auditDir, "spool")).filter((n) => statSync(spoolDir(auditDir, n)).isDirectory());
  } catch {}
  let last: StatsSnapshot | undefined;
  try {
    last = JSON.parse(readFileSync(join(auditDir, STATS_FILE), "utf8")) as StatsSnapshot;
  } catch {}
  const destinations = names.sort().map((name) => {
    const cursor = readCursor(spoolDir(auditDir, name)) ?? { seq: 0, offset: 0 };
    const delivered = cursor.seq;
    const prev = last?.destinations.find((d) => d.name === name);
    return {
      name,
      transport: prev?.transport ?? "?",
      host: prev?.host ?? "?",
      port: prev?.port ?? 0,
      format: prev?.format ?? ("cef" as const),
      state: "stopped" as const,
      connected: false,
      ...(prev?.lastError !== undefined ? { lastError: prev.lastError } : {}),
      sent: prev?.sent ?? 0,
      bytes: prev?.bytes ?? 0,
      filtered: prev?.filtered ?? 0,
      unreadable: prev?.unreadable ?? 0,
      resends: prev?.resends ?? 0,
      deliveredSeq: delivered,
      readSeq: delivered,
      backlog: recordsAfter(logPath, cursor.offset),
      eventsPerSec: 0,
      bytesPerSec: 0,
    };
  });
  return { live: false, snapshot: { pid: 0, updated: new Date(now).toISOString(), logSeq, destinations } };
}

/** Human-readable table (one destination per line). */
export function formatStats(view: StatsView): string {
  const s = view.snapshot;
  const lines = [
    view.live
      ? `server pid ${s.pid}, updated ${s.updated}; audit log at entry ${s.logSeq}${s.logFailure ? `; LOG NOT WRITABLE (${s.logFailure})` : ""}`
      : `no running server (figures from the spool); audit log at entry ${s.logSeq}`,
  ];
  if (s.destinations.length === 0) lines.push("no SIEM destinations");
  for (const d of s.destinations) {
    lines.push(
      `${d.name}: ${d.format} ${d.transport} ${d.host}:${d.port} ${d.state}` +
        ` | ${d.eventsPerSec} events/s ${d.bytesPerSec} B/s | sent ${d.sent} (${d.bytes} B), filtered ${d.filtered},` +
        ` resent ${d.resends} | delivered up to ${d.deliveredSeq}, backlog ${d.backlog}` +
        (d.lastError ? ` | last error: ${d.lastError}` : ""),
    );
  }
  return `${lines.join("\n")}\n`;
}
