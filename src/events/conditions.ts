// Does an event satisfy a rule's conditions? Every condition present must hold (AND); lists inside one condition
// are alternatives (OR). Paths are global; a rename is matched on its target (where the file now is).
import type { TriggerEvent } from "./event.ts";
import { globMatches } from "./glob.ts";
import type { Conditions } from "./schema.ts";

export interface Actor {
  /** Groups of the event's effective user (empty when the user is unknown, e.g. a failed login). */
  groups: readonly string[];
}

const DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const formatters = new Map<string, Intl.DateTimeFormat>();

/** Weekday and minutes since midnight of `time` in `timeZone` (throws RangeError for an unknown zone). */
export function localTime(time: Date, timeZone = "UTC"): { day: string; minutes: number } {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      weekday: "short",
      hour: "2-digit",
      minute: "2-digit",
    });
    formatters.set(timeZone, f);
  }
  const parts = Object.fromEntries(f.formatToParts(time).map((p) => [p.type, p.value]));
  return { day: parts.weekday.toLowerCase().slice(0, 3), minutes: Number(parts.hour) * 60 + Number(parts.minute) };
}

function minutesOf(hhmm: string): number {
  return Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));
}

export function inTimeWindow(w: NonNullable<Conditions["time"]>, at: Date): boolean {
  const { day, minutes } = localTime(at, w.timeZone);
  const from = minutesOf(w.from);
  const to = minutesOf(w.to);
  if (from <= to) {
    if (w.days && !w.days.includes(day as (typeof w.days)[number])) return false;
    return minutes >= from && minutes < to;
  }
  // Spans midnight: the early-morning part belongs to the window that started the previous day.
  const started = minutes >= from ? day : minutes < to ? DAY_NAMES[(DAY_NAMES.indexOf(day) + 6) % 7] : undefined;
  if (started === undefined) return false;
  return !w.days || w.days.includes(started as (typeof w.days)[number]);
}

/** Why the event does not satisfy the conditions (the first failing one), or undefined when it does. */
export function mismatch(c: Conditions, e: TriggerEvent, actor: Actor): string | undefined {
  if (c.users && !c.users.includes(e.user) && !c.users.includes(e.effectiveUser)) {
    return `user ${e.effectiveUser} is not one of ${c.users.join(", ")}`;
  }
  if (c.groups && !c.groups.some((g) => actor.groups.includes(g))) {
    return `${e.effectiveUser} is not a member of ${c.groups.join(", ")}`;
  }
  if (c.protocols && (e.protocol === undefined || !c.protocols.includes(e.protocol as (typeof c.protocols)[number]))) {
    return `protocol ${e.protocol ?? "(none)"} is not one of ${c.protocols.join(", ")}`;
  }
  if (c.paths) {
    const path = e.targetPath ?? e.path;
    if (path === undefined || !c.paths.some((g) => globMatches(path, g))) {
      return `path ${path ?? "(none)"} matches none of ${c.paths.join(", ")}`;
    }
  }
  if (c.size) {
    const { min, max } = c.size;
    if (e.size === undefined || (min !== undefined && e.size < min) || (max !== undefined && e.size > max)) {
      return `size ${e.size ?? "(none)"} is outside ${min ?? 0}..${max ?? "∞"}`;
    }
  }
  if (c.time && !inTimeWindow(c.time, new Date(e.time))) {
    return `${e.time} is outside ${c.time.from}-${c.time.to}${c.time.days ? ` on ${c.time.days.join(",")}` : ""}`;
  }
  return undefined;
}

export function matches(c: Conditions, e: TriggerEvent, actor: Actor): boolean {
  return mismatch(c, e, actor) === undefined;
}
