// The keyring: named, versioned KEKs sealed under the master key, with wrap/unwrap policy (states, current version,
// minimum decryption version). Synchronous and transport-free so the embedded provider and the future KMS server
// (mTLS + Shamir unseal) share it unchanged.

import { createSecretKey, type KeyObject, randomFillSync } from "node:crypto";
import { AtrestError, KeyUnavailableError } from "../errors.ts";
import type { KeyRow, KeyState, KmsDb, VersionRow } from "./db.ts";
import { fillRandom } from "./random.ts";
import { MASTER_KEY_BYTES, makeMasterCheck, sealKek, unsealKek, verifyMasterCheck } from "./seal.ts";
import type { DataKey, EncryptionContext, KeyInfo } from "./types.ts";
import {
  assertKeyName,
  DEK_BYTES,
  formatKeyRef,
  isValidKeyName,
  KEK_BYTES,
  parseWrapped,
  unwrapDek,
  type WrappedHeader,
  wrapDek,
} from "./wrap.ts";

export const DEFAULT_KEY_NAME = "default";
const MASTER_CHECK = "master_check";

export type KmsOp =
  | "generate-data-key"
  | "unwrap"
  | "rewrap"
  | "create-key"
  | "rotate-key"
  | "set-min-decryption-version";

/** Emitted for every keyring operation, success or failure. Carries refs and context only, never key material. */
export interface KmsAuditEvent {
  op: KmsOp;
  keyRef: string;
  context: EncryptionContext;
  outcome: "success" | "failure";
  reason?: string;
}

export interface KeyringOptions {
  /** Called synchronously; if it throws, the operation fails (fail closed: no unaudited key use). */
  audit?: (event: KmsAuditEvent) => void;
  now?: () => Date;
  /**
   * How stale this instance's view of changes made by *other* processes (rotation, minimum decryption version) may
   * get, in ms. Checking costs a SQLite call (~2.5 µs, a tenth of an unwrap), so the hot path checks at most this
   * often. Changes made through this instance apply at once. Default 100; 0 checks on every call.
   */
  refreshMs?: number;
}

export interface KeyringKeyInfo extends KeyInfo {
  minDecryptionVersion: number;
}

/** States under which a version may still decrypt. pre-active is not yet usable; destroyed has no material. */
const DECRYPTABLE: ReadonlySet<KeyState> = new Set(["active", "deactivated", "compromised"]);

interface CachedKey {
  row: KeyRow;
  versions: Map<number, VersionRow>;
}

const EMPTY_CONTEXT: EncryptionContext = Object.freeze({});

export class Keyring {
  readonly #db: KmsDb;
  #master: Buffer;
  readonly #audit?: (event: KmsAuditEvent) => void;
  readonly #now: () => Date;
  readonly #meta = new Map<string, CachedKey | null>();
  // KEKs as KeyObjects: the plaintext Buffer from unsealing is zeroed at once; the copy inside the KeyObject lives in
  // native memory that JS cannot zero, and is released when close() drops the references and GC collects them.
  readonly #material = new Map<string, KeyObject>();
  #dataVersion = -1;
  #checkedAt = Number.NEGATIVE_INFINITY;
  readonly #refreshMs: number;
  #closed = false;

  /** Takes ownership of `master` (zeroed on close). Throws KeyUnavailableError if it does not match the database. */
  constructor(db: KmsDb, master: Buffer, options: KeyringOptions = {}) {
    if (master.length !== MASTER_KEY_BYTES) throw new AtrestError("INVALID_INPUT", "master key must be 32 bytes");
    this.#db = db;
    this.#master = master;
    this.#audit = options.audit;
    this.#now = options.now ?? (() => new Date());
    this.#refreshMs = options.refreshMs ?? 100;
    const check = db.getMeta(MASTER_CHECK);
    if (check === undefined) {
      throw new KeyUnavailableError("KMS database is not initialised (run atrest init)");
    }
    verifyMasterCheck(master, check);
  }

  /**
   * Idempotent first-time setup of a database under `master`: the master check value and the `default` KEK.
   * Returns true if anything was created. Refuses a database initialised under a different master key.
   */
  static initialise(db: KmsDb, master: Buffer, now: () => Date = () => new Date()): boolean {
    return db.transaction(() => {
      let created = false;
      const check = db.getMeta(MASTER_CHECK);
      if (check === undefined) {
        db.setMeta(MASTER_CHECK, makeMasterCheck(master));
        created = true;
      } else {
        verifyMasterCheck(master, check);
      }
      if (!db.getKey(DEFAULT_KEY_NAME)) {
        insertNewKey(db, master, DEFAULT_KEY_NAME, now().toISOString());
        created = true;
      }
      return created;
    });
  }

  generateDataKey(name: string, context: EncryptionContext): DataKey {
    let keyRef = isValidKeyName(name) ? `kek:${name}` : "kek:?";
    return this.#audited(
      "generate-data-key",
      () => keyRef,
      context,
      () => {
        assertKeyName(name);
        const key = this.#key(name);
        if (!key) throw new KeyUnavailableError(`unknown key: kek:${name}`);
        const version = key.row.currentVersion;
        keyRef = formatKeyRef(name, version);
        const v = key.versions.get(version);
        if (v?.state !== "active") {
          throw new KeyUnavailableError(`current version is not active: ${keyRef} (${v?.state ?? "missing"})`);
        }
        const kek = this.#kek(name, version);
        const plaintext = fillRandom(Buffer.alloc(DEK_BYTES));
        try {
          return { plaintext, wrapped: wrapDek(kek, name, version, plaintext, context), keyRef };
        } catch (e) {
          plaintext.fill(0);
          throw e;
        }
      },
    );
  }

  /** Returns the DEK in a fresh buffer the caller owns and must zero. */
  unwrap(wrapped: Buffer, context: EncryptionContext): { dek: Buffer; keyRef: string } {
    let keyRef = "kek:?";
    return this.#audited(
      "unwrap",
      () => keyRef,
      context,
      () => {
        const parsed = parseWrapped(wrapped);
        keyRef = formatKeyRef(parsed.name, parsed.version);
        return { dek: unwrapDek(this.#decryptionKek(parsed, keyRef), parsed, context), keyRef };
      },
    );
  }

  /** Unwraps under whatever version the blob names and re-wraps under the current version; the DEK never leaves. */
  rewrap(wrapped: Buffer, context: EncryptionContext): { wrapped: Buffer; keyRef: string } {
    const { dek } = this.unwrap(wrapped, context);
    try {
      const name = parseWrapped(wrapped).name;
      let keyRef = `kek:${name}`;
      return this.#audited(
        "rewrap",
        () => keyRef,
        context,
        () => {
          const key = this.#key(name);
          if (!key) throw new KeyUnavailableError(`unknown key: kek:${name}`);
          const version = key.row.currentVersion;
          keyRef = formatKeyRef(name, version);
          if (key.versions.get(version)?.state !== "active") {
            throw new KeyUnavailableError(`current version is not active: ${keyRef}`);
          }
          return { wrapped: wrapDek(this.#kek(name, version), name, version, dek, context), keyRef };
        },
      );
    } finally {
      dek.fill(0);
    }
  }

  createKey(name: string): KeyringKeyInfo {
    return this.#audited(
      "create-key",
      () => (isValidKeyName(name) ? formatKeyRef(name, 1) : "kek:?"),
      EMPTY_CONTEXT,
      () => {
        assertKeyName(name);
        this.#open();
        const created = this.#db.transaction(() => {
          if (this.#db.getKey(name)) return false;
          insertNewKey(this.#db, this.#master, name, this.#now().toISOString());
          return true;
        });
        if (!created) throw new AtrestError("EXISTS", `key already exists: kek:${name}`);
        this.#meta.delete(name);
        return this.#info(name);
      },
    );
  }

  rotateKey(name: string): KeyringKeyInfo {
    let keyRef = isValidKeyName(name) ? `kek:${name}` : "kek:?";
    return this.#audited(
      "rotate-key",
      () => keyRef,
      EMPTY_CONTEXT,
      () => {
        assertKeyName(name);
        this.#open();
        const version = this.#db.transaction(() => {
          if (!this.#db.getKey(name)) throw new AtrestError("NOT_FOUND", `unknown key: kek:${name}`);
          const next = this.#db.maxVersion(name) + 1;
          const kek = Buffer.alloc(KEK_BYTES);
          randomFillSync(kek);
          try {
            this.#db.insertVersion(
              name,
              next,
              "active",
              this.#now().toISOString(),
              sealKek(this.#master, name, next, kek),
            );
          } finally {
            kek.fill(0);
          }
          this.#db.setCurrentVersion(name, next);
          return next;
        });
        keyRef = formatKeyRef(name, version);
        this.#meta.delete(name);
        return this.#info(name);
      },
    );
  }

  /**
   * Versions below `version` stop decrypting (KeyUnavailableError). Bounded by the current version so new wraps
   * always stay readable. Lowering it again is allowed while the old material still exists (as in Vault).
   */
  setMinDecryptionVersion(name: string, version: number): KeyringKeyInfo {
    const keyRef = isValidKeyName(name) ? `kek:${name}:min-v${version}` : "kek:?";
    return this.#audited(
      "set-min-decryption-version",
      () => keyRef,
      EMPTY_CONTEXT,
      () => {
        assertKeyName(name);
        this.#open();
        this.#db.transaction(() => {
          const key = this.#db.getKey(name);
          if (!key) throw new AtrestError("NOT_FOUND", `unknown key: kek:${name}`);
          if (!Number.isInteger(version) || version < 1 || version > key.currentVersion) {
            throw new AtrestError(
              "INVALID_INPUT",
              `minimum decryption version for kek:${name} must be an integer from 1 to ${key.currentVersion}`,
            );
          }
          this.#db.setMinDecryptionVersion(name, version);
        });
        this.#meta.delete(name);
        return this.#info(name);
      },
    );
  }

  getKey(name: string): KeyringKeyInfo {
    assertKeyName(name);
    this.#open();
    return this.#info(name);
  }

  listKeys(): KeyringKeyInfo[] {
    this.#open();
    const versions = new Map<string, VersionRow[]>();
    for (const v of this.#db.listVersions()) {
      const list = versions.get(v.name) ?? [];
      list.push(v);
      versions.set(v.name, list);
    }
    return this.#db.listKeys().map((row) => toInfo(row, versions.get(row.name) ?? []));
  }

  /** Zeroes the master key and every cached KEK. Does not close the database (the owner does). */
  close(): void {
    this.#closed = true;
    this.#master.fill(0);
    this.#dropMaterial();
    this.#meta.clear();
  }

  #audited<T>(op: KmsOp, keyRef: () => string, context: EncryptionContext, fn: () => T): T {
    let result: T;
    try {
      result = fn();
    } catch (e) {
      this.#audit?.({ op, keyRef: keyRef(), context, outcome: "failure", reason: (e as Error).message });
      throw e;
    }
    try {
      this.#audit?.({ op, keyRef: keyRef(), context, outcome: "success" });
    } catch (e) {
      scrub(result);
      throw e;
    }
    return result;
  }

  #open(): void {
    if (this.#closed) throw new KeyUnavailableError("KMS is closed");
    const t = performance.now();
    if (t - this.#checkedAt < this.#refreshMs) return;
    this.#checkedAt = t;
    // Another process (e.g. `atrest kms key rotate`) may have changed the keyring: drop everything cached.
    const dv = this.#db.dataVersion();
    if (dv !== this.#dataVersion) {
      this.#meta.clear();
      this.#dropMaterial();
      this.#dataVersion = dv;
    }
  }

  #key(name: string): CachedKey | null {
    this.#open();
    let cached = this.#meta.get(name);
    if (cached === undefined) {
      const row = this.#db.getKey(name);
      cached = row ? { row, versions: new Map(this.#db.listVersions(name).map((v) => [v.version, v])) } : null;
      this.#meta.set(name, cached);
    }
    return cached;
  }

  #info(name: string): KeyringKeyInfo {
    const key = this.#key(name);
    if (!key) throw new AtrestError("NOT_FOUND", `unknown key: kek:${name}`);
    return toInfo(key.row, [...key.versions.values()]);
  }

  #decryptionKek(parsed: WrappedHeader, keyRef: string): KeyObject {
    const key = this.#key(parsed.name);
    if (!key) throw new KeyUnavailableError(`unknown key: ${keyRef}`);
    const v = key.versions.get(parsed.version);
    if (!v) throw new KeyUnavailableError(`unknown key version: ${keyRef}`);
    if (parsed.version < key.row.minDecryptionVersion) {
      throw new KeyUnavailableError(
        `${keyRef} is below the minimum decryption version v${key.row.minDecryptionVersion} of kek:${parsed.name}`,
      );
    }
    if (!DECRYPTABLE.has(v.state)) throw new KeyUnavailableError(`${keyRef} is ${v.state}`);
    return this.#kek(parsed.name, parsed.version);
  }

  #kek(name: string, version: number): KeyObject {
    const id = `${name}\0${version}`;
    let kek = this.#material.get(id);
    if (!kek) {
      const row = this.#db.getVersion(name, version);
      if (!row?.sealed) throw new KeyUnavailableError(`no key material: ${formatKeyRef(name, version)}`);
      const raw = unsealKek(this.#master, name, version, row.sealed);
      try {
        kek = createSecretKey(raw);
      } finally {
        raw.fill(0);
      }
      this.#material.set(id, kek);
    }
    return kek;
  }

  #dropMaterial(): void {
    this.#material.clear();
  }
}

function insertNewKey(db: KmsDb, master: Buffer, name: string, at: string): void {
  const kek = Buffer.alloc(KEK_BYTES);
  randomFillSync(kek);
  try {
    db.insertKey(name, 1, at);
    db.insertVersion(name, 1, "active", at, sealKek(master, name, 1, kek));
  } finally {
    kek.fill(0);
  }
}

function toInfo(row: KeyRow, versions: VersionRow[]): KeyringKeyInfo {
  return {
    name: row.name,
    currentVersion: row.currentVersion,
    minDecryptionVersion: row.minDecryptionVersion,
    versions: versions
      .sort((a, b) => a.version - b.version)
      .map((v) => ({ version: v.version, createdAt: v.createdAt, state: v.state })),
  };
}

/** If auditing fails after a DEK was produced, the caller never sees it, so zero it here. */
function scrub(result: unknown): void {
  if (result && typeof result === "object") {
    const r = result as { plaintext?: unknown; dek?: unknown };
    if (Buffer.isBuffer(r.plaintext)) r.plaintext.fill(0);
    if (Buffer.isBuffer(r.dek)) r.dek.fill(0);
  }
}
