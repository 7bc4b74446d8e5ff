// Live connections of every node (SFTP, S3, …) for the admin's Sessions page. A node knows only its own (LoginService
// keeps them in memory), so with a shared store each node publishes its list as one settings row
// `live.sessions.<node>`, sealed (user names are kept only sealed in the store) with an expiry: it rewrites the row when
// its list changes and at least every HEARTBEAT_MS, so a row that has expired is a node that stopped without clearing
// it (killed, lost its store): any reader deletes it. Browser sessions are not here: they are rows of their own
// (protocols/http/sessions.ts) that any node accepts. An admin ending a user's sessions on one node ends them on every
// node: a cut-off row `live.sessions.ended.<keyed tag of the user>` that each node reads at its next check (within
// CHECK_MS) and applies to that user's connections made before it.
import type { LiveSession } from "./login.ts";

export interface LiveSessionRows {
  setSetting(key: string, value: Buffer): Promise<void>;
  deleteSetting(key: string): Promise<boolean>;
  listSettings(prefix: string): Promise<{ key: string; value: Buffer }[]>;
}

/** Seals a payload with its expiry (the HTTPS door's SealedCookies, under the key every node of the store shares). */
export interface Sealer {
  seal(purpose: string, payload: Record<string, unknown>, ttlMs: number, now?: number): string;
  open(purpose: string, sealed: string, now?: number): Record<string, unknown> | undefined;
  /** A keyed tag of `value`, the same on every node (user names are never row keys in the clear). */
  tag(purpose: string, value: string): string;
  /** Zeroes its keys (the board owns its sealer). */
  close?(): void;
}

export interface NodeSession extends LiveSession {
  /** The node the connection is on. */
  node: string;
}

const PREFIX = "live.sessions.";
const ENDED_PREFIX = "live.sessions.ended.";
const PURPOSE = "live-sessions";
/** How often a node compares its list with the one it published. */
export const CHECK_MS = 2000;
/** A node's row is written at least this often, even unchanged. */
const HEARTBEAT_MS = 20_000;
/** A row not rewritten for this long is a dead node's. */
export const STALE_MS = 3 * HEARTBEAT_MS;
/** A cut-off row is kept this long: every live node has applied it by then (a restarted one has no older session). */
const ENDED_KEEP_MS = 5 * 60_000;

export class LiveSessionBoard {
  readonly #rows: LiveSessionRows;
  readonly #sealer: Sealer;
  readonly #node: string;
  readonly #sessions: () => LiveSession[];
  readonly #end: (user: string, before: number) => void;
  readonly #onError: (err: unknown) => void;
  readonly #now: () => number;
  #timer: NodeJS.Timeout | undefined;
  #published = "";
  #publishedAt = 0;
  #writing: Promise<void> = Promise.resolve();

  constructor(o: {
    rows: LiveSessionRows;
    sealer: Sealer;
    node: string;
    /** This node's connections of every door but the browser's. */
    sessions: () => LiveSession[];
    /** Ends this node's connections of `user` made at or before `before` (epoch ms). */
    end: (user: string, before: number) => void;
    onError: (err: unknown) => void;
    now?: () => number;
  }) {
    this.#rows = o.rows;
    this.#sealer = o.sealer;
    this.#node = o.node;
    this.#sessions = o.sessions;
    this.#end = o.end;
    this.#onError = o.onError;
    this.#now = o.now ?? Date.now;
  }

  start(): void {
    this.#tick();
    this.#timer = setInterval(() => this.#tick(), CHECK_MS);
    this.#timer.unref();
  }

  #tick(): void {
    this.#writing = this.#writing
      .then(() => this.applyEnded())
      .then(() => this.publish())
      .catch(this.#onError);
  }

  /** Every node (this one at once): end `user`'s connections made up to now. */
  async endEverywhere(user: string): Promise<void> {
    const now = this.#now();
    this.#end(user, now);
    await this.#rows.setSetting(`${ENDED_PREFIX}${this.#sealer.tag(PURPOSE, user)}`, Buffer.from(String(now)));
  }

  /** Applies the cut-offs other nodes wrote to this node's connections; deletes those past ENDED_KEEP_MS. */
  async applyEnded(): Promise<void> {
    const now = this.#now();
    const cutoffs = new Map<string, number>();
    for (const { key, value } of await this.#rows.listSettings(ENDED_PREFIX)) {
      const at = Number(value.toString());
      if (!(at > now - ENDED_KEEP_MS)) await this.#rows.deleteSetting(key).catch(() => false);
      else cutoffs.set(key.slice(ENDED_PREFIX.length), at);
    }
    if (cutoffs.size === 0) return;
    const tags = new Map<string, string>();
    for (const s of this.#sessions()) {
      let tag = tags.get(s.user);
      if (tag === undefined) {
        tag = this.#sealer.tag(PURPOSE, s.user);
        tags.set(s.user, tag);
      }
      const at = cutoffs.get(tag);
      if (at !== undefined && s.since <= at) this.#end(s.user, at);
    }
  }

  /** Writes this node's row if its list changed or the heartbeat is due. */
  async publish(): Promise<void> {
    const now = this.#now();
    const sessions = this.#sessions().map(({ sessionId, user, protocol, sourceIp, since }) => ({
      sessionId,
      user,
      protocol,
      ...(sourceIp !== undefined ? { sourceIp } : {}),
      since,
    }));
    const text = JSON.stringify(sessions);
    if (text === this.#published && now - this.#publishedAt < HEARTBEAT_MS) return;
    const sealed = this.#sealer.seal(PURPOSE, { node: this.#node, sessions }, STALE_MS, now);
    await this.#rows.setSetting(`${PREFIX}${this.#node}`, Buffer.from(sealed));
    this.#published = text;
    this.#publishedAt = now;
  }

  /**
   * Every node's connections: this node's as they are now, the others' as last published; rows that expired or do not
   * open (a dead node's, or written under another key) are deleted on the way.
   */
  async list(): Promise<NodeSession[]> {
    const now = this.#now();
    const out: NodeSession[] = this.#sessions().map((s) => ({ ...s, node: this.#node }));
    for (const { key, value } of await this.#rows.listSettings(PREFIX)) {
      if (key.startsWith(ENDED_PREFIX)) continue;
      const node = key.slice(PREFIX.length);
      if (node === this.#node) continue;
      const v = this.#sealer.open(PURPOSE, value.toString(), now);
      if (!v || v.node !== node || !Array.isArray(v.sessions)) {
        await this.#rows.deleteSetting(key).catch(() => false);
        continue;
      }
      for (const s of v.sessions as LiveSession[]) {
        if (typeof s?.sessionId !== "string" || typeof s.user !== "string" || typeof s.since !== "number") continue;
        out.push({ ...s, node });
      }
    }
    return out;
  }

  /** Stops publishing and removes this node's row (a clean stop leaves nothing to sweep). */
  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#writing;
    await this.#rows.deleteSetting(`${PREFIX}${this.#node}`).catch(this.#onError);
    this.#sealer.close?.();
  }
}
