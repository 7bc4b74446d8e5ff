// Browser sessions of the HTTPS API: an opaque random cookie (__Host- prefixed: Secure, Path=/, no Domain; HttpOnly;
// SameSite=Strict) naming a session kept in this process, with an idle and an absolute timeout, and a CSRF token the
// web app sends back in X-CSRF-Token on every state-changing request. Only SHA-256 digests of the cookie value are
// kept, so a heap dump does not hand out live sessions. A restart logs everyone out.
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { constantTimeEqual } from "../../crypto/bytes.ts";

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

export class SessionTable {
  readonly settings: SessionSettings;
  readonly #byDigest = new Map<string, BrowserSession>();
  readonly #now: () => number;
  /** Told of every session that ends (logout, timeout, logout everywhere), to audit the logout. */
  readonly #onEnd: (s: BrowserSession) => void;

  constructor(settings: SessionSettings, onEnd: (s: BrowserSession) => void, now: () => number = Date.now) {
    this.settings = settings;
    this.#onEnd = onEnd;
    this.#now = now;
  }

  /** A new session for `user`; returns the cookie value (shown to the browser only). */
  create(
    user: string,
    sourceIp: string,
    id: string = randomUUID(),
    enrolOnly = false,
  ): { cookie: string; session: BrowserSession } {
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
    const mine = [...this.#byDigest.entries()].filter(([, s]) => s.user === user);
    while (mine.length >= this.settings.maxPerUser) {
      const oldest = mine.shift();
      if (oldest) this.#end(oldest[0]);
    }
    this.#byDigest.set(digest(cookie), session);
    return { cookie, session };
  }

  /** The live session a cookie names (touching it), or undefined. */
  lookup(cookie: string | undefined): BrowserSession | undefined {
    if (!cookie || cookie.length > 128) return undefined;
    const key = digest(cookie);
    const s = this.#byDigest.get(key);
    if (!s) return undefined;
    const now = this.#now();
    if (now - s.lastSeen > this.settings.idleMs || now - s.created > this.settings.absoluteMs) {
      this.#end(key);
      return undefined;
    }
    s.lastSeen = now;
    return s;
  }

  static csrfOk(session: BrowserSession, header: string | string[] | undefined): boolean {
    if (typeof header !== "string") return false;
    return constantTimeEqual(Buffer.from(header), Buffer.from(session.csrf));
  }

  /** Ends the session a cookie names. */
  end(cookie: string): boolean {
    return this.#end(digest(cookie));
  }

  /** Lifts the enrolment-only limit of session `id` (TOTP confirmed). */
  unrestrict(id: string): void {
    for (const s of this.#byDigest.values()) if (s.id === id) delete s.enrolOnly;
  }

  /** Ends the session with this id (the login service ends it: its user was removed). */
  endId(id: string): boolean {
    for (const [key, s] of this.#byDigest) if (s.id === id) return this.#end(key);
    return false;
  }

  /** Ends every session of `user` ("log out everywhere", or the user was removed); returns how many. */
  endUser(user: string): number {
    let n = 0;
    for (const [key, s] of this.#byDigest) if (s.user === user && this.#end(key)) n++;
    return n;
  }

  /** Drops timed-out sessions (the server runs it on a timer). */
  sweep(): void {
    const now = this.#now();
    for (const [key, s] of this.#byDigest) {
      if (now - s.lastSeen > this.settings.idleMs || now - s.created > this.settings.absoluteMs) this.#end(key);
    }
  }

  list(user?: string): BrowserSession[] {
    return [...this.#byDigest.values()].filter((s) => user === undefined || s.user === user).map((s) => ({ ...s }));
  }

  endAll(): void {
    for (const key of [...this.#byDigest.keys()]) this.#end(key);
  }

  #end(key: string): boolean {
    const s = this.#byDigest.get(key);
    if (!s) return false;
    this.#byDigest.delete(key);
    this.#onEnd(s);
    return true;
  }
}
