// The keyring's cache: key rows and their versions, and unsealed KEKs as KeyObjects, so the data path does not reach
// SQLite or unseal on every call. Another process (e.g. `atrest kms key rotate`) may change the database: the cache
// checks SQLite's data version at most every `refreshMs` and drops everything when it moved.

import type { KeyObject } from "node:crypto";
import { AtrestError, KeyUnavailableError } from "../errors.ts";
import { formatKeyRef } from "./api/key-ref.ts";
import type { KeyRow, KmsDb, VersionRow } from "./db.ts";
import { type KeyringKeyInfo, toInfo } from "./key-info.ts";
import { DEFAULT_KEY_TYPE, materialKey } from "./key-types.ts";

export interface CachedKey {
  row: KeyRow;
  versions: Map<number, VersionRow>;
}

/** Unseals one version's KEK under the current master key; the result is a fresh buffer the cache zeroes. */
export type UnsealKek = (name: string, version: number, sealed: Uint8Array) => Buffer;

export class KeyCache {
  readonly #db: KmsDb;
  readonly #unseal: UnsealKek;
  readonly #refreshMs: number;
  readonly #meta = new Map<string, CachedKey | null>();
  // The plaintext Buffer from unsealing is zeroed at once; the copy inside the KeyObject lives in native memory that
  // JS cannot zero, and is released when close() drops the references and GC collects them.
  readonly #material = new Map<string, KeyObject>();
  #dataVersion = -1;
  #checkedAt = Number.NEGATIVE_INFINITY;
  #epoch = 0;
  #closed = false;

  readonly #onChange: (() => void) | undefined;

  /** `onChange` runs when a commit by another connection was noticed, after the cache was dropped. */
  constructor(db: KmsDb, unseal: UnsealKek, refreshMs: number, onChange?: () => void) {
    this.#db = db;
    this.#unseal = unseal;
    this.#refreshMs = refreshMs;
    this.#onChange = onChange;
  }

  /** Throws once closed; drops the cache if another process committed since the last look. */
  check(): void {
    if (this.#closed) throw new KeyUnavailableError("KMS is closed");
    const t = performance.now();
    if (t - this.#checkedAt < this.#refreshMs) return;
    this.#checkedAt = t;
    const dv = this.#db.dataVersion();
    if (dv !== this.#dataVersion) {
      this.#meta.clear();
      this.#material.clear();
      this.#dataVersion = dv;
      this.#epoch++;
      this.#onChange?.();
    }
  }

  /** Bumps whenever a change committed by another process was noticed. */
  epoch(): number {
    this.check();
    return this.#epoch;
  }

  key(name: string): CachedKey | null {
    this.check();
    let cached = this.#meta.get(name);
    if (cached === undefined) {
      const row = this.#db.getKey(name);
      cached = row ? { row, versions: new Map(this.#db.listVersions(name).map((v) => [v.version, v])) } : null;
      this.#meta.set(name, cached);
    }
    return cached;
  }

  info(name: string): KeyringKeyInfo {
    const key = this.key(name);
    if (!key) throw new AtrestError("NOT_FOUND", `unknown key: kek:${name}`);
    return toInfo(key.row, [...key.versions.values()]);
  }

  kek(name: string, version: number): KeyObject {
    const id = `${name}\0${version}`;
    let kek = this.#material.get(id);
    if (!kek) {
      const row = this.#db.getVersion(name, version);
      if (!row?.sealed) throw new KeyUnavailableError(`no key material: ${formatKeyRef(name, version)}`);
      const type = this.key(name)?.row.type ?? DEFAULT_KEY_TYPE;
      const raw = this.#unseal(name, version, row.sealed);
      try {
        kek = materialKey(type, raw);
      } finally {
        raw.fill(0);
      }
      this.#material.set(id, kek);
    }
    return kek;
  }

  /** This process changed `name`: read it again next time. */
  forget(name: string): void {
    this.#meta.delete(name);
  }

  /** A version was destroyed: drop its row and its KEK. */
  forgetVersion(name: string, version: number): void {
    this.#meta.delete(name);
    this.#material.delete(`${name}\0${version}`);
  }

  close(): void {
    this.#closed = true;
    this.#material.clear();
    this.#meta.clear();
  }
}
