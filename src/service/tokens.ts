// API tokens: a user's long-lived credential for scripts, limited to route scopes and path prefixes, with an expiry.
// The secret is shown once, at creation; the store keeps only its SHA-256 (the secret is 256 random bits, so a slow
// hash adds nothing), compared in constant time. Issue and revoke are audited; a token's use is audited by what it
// does (its session id is `token:<id>`).
import { createHash, randomBytes } from "node:crypto";
import type { AuditSink } from "../audit/types.ts";
import { constantTimeEqual } from "../crypto/bytes.ts";
import { AtrestError } from "../errors.ts";
import type { ApiTokenRow, MetaStore } from "../store/types.ts";
import { type Actor, actorFields } from "./actor.ts";

export const TOKEN_PREFIX = "atr";
export const MAX_TOKEN_DAYS = 366;
const DAY_MS = 86_400_000;

export interface NewToken {
  name: string;
  scopes: string[];
  paths: string[];
  expiresInDays: number;
}

const digest = (secret: string) => createHash("sha256").update(secret).digest();

/** `atr_<id>_<secret>`, both base64url. */
export function parseToken(token: string): { id: string; secret: string } | undefined {
  const m = /^atr_([A-Za-z0-9_-]{16})_([A-Za-z0-9_-]{43})$/.exec(token);
  return m ? { id: m[1], secret: m[2] } : undefined;
}

export class TokenService {
  readonly #store: MetaStore;
  readonly #audit: AuditSink;
  readonly #now: () => number;

  constructor(store: MetaStore, audit: AuditSink, now: () => number = Date.now) {
    this.#store = store;
    this.#audit = audit;
    this.#now = now;
  }

  /** Issues a token for the actor themself; returns the secret (shown once) and the stored row. */
  async create(actor: Actor, input: NewToken): Promise<{ token: string; row: ApiTokenRow }> {
    if (!Number.isInteger(input.expiresInDays) || input.expiresInDays < 1 || input.expiresInDays > MAX_TOKEN_DAYS) {
      throw new AtrestError("INVALID_INPUT", `expiresInDays: 1-${MAX_TOKEN_DAYS}`);
    }
    const id = randomBytes(12).toString("base64url");
    const secret = randomBytes(32).toString("base64url");
    const now = this.#now();
    const row: ApiTokenRow = {
      id,
      user: actor.user,
      name: input.name,
      secretHash: digest(secret),
      scopes: [...new Set(input.scopes)],
      paths: input.paths.length ? [...new Set(input.paths)] : ["/"],
      createdAt: now,
      expiresAt: now + input.expiresInDays * DAY_MS,
      lastUsedAt: null,
    };
    await this.#store.transaction((tx) => tx.putApiToken(row));
    this.#audit.record({
      action: "token.create",
      outcome: "success",
      ...actorFields(actor),
      target: id,
      detail: `scopes ${row.scopes.join(",")} paths ${row.paths.join(",")} until ${new Date(row.expiresAt).toISOString()}`,
    });
    return { token: `${TOKEN_PREFIX}_${id}_${secret}`, row };
  }

  /** The live token a bearer value names, or undefined (malformed, unknown, wrong secret, expired alike). */
  async verify(token: string): Promise<ApiTokenRow | undefined> {
    const parsed = parseToken(token);
    const row = parsed ? await this.#store.getApiToken(parsed.id) : undefined;
    // hash even when there is no row, so an unknown id takes as long as a wrong secret
    const given = digest(parsed?.secret ?? token);
    if (!row || !constantTimeEqual(given, row.secretHash)) return undefined;
    const now = this.#now();
    if (row.expiresAt <= now) return undefined;
    // a write per use would contend with everything else: record use at most once a minute
    if (row.lastUsedAt === null || now - row.lastUsedAt > 60_000) {
      await this.#store.transaction((tx) => tx.putApiToken({ ...row, lastUsedAt: now })).catch(() => {});
    }
    return row;
  }

  list(user: string): Promise<ApiTokenRow[]> {
    return this.#store.listApiTokens(user);
  }

  /** Revokes one of the actor's own tokens (an admin may revoke anyone's). */
  async revoke(actor: Actor, id: string): Promise<void> {
    const row = await this.#store.getApiToken(id);
    if (!row || (row.user !== actor.user && actor.role !== "admin")) {
      throw new AtrestError("NOT_FOUND", `no such token: ${id}`);
    }
    await this.#store.transaction((tx) => tx.deleteApiToken(id));
    this.#audit.record({
      action: "token.revoke",
      outcome: "success",
      ...actorFields(actor),
      effectiveUser: row.user,
      target: id,
    });
  }
}
