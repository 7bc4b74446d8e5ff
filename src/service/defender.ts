// The brute-force defender every door shares (modelled on SFTPGo's defender: a score per event within an observation
// window, a threshold, a ban time that grows for repeat offenders, a safe list). Scores live in this process; bans
// live in the metadata store, so `atrest defender list|unban` (another process) sees and lifts them, and several
// nodes on one store will share them.
//
// Unlike SFTPGo, a failure for an unknown user scores the same as a wrong credential for a known one: counting the
// attempts until a ban would otherwise tell a prober which user names exist.
import { BlockList, isIP } from "node:net";
import type { AuditSink } from "../audit/types.ts";
import { AtrestError } from "../errors.ts";
import type { BanReads, BanRow, MetaStore } from "../store/types.ts";
import { type Actor, actorFields } from "./actor.ts";

export interface DefenderSettings {
  enabled: boolean;
  /** Score at which a source IP is banned. */
  threshold: number;
  /** Score at which a user name is banned (failures for it from any source). */
  userThreshold: number;
  /** Score of one failed login (wrong password or signature, unknown user). */
  scoreFailure: number;
  /** Score of a public key offered that is not authorised (clients offer every key they hold, so default 0). */
  scoreKeyRejected: number;
  /** Failures older than this no longer count. */
  observationSeconds: number;
  banSeconds: number;
  /** Each repeat ban of a subject lasts this much longer than the previous one (percent). */
  banIncrementPercent: number;
  maxBanSeconds: number;
  /** IPs and CIDR ranges the defender never scores or bans. */
  allowList: string[];
}

export const DEFAULT_DEFENDER: DefenderSettings = {
  enabled: true,
  threshold: 15,
  userThreshold: 30,
  scoreFailure: 1,
  scoreKeyRejected: 0,
  observationSeconds: 1800,
  banSeconds: 1800,
  banIncrementPercent: 50,
  maxBanSeconds: 86_400,
  allowList: [],
};

/** A ban row is kept this long after it ends, so a subject that comes back gets a longer ban. */
export const BAN_MEMORY_MS = 86_400_000;
/** Bound on the subjects scored in memory (a scan from many addresses must not grow it without limit). */
const MAX_TRACKED = 10_000;
/** The job user of bans and expiries the defender decides itself. */
export const DEFENDER_PRINCIPAL = "defender";

export type BanStore = BanReads & Pick<MetaStore, "transaction">;
export type BanKind = BanRow["kind"];

export interface Source {
  ip?: string;
  user?: string;
}

export function allowListOf(entries: readonly string[]): BlockList {
  const list = new BlockList();
  for (const entry of entries) {
    const [addr, bits] = entry.split("/");
    const family = isIP(addr);
    if (family === 0) throw new AtrestError("INVALID_INPUT", `defender allow list: not an IP or CIDR: ${entry}`);
    const type = family === 4 ? "ipv4" : "ipv6";
    if (bits === undefined) list.addAddress(addr, type);
    else {
      const prefix = Number(bits);
      if (!Number.isInteger(prefix) || prefix < 0 || prefix > (family === 4 ? 32 : 128)) {
        throw new AtrestError("INVALID_INPUT", `defender allow list: bad prefix length in ${entry}`);
      }
      list.addSubnet(addr, prefix, type);
    }
  }
  return list;
}

export function allowed(list: BlockList, ip: string | undefined): boolean {
  if (!ip) return false;
  const family = isIP(ip);
  if (family === 0) return false;
  // IPv4 clients of a dual-stack listener appear as ::ffff:a.b.c.d
  if (family === 6 && ip.toLowerCase().startsWith("::ffff:") && isIP(ip.slice(7)) === 4) {
    return list.check(ip.slice(7), "ipv4");
  }
  return list.check(ip, family === 4 ? "ipv4" : "ipv6");
}

/** Ban length for the `count`-th ban of a subject. */
export function banDurationMs(s: DefenderSettings, count: number): number {
  const grown = s.banSeconds * (1 + s.banIncrementPercent / 100) ** Math.max(0, count - 1);
  return Math.round(Math.min(s.maxBanSeconds, grown) * 1000);
}

function detailOf(b: BanRow): string {
  return `${b.kind} until ${new Date(b.until).toISOString()} (ban ${b.count})`;
}

export class Defender {
  readonly settings: DefenderSettings;
  readonly #store: BanStore;
  readonly #audit: AuditSink | undefined;
  readonly #now: () => number;
  readonly #allow: BlockList;
  /** `ip:<addr>` / `user:<name>` → recent failures (time, score), oldest first. */
  readonly #scores = new Map<string, { at: number; score: number }[]>();

  constructor(settings: DefenderSettings, store: BanStore, audit?: AuditSink, now: () => number = Date.now) {
    this.settings = settings;
    this.#store = store;
    this.#audit = audit;
    this.#now = now;
    this.#allow = allowListOf(settings.allowList);
  }

  isAllowed(ip: string | undefined): boolean {
    return allowed(this.#allow, ip);
  }

  /** The ban in force on this source (its IP first, then the user name), if any. */
  async banned(src: Source): Promise<BanRow | undefined> {
    if (!this.settings.enabled || this.isAllowed(src.ip)) return undefined;
    const now = this.#now();
    for (const [kind, subject] of subjects(src)) {
      const ban = await this.#store.getBan(kind, subject);
      if (ban && ban.until > now) return ban;
    }
    return undefined;
  }

  /** Scores a failed attempt; returns the bans it caused (already stored and audited). */
  async failure(src: Source, score = this.settings.scoreFailure): Promise<BanRow[]> {
    if (!this.settings.enabled || score <= 0 || this.isAllowed(src.ip)) return [];
    const now = this.#now();
    const out: BanRow[] = [];
    for (const [kind, subject] of subjects(src)) {
      const total = this.#add(`${kind}:${subject}`, now, score);
      const threshold = kind === "ip" ? this.settings.threshold : this.settings.userThreshold;
      if (total < threshold) continue;
      // A banned subject starts from zero: after the ban (or an unban) it gets the full threshold again.
      this.#scores.delete(`${kind}:${subject}`);
      out.push(await this.#ban(kind, subject, now));
    }
    return out;
  }

  /** Current score of a subject within the observation window (for tests and diagnostics). */
  score(kind: BanKind, subject: string): number {
    const cutoff = this.#now() - this.settings.observationSeconds * 1000;
    return (this.#scores.get(`${kind}:${subject}`) ?? []).filter((e) => e.at > cutoff).reduce((n, e) => n + e.score, 0);
  }

  /** Audits bans that have ended and forgets those long over. The server runs it on a timer. */
  async sweep(): Promise<void> {
    const now = this.#now();
    const bans = await this.#store.listBans();
    for (const ban of bans) {
      if (ban.until > now || ban.expiryAudited) continue;
      await this.#store.transaction((tx) => tx.putBan({ ...ban, expiryAudited: true }));
      this.#audit?.record({
        action: "defender.expire",
        outcome: "success",
        user: DEFENDER_PRINCIPAL,
        target: ban.subject,
        ...(ban.kind === "ip" ? { sourceIp: ban.subject } : {}),
        detail: detailOf(ban),
      });
    }
    // Only write when there is something to forget: the server sweeps every few seconds beside CLI writers.
    if (bans.some((b) => b.until < now - BAN_MEMORY_MS)) {
      await this.#store.transaction((tx) => tx.deleteBansBefore(now - BAN_MEMORY_MS));
    }
    const cutoff = now - this.settings.observationSeconds * 1000;
    for (const [key, events] of this.#scores) {
      if (events.every((e) => e.at <= cutoff)) this.#scores.delete(key);
    }
  }

  #add(key: string, now: number, score: number): number {
    const cutoff = now - this.settings.observationSeconds * 1000;
    const events = (this.#scores.get(key) ?? []).filter((e) => e.at > cutoff);
    events.push({ at: now, score });
    // Re-inserting keeps the map in least-recently-scored order, so the oldest subject goes first.
    this.#scores.delete(key);
    this.#scores.set(key, events);
    if (this.#scores.size > MAX_TRACKED) {
      const oldest = this.#scores.keys().next().value;
      if (oldest !== undefined) this.#scores.delete(oldest);
    }
    return events.reduce((n, e) => n + e.score, 0);
  }

  async #ban(kind: BanKind, subject: string, now: number): Promise<BanRow> {
    const ban = await this.#store.transaction(async (tx) => {
      const previous = await tx.getBan(kind, subject);
      if (previous && previous.until > now) return previous;
      const count = (previous?.count ?? 0) + 1;
      const row: BanRow = {
        kind,
        subject,
        since: now,
        until: now + banDurationMs(this.settings, count),
        count,
        expiryAudited: false,
      };
      await tx.putBan(row);
      return row;
    });
    if (ban.since === now) {
      this.#audit?.record({
        action: "defender.ban",
        outcome: "success",
        user: DEFENDER_PRINCIPAL,
        target: subject,
        ...(kind === "ip" ? { sourceIp: subject } : {}),
        detail: detailOf(ban),
      });
    }
    return ban;
  }
}

function subjects(src: Source): [BanKind, string][] {
  const out: [BanKind, string][] = [];
  if (src.ip) out.push(["ip", src.ip]);
  if (src.user) out.push(["user", src.user]);
  return out;
}

/** Lifts every ban on `subject` (an IP or a user name); returns the bans lifted. A running server sees it at once. */
export async function liftBans(store: BanStore, audit: AuditSink, actor: Actor, subject: string): Promise<BanRow[]> {
  const lifted = await store.transaction(async (tx) => {
    const out: BanRow[] = [];
    for (const kind of ["ip", "user"] as const) {
      const ban = await tx.getBan(kind, subject);
      if (ban && (await tx.deleteBan(kind, subject))) out.push(ban);
    }
    return out;
  });
  for (const ban of lifted) {
    audit.record({
      action: "defender.unban",
      outcome: "success",
      ...actorFields(actor),
      target: ban.subject,
      detail: detailOf(ban),
    });
  }
  return lifted;
}
