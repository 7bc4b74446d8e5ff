// Browser sessions of the HTTPS API: an opaque random cookie (__Host- prefixed: Secure, Path=/, no Domain; HttpOnly;
// SameSite=Strict) naming a session, with an idle and an absolute timeout, and a CSRF token the web app sends back in
// X-CSRF-Token on every state-changing request. Only SHA-256 digests of the cookie value are kept, so a heap dump or a
// database dump does not hand out live sessions. With a shared store (the server's: every node on one PostgreSQL
// schema), each session is also a settings row `http.session.<digest>` sealed under the cookie key (AES-256-GCM,
// bound to its digest), so any node accepts the cookie and a restart logs nobody out; a node re-reads a session it
// holds at most every RECHECK_MS (a logout on another node applies within that) and writes its last use at most
// every TOUCH_MS (the idle timeout counts across nodes to that precision). "Log out everywhere" and a removed user
// set `http.sessions.since.<HMAC of the user name>`: every node refuses that user's sessions made before it.
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { constantTimeEqual } from "../../crypto/bytes.ts";
import type { SealedCookies } from "./sealed-cookie.ts";

export const SESSION_COOKIE = "__Host-atrest_session";
export const CSRF_HEADER = "x-csrf-token";

export interface SessionSettings {
  idleMs: number;
  absoluteMs: number;
  /** Sessions per user; the oldest goes first. */
  maxPerUser: number;
}

export const DEFAULT_SESSIONS: SessionSettings = { idleMs: 30 * 60_000, absoluteMs: 12 * 3_600_000, maxPerUser: 20 };

export interface BrowserSession {
  id: string;
  user: string;
  csrf: string;
  sourceIp: string;
  created: number;
  lastSeen: number;
  /** Logged in with a password while TOTP is required but not set up: only enrolment is allowed until confirmed. */
  enrolOnly?: boolean;
}

const digest = (v: string) => createHash("sha256").update(v).digest("base64url");

/** The store's settings, as the session table uses them (MetaStore's get/set/deleteSetting). */
export interface SessionRows {
  getSetting(key: string): Promise<Buffer | undefined>;
  setSetting(key: string, value: Buffer): Promise<void>;
  deleteSetting(key: string): Promise<boolean>;
  /** Every row whose key starts with the prefix: the admin's list of every node's sessions, the sweep of dead ones. */
  listSettings(prefix: string): Promise<{ key: string; value: Buffer }[]>;
}

export interface SharedSessions {
  rows: SessionRows;
  cookies: SealedCookies;
}

const ROW_PREFIX = "http.session.";
const ROW = (key: string) => `${ROW_PREFIX}${key}`;
const SINCE_PREFIX = "http.sessions.since.";
/** The user's cut-off: keyed by a tag of the name, as the store keeps user names only sealed. */
const SINCE = (shared: SharedSessions, user: string) => `${SINCE_PREFIX}${shared.cookies.tag("session-user", user)}`;
const PURPOSE = "session-row";
/** A session held by this node is read again from the store after this long (a logout elsewhere applies by then). */
export const RECHECK_MS = 2000;
/** Its last use is written back at most this often. */
const TOUCH_MS = 60_000;
/** How long an ended session stays refused by digest here (longer than any store round trip that read it before). */
const ENDED_KEEP_MS = 60_000;
/**
 * The store's rows are swept (every node's, a dead node's too) at most this often. A row's lastSeen lags the sessions's
 * real last use by less than TOUCH_MS, so a row is idle past its timeout only once it is idle past idleMs + TOUCH_MS.
 */
const STORE_SWEEP_MS = 5 * 60_000;

interface Entry {
  session: BrowserSession;
  checkedAt: number;
  storedSeen: number;
}

export class SessionTable {
  readonly settings: SessionSettings;
  readonly #byDigest = new Map<string, Entry>();
  /**
   * Sessions ended here lately (digest → when): refused at once, while the shared row's delete is still on its way
   * and a lookup that read the row before the delete could otherwise bring the session back.
   */
  readonly #ended = new Map<string, number>();
  readonly #now: () => number;
  /** Told of every session that ends (logout, timeout, logout everywhere), to audit the logout. */
  readonly #onEnd: (s: BrowserSession) => void;
  readonly #shared: SharedSessions | undefined;
  #storeSweptAt = 0;

  constructor(
    settings: SessionSettings,
    onEnd: (s: BrowserSession) => void,
    now: () => number = Date.now,
    shared?: SharedSessions,
  ) {
    this.settings = settings;
    this.#onEnd = onEnd;
    this.#now = now;
    this.#shared = shared;
  }

  /** A new session for `user`; returns the cookie value (shown to the browser only). */
  async create(
    user: string,
    sourceIp: string,
    id: string = randomUUID(),
    enrolOnly = false,
  ): Promise<{ cookie: string; session: BrowserSession }> {
    const cookie = randomBytes(32).toString("base64url");
    const now = this.#now();
    const session: BrowserSession = {
      id,
      user,
      csrf: randomBytes(24).toString("base64url"),
      sourceIp,
      created: now,
      lastSeen: now,
      ...(enrolOnly ? { enrolOnly: true } : {}),
    };
    const mine = [...this.#byDigest.entries()].filter(([, e]) => e.session.user === user);
    while (mine.length >= this.settings.maxPerUser) {
      const oldest = mine.shift();
      if (oldest) await this.#end(oldest[0]);
    }
    const key = digest(cookie);
    await this.#store(key, session);
    this.#byDigest.set(key, { session, checkedAt: now, storedSeen: now });
    return { cookie, session };
  }

  /** The live session a cookie names (touching it), or undefined. */
  async lookup(cookie: string | undefined): Promise<BrowserSession | undefined> {
    if (!cookie || cookie.length > 128) return undefined;
    const key = digest(cookie);
    const now = this.#now();
    if (this.#ended.has(key)) return undefined;
    let entry = this.#byDigest.get(key);
    if (entry && this.#shared && now - entry.checkedAt > RECHECK_MS) {
      const fresh = await this.#fetch(key);
      if (!fresh) {
        // ended through another node (logout, logout everywhere): audited here, where it was known live
        this.#byDigest.delete(key);
        this.#onEnd(entry.session);
        return undefined;
      }
      entry.checkedAt = now;
      entry.session.lastSeen = Math.max(entry.session.lastSeen, fresh.lastSeen);
      if (!fresh.enrolOnly) delete entry.session.enrolOnly;
    }
    if (!entry && this.#shared) {
      const fresh = await this.#fetch(key);
      if (!fresh || this.#ended.has(key)) return undefined;
      entry = { session: fresh, checkedAt: now, storedSeen: fresh.lastSeen };
      this.#byDigest.set(key, entry);
    }
    if (!entry) return undefined;
    const s = entry.session;
    if (now - s.lastSeen > this.settings.idleMs || now - s.created > this.settings.absoluteMs) {
      await this.#end(key);
      return undefined;
    }
    s.lastSeen = now;
    if (this.#shared && now - entry.storedSeen >= TOUCH_MS) {
      entry.storedSeen = now;
      await this.#store(key, s);
    }
    return s;
  }

  static csrfOk(session: BrowserSession, header: string | string[] | undefined): boolean {
    if (typeof header !== "string") return false;
    return constantTimeEqual(Buffer.from(header), Buffer.from(session.csrf));
  }

  /** Ends the session a cookie names. */
  end(cookie: string): Promise<boolean> {
    return this.#end(digest(cookie));
  }

  /** Lifts the enrolment-only limit of session `id` (TOTP confirmed). */
  async unrestrict(id: string): Promise<void> {
    for (const [key, e] of this.#byDigest) {
      if (e.session.id !== id) continue;
      delete e.session.enrolOnly;
      await this.#store(key, e.session);
    }
  }

  /** Ends the session with this id (the login service ends it: its user was removed). */
  async endId(id: string): Promise<boolean> {
    for (const [key, e] of this.#byDigest) if (e.session.id === id) return this.#end(key);
    return false;
  }

  /**
   * Ends every session of `user` ("log out everywhere", or the user was removed); returns how many this node held.
   * With a shared store every node refuses the user's older sessions from now on.
   */
  async endUser(user: string): Promise<number> {
    if (this.#shared) await this.#shared.rows.setSetting(SINCE(this.#shared, user), Buffer.from(String(this.#now())));
    let n = 0;
    for (const [key, e] of [...this.#byDigest]) if (e.session.user === user && (await this.#end(key))) n++;
    return n;
  }

  /** Drops timed-out sessions (the server runs it on a timer); now and then the store's timed-out rows too. */
  async sweep(): Promise<void> {
    const now = this.#now();
    if (this.#shared && now - this.#storeSweptAt >= STORE_SWEEP_MS) {
      this.#storeSweptAt = now;
      await this.listAll();
    }
    for (const [key, e] of [...this.#byDigest]) {
      const s = e.session;
      if (now - s.lastSeen > this.settings.idleMs || now - s.created > this.settings.absoluteMs) {
        // another node may have seen it since: its last use there counts
        const fresh = this.#shared ? await this.#fetch(key) : undefined;
        if (fresh && now - fresh.lastSeen <= this.settings.idleMs && now - fresh.created <= this.settings.absoluteMs) {
          s.lastSeen = fresh.lastSeen;
          continue;
        }
        await this.#end(key);
      }
    }
  }

  /**
   * Every live session: with a shared store, those of every node (the store's rows, a session made on a node that
   * has stopped included), deleting on the way the rows no session can use any more: timed out (idle, absolute),
   * older than their user's cut-off, unreadable. The cut-off rows themselves go once every session they refuse has
   * timed out anyway. Without a shared store, this node's (list()).
   */
  async listAll(): Promise<BrowserSession[]> {
    const shared = this.#shared;
    if (!shared) return this.list();
    const now = this.#now();
    const live: BrowserSession[] = [];
    const cutoffs = new Map<string, number>();
    for (const { key, value } of await shared.rows.listSettings(SINCE_PREFIX)) {
      const at = Number(value.toString());
      if (!(at > now - this.settings.absoluteMs)) await shared.rows.deleteSetting(key).catch(() => false);
      else cutoffs.set(key, at);
    }
    for (const { key: row, value } of await shared.rows.listSettings(ROW_PREFIX)) {
      const key = row.slice(ROW_PREFIX.length);
      if (this.#ended.has(key)) continue;
      const v = shared.cookies.open(PURPOSE, value.toString(), now);
      const s = v && v.d === key && typeof v.s === "object" && v.s !== null ? (v.s as BrowserSession) : undefined;
      const mine = this.#byDigest.get(key)?.session;
      const lastSeen = Math.max(s?.lastSeen ?? 0, mine?.lastSeen ?? 0);
      const dead =
        !s ||
        typeof s.user !== "string" ||
        typeof s.created !== "number" ||
        now - s.created > this.settings.absoluteMs ||
        now - lastSeen > this.settings.idleMs + TOUCH_MS ||
        (cutoffs.get(SINCE(shared, s.user)) ?? -1) >= s.created;
      if (dead) {
        if (mine) await this.#end(key);
        else await shared.rows.deleteSetting(row).catch(() => false);
        continue;
      }
      live.push({ ...s, lastSeen });
    }
    return live;
  }

  /** This node's sessions (those it created or served lately). */
  list(user?: string): BrowserSession[] {
    return [...this.#byDigest.values()]
      .map((e) => e.session)
      .filter((s) => user === undefined || s.user === user)
      .map((s) => ({ ...s }));
  }

  /**
   * The server stops. In memory only: every session ends (audited). With a shared store they live on for the other
   * nodes and the next start: only this node's copies go.
   */
  async endAll(): Promise<void> {
    if (this.#shared) {
      this.#byDigest.clear();
      return;
    }
    for (const key of [...this.#byDigest.keys()]) await this.#end(key);
  }

  async #end(key: string): Promise<boolean> {
    // refused from this moment: the caller (an admin ending a user's sessions) may answer before the row is deleted
    const e = this.#byDigest.get(key);
    if (e) {
      this.#byDigest.delete(key);
      this.#onEnd(e.session);
    }
    if (!this.#shared) return e !== undefined;
    const now = this.#now();
    for (const [k, at] of this.#ended) if (now - at > ENDED_KEEP_MS) this.#ended.delete(k);
    this.#ended.set(key, now);
    const removed = await this.#shared.rows.deleteSetting(ROW(key)).catch(() => false);
    return e !== undefined || removed;
  }

  async #store(key: string, s: BrowserSession): Promise<void> {
    const shared = this.#shared;
    if (!shared) return;
    const ttl = Math.max(1, s.created + this.settings.absoluteMs - this.#now());
    const sealed = shared.cookies.seal(PURPOSE, { d: key, s: { ...s } }, ttl, this.#now());
    await shared.rows.setSetting(ROW(key), Buffer.from(sealed));
  }

  /** The stored session of digest `key`, unless it is gone, not ours, expired or older than its user's cut-off. */
  async #fetch(key: string): Promise<BrowserSession | undefined> {
    const shared = this.#shared as SharedSessions;
    const raw = await shared.rows.getSetting(ROW(key));
    if (!raw) return undefined;
    const v = shared.cookies.open(PURPOSE, raw.toString(), this.#now());
    // bound to its digest: a row copied under another session's key does not open as that session
    if (!v || v.d !== key || typeof v.s !== "object" || v.s === null) {
      // expired past its absolute timeout, or not a session of ours: nobody can use it
      await shared.rows.deleteSetting(ROW(key)).catch(() => false);
      return undefined;
    }
    const s = v.s as BrowserSession;
    if (typeof s.user !== "string" || typeof s.created !== "number" || typeof s.lastSeen !== "number") return undefined;
    const since = await shared.rows.getSetting(SINCE(shared, s.user));
    if (since && Number(since.toString()) >= s.created) {
      await shared.rows.deleteSetting(ROW(key)).catch(() => false);
      return undefined;
    }
    return s;
  }
}
