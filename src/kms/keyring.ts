// The keyring: named, versioned KEKs sealed under the master key, with the lifecycle rules of DESIGN.md §3. Synchronous
// and transport-free: KmsService (authorization + audit) sits on top of it for the embedded key manager and the KMS
// server alike. It knows nothing about callers; every method here is already authorized. This file holds the data-key
// operations; the lifecycle is in key-lifecycle.ts, the master key's other jobs in master-secrets.ts, the cache in
// key-cache.ts.

import type { KeyObject } from "node:crypto";
import { AtrestError, KeyUnavailableError } from "../errors.ts";
import { assertKeyName, formatKeyRef } from "./api/key-ref.ts";
import type { DataKey, EncryptionContext } from "./api/types.ts";
import { DEK_BYTES, parseWrapped, type WrappedHeader } from "./api/wrapped.ts";
import type { KeyState, KmsDb, VersionRow } from "./db.ts";
import { KeyCache } from "./key-cache.ts";
import { type KeyringKeyInfo, toInfo } from "./key-info.ts";
import * as lifecycle from "./key-lifecycle.ts";
import { DEFAULT_KEY_TYPE, type KeyType } from "./key-types.ts";
import {
  exportMaterial as exportMaterialOf,
  MASTER_CHECK,
  namedSecret,
  resealUnderNewMaster,
} from "./master-secrets.ts";
import { fillRandom } from "./random.ts";
import {
  assertMasterKey,
  disposeMaster,
  type MasterKeyLike,
  makeMasterCheck,
  openSecret,
  sealSecret,
  unsealKek,
  verifyMasterCheck,
} from "./seal.ts";
import { NodeUnavailableError } from "./unavailable.ts";
import { unwrapDek, wrapDek } from "./wrap.ts";

export const DEFAULT_KEY_NAME = "default";

export interface KeyringOptions {
  now?: () => Date;
  /**
   * How stale this instance's view of changes made by *other* processes (rotation, minimum decryption version) may
   * get, in ms. Checking costs a SQLite call (~2.5 µs, a tenth of an unwrap), so the hot path checks at most this
   * often. Changes made through this instance apply at once. Default 100; 0 checks on every call.
   */
  refreshMs?: number;
  /**
   * Called once when the store's master key is no longer the one this instance holds (rotated through another KMS
   * node on a shared store): the owner should seal, so custodians unseal it again under the new master.
   */
  onMasterReplaced?: () => void;
}

const AES_ONLY: readonly KeyType[] = [DEFAULT_KEY_TYPE];

const masterReplacedError = () =>
  new NodeUnavailableError(
    "the master key was rotated through another KMS node: this node sealed itself; unseal it again with the shares",
  );

/** Refuses an operation on a key of the wrong type (a signing key cannot wrap, an AES key cannot sign). */
function checkType(name: string, type: KeyType, allowed: readonly KeyType[], op: string): void {
  if (!allowed.includes(type)) {
    throw new AtrestError(
      "INVALID_INPUT",
      `kek:${name} is a ${type} key: ${op} needs a ${allowed.join(" or ")} key (kms key create --type)`,
    );
  }
}

/**
 * A version new data is encrypted under must be active and not scheduled for destruction: during a destruction's
 * waiting period it still decrypts, but what it encrypted then would be lost at the due time without anyone having
 * counted it (a whole key's current version; the file server's destroy guard counts only what exists when asked).
 */
function assertEncrypts(name: string, v: number, row: { state: KeyState; destroyAt: string | null } | undefined): void {
  if (row?.state !== "active") {
    throw new KeyUnavailableError(`${formatKeyRef(name, v)} cannot encrypt: it is ${row?.state ?? "missing"}`);
  }
  if (row.destroyAt) {
    throw new KeyUnavailableError(
      `${formatKeyRef(name, v)} cannot encrypt: it is scheduled for destruction at ${row.destroyAt} ` +
        `(kms key cancel-destroy ${name} to use it again)`,
    );
  }
}

/** States under which a version may still decrypt. pre-active is not yet usable; destroyed has no material. */
const DECRYPTABLE: ReadonlySet<KeyState> = new Set(["active", "deactivated", "compromised"]);

export class Keyring {
  readonly #db: KmsDb;
  #master: MasterKeyLike;
  readonly #now: () => Date;
  readonly #cache: KeyCache;
  readonly #onMasterReplaced: (() => void) | undefined;
  #masterReplaced = false;
  readonly #ctx: lifecycle.LifecycleContext;

  /**
   * Takes ownership of `master` (a buffer is zeroed on close, an HSM key's session closed). Throws
   * KeyUnavailableError if it does not match the database.
   */
  constructor(db: KmsDb, master: MasterKeyLike, options: KeyringOptions = {}) {
    assertMasterKey(master);
    this.#db = db;
    this.#master = master;
    this.#now = options.now ?? (() => new Date());
    this.#onMasterReplaced = options.onMasterReplaced;
    this.#cache = new KeyCache(
      db,
      (name, version, sealed) => this.#opening(() => unsealKek(this.#master, name, version, sealed)),
      options.refreshMs ?? 100,
      () => this.#checkMaster(),
    );
    this.#ctx = { db, cache: this.#cache, master: () => this.#master, now: () => this.#now() };
    const check = db.getMeta(MASTER_CHECK);
    if (check === undefined) {
      throw new KeyUnavailableError("KMS database is not initialised (run atrest init)");
    }
    verifyMasterCheck(master, check);
    // Sealing anything under a master another node has replaced would make rows no node can open: every write
    // transaction first checks, under the lock, that the store's check value is still this master's.
    db.onTransaction = this.#hook;
  }

  readonly #hook = () => this.#checkMaster();
  /** Set while this instance rotates the master: the store's check value changes under it on purpose. */
  #rotating = false;

  /**
   * Opens something sealed under the master. A row read right after another node's master rotation committed, before
   * this node heard of it, fails authentication: that is the stale master, not a corrupt row, so say so.
   */
  #opening<T>(open: () => T): T {
    try {
      return open();
    } catch (e) {
      this.#checkMaster();
      throw e;
    }
  }

  /** Throws (and tells the owner, once) if the store's master key is no longer this instance's. */
  #checkMaster(): void {
    if (this.#masterReplaced) throw masterReplacedError();
    if (this.#rotating) return;
    const check = this.#db.getMeta(MASTER_CHECK);
    try {
      if (check === undefined) throw new KeyUnavailableError("no master check");
      verifyMasterCheck(this.#master, check);
    } catch {
      this.#masterReplaced = true;
      this.#onMasterReplaced?.();
      throw masterReplacedError();
    }
  }

  /**
   * Idempotent first-time setup of a database under `master`: the master check value and the `default` KEK.
   * Returns true if anything was created. Refuses a database initialised under a different master key.
   */
  static initialise(db: KmsDb, master: MasterKeyLike, now: () => Date = () => new Date()): boolean {
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
        lifecycle.insertNewKey(db, master, DEFAULT_KEY_NAME, now().toISOString(), {});
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
    return this.#cache.epoch();
  }

  // ---- data keys ----

  generateDataKey(name: string, context: EncryptionContext, version?: number): DataKey {
    const { kek, v } = this.#encryptionKek(name, version);
    const plaintext = fillRandom(Buffer.alloc(DEK_BYTES));
    try {
      return { plaintext, wrapped: wrapDek(kek, name, v, plaintext, context), keyRef: formatKeyRef(name, v) };
    } catch (e) {
      plaintext.fill(0);
      throw e;
    }
  }

  /**
   * The version a new wrap under `name` uses now (its current one, which must be active); throws as a wrap would. No
   * key material is touched: file servers check a data key made ahead against it before using it (vfs/dek-pool.ts).
   */
  encryptionVersion(name: string): number {
    assertKeyName(name);
    const key = this.#cache.key(name);
    if (!key) throw new KeyUnavailableError(`unknown key: kek:${name}`);
    checkType(name, key.row.type, AES_ONLY, "wrap");
    const v = key.row.currentVersion;
    assertEncrypts(name, v, key.versions.get(v));
    return v;
  }

  /** Wraps a caller-supplied 32-byte key (e.g. a DEK made elsewhere). */
  wrap(name: string, dek: Buffer, context: EncryptionContext, version?: number): { wrapped: Buffer; keyRef: string } {
    if (!Buffer.isBuffer(dek) || dek.length !== DEK_BYTES) {
      throw new AtrestError("INVALID_INPUT", `only ${DEK_BYTES}-byte keys can be wrapped`);
    }
    const { kek, v } = this.#encryptionKek(name, version);
    return { wrapped: wrapDek(kek, name, v, dek, context), keyRef: formatKeyRef(name, v) };
  }

  /** Returns the DEK in a fresh buffer the caller owns and must zero. */
  unwrap(wrapped: Buffer, context: EncryptionContext): { dek: Buffer; keyRef: string } {
    const parsed = parseWrapped(wrapped);
    const keyRef = formatKeyRef(parsed.name, parsed.version);
    return { dek: unwrapDek(this.#decryptionKek(parsed, keyRef), parsed, context), keyRef };
  }

  /**
   * Unwraps under whatever version the blob names and re-wraps under the current version; the DEK never leaves.
   * Unlike unwrap, this ignores the minimum decryption version: raising the minimum and then rewrapping is how old
   * versions are retired (only material that still exists, in a decryptable state, is used).
   */
  rewrap(wrapped: Buffer, context: EncryptionContext): { wrapped: Buffer; keyRef: string } {
    const parsed = parseWrapped(wrapped);
    const dek = unwrapDek(
      this.#decryptionKek(parsed, formatKeyRef(parsed.name, parsed.version), false),
      parsed,
      context,
    );
    try {
      const { kek, v } = this.#encryptionKek(parsed.name);
      return { wrapped: wrapDek(kek, parsed.name, v, dek, context), keyRef: formatKeyRef(parsed.name, v) };
    } finally {
      dek.fill(0);
    }
  }

  // ---- application keys (app-crypto.ts): encrypt/decrypt, HMAC, signatures ----

  /**
   * The key of `name` for producing something new (a ciphertext, MAC or signature), with the version used: the
   * current one, or `version` within the minimum encryption version. `op` names the operation in refusals.
   */
  useKey(
    name: string,
    types: readonly KeyType[],
    op: string,
    version?: number,
  ): { key: KeyObject; version: number; type: KeyType } {
    const { kek, v, type } = this.#encryptionKek(name, version, types, op);
    return { key: kek, version: v, type };
  }

  /**
   * The key of `name` at `version` for checking (decrypt, verify): a decryptable state, at or above the minimum
   * decryption version unless `enforceMinimum` is false (re-encryption retires old versions that way).
   */
  checkKey(
    name: string,
    version: number,
    types: readonly KeyType[],
    op: string,
    enforceMinimum = true,
  ): { key: KeyObject; type: KeyType } {
    assertKeyName(name);
    const key = this.#decryptionKek({ name, version }, formatKeyRef(name, version), enforceMinimum, types, op);
    return { key, type: this.#cache.key(name)?.row.type ?? DEFAULT_KEY_TYPE };
  }

  // ---- lifecycle (key-lifecycle.ts) ----

  createKey(name: string, options: lifecycle.CreateKeyOptions = {}): KeyringKeyInfo {
    return lifecycle.createKey(this.#ctx, name, options);
  }

  rotateKey(name: string, material?: Buffer): KeyringKeyInfo {
    return lifecycle.rotateKey(this.#ctx, name, material);
  }

  rotateIfDue(name: string, now: Date): number | undefined {
    return lifecycle.rotateIfDue(this.#ctx, name, now);
  }

  dueRotations(now: Date): string[] {
    return lifecycle.dueRotations(this.#ctx, now);
  }

  setPolicy(name: string, patch: lifecycle.KeyPolicyPatch): KeyringKeyInfo {
    return lifecycle.setPolicy(this.#ctx, name, patch);
  }

  setVersionState(name: string, version: number, state: KeyState): KeyringKeyInfo {
    return lifecycle.setVersionState(this.#ctx, name, version, state);
  }

  destroyableVersions(name: string, version?: number): number[] {
    return lifecycle.destroyableVersions(this.getKey(name), version);
  }

  scheduleDestroy(name: string, versions: readonly number[], at: Date | null, requestId: string | null): void {
    lifecycle.scheduleDestroy(this.#ctx, name, versions, at, requestId);
  }

  destroyDue(now: Date): string[] {
    return lifecycle.destroyDue(this.#ctx, now);
  }

  // ---- the master key's other jobs (master-secrets.ts) ----

  /** Raw KEK material of one version in a fresh buffer the caller must zero (export under dual control only). */
  exportMaterial(name: string, version: number): Buffer {
    return exportMaterialOf(this.#ctx, name, version);
  }

  /** Seals a KMS-internal secret under the master key (resealed on master rotation by `rotateMaster`'s hook). */
  sealSecret(label: string, plaintext: Buffer): Buffer {
    this.#cache.check();
    return sealSecret(this.#master, label, plaintext);
  }

  openSecret(label: string, sealed: Uint8Array): Buffer {
    this.#cache.check();
    return this.#opening(() => openSecret(this.#master, label, sealed));
  }

  /** A named random 32-byte secret sealed in the database (e.g. the KMS audit log key); the caller zeroes it. */
  namedSecret(name: string): Buffer {
    return namedSecret(this.#ctx, name);
  }

  /**
   * Master-key rotation (see resealUnderNewMaster): everything is re-sealed under `newMaster` and `persist`ed in one
   * transaction. Takes ownership of `newMaster`; the old master is zeroed.
   */
  rotateMaster(
    newMaster: MasterKeyLike,
    persist: (newMaster: MasterKeyLike) => void,
    reseal?: (reseal: (label: string, sealed: Uint8Array) => Buffer) => void,
  ): number {
    const old = this.#master;
    this.#checkMaster();
    this.#rotating = true;
    let count: number;
    try {
      count = resealUnderNewMaster(this.#ctx, newMaster, persist, reseal);
    } finally {
      this.#rotating = false;
    }
    this.#master = newMaster;
    disposeMaster(old);
    return count;
  }

  // ---- reads ----

  /** State of one version from the cache (cheap enough for the data path), undefined if unknown. */
  stateOf(name: string, version: number): KeyState | undefined {
    return this.#cache.key(name)?.versions.get(version)?.state;
  }

  getKey(name: string): KeyringKeyInfo {
    assertKeyName(name);
    return this.#cache.info(name);
  }

  listKeys(): KeyringKeyInfo[] {
    this.#cache.check();
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
    if (this.#db.onTransaction === this.#hook) this.#db.onTransaction = undefined;
    disposeMaster(this.#master);
    this.#cache.close();
  }

  /**
   * The key new wraps (or encryptions, MACs, signatures) use: the current version, or a requested one between the
   * minimum encryption version and the current one; it must be active and of one of `types`.
   */
  #encryptionKek(
    name: string,
    requested?: number,
    types: readonly KeyType[] = AES_ONLY,
    op = "wrap",
  ): { kek: KeyObject; v: number; type: KeyType } {
    assertKeyName(name);
    const key = this.#cache.key(name);
    if (!key) throw new KeyUnavailableError(`unknown key: kek:${name}`);
    checkType(name, key.row.type, types, op);
    const v = requested ?? key.row.currentVersion;
    if (!Number.isInteger(v) || v < key.row.minEncryptionVersion || v > key.row.currentVersion) {
      throw new KeyUnavailableError(
        `${formatKeyRef(name, v)} cannot encrypt: versions v${key.row.minEncryptionVersion} to v${key.row.currentVersion} of kek:${name} can`,
      );
    }
    assertEncrypts(name, v, key.versions.get(v));
    return { kek: this.#cache.kek(name, v), v, type: key.row.type };
  }

  #decryptionKek(
    parsed: Pick<WrappedHeader, "name" | "version">,
    keyRef: string,
    enforceMinimum = true,
    types: readonly KeyType[] = AES_ONLY,
    op = "unwrap",
  ): KeyObject {
    const key = this.#cache.key(parsed.name);
    if (!key) throw new KeyUnavailableError(`unknown key: ${keyRef}`);
    checkType(parsed.name, key.row.type, types, op);
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
    return this.#cache.kek(parsed.name, parsed.version);
  }
}
