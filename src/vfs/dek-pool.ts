// New files' data keys, made ahead in batches: one key manager call and one KMS audit record (the count, the key
// version and every key's encryption context) per batch instead of one per upload. Each file's content id is chosen
// with its key, since the id is the key's encryption context (the wrap's AAD).
//
// A key made ahead is used at most once, is held only in memory and is zeroed when used, expired or drained. A new
// file never gets one wrapped under a version a fresh key would not use: the pool of a key is drained when the key
// manager reports a state change of it (KeyStateWatcher), when a key older than maxAgeMs would be handed out, and,
// where the key manager offers the look-up (embedded), when the version it would wrap under now is another one.
import { randomUUID } from "node:crypto";
import { zero } from "../crypto/bytes.ts";
import { parseKeyRef } from "../kms/api/key-ref.ts";
import type { DataKey, EncryptionContext, KeyProvider, KeyStateWatcher } from "../kms/api/types.ts";
import { fileContext } from "./file-context.ts";

export interface FileKey {
  contentId: string;
  /** The caller owns `dk.plaintext` and zeroes it. */
  dk: DataKey;
}

/** What the pool uses of its key provider beyond KeyProvider (each optional, feature-tested). */
type PoolKeys = KeyProvider &
  Partial<KeyStateWatcher> & {
    rememberDataKey?(wrapped: Buffer, context: EncryptionContext, dek: Buffer): void;
  };

export interface DekPoolOptions {
  /** Keys made per key manager call; 1 turns the pool off (one call per file). Default 16. */
  batch?: number;
  /** A key made longer ago than this is never handed out. Default 5 s. */
  maxAgeMs?: number;
  now?: () => number;
}

interface Made {
  contentId: string;
  dk: DataKey;
  version: number;
  expires: number;
}

interface KeyPool {
  ready: Made[];
  filling?: Promise<void>;
  /** Bumped by a drain: a batch asked for before it is not kept. */
  generation: number;
}

export const DEFAULT_DEK_POOL_BATCH = 16;
const DEFAULT_MAX_AGE_MS = 5_000;
/** Pools kept at once (one per KEK name in use); the least recently filled goes first. */
const MAX_POOLS = 32;

export class DekPool {
  readonly #keys: PoolKeys;
  readonly #batch: number;
  readonly #maxAgeMs: number;
  readonly #now: () => number;
  readonly #pools = new Map<string, KeyPool>();
  #unwatch: (() => void) | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  /** Keys handed out, and keys zeroed unused (drained or expired): for tests and metrics. */
  readonly stats = { made: 0, used: 0, discarded: 0 };

  constructor(keys: PoolKeys, options: DekPoolOptions = {}) {
    this.#keys = keys;
    this.#batch = Math.max(1, Math.floor(options.batch ?? DEFAULT_DEK_POOL_BATCH));
    this.#maxAgeMs = options.maxAgeMs ?? DEFAULT_MAX_AGE_MS;
    this.#now = options.now ?? Date.now;
  }

  get enabled(): boolean {
    return this.#batch > 1 && typeof this.#keys.generateDataKeys === "function" && !this.#closed;
  }

  /** Keys ready for `kek` now. */
  size(kek: string): number {
    return this.#pools.get(kek)?.ready.length ?? 0;
  }

  /** A content id for a new file and its data key under `kek` (each key handed out once). */
  async take(kek: string): Promise<FileKey> {
    if (!this.enabled) return this.#single(kek);
    for (;;) {
      const pool = this.#pool(kek);
      if (!this.#current(kek, pool)) return this.#single(kek);
      const made = pool.ready.shift();
      if (made) {
        this.stats.used++;
        const context = fileContext(made.contentId);
        this.#keys.rememberDataKey?.(made.dk.wrapped, context, made.dk.plaintext);
        return { contentId: made.contentId, dk: made.dk };
      }
      pool.filling ??= this.#fill(kek, pool).finally(() => {
        pool.filling = undefined;
      });
      await pool.filling;
      if (this.#closed) return this.#single(kek);
    }
  }

  /** Zeroes and drops the keys made ahead for `kek` (every key when undefined); returns how many went. */
  drain(kek?: string): number {
    let n = 0;
    for (const [name, pool] of this.#pools) {
      if (kek !== undefined && name !== kek) continue;
      pool.generation++;
      n += this.#discard(pool.ready.splice(0));
    }
    return n;
  }

  close(): void {
    this.#closed = true;
    this.#unwatch?.();
    this.#unwatch = undefined;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    this.drain();
    this.#pools.clear();
  }

  async #single(kek: string): Promise<FileKey> {
    const contentId = randomUUID();
    return { contentId, dk: await this.#keys.generateDataKey(kek, fileContext(contentId)) };
  }

  #pool(kek: string): KeyPool {
    let pool = this.#pools.get(kek);
    if (!pool) {
      pool = { ready: [], generation: 0 };
      this.#pools.set(kek, pool);
      while (this.#pools.size > MAX_POOLS) {
        const [oldest, p] = this.#pools.entries().next().value as [string, KeyPool];
        this.#pools.delete(oldest);
        p.generation++;
        this.#discard(p.ready.splice(0));
      }
    }
    return pool;
  }

  /**
   * Drops what must not be handed out (expired; another version than a fresh key would get). False when the key
   * manager says no key of `kek` can be made now: the caller then asks for one key the ordinary way, which fails
   * there with the key manager's own error (and audit record).
   */
  #current(kek: string, pool: KeyPool): boolean {
    const now = this.#now();
    while (pool.ready.length > 0 && (pool.ready[0] as Made).expires <= now) {
      this.#discard(pool.ready.splice(0, 1));
    }
    if (!this.#keys.encryptionVersion || pool.ready.length === 0) return true;
    let version: number;
    try {
      version = this.#keys.encryptionVersion(kek);
    } catch {
      this.drain(kek);
      return false;
    }
    if (pool.ready.some((m) => m.version !== version)) this.drain(kek);
    return true;
  }

  async #fill(kek: string, pool: KeyPool): Promise<void> {
    const generation = pool.generation;
    const ids = Array.from({ length: this.#batch }, () => randomUUID());
    const keys = await (this.#keys.generateDataKeys as NonNullable<PoolKeys["generateDataKeys"]>)(
      kek,
      ids.map(fileContext),
    );
    this.stats.made += keys.length;
    const expires = this.#now() + this.#maxAgeMs;
    const made = keys.map((dk, i) => ({
      contentId: ids[i] as string,
      dk,
      version: parseKeyRef(dk.keyRef)?.version ?? -1,
      expires,
    }));
    if (generation !== pool.generation || this.#closed) {
      this.#discard(made);
      return;
    }
    pool.ready.push(...made);
    this.#follow();
  }

  #discard(made: Made[]): number {
    for (const m of made) zero(m.dk.plaintext);
    this.stats.discarded += made.length;
    return made.length;
  }

  /** Once keys are held: follow the key manager's state changes, and zero expired keys on a timer. */
  #follow(): void {
    if (!this.#unwatch && typeof this.#keys.watchKeyStates === "function") {
      // while the key manager cannot be asked, a key's state change cannot be seen either: keys made ahead go, and new
      // files wait for the key manager like without the pool
      this.#unwatch = this.#keys.watchKeyStates(
        (keys) => {
          for (const k of keys) this.drain(k);
        },
        () => this.drain(),
      );
    }
    if (!this.#timer) {
      this.#timer = setInterval(() => this.#sweep(), Math.max(this.#maxAgeMs, 250));
      this.#timer.unref();
    }
  }

  #sweep(): void {
    const now = this.#now();
    let held = 0;
    for (const pool of this.#pools.values()) {
      const expired = pool.ready.filter((m) => m.expires <= now);
      if (expired.length > 0) {
        pool.ready = pool.ready.filter((m) => m.expires > now);
        this.#discard(expired);
      }
      held += pool.ready.length;
    }
    if (held === 0 && this.#timer) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }
}
