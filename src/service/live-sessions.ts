// Live connections of every node (SFTP, S3, …) for the admin's Sessions page. A node knows only its own (LoginService
// keeps them in memory), so with a shared store each node publishes its list as one settings row
// `live.sessions.<node>`, sealed (user names are kept only sealed in the store) with an expiry: it rewrites the row when
// its list changes and at least every HEARTBEAT_MS, so a row that has expired is a node that stopped without clearing
// it (killed, lost its store): any reader deletes it. Browser sessions are not here: they are rows of their own
// (protocols/http/sessions.ts) that any node accepts.
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
  /** Zeroes its keys (the board owns its sealer). */
  close?(): void;
}

export interface NodeSession extends LiveSession {
  /** The node the connection is on. */
  node: string;
}

const PREFIX = "live.sessions.";
const PURPOSE = "live-sessions";
/** How often a node compares its list with the one it published. */
export const CHECK_MS = 2000;
/** A node's row is written at least this often, even unchanged. */
const HEARTBEAT_MS = 20_000;
/** A row not rewritten for this long is a dead node's. */
export const STALE_MS = 3 * HEARTBEAT_MS;

export class LiveSessionBoard {
  readonly #rows: LiveSessionRows;
  readonly #sealer: Sealer;
  readonly #node: string;
  readonly #sessions: () => LiveSession[];
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
    onError: (err: unknown) => void;
    now?: () => number;
  }) {
    this.#rows = o.rows;
    this.#sealer = o.sealer;
    this.#node = o.node;
    this.#sessions = o.sessions;
    this.#onError = o.onError;
    this.#now = o.now ?? Date.now;
  }

  start(): void {
    this.#tick();
    this.#timer = setInterval(() => this.#tick(), CHECK_MS);
    this.#timer.unref();
  }

  #tick(): void {
    this.#writing = this.#writing.then(() => this.publish()).catch(this.#onError);
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
