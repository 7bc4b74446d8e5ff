// The server's audit pipeline: one Destination per configured SIEM, woken by every group commit of the audit log
// (and polling, for records a CLI process appended), metered in a metrics registry and in <data>/audit/stats.json
// (rewritten every second, read by `atrest audit stats`). Destinations over their backlog bound slow producers down
// through the log's admit gate.
import { createHash, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { writeFileDurable, writeFileDurableSync } from "../fsutil/durable.ts";
import type { Logger } from "../logger.ts";
import type { Registry } from "../metrics/registry.ts";
import type { AuditConfig, DestinationConfig } from "./config.ts";
import { Destination, type DestinationStats, spoolDir } from "./destination.ts";
import { CLI_ADMIN, compileFilter, type Privileged } from "./filter.ts";
import type { AuditLog } from "./log.ts";
import { LogReader } from "./reader.ts";
import type { AuditRecord } from "./types.ts";

export const STATS_FILE = "stats.json";
/** Records kept in memory for the destinations (beyond it they are decrypted from the log again). */
const RECENT_MAX = 200_000;

export interface DestinationStatus extends DestinationStats {
  backlog: number;
  eventsPerSec: number;
  bytesPerSec: number;
}

export interface StatsSnapshot {
  pid: number;
  updated: string;
  /** Last sequence number in the audit log. */
  logSeq: number;
  /** Why the audit log cannot be written, while that lasts. */
  logFailure?: string;
  destinations: DestinationStatus[];
}

/**
 * Where the pipeline learns who is privileged (for filters that may not hide them): the file server's user store, or
 * the key manager's client list (custodian and admin certificates).
 */
export interface UserSource {
  listUsers(): Promise<readonly { name: string; role?: string }[]>;
}

/** The privileged users in the store (admin or custodian role) plus the CLI's admin principal. */
export class PrivilegedUsers implements Privileged {
  #roles = new Map<string, string>();
  readonly #store: UserSource;

  constructor(store: UserSource) {
    this.#store = store;
  }

  async refresh(): Promise<void> {
    const next = new Map<string, string>();
    for (const u of await this.#store.listUsers()) {
      // read defensively: stores from before the roles migration have no role column
      const role = (u as { role?: string }).role;
      if (role === "admin" || role === "custodian") next.set(u.name, role);
    }
    this.#roles = next;
  }

  has(user: string): boolean {
    return user === CLI_ADMIN || this.#roles.has(user);
  }

  roleOf(user: string): string | undefined {
    return user === CLI_ADMIN
      ? "the CLI's admin principal"
      : this.#roles.has(user)
        ? `role ${this.#roles.get(user)}`
        : undefined;
  }
}

export interface PipelineDeps {
  audit: AuditLog;
  /** The audit key (to decrypt records for sending). */
  key: KeyObject;
  store: UserSource;
  logger: Logger;
  registry?: Registry;
}

export class AuditPipeline {
  readonly #deps: PipelineDeps;
  readonly #destinations: Destination[];
  readonly #privileged: PrivilegedUsers;
  readonly #reader: LogReader;
  readonly #dir: string;
  readonly #timers: NodeJS.Timeout[] = [];
  readonly #unsubscribe: (() => void)[] = [];
  #last = new Map<string, { sent: number; bytes: number; at: number; eps: number; bps: number }>();

  readonly #recent: Map<number, AuditRecord>;

  private constructor(
    deps: PipelineDeps,
    destinations: Destination[],
    privileged: PrivilegedUsers,
    reader: LogReader,
    recent: Map<number, AuditRecord>,
  ) {
    this.#recent = recent;
    this.#deps = deps;
    this.#destinations = destinations;
    this.#privileged = privileged;
    this.#reader = reader;
    this.#dir = dirname(deps.audit.path);
  }

  /** Validates the destinations against the store (privileged users), then starts delivering. */
  static async start(config: AuditConfig, deps: PipelineDeps): Promise<AuditPipeline> {
    const privileged = new PrivilegedUsers(deps.store);
    await privileged.refresh();
    // Records this process writes are kept until every destination has read them, so the sender does not decrypt
    // what it just encrypted; records from other processes (CLI) and after a restart are decrypted from the file.
    const recent = new Map<number, AuditRecord>();
    const reader = new LogReader(deps.audit.path, deps.key, (seq) => recent.get(seq));
    const auditDir = dirname(deps.audit.path);
    const destinations = config.destinations.map((d) => {
      const filter = compileFilter(d.filter, `audit destination "${d.name}" filter`, privileged);
      return new Destination(toOptions(d), {
        reader,
        filter,
        logger: deps.logger,
        dir: spoolDir(auditDir, d.name),
        onStateChange: () => void pipeline.#writeStats(),
      });
    });
    const pipeline: AuditPipeline = new AuditPipeline(deps, destinations, privileged, reader, recent);
    pipeline.#recordConfigChange(config);
    pipeline.#begin(config);
    return pipeline;
  }

  get destinations(): readonly Destination[] {
    return this.#destinations;
  }

  snapshot(): StatsSnapshot {
    const now = Date.now();
    const logSeq = Math.max(this.#deps.audit.headSeq, ...this.#destinations.map((d) => d.stats().readSeq));
    const destinations = this.#destinations.map((d) => {
      const s = d.stats();
      const prev = this.#last.get(s.name) ?? { sent: 0, bytes: 0, at: now, eps: 0, bps: 0 };
      let { eps, bps } = prev;
      if (now - prev.at >= 900) {
        const dt = (now - prev.at) / 1000;
        eps = Math.round((s.sent - prev.sent) / dt);
        bps = Math.round((s.bytes - prev.bytes) / dt);
        this.#last.set(s.name, { sent: s.sent, bytes: s.bytes, at: now, eps, bps });
      } else if (!this.#last.has(s.name)) this.#last.set(s.name, prev);
      return { ...s, backlog: Math.max(0, logSeq - s.deliveredSeq), eventsPerSec: eps, bytesPerSec: bps };
    });
    const failure = this.#deps.audit.failure;
    return {
      pid: process.pid,
      updated: new Date(now).toISOString(),
      logSeq,
      ...(failure !== undefined ? { logFailure: failure } : {}),
      destinations,
    };
  }

  /** Delivers what is in the log (a few seconds at most), closes connections cleanly, saves the cursors. */
  async stop(drainMs = 3000): Promise<void> {
    for (const t of this.#timers) clearInterval(t);
    for (const u of this.#unsubscribe) u();
    this.#deps.audit.flush();
    await Promise.all(this.#destinations.map((d) => d.stop(drainMs)));
    await this.#statsWrite;
    await this.#writeStats();
    this.#reader.close();
  }

  #begin(config: AuditConfig): void {
    const { audit, registry } = this.#deps;
    this.#unsubscribe.push(
      audit.onRecord((record, seq) => {
        if (this.#destinations.length > 0 && this.#recent.size < RECENT_MAX) this.#recent.set(seq, record);
        if (!this.#wakePending) {
          this.#wakePending = true;
          queueMicrotask(() => {
            this.#wakePending = false;
            this.#pruneRecent();
            for (const d of this.#destinations) d.wake();
          });
        }
      }),
    );
    const bounds = config.destinations.map((d) => d.maxBacklog ?? 1_000_000);
    this.#unsubscribe.push(
      audit.addGate(() => {
        if (!this.#overBound(bounds)) return undefined;
        return new Promise<void>((resolve) => {
          const check = setInterval(() => {
            if (!this.#overBound(bounds)) {
              clearInterval(check);
              resolve();
            }
          }, 100);
        });
      }),
    );
    for (const d of this.#destinations) d.start();
    // `audit stats` sees a running server from its start, not from the first periodic write a second later
    void this.#writeStats();
    this.#timers.push(setInterval(() => void this.#writeStats(), 1000).unref());
    this.#timers.push(
      setInterval(() => {
        this.#privileged.refresh().catch((err) => this.#deps.logger.warn({ err }, "audit: cannot refresh user roles"));
      }, 5000).unref(),
    );
    if (registry) this.#register(registry);
  }

  #wakePending = false;

  /** Drops cached records every destination has read (Map order is insertion order, i.e. seq order). */
  #pruneRecent(): void {
    if (this.#recent.size === 0) return;
    let min = Number.POSITIVE_INFINITY;
    for (const d of this.#destinations) min = Math.min(min, d.stats().readSeq);
    for (const seq of this.#recent.keys()) {
      if (seq > min) break;
      this.#recent.delete(seq);
    }
  }

  #overBound(bounds: number[]): boolean {
    const head = this.#deps.audit.headSeq;
    return this.#destinations.some(
      (d, i) => (bounds[i] as number) > 0 && head - d.deliveredSeq > (bounds[i] as number),
    );
  }

  /** Advisory file for `audit stats`: atomic for readers, not fsynced, written off the event loop. */
  #writeStats(): Promise<void> {
    if (this.#statsWrite) {
      // a change (a destination connected) while a write is in flight: written again after it, once
      this.#statsDirty = true;
      return this.#statsWrite;
    }
    this.#statsWrite = (async () => {
      do {
        this.#statsDirty = false;
        const text = `${JSON.stringify(this.snapshot(), null, 2)}\n`;
        await writeFileDurable(join(this.#dir, STATS_FILE), text, { sync: false }).catch((err) =>
          this.#deps.logger.warn({ err }, "audit: cannot write stats file"),
        );
      } while (this.#statsDirty);
    })().finally(() => {
      this.#statsWrite = undefined;
    });
    return this.#statsWrite;
  }

  #statsDirty = false;
  #statsWrite: Promise<void> | undefined;

  /** Records an audit.config.change when the destinations differ from the last start's. */
  #recordConfigChange(config: AuditConfig): void {
    const digestPath = join(this.#dir, "config.sha256");
    const digest = createHash("sha256").update(JSON.stringify(config)).digest("hex");
    let previous: string | undefined;
    try {
      previous = readFileSync(digestPath, "utf8").trim();
    } catch {}
    if (previous === digest) return;
    this.#deps.audit.record({
      action: "audit.config.change",
      outcome: "success",
      user: "atrest",
      protocol: "cli",
      detail:
        `failClosed ${config.failClosed}; destinations: ` +
        (config.destinations.map((d) => `${d.name} (${d.transport} ${d.host}:${d.port} ${d.format})`).join(", ") ||
          "none"),
    });
    writeFileDurableSync(digestPath, `${digest}\n`);
  }

  #register(r: Registry): void {
    const labels = ["destination"];
    const sent = r.counter(
      "atrest_audit_events_sent_total",
      "Audit events written to a SIEM destination (resends included).",
      labels,
    );
    const bytes = r.counter(
      "atrest_audit_bytes_sent_total",
      "Bytes (framed syslog) written to a SIEM destination.",
      labels,
    );
    const filtered = r.counter(
      "atrest_audit_events_filtered_total",
      "Audit events a destination's filter left out.",
      labels,
    );
    const resends = r.counter(
      "atrest_audit_events_resent_total",
      "Audit events resent after a connection loss.",
      labels,
    );
    const backlog = r.gauge(
      "atrest_audit_backlog_events",
      "Audit log entries not yet delivered to a destination.",
      labels,
    );
    const connected = r.gauge(
      "atrest_audit_destination_connected",
      "1 when the destination's connection is up.",
      labels,
    );
    const eps = r.gauge("atrest_audit_events_per_second", "Events per second sent over the last second.", labels);
    const bps = r.gauge("atrest_audit_bytes_per_second", "Bytes per second sent over the last second.", labels);
    const logSeq = r.gauge("atrest_audit_log_entries", "Last sequence number in the hash-chained audit log.");
    const logUp = r.gauge("atrest_audit_log_writable", "1 while the audit log can be written.");
    const seen = new Map<string, DestinationStatus>();
    r.onCollect(() => {
      const snap = this.snapshot();
      logSeq.set(undefined, snap.logSeq);
      logUp.set(undefined, snap.logFailure === undefined ? 1 : 0);
      for (const d of snap.destinations) {
        const l = { destination: d.name };
        const prev = seen.get(d.name);
        sent.inc(l, d.sent - (prev?.sent ?? 0));
        bytes.inc(l, d.bytes - (prev?.bytes ?? 0));
        filtered.inc(l, d.filtered - (prev?.filtered ?? 0));
        resends.inc(l, d.resends - (prev?.resends ?? 0));
        seen.set(d.name, d);
        backlog.set(l, d.backlog);
        connected.set(l, d.connected ? 1 : 0);
        eps.set(l, d.eventsPerSec);
        bps.set(l, d.bytesPerSec);
      }
    });
  }
}

function toOptions(d: DestinationConfig): ConstructorParameters<typeof Destination>[0] {
  return { ...d, format: d.format as DestinationStatus["format"] };
}
