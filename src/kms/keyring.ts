// The keyring: named, versioned KEKs sealed under the master key, with the lifecycle rules of DESIGN.md §3 (states,
// current version, minimum decryption and encryption versions, rotation policy, scheduled destruction). Synchronous
// and transport-free: KmsService (authorization + audit) sits on top of it for the embedded provider and the KMS
// server alike. It knows nothing about callers; every method here is already authorized.

import { createSecretKey, type KeyObject, randomFillSync } from "node:crypto";
import { AtrestError, KeyUnavailableError } from "../errors.ts";
import { assertKeyName, formatKeyRef, isValidKeyName } from "./api/key-ref.ts";
import type { DataKey, EncryptionContext, KeyInfo, KeyVersionInfo } from "./api/types.ts";
import { DEK_BYTES, parseWrapped, type WrappedHeader } from "./api/wrapped.ts";
import type { KeyOrigin, KeyRow, KeyState, KmsDb, RotationPolicy, VersionRow } from "./db.ts";
import { fillRandom } from "./random.ts";
import {
  MASTER_KEY_BYTES,
  makeMasterCheck,
  openSecret,
  sealKek,
  sealSecret,
  unsealKek,
  verifyMasterCheck,
} from "./seal.ts";
import { KEK_BYTES, unwrapDek, wrapDek } from "./wrap.ts";

export const DEFAULT_KEY_NAME = "default";
const MASTER_CHECK = "master_check";
const SECRET_PREFIX = "secret:";
const DAY_MS = 86_400_000;

export type KmsOp =
  | "generate-data-key"
  | "wrap"
  | "unwrap"
  | "rewrap"
  | "create-key"
  | "rotate-key"
  | "set-min-decryption-version";

/** Emitted for every data-path keyring operation, success or failure. Refs and context only, never key material. */
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

export interface KeyringVersionInfo extends KeyVersionInfo {
  stateChangedAt: string;
  /** Scheduled destruction time, if a destroy request was approved and not cancelled. */
  destroyAt?: string;
  destroyRequest?: string;
}

export interface RotationInfo {
  policy: RotationPolicy;
  /** Cryptoperiod of `auto` rotation. */
  periodDays?: number;
  /** When the scheduler will rotate (current version's creation + period); `auto` only. */
  nextRotationAt?: string;
}

export interface KeyringKeyInfo extends KeyInfo {
  minDecryptionVersion: number;
  minEncryptionVersion: number;
  rotation: RotationInfo;
  origin: KeyOrigin;
  /** True when any version is marked compromised: the key still decrypts, but its data should be re-encrypted. */
  compromised: boolean;
  versions: KeyringVersionInfo[];
}

export interface CreateKeyOptions {
  /** Start in pre-active: nothing can use the key until an operator activates version 1. */
  preActive?: boolean;
  rotation?: RotationPolicy;
  rotationDays?: number;
  /** BYOK: 32 bytes of imported material for version 1 (copied; the caller zeroes its buffer). */
  material?: Buffer;
}

export interface KeyPolicyPatch {
  rotation?: RotationPolicy;
  rotationDays?: number | null;
  minDecryptionVersion?: number;
  minEncryptionVersion?: number;
}

/** States under which a version may still decrypt. pre-active is not yet usable; destroyed has no material. */
const DECRYPTABLE: ReadonlySet<KeyState> = new Set(["active", "deactivated", "compromised"]);

/** Allowed manual state changes (NIST SP 800-57 / KMIP): no way back to active, destruction only via dual control. */
const TRANSITIONS: Readonly<Record<KeyState, readonly KeyState[]>> = {
  "pre-active": ["active", "compromised"],
  active: ["deactivated", "compromised"],
  deactivated: ["compromised"],
  compromised: [],
  destroyed: [],
};

export const MIN_DESTROY_DAYS = 7;
export const MAX_DESTROY_DAYS = 30;

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
  #epoch = 0;
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
        insertNewKey(db, master, DEFAULT_KEY_NAME, now().toISOString(), {});
        created = true;
      }
      return created;
    });
  }

  get db(): KmsDb {
    return this.#db;
  }

  now(): Date {
    return this.#now();
  }

  /**
   * Bumps whenever this instance noticed a change committed by another process; callers caching anything derived
   * from the database (policies) compare it to know when to drop their cache.
   */
  epoch(): number {
    this.#open();
    return this.#epoch;
  }

  generateDataKey(name: string, context: EncryptionContext, version?: number): DataKey {
    let keyRef = isValidKeyName(name) ? `kek:${name}` : "kek:?";
    return this.#audited(
      "generate-data-key",
      () => keyRef,
      context,
      () => {
        const { kek, v } = this.#encryptionKek(name, version);
        keyRef = formatKeyRef(name, v);
        const plaintext = fillRandom(Buffer.alloc(DEK_BYTES));
        try {
          return { plaintext, wrapped: wrapDek(kek, name, v, plaintext, context), keyRef };
        } catch (e) {
          plaintext.fill(0);
          throw e;
        }
      },
    );
  }

  /** Wraps a caller-supplied 32-byte key (e.g. a DEK made elsewhere). */
  wrap(name: string, dek: Buffer, context: EncryptionContext, version?: number): { wrapped: Buffer; keyRef: string } {
    let keyRef = isValidKeyName(name) ? `kek:${name}` : "kek:?";
    return this.#audited(
      "wrap",
      () => keyRef,
      context,
      () => {
        if (!Buffer.isBuffer(dek) || dek.length !== DEK_BYTES) {
          throw new AtrestError("INVALID_INPUT", `only ${DEK_BYTES}-byte keys can be wrapped`);
        }
        const { kek, v } = this.#encryptionKek(name, version);
        keyRef = formatKeyRef(name, v);
        return { wrapped: wrapDek(kek, name, v, dek, context), keyRef };
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

  /**
   * Unwraps under whatever version the blob names and re-wraps under the current version; the DEK never leaves.
   * Unlike unwrap, this ignores the minimum decryption version: raising the minimum and then rewrapping is how old
   * versions are retired (only material that still exists, in a decryptable state, is used).
   */
  rewrap(wrapped: Buffer, context: EncryptionContext): { wrapped: Buffer; keyRef: string } {
    let keyRef = "kek:?";
    return this.#audited(
      "rewrap",
      () => keyRef,
      context,
      () => {
        const parsed = parseWrapped(wrapped);
        keyRef = formatKeyRef(parsed.name, parsed.version);
        const dek = unwrapDek(this.#decryptionKek(parsed, keyRef, false), parsed, context);
        try {
          const { kek, v } = this.#encryptionKek(parsed.name);
          keyRef = formatKeyRef(parsed.name, v);
          return { wrapped: wrapDek(kek, parsed.name, v, dek, context), keyRef };
        } finally {
          dek.fill(0);
        }
      },
    );
  }

  createKey(name: string, options: CreateKeyOptions = {}): KeyringKeyInfo {
    return this.#audited(
      "create-key",
      () => (isValidKeyName(name) ? formatKeyRef(name, 1) : "kek:?"),
      EMPTY_CONTEXT,
      () => {
        assertKeyName(name);
        const rotation = checkRotation(options.rotation ?? "manual", options.rotationDays ?? null, name);
        if (options.material && rotation.rotation === "auto") {
          throw new AtrestError("INVALID_INPUT", `kek:${name} is imported: automatic rotation needs generated keys`);
        }
        this.#open();
        const created = this.#db.transaction(() => {
          if (this.#db.getKey(name)) return false;
          insertNewKey(this.#db, this.#master, name, this.#now().toISOString(), options);
          this.#db.setKeyPolicy(name, { ...rotation, minDecryptionVersion: 1, minEncryptionVersion: 1 });
          return true;
        });
        if (!created) throw new AtrestError("EXISTS", `key already exists: kek:${name}`);
        this.#meta.delete(name);
        return this.#info(name);
      },
    );
  }

  /**
   * New version, current for new wraps; older versions still unwrap. `material` imports the new version (BYOK);
   * an imported key can only rotate that way, and a key with rotation policy `none` not at all.
   */
  rotateKey(name: string, material?: Buffer): KeyringKeyInfo {
    let keyRef = isValidKeyName(name) ? `kek:${name}` : "kek:?";
    return this.#audited(
      "rotate-key",
      () => keyRef,
      EMPTY_CONTEXT,
      () => {
        assertKeyName(name);
        this.#open();
        const version = this.#db.transaction(() => {
          const key = this.#db.getKey(name);
          if (!key) throw new AtrestError("NOT_FOUND", `unknown key: kek:${name}`);
          if (key.rotation === "none") {
            throw new AtrestError(
              "INVALID_INPUT",
              `kek:${name} has rotation policy none; change it (kms key policy ${name} --rotation manual) to rotate`,
            );
          }
          if (key.origin === "imported" && !material) {
            throw new AtrestError(
              "INVALID_INPUT",
              `kek:${name} is imported (BYOK): rotate it by importing new material (kms key import ${name} …)`,
            );
          }
          return this.#insertVersion(name, material);
        });
        keyRef = formatKeyRef(name, version);
        this.#meta.delete(name);
        return this.#info(name);
      },
    );
  }

  /** Rotates `name` if its `auto` cryptoperiod has elapsed at `now`; re-checked under the write lock, so two processes
   * running the scheduler rotate once. Returns the new version, or undefined if it was not due. */
  rotateIfDue(name: string, now: Date): number | undefined {
    this.#open();
    const version = this.#db.transaction(() => {
      const key = this.#db.getKey(name);
      if (key?.rotation !== "auto" || key.origin === "imported") return undefined;
      const due = nextRotation(key, this.#db.getVersion(name, key.currentVersion)?.createdAt);
      if (due === undefined || due > now.getTime()) return undefined;
      return this.#insertVersion(name, undefined);
    });
    if (version !== undefined) this.#meta.delete(name);
    return version;
  }

  /** Keys whose automatic rotation is due at `now`. */
  dueRotations(now: Date): string[] {
    this.#open();
    const out: string[] = [];
    for (const key of this.#db.autoRotatedKeys()) {
      if (key.origin === "imported") continue;
      const due = nextRotation(key, this.#db.getVersion(key.name, key.currentVersion)?.createdAt);
      if (due !== undefined && due <= now.getTime()) out.push(key.name);
    }
    return out;
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
      () => this.setPolicy(name, { minDecryptionVersion: version }),
    );
  }

  /** Rotation policy and minimum versions, validated together against the stored key. */
  setPolicy(name: string, patch: KeyPolicyPatch): KeyringKeyInfo {
    assertKeyName(name);
    this.#open();
    this.#db.transaction(() => {
      const key = this.#db.getKey(name);
      if (!key) throw new AtrestError("NOT_FOUND", `unknown key: kek:${name}`);
      const rotation = checkRotation(
        patch.rotation ?? key.rotation,
        patch.rotationDays === undefined ? key.rotationDays : patch.rotationDays,
        name,
      );
      if (rotation.rotation === "auto" && key.origin === "imported") {
        throw new AtrestError("INVALID_INPUT", `kek:${name} is imported: automatic rotation needs generated keys`);
      }
      const minDec = patch.minDecryptionVersion ?? key.minDecryptionVersion;
      const minEnc = patch.minEncryptionVersion ?? key.minEncryptionVersion;
      checkVersionBound(name, "minimum decryption version", minDec, key.currentVersion);
      checkVersionBound(name, "minimum encryption version", minEnc, key.currentVersion);
      this.#db.setKeyPolicy(name, { ...rotation, minDecryptionVersion: minDec, minEncryptionVersion: minEnc });
    });
    this.#meta.delete(name);
    return this.#info(name);
  }

  /** Manual state change (activate a pre-active version, deactivate, mark compromised). Never to `destroyed`. */
  setVersionState(name: string, version: number, state: KeyState): KeyringKeyInfo {
    assertKeyName(name);
    if (state === "destroyed") {
      throw new AtrestError("INVALID_INPUT", "destruction needs dual control: kms key destroy <name> (a request)");
    }
    this.#open();
    this.#db.transaction(() => {
      const v = this.#db.getVersion(name, version);
      if (!v) throw new AtrestError("NOT_FOUND", `unknown key version: ${formatKeyRef(name, version)}`);
      if (v.state === state) return;
      if (!TRANSITIONS[v.state].includes(state)) {
        const allowed = TRANSITIONS[v.state];
        throw new AtrestError(
          "INVALID_INPUT",
          `${formatKeyRef(name, version)} is ${v.state}: it can become ${allowed.length ? allowed.join(" or ") : "nothing else"} (not ${state})`,
        );
      }
      this.#db.setVersionState(name, version, state, this.#now().toISOString());
    });
    this.#meta.delete(name);
    return this.#info(name);
  }

  /** Versions a destroy of `name` (optionally one `version`) would cover: every version not yet destroyed. */
  destroyableVersions(name: string, version?: number): number[] {
    const info = this.getKey(name);
    const live = info.versions.filter((v) => v.state !== "destroyed").map((v) => v.version);
    if (version === undefined) {
      if (live.length === 0) throw new AtrestError("INVALID_INPUT", `every version of kek:${name} is destroyed`);
      return live;
    }
    if (!info.versions.some((v) => v.version === version)) {
      throw new AtrestError("NOT_FOUND", `unknown key version: ${formatKeyRef(name, version)}`);
    }
    if (!live.includes(version)) throw new AtrestError("INVALID_INPUT", `${formatKeyRef(name, version)} is destroyed`);
    return [version];
  }

  /** Sets (or with `at` null, clears) the destruction time of the given versions. */
  scheduleDestroy(name: string, versions: readonly number[], at: Date | null, requestId: string | null): void {
    assertKeyName(name);
    this.#open();
    this.#db.transaction(() => {
      for (const version of versions) {
        const v = this.#db.getVersion(name, version);
        if (!v || v.state === "destroyed") continue;
        this.#db.scheduleDestroy(name, version, at ? at.toISOString() : null, requestId);
      }
    });
    this.#meta.delete(name);
  }

  /** Destroys every version whose scheduled time has come; returns their refs. Idempotent across processes. */
  destroyDue(now: Date): string[] {
    this.#open();
    const done: string[] = [];
    this.#db.transaction(() => {
      for (const v of this.#db.dueDestructions(now.toISOString())) {
        if (v.state === "destroyed") continue;
        this.#db.destroyVersion(v.name, v.version, now.toISOString());
        done.push(formatKeyRef(v.name, v.version));
      }
    });
    for (const ref of done) {
      const [, name, version] = ref.split(":") as [string, string, string];
      this.#meta.delete(name);
      this.#material.delete(`${name}\0${Number(version.slice(1))}`);
    }
    return done;
  }

  /** Raw KEK material of one version in a fresh buffer the caller must zero (export under dual control only). */
  exportMaterial(name: string, version: number): Buffer {
    assertKeyName(name);
    this.#open();
    const row = this.#db.getVersion(name, version);
    if (!row) throw new AtrestError("NOT_FOUND", `unknown key version: ${formatKeyRef(name, version)}`);
    if (!row.sealed) throw new KeyUnavailableError(`${formatKeyRef(name, version)} is destroyed`);
    return unsealKek(this.#master, name, version, row.sealed);
  }

  /** Seals a KMS-internal secret under the master key (resealed on master rotation by `rotateMaster`'s hook). */
  sealSecret(label: string, plaintext: Buffer): Buffer {
    this.#open();
    return sealSecret(this.#master, label, plaintext);
  }

  openSecret(label: string, sealed: Uint8Array): Buffer {
    this.#open();
    return openSecret(this.#master, label, sealed);
  }

  /**
   * A named random 32-byte secret kept in the KMS database sealed under the master key (e.g. the KMS audit log key),
   * created on first use. Survives master rotation. The result is a fresh buffer the caller must zero.
   */
  namedSecret(name: string): Buffer {
    const k = SECRET_PREFIX + name;
    const existing = this.#db.getMeta(k);
    if (existing) return this.openSecret(k, existing);
    const fresh = Buffer.alloc(32);
    randomFillSync(fresh);
    const stored = this.#db.transaction(() => {
      const raced = this.#db.getMeta(k);
      if (raced) return raced;
      this.#db.setMeta(k, this.sealSecret(k, fresh));
      return undefined;
    });
    if (stored) {
      fresh.fill(0);
      return this.openSecret(k, stored);
    }
    return fresh;
  }

  /**
   * Master-key rotation: re-seals every KEK version, every named secret and whatever `reseal` covers under
   * `newMaster`, writes the new check value and calls `persist(newMaster)` (which stores it under the unseal key), all
   * in one transaction: a crash leaves either the old or the new master valid, never a mix. Takes ownership of
   * `newMaster`; the old master is zeroed.
   */
  rotateMaster(
    newMaster: Buffer,
    persist: (newMaster: Buffer) => void,
    reseal?: (reseal: (label: string, sealed: Uint8Array) => Buffer) => void,
  ): number {
    if (newMaster.length !== MASTER_KEY_BYTES) throw new AtrestError("INVALID_INPUT", "master key must be 32 bytes");
    this.#open();
    const old = this.#master;
    const count = this.#db.transaction(() => {
      let n = 0;
      for (const row of this.#db.sealedVersions()) {
        const kek = unsealKek(old, row.name, row.version, row.sealed);
        try {
          this.#db.resealVersion(row.name, row.version, sealKek(newMaster, row.name, row.version, kek));
        } finally {
          kek.fill(0);
        }
        n++;
      }
      const resealOne = (label: string, sealed: Uint8Array): Buffer => {
        const plain = openSecret(old, label, sealed);
        try {
          return sealSecret(newMaster, label, plain);
        } finally {
          plain.fill(0);
        }
      };
      const secrets = this.#db.prepare("SELECT k, v FROM meta WHERE k LIKE 'secret:%'").all() as {
        k: string;
        v: Uint8Array;
      }[];
      for (const { k, v } of secrets) this.#db.putMeta(k, resealOne(k, v));
      reseal?.(resealOne);
      this.#db.putMeta(MASTER_CHECK, makeMasterCheck(newMaster));
      persist(newMaster);
      return n;
    });
    this.#master = newMaster;
    old.fill(0);
    return count;
  }

  /** State of one version from the cache (cheap enough for the data path), undefined if unknown. */
  stateOf(name: string, version: number): KeyState | undefined {
    return this.#key(name)?.versions.get(version)?.state;
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

  #insertVersion(name: string, material: Buffer | undefined): number {
    const next = this.#db.maxVersion(name) + 1;
    const kek = Buffer.alloc(KEK_BYTES);
    if (material) {
      if (material.length !== KEK_BYTES)
        throw new AtrestError("INVALID_INPUT", `key material must be ${KEK_BYTES} bytes`);
      material.copy(kek);
    } else {
      randomFillSync(kek);
    }
    try {
      const at = this.#now().toISOString();
      this.#db.insertVersion(name, next, "active", at, sealKek(this.#master, name, next, kek));
    } finally {
      kek.fill(0);
    }
    this.#db.setCurrentVersion(name, next);
    return next;
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
      this.#epoch++;
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

  /** The KEK new wraps use: the current version, or a requested one between the minimum encryption and current. */
  #encryptionKek(name: string, requested?: number): { kek: KeyObject; v: number } {
    assertKeyName(name);
    const key = this.#key(name);
    if (!key) throw new KeyUnavailableError(`unknown key: kek:${name}`);
    const v = requested ?? key.row.currentVersion;
    if (!Number.isInteger(v) || v < key.row.minEncryptionVersion || v > key.row.currentVersion) {
      throw new KeyUnavailableError(
        `${formatKeyRef(name, v)} cannot encrypt: versions v${key.row.minEncryptionVersion} to v${key.row.currentVersion} of kek:${name} can`,
      );
    }
    const state = key.versions.get(v)?.state;
    if (state !== "active") {
      throw new KeyUnavailableError(`${formatKeyRef(name, v)} cannot encrypt: it is ${state ?? "missing"}`);
    }
    return { kek: this.#kek(name, v), v };
  }

  #decryptionKek(parsed: WrappedHeader, keyRef: string, enforceMinimum = true): KeyObject {
    const key = this.#key(parsed.name);
    if (!key) throw new KeyUnavailableError(`unknown key: ${keyRef}`);
    const v = key.versions.get(parsed.version);
    if (!v) throw new KeyUnavailableError(`unknown key version: ${keyRef}`);
    if (enforceMinimum && parsed.version < key.row.minDecryptionVersion) {
      throw new KeyUnavailableError(
        `${keyRef} is below the minimum decryption version v${key.row.minDecryptionVersion} of kek:${parsed.name}`,
      );
    }
    if (!DECRYPTABLE.has(v.state)) {
      throw new KeyUnavailableError(
        v.state === "destroyed"
          ? `${keyRef} is destroyed: data keys wrapped under it can never be unwrapped`
          : `${keyRef} is ${v.state}`,
      );
    }
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

function insertNewKey(db: KmsDb, master: Buffer, name: string, at: string, options: CreateKeyOptions): void {
  const kek = Buffer.alloc(KEK_BYTES);
  if (options.material) {
    if (options.material.length !== KEK_BYTES) {
      throw new AtrestError("INVALID_INPUT", `key material must be ${KEK_BYTES} bytes`);
    }
    options.material.copy(kek);
  } else {
    randomFillSync(kek);
  }
  try {
    db.insertKey(name, 1, at);
    db.insertVersion(name, 1, options.preActive ? "pre-active" : "active", at, sealKek(master, name, 1, kek));
    if (options.material) db.setOrigin(name, "imported");
  } finally {
    kek.fill(0);
  }
}

function checkRotation(
  rotation: RotationPolicy,
  days: number | null,
  name: string,
): { rotation: RotationPolicy; rotationDays: number | null } {
  if (rotation !== "auto" && rotation !== "manual" && rotation !== "none") {
    throw new AtrestError("INVALID_INPUT", `rotation policy must be auto, manual or none (not ${String(rotation)})`);
  }
  if (rotation !== "auto") return { rotation, rotationDays: null };
  if (days === null || !Number.isInteger(days) || days < 1 || days > 3650) {
    throw new AtrestError("INVALID_INPUT", `auto rotation of kek:${name} needs a cryptoperiod of 1 to 3650 days`);
  }
  return { rotation, rotationDays: days };
}

function checkVersionBound(name: string, what: string, v: number, current: number): void {
  if (!Number.isInteger(v) || v < 1 || v > current) {
    throw new AtrestError("INVALID_INPUT", `${what} for kek:${name} must be an integer from 1 to ${current}`);
  }
}

/** Due time (ms) of automatic rotation, from stored timestamps only, so it survives restarts. */
function nextRotation(key: KeyRow, currentCreatedAt: string | undefined): number | undefined {
  if (key.rotation !== "auto" || key.rotationDays === null || currentCreatedAt === undefined) return undefined;
  return Date.parse(currentCreatedAt) + key.rotationDays * DAY_MS;
}

function toInfo(row: KeyRow, versions: VersionRow[]): KeyringKeyInfo {
  const sorted = versions.sort((a, b) => a.version - b.version);
  const rotation: RotationInfo = { policy: row.rotation };
  if (row.rotationDays !== null) rotation.periodDays = row.rotationDays;
  const next = nextRotation(row, sorted.find((v) => v.version === row.currentVersion)?.createdAt);
  if (next !== undefined && row.origin !== "imported") rotation.nextRotationAt = new Date(next).toISOString();
  return {
    name: row.name,
    currentVersion: row.currentVersion,
    minDecryptionVersion: row.minDecryptionVersion,
    minEncryptionVersion: row.minEncryptionVersion,
    rotation,
    origin: row.origin,
    compromised: sorted.some((v) => v.state === "compromised"),
    versions: sorted.map((v) => {
      const info: KeyringVersionInfo = {
        version: v.version,
        createdAt: v.createdAt,
        state: v.state,
        stateChangedAt: v.stateChangedAt,
      };
      if (v.destroyAt) info.destroyAt = v.destroyAt;
      if (v.destroyRequest) info.destroyRequest = v.destroyRequest;
      return info;
    }),
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
