// Schedules of `schedule` rules: a fixed interval ("every": "15m") or a 5-field cron expression in UTC
// ("cron": "0 2 * * *": minute hour day-of-month month day-of-week, with *, lists, ranges and /steps).
import { AtrestError } from "../errors.ts";

const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "90s", "15m", "2h", "1d" → milliseconds (at least one second). */
export function parseInterval(text: string): number {
  const m = /^(\d+)\s*([smhd])$/.exec(text.trim());
  const ms = m ? Number(m[1]) * UNITS[m[2]] : Number.NaN;
  if (!Number.isSafeInteger(ms) || ms < 1000) {
    throw new AtrestError("INVALID_INPUT", `bad interval "${text}": use a number with s, m, h or d (at least 1s)`);
  }
  return ms;
}

interface CronField {
  min: number;
  max: number;
  name: string;
}

const FIELDS: CronField[] = [
  { min: 0, max: 59, name: "minute" },
  { min: 0, max: 23, name: "hour" },
  { min: 1, max: 31, name: "day of month" },
  { min: 1, max: 12, name: "month" },
  { min: 0, max: 7, name: "day of week" },
];

export interface Cron {
  sets: Set<number>[];
  /** Whether day-of-month / day-of-week were restricted (cron ORs them when both are). */
  domStar: boolean;
  dowStar: boolean;
}

function parseField(text: string, f: CronField, expr: string): Set<number> {
  const bad = () =>
    new AtrestError("INVALID_INPUT", `bad cron "${expr}": ${f.name} "${text}" (allowed ${f.min}-${f.max})`);
  const out = new Set<number>();
  for (const part of text.split(",")) {
    const m = /^(\*|(\d+)(?:-(\d+))?)(?:\/(\d+))?$/.exec(part);
    if (!m) throw bad();
    let lo = f.min;
    let hi = f.max;
    if (m[1] !== "*") {
      lo = Number(m[2]);
      hi = m[3] !== undefined ? Number(m[3]) : m[4] !== undefined ? f.max : lo;
    }
    const step = m[4] !== undefined ? Number(m[4]) : 1;
    if (lo < f.min || hi > f.max || lo > hi || step < 1) throw bad();
    for (let v = lo; v <= hi; v += step) out.add(f.name === "day of week" && v === 7 ? 0 : v);
  }
  return out;
}

export function parseCron(expr: string): Cron {
  const parts = expr.trim().split(/\s+/);
  if (parts.length !== 5) {
    throw new AtrestError("INVALID_INPUT", `bad cron "${expr}": want 5 fields (minute hour day month weekday)`);
  }
  return {
    sets: parts.map((p, i) => parseField(p, FIELDS[i], expr)),
    domStar: parts[2] === "*",
    dowStar: parts[4] === "*",
  };
}

function timeMatches(c: Cron, d: Date): boolean {
  const [minute, hour] = c.sets;
  return minute.has(d.getUTCMinutes()) && hour.has(d.getUTCHours());
}

function dayMatches(c: Cron, d: Date): boolean {
  const [, , dom, month, dow] = c.sets;
  if (!month.has(d.getUTCMonth() + 1)) return false;
  const domOk = dom.has(d.getUTCDate());
  const dowOk = dow.has(d.getUTCDay());
  // POSIX cron: when both day fields are restricted, either may match.
  if (!c.domStar && !c.dowStar) return domOk || dowOk;
  return domOk && dowOk;
}

/** First minute boundary strictly after `after` (ms) that the expression matches; searches up to ~5 years. */
export function nextCron(c: Cron, after: number): number {
  let t = Math.floor(after / 60_000) * 60_000 + 60_000;
  const limit = t + 5 * 366 * 86_400_000;
  while (t < limit) {
    const d = new Date(t);
    if (!dayMatches(c, d)) {
      // jump to the next midnight: no minute of this day can match
      t = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1);
      continue;
    }
    if (timeMatches(c, d)) return t;
    t += 60_000;
  }
  throw new AtrestError("INVALID_INPUT", "cron expression never matches");
}

export type Schedule = { every: string } | { cron: string };

export function validateSchedule(s: Schedule): void {
  if ("every" in s) parseInterval(s.every);
  else nextCron(parseCron(s.cron), Date.now());
}

/** When a schedule next fires after `last` (the previous firing, or the rule's creation time). */
export function nextFire(s: Schedule, last: number): number {
  return "every" in s ? last + parseInterval(s.every) : nextCron(parseCron(s.cron), last);
}
