// Questions asked of the audit log: login history of a user, access history of a file, the last records. Plain
// functions over the decrypted log (streamed in batches, memory bounded by the answer), called by `atrest audit …`
// and meant for the web UI / API.
import type { KeyObject } from "node:crypto";
import { LogReader } from "./reader.ts";
import type { AuditAction, AuditRecord } from "./types.ts";

export interface QueryOptions {
  /** Only records at or after this time. */
  since?: Date;
  /** Keep the last `limit` matches (default: all). */
  limit?: number;
}

export interface Match {
  seq: number;
  record: AuditRecord;
}

/** Streams every readable record of the log, in order. */
export function* scanLog(path: string, key: KeyObject): Generator<Match> {
  const reader = new LogReader(path, key);
  try {
    let at = { seq: 0, offset: 0 };
    for (;;) {
      const batch = reader.read(at, 4096);
      for (const e of batch.entries) if (e.record) yield { seq: e.seq, record: e.record };
      if (batch.next.offset === at.offset) return;
      at = batch.next;
    }
  } finally {
    reader.close();
  }
}

/** The matches of `pick`, oldest first, limited to the newest `limit`. */
export function query(path: string, key: KeyObject, pick: (r: AuditRecord) => boolean, o: QueryOptions = {}): Match[] {
  const since = o.since?.toISOString();
  const out: Match[] = [];
  for (const m of scanLog(path, key)) {
    if (since !== undefined && m.record.time < since) continue;
    if (!pick(m.record)) continue;
    out.push(m);
    if (o.limit !== undefined && out.length > o.limit) out.shift();
  }
  return out;
}

/** Logins (successes and failures, with method, reason and source) and logouts of `user`. */
export function loginHistory(path: string, key: KeyObject, user: string, o: QueryOptions = {}): Match[] {
  return query(path, key, (r) => (r.action === "login" || r.action === "logout") && r.user === user, o);
}

const FILE_ACTIONS = new Set<AuditAction>([
  "upload",
  "download",
  "delete",
  "rename",
  "mkdir",
  "rmdir",
  "permission.change",
  "attrs.change",
  "symlink",
  "share.use",
]);

/**
 * Every access to `filePath`, as its users saw it or as its global path: records carry the path in the user's view,
 * so `homes` (user → home) lets a global path like /alice/report.pdf match alice's /report.pdf. Renames match on
 * either side.
 */
export function fileHistory(
  path: string,
  key: KeyObject,
  filePath: string,
  homes: ReadonlyMap<string, string> = new Map(),
  o: QueryOptions = {},
): Match[] {
  const global = (user: string, p: string | undefined) => {
    if (p === undefined) return undefined;
    const home = homes.get(user);
    if (!home || home === "/") return p;
    return p === "/" ? home : `${home}${p}`;
  };
  return query(
    path,
    key,
    (r) => {
      if (!FILE_ACTIONS.has(r.action)) return false;
      const who = r.effectiveUser ?? r.user;
      return (
        r.path === filePath ||
        r.targetPath === filePath ||
        global(who, r.path) === filePath ||
        global(who, r.targetPath) === filePath
      );
    },
    o,
  );
}

/** Parses --since: an ISO date/time, or a duration back from now (`30m`, `12h`, `7d`). */
export function parseSince(value: string, now = Date.now()): Date {
  const rel = /^(\d+)([smhd])$/.exec(value);
  if (rel) {
    const unit = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[rel[2] as "s" | "m" | "h" | "d"];
    return new Date(now - Number(rel[1]) * unit);
  }
  const t = Date.parse(value);
  if (Number.isNaN(t))
    throw new RangeError(`--since: "${value}" is neither a date (2026-01-31, ISO 8601) nor a duration (30m, 12h, 7d)`);
  return new Date(t);
}
