// The auditor's side: the audit log with filters (user, event, outcome, path, time), charts of transfers and logins
// over time, failed logins by source and user, files per key version (what a rotation still has to rewrap), and the
// SIEM destinations' delivery figures (from /metrics).
import { useState } from "preact/hooks";
import { get, qs } from "./api.ts";
import { BarChart, HBars } from "./charts.tsx";
import { bytes, when } from "./format.ts";
import { DataTable } from "./table.tsx";
import { ErrorText, useLoad } from "./ui.tsx";

export type AuditTab = "records" | "charts" | "delivery";

interface Rec {
  time: string;
  action: string;
  outcome: "success" | "failure";
  user: string;
  effectiveUser?: string;
  protocol?: string;
  sourceIp?: string;
  path?: string;
  targetPath?: string;
  size?: number;
  keyRef?: string;
  method?: string;
  reason?: string;
  target?: string;
  detail?: string;
}
interface AuditMatch {
  seq: number;
  record: Rec;
}

const ACTIONS = [
  "login",
  "logout",
  "upload",
  "download",
  "delete",
  "rename",
  "mkdir",
  "rmdir",
  "share.use",
  "user.add",
  "user.remove",
  "group.change",
  "folder.change",
  "token.create",
  "token.revoke",
  "defender.ban",
  "defender.unban",
  "key.create",
  "key.rotate",
  "key.request",
  "key.approve",
  "key.reject",
  "key.destroy",
  "key.wrap",
  "config.change",
];

interface Filters {
  user?: string;
  action?: string;
  outcome?: string;
  path?: string;
  since?: string;
  until?: string;
  limit?: string;
}

function toIso(local: string | undefined): string | undefined {
  if (!local) return undefined;
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}

function Records() {
  const [filters, setFilters] = useState<Filters>({ limit: "200" });
  const result = useLoad(
    () =>
      get<{ records: AuditMatch[] }>(
        `/api/v1/audit${qs({
          user: filters.user,
          action: filters.action,
          outcome: filters.outcome,
          path: filters.path,
          since: toIso(filters.since),
          limit: filters.limit,
        })}`,
      ),
    [JSON.stringify(filters)],
  );
  const until = toIso(filters.until);
  const rows = (result.data?.records ?? []).filter((m) => !until || m.record.time <= until).reverse();
  return (
    <>
      <h1>Audit log</h1>
      <form
        class="filters"
        aria-label="Audit filters"
        onSubmit={(e) => {
          e.preventDefault();
          const f = new FormData(e.currentTarget as HTMLFormElement);
          const v = (k: string) => String(f.get(k) ?? "").trim() || undefined;
          setFilters({
            user: v("user"),
            action: v("action"),
            outcome: v("outcome"),
            path: v("path"),
            since: v("since"),
            until: v("until"),
            limit: v("limit") ?? "200",
          });
        }}
      >
        <p class="field">
          <label for="a-user">User</label>
          <input id="a-user" name="user" />
        </p>
        <p class="field">
          <label for="a-action">Event</label>
          <input id="a-action" name="action" list="a-actions" />
          <datalist id="a-actions">
            {ACTIONS.map((a) => (
              <option key={a} value={a} />
            ))}
          </datalist>
        </p>
        <p class="field">
          <label for="a-outcome">Outcome</label>
          <select id="a-outcome" name="outcome">
            <option value="">any</option>
            <option value="success">success</option>
            <option value="failure">failure</option>
          </select>
        </p>
        <p class="field">
          <label for="a-path">Path starts with</label>
          <input id="a-path" name="path" />
        </p>
        <p class="field">
          <label for="a-since">From</label>
          <input id="a-since" name="since" type="datetime-local" step="1" />
        </p>
        <p class="field">
          <label for="a-until">Until</label>
          <input id="a-until" name="until" type="datetime-local" step="1" />
        </p>
        <p class="field">
          <label for="a-limit">At most</label>
          <input id="a-limit" name="limit" type="number" min="1" max="10000" value="200" />
        </p>
        <button type="submit">Apply filters</button>
      </form>
      <ErrorText error={result.error} />
      <p role="status" class="muted">
        {result.loading ? "Loading…" : `${rows.length} record(s), newest first`}
      </p>
      <DataTable
        caption="Audit records"
        rows={result.data ? rows : undefined}
        rowKey={(m) => String(m.seq)}
        rowClass={(m) => (m.record.outcome === "failure" ? "failure" : undefined)}
        empty="No record matches."
        columns={[
          { label: "#", cell: (m) => m.seq, class: "num" },
          { label: "Time", cell: (m) => when(m.record.time), class: "time" },
          { label: "Event", cell: (m) => m.record.action },
          { label: "Outcome", cell: (m) => m.record.outcome },
          {
            label: "User",
            cell: (m) =>
              m.record.effectiveUser && m.record.effectiveUser !== m.record.user
                ? `${m.record.user} as ${m.record.effectiveUser}`
                : m.record.user,
          },
          { label: "Door", cell: (m) => [m.record.protocol, m.record.sourceIp].filter(Boolean).join(" ") },
          {
            label: "Object",
            cell: (m) =>
              [m.record.path, m.record.targetPath ? `→ ${m.record.targetPath}` : "", m.record.target]
                .filter(Boolean)
                .join(" "),
          },
          {
            label: "Details",
            cell: (m) =>
              [
                m.record.size !== undefined ? bytes(m.record.size) : "",
                m.record.keyRef,
                m.record.method,
                m.record.reason,
                m.record.detail,
              ]
                .filter(Boolean)
                .join(" · "),
          },
        ]}
      />
    </>
  );
}

const RANGES = {
  "24h": { ms: 24 * 3600e3, step: 3600e3 },
  "7d": { ms: 7 * 86400e3, step: 86400e3 },
  "30d": { ms: 30 * 86400e3, step: 86400e3 },
};
type Range = keyof typeof RANGES;

interface KeyStatus {
  keyRef: string | null;
  files: number;
  current: boolean;
}

function bucketLabels(range: Range, start: number, n: number): string[] {
  const { step } = RANGES[range];
  return Array.from({ length: n }, (_, i) => {
    const d = new Date(start + i * step);
    return step < 86400e3 ? `${String(d.getHours()).padStart(2, "0")}h` : `${d.getMonth() + 1}/${d.getDate()}`;
  });
}

function Charts() {
  const [range, setRange] = useState<Range>("24h");
  const { ms, step } = RANGES[range];
  const now = Date.now();
  const start = Math.floor((now - ms) / step) * step + step;
  const n = Math.round(ms / step);
  const data = useLoad(
    () => get<{ records: AuditMatch[] }>(`/api/v1/audit${qs({ since: new Date(start).toISOString(), limit: 10000 })}`),
    [range],
  );
  const keys = useLoad(() => get<{ versions: KeyStatus[] }>("/api/v1/keys/status"), []);
  const zero = () => new Array<number>(n).fill(0);
  const up = zero();
  const down = zero();
  const ok = zero();
  const bad = zero();
  const bySource = new Map<string, number>();
  const byUser = new Map<string, number>();
  for (const { record: r } of data.data?.records ?? []) {
    const i = Math.floor((Date.parse(r.time) - start) / step);
    if (i < 0 || i >= n) continue;
    if (r.action === "upload" && r.outcome === "success") up[i]++;
    else if (r.action === "download" && r.outcome === "success") down[i]++;
    else if (r.action === "login") {
      if (r.outcome === "success") ok[i]++;
      else {
        bad[i]++;
        const src = r.sourceIp ?? "?";
        bySource.set(src, (bySource.get(src) ?? 0) + 1);
        byUser.set(r.user, (byUser.get(r.user) ?? 0) + 1);
      }
    }
  }
  const top = (m: Map<string, number>) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 8)
      .map(([label, value]) => ({ label, value, class: "bar-bad" }));
  const labels = bucketLabels(range, start, n);
  const truncated = (data.data?.records.length ?? 0) >= 10000;
  return (
    <>
      <h1>Charts</h1>
      <p class="field narrow">
        <label for="c-range">Period</label>
        <select id="c-range" value={range} onChange={(e) => setRange(e.currentTarget.value as Range)}>
          <option value="24h">last 24 hours</option>
          <option value="7d">last 7 days</option>
          <option value="30d">last 30 days</option>
        </select>
      </p>
      <ErrorText error={data.error} />
      {truncated && <p class="muted">Only the newest 10,000 records of the period are counted.</p>}
      <div class="cards">
        <BarChart
          title="Transfers"
          buckets={labels}
          series={[
            { label: "uploads", class: "bar-ok", values: up },
            { label: "downloads", class: "bar-alt", values: down },
          ]}
        />
        <BarChart
          title="Logins"
          buckets={labels}
          series={[
            { label: "succeeded", class: "bar-ok", values: ok },
            { label: "failed", class: "bar-bad", values: bad },
          ]}
        />
        <HBars title="Failed logins by source address" rows={top(bySource)} />
        <HBars title="Failed logins by user name" rows={top(byUser)} />
        {keys.error ? (
          <ErrorText error={keys.error} />
        ) : (
          <HBars
            title="Files per key version (grey: still to rewrap)"
            rows={(keys.data?.versions ?? []).map((v) => ({
              label: `${v.keyRef ?? "(none)"}${v.current ? "" : " (old)"}`,
              value: v.files,
              class: v.current ? "bar-ok" : "bar-old",
            }))}
          />
        )}
      </div>
    </>
  );
}

interface Metric {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export function parseProm(text: string): Metric[] {
  const out: Metric[] = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

function Delivery() {
  const metrics = useLoad(() => get<string>("/metrics").then(parseProm), []);
  const all = metrics.data ?? [];
  const dests = [...new Set(all.filter((m) => m.labels.destination).map((m) => m.labels.destination))];
  const v = (name: string, d?: string) =>
    all.find((m) => m.name === name && (d === undefined || m.labels.destination === d))?.value;
  return (
    <>
      <h1>SIEM delivery</h1>
      <ErrorText error={metrics.error} />
      <button type="button" onClick={metrics.reload}>
        Refresh
      </button>
      <p>
        Audit log: {v("atrest_audit_log_entries") ?? "?"} entries,{" "}
        {v("atrest_audit_log_writable") === 1 ? "writable" : "NOT writable"}.
      </p>
      <DataTable
        caption="SIEM destinations"
        rows={metrics.data ? dests : undefined}
        rowKey={(d) => d}
        empty="No SIEM destination is configured (audit.destinations in the config file)."
        rowClass={(d) => (v("atrest_audit_destination_connected", d) === 1 ? undefined : "failure")}
        columns={[
          { label: "Destination", cell: (d) => d },
          { label: "Connected", cell: (d) => (v("atrest_audit_destination_connected", d) === 1 ? "yes" : "no") },
          { label: "Events sent", cell: (d) => v("atrest_audit_events_sent_total", d) ?? 0, class: "num" },
          { label: "Bytes sent", cell: (d) => bytes(v("atrest_audit_bytes_sent_total", d) ?? 0), class: "num" },
          { label: "Backlog", cell: (d) => v("atrest_audit_backlog_events", d) ?? 0, class: "num" },
          { label: "Resent", cell: (d) => v("atrest_audit_events_resent_total", d) ?? 0, class: "num" },
          { label: "Filtered out", cell: (d) => v("atrest_audit_events_filtered_total", d) ?? 0, class: "num" },
          { label: "Events/s", cell: (d) => v("atrest_audit_events_per_second", d) ?? 0, class: "num" },
        ]}
      />
    </>
  );
}

export function Audit(props: { tab: AuditTab }) {
  if (props.tab === "charts") return <Charts />;
  if (props.tab === "delivery") return <Delivery />;
  return <Records />;
}
