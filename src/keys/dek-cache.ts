// Unwrapped data keys kept in memory for a short while, so the key manager is not on every read's hot path
// (DESIGN §3). Bounded by age and count; every entry is zeroed when it leaves (expiry, eviction, clear, close).
//
// Keyed by the wrapped DEK bytes plus the canonical encryption context: a hit needs exactly the pair the key manager
// accepted, so a cache never lets one file's DEK be fetched under another file's context. Failures are never cached.
// The age bound is from the unwrap, not from the last use: a key version the KMS stops honouring (minimum decryption
// version raised, key destroyed) stops working here within maxAgeMs at the latest, however busy the file is. A key
// manager that reports key state changes (KeyStateWatcher: RemoteKms long-polls the KMS, the embedded one looks at its
// database) makes that much sooner: evictKey drops that key's entries at once, so the next read asks the KMS again.

import type { DataKey, EncryptionContext, KeyProvider, KeyStateWatcher } from "../kms/api/types.ts";
import { encodeContext, parseWrapped } from "../kms/api/wrapped.ts";

export interface DekCacheOptions {
  /** Entries live this long after the unwrap that produced them. 0 turns the cache off. */
  maxAgeMs: number;
  /** At most this many entries; the least recently used goes first. 0 turns the cache off. */
  maxEntries: number;
  /** Clock in ms (tests). */
  now?: () => number;
}

export const DEFAULT_DEK_CACHE_SECONDS = 300;
export const DEFAULT_DEK_CACHE_ENTRIES = 10_000;

interface Entry {
  dek: Buffer;
  expires: number;
  /** The KEK name the wrapped DEK names (for evictKey). */
  key: string;
}

export interface DekCacheStats {
  entries: number;
  hits: number;
  misses: number;
  evictions: number;
}

export class DekCache {
  readonly #maxAgeMs: number;
  readonly #maxEntries: number;
  readonly #now: () => number;
  // Map iteration order is insertion order: re-inserting on a hit makes the first entry the least recently used.
  readonly #entries = new Map<string, Entry>();
  readonly #inflight = new Map<string, { promise: Promise<Buffer>; waiters: number }>();
  #timer: NodeJS.Timeout | undefined;
  #unwatch: (() => void) | undefined;
  /** Bumped by evictKey/clear: a load that started before is not cached when it lands. */
  #generation = 0;
  #hits = 0;
  #misses = 0;
  #evictions = 0;

  constructor(options: DekCacheOptions) {
    this.#maxAgeMs = Math.max(0, options.maxAgeMs);
    this.#maxEntries = Math.max(0, Math.floor(options.maxEntries));
    this.#now = options.now ?? Date.now;
  }

  get enabled(): boolean {
    return this.#maxAgeMs > 0 && this.#maxEntries > 0;
  }

  get size(): number {
    return this.#entries.size;
  }

  stats(): DekCacheStats {
    return { entries: this.#entries.size, hits: this.#hits, misses: this.#misses, evictions: this.#evictions };
  }

  /**
   * The DEK for (wrapped, context) in a fresh buffer the caller owns and zeroes: from the cache, or from `load`
   * (the key manager), whose result is cached. Concurrent misses for the same pair share one `load`.
   */
  async unwrap(wrapped: Buffer, context: EncryptionContext, load: () => Promise<Buffer>): Promise<Buffer> {
    if (!this.enabled) return load();
    const id = cacheId(wrapped, context);
    const hit = this.#get(id);
    if (hit) {
      this.#hits++;
      return hit;
    }
    this.#misses++;
    let flight = this.#inflight.get(id);
    if (!flight) {
      const generation = this.#generation;
      const record = {
        promise: load().then((dek) => {
          if (generation === this.#generation) this.#put(id, Buffer.from(dek), keyNameOf(wrapped));
          return dek;
        }),
        waiters: 0,
      };
      record.promise.then(
        () => this.#inflight.delete(id),
        () => this.#inflight.delete(id),
      );
      this.#inflight.set(id, record);
      flight = record;
    }
    // Every waiter gets its own copy; the last one zeroes the loaded buffer (the cache holds a copy of its own, which
    // an eviction may zero at any time).
    flight.waiters++;
    try {
      const dek = await flight.promise;
      return Buffer.from(dek);
    } finally {
      if (--flight.waiters === 0) {
        flight.promise.then(
          (dek) => dek.fill(0),
          () => undefined,
        );
      }
    }
  }

  /** Caches a DEK the caller just generated (an upload followed by a download needs no unwrap). Copies `dek`. */
  remember(wrapped: Buffer, context: EncryptionContext, dek: Buffer): void {
    if (!this.enabled) return;
    this.#put(cacheId(wrapped, context), Buffer.from(dek), keyNameOf(wrapped));
  }

  /** Zeroes and drops every entry (e.g. after a key's versions changed and stale DEKs must go now). */
  clear(): void {
    this.#generation++;
    for (const entry of this.#entries.values()) entry.dek.fill(0);
    this.#entries.clear();
  }

  /** Zeroes and drops the entries of DEKs wrapped under `key` (any version): its state changed at the KMS. */
  evictKey(key: string): number {
    this.#generation++;
    let n = 0;
    for (const [id, entry] of this.#entries) {
      if (entry.key !== key) continue;
      this.#entries.delete(id);
      entry.dek.fill(0);
      n++;
    }
    this.#evictions += n;
    return n;
  }

  /** Follows `watcher`'s key state changes (evictKey per changed key) until close(). */
  follow(watcher: KeyStateWatcher, onEvict?: (key: string, entries: number) => void): void {
    this.#unwatch?.();
    this.#unwatch = watcher.watchKeyStates((keys) => {
      for (const key of keys) onEvict?.(key, this.evictKey(key));
    });
  }

  close(): void {
    this.#unwatch?.();
    this.#unwatch = undefined;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    this.clear();
  }

  #get(id: string): Buffer | undefined {
    const entry = this.#entries.get(id);
    if (!entry) return undefined;
    this.#entries.delete(id);
    if (entry.expires <= this.#now()) {
      entry.dek.fill(0);
      this.#evictions++;
      return undefined;
    }
    this.#entries.set(id, entry);
    return Buffer.from(entry.dek);
  }

  /** Takes ownership of `dek`. */
  #put(id: string, dek: Buffer, key: string): void {
    const old = this.#entries.get(id);
    if (old) {
      this.#entries.delete(id);
      if (old.dek !== dek) old.dek.fill(0);
    }
    this.#entries.set(id, { dek, expires: this.#now() + this.#maxAgeMs, key });
    while (this.#entries.size > this.#maxEntries) {
      const [oldest, entry] = this.#entries.entries().next().value as [string, Entry];
      this.#entries.delete(oldest);
      entry.dek.fill(0);
      this.#evictions++;
    }
    this.#startSweeper();
  }

  /** Expired entries are zeroed on a timer too, so an idle server does not keep DEKs past their age. */
  #startSweeper(): void {
    if (this.#timer) return;
    const every = Math.min(Math.max(this.#maxAgeMs / 4, 250), 30_000);
    this.#timer = setInterval(() => this.sweep(), every);
    this.#timer.unref();
  }

  /** Zeroes and drops expired entries. */
  sweep(): void {
    const now = this.#now();
    for (const [id, entry] of this.#entries) {
      if (entry.expires <= now) {
        this.#entries.delete(id);
        entry.dek.fill(0);
        this.#evictions++;
      }
    }
    if (this.#entries.size === 0 && this.#timer) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }
}

export function isKeyStateWatcher(p: unknown): p is KeyStateWatcher {
  return typeof (p as Partial<KeyStateWatcher> | undefined)?.watchKeyStates === "function";
}

/** The KEK name in a wrapped DEK's header ("" if it is malformed: such a blob never unwraps, so never gets here). */
function keyNameOf(wrapped: Buffer): string {
  try {
    return parseWrapped(wrapped).name;
  } catch {
    return "";
  }
}

function cacheId(wrapped: Buffer, context: EncryptionContext): string {
  // latin1 maps bytes 1:1 to code units, so distinct byte strings give distinct keys; the context encoding is
  // length-prefixed, so the pair is unambiguous.
  return `${wrapped.length}:${wrapped.toString("latin1")}${encodeContext(context).toString("latin1")}`;
}

/** A provider that can be told about a data key it generated ahead and a file now uses (so a read needs no unwrap). */
export interface DataKeyMemory {
  rememberDataKey(wrapped: Buffer, context: EncryptionContext, dek: Buffer): void;
}

/**
 * `inner` with unwraps served through `cache` and freshly generated DEKs remembered in it. Everything else passes
 * through; close() zeroes the cache and closes `inner`.
 */
export function withDekCache<P extends KeyProvider>(inner: P, cache: DekCache): P {
  const overrides: Partial<KeyProvider & DataKeyMemory> = {
    generateDataKey: async (name: string, context: EncryptionContext): Promise<DataKey> => {
      const dk = await inner.generateDataKey(name, context);
      cache.remember(dk.wrapped, context, dk.plaintext);
      return dk;
    },
    // Data keys made ahead (vfs/dek-pool.ts) are remembered when a file takes one (rememberDataKey), not when made:
    // one drained unused would otherwise sit here for the cache's whole age.
    rememberDataKey: (wrapped: Buffer, context: EncryptionContext, dek: Buffer) =>
      cache.remember(wrapped, context, dek),
    unwrap: (wrapped: Buffer, context: EncryptionContext) =>
      cache.unwrap(wrapped, context, () => inner.unwrap(wrapped, context)),
    close: async () => {
      cache.close();
      await inner.close();
    },
  };
  // Everything else (rewrap, batch calls, key admin) is the provider's own, bound to it: a class with private fields
  // must see itself as `this`.
  return new Proxy(inner, {
    get(target, prop) {
      if (Object.hasOwn(overrides, prop)) return overrides[prop as keyof typeof overrides];
      const value = Reflect.get(target, prop);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}
