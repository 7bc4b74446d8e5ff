// Key lifecycle (DESIGN.md §3): creating keys and versions, rotation (manual, and `auto` when due), minimum decryption
// and encryption versions, manual state changes, and scheduled destruction. Every change runs in one database
// transaction and re-checks the stored row, so processes sharing kms.db cannot race each other into a bad state.

import { AtrestError } from "../errors.ts";
import { assertKeyName, formatKeyRef } from "./api/key-ref.ts";
import type { KeyState, KmsDb, RotationPolicy } from "./db.ts";
import type { KeyCache } from "./key-cache.ts";
import { type KeyringKeyInfo, nextRotation } from "./key-info.ts";
import { DEFAULT_KEY_TYPE, generateMaterial, type KeyType, MATERIAL_BYTES } from "./key-types.ts";
import { type MasterKeyLike, sealKek } from "./seal.ts";

export const MIN_DESTROY_DAYS = 7;
export const MAX_DESTROY_DAYS = 30;

export interface CreateKeyOptions {
  /** Start in pre-active: nothing can use the key until an operator activates version 1. */
  preActive?: boolean;
  rotation?: RotationPolicy;
  rotationDays?: number;
  /** BYOK: 32 bytes of imported material for version 1 (copied; the caller zeroes its buffer). AES keys only. */
  material?: Buffer;
  /** What the key is for (key-types.ts); default aes-256-gcm. Fixed for every later version. */
  type?: KeyType;
}

export interface KeyPolicyPatch {
  rotation?: RotationPolicy;
  rotationDays?: number | null;
  minDecryptionVersion?: number;
  minEncryptionVersion?: number;
}

/** What lifecycle changes work on: the keyring's database, its cache, its (rotatable) master key and clock. */
export interface LifecycleContext {
  db: KmsDb;
  cache: KeyCache;
  master(): MasterKeyLike;
  now(): Date;
}

/** Allowed manual state changes (NIST SP 800-57 / KMIP): no way back to active, destruction only via dual control. */
const TRANSITIONS: Readonly<Record<KeyState, readonly KeyState[]>> = {
  "pre-active": ["active", "compromised"],
  active: ["deactivated", "compromised"],
  deactivated: ["compromised"],
  compromised: [],
  destroyed: [],
};

export function createKey(ctx: LifecycleContext, name: string, options: CreateKeyOptions = {}): KeyringKeyInfo {
  assertKeyName(name);
  const rotation = checkRotation(options.rotation ?? "manual", options.rotationDays ?? null, name);
  if (options.material && rotation.rotation === "auto") {
    throw new AtrestError("INVALID_INPUT", `kek:${name} is imported: automatic rotation needs generated keys`);
  }
  const type = options.type ?? DEFAULT_KEY_TYPE;
  if (options.material && type !== DEFAULT_KEY_TYPE) {
    throw new AtrestError("INVALID_INPUT", `only ${DEFAULT_KEY_TYPE} keys can be imported (not ${type})`);
  }
  ctx.cache.check();
  const created = ctx.db.transaction(() => {
    if (ctx.db.getKey(name)) return false;
    insertNewKey(ctx.db, ctx.master(), name, ctx.now().toISOString(), options);
    ctx.db.setKeyPolicy(name, { ...rotation, minDecryptionVersion: 1, minEncryptionVersion: 1 });
    return true;
  });
  if (!created) throw new AtrestError("EXISTS", `key already exists: kek:${name}`);
  ctx.cache.forget(name);
  return ctx.cache.info(name);
}

/**
 * New version, current for new wraps; older versions still unwrap. `material` imports the new version (BYOK);
 * an imported key can only rotate that way, and a key with rotation policy `none` not at all.
 */
export function rotateKey(ctx: LifecycleContext, name: string, material?: Buffer): KeyringKeyInfo {
  assertKeyName(name);
  ctx.cache.check();
  ctx.db.transaction(() => {
    const key = ctx.db.getKey(name);
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
    insertVersion(ctx, name, key.type, material);
  });
  ctx.cache.forget(name);
  return ctx.cache.info(name);
}

/** Rotates `name` if its `auto` cryptoperiod has elapsed at `now`; re-checked under the write lock, so two processes
 * running the scheduler rotate once. Returns the new version, or undefined if it was not due. */
export function rotateIfDue(ctx: LifecycleContext, name: string, now: Date): number | undefined {
  ctx.cache.check();
  const version = ctx.db.transaction(() => {
    const key = ctx.db.getKey(name);
    if (key?.rotation !== "auto" || key.origin === "imported") return undefined;
    const due = nextRotation(key, ctx.db.getVersion(name, key.currentVersion)?.createdAt);
    if (due === undefined || due > now.getTime()) return undefined;
    return insertVersion(ctx, name, key.type, undefined);
  });
  if (version !== undefined) ctx.cache.forget(name);
  return version;
}

/** Keys whose automatic rotation is due at `now`. */
export function dueRotations(ctx: LifecycleContext, now: Date): string[] {
  ctx.cache.check();
  const out: string[] = [];
  for (const key of ctx.db.autoRotatedKeys()) {
    if (key.origin === "imported") continue;
    const due = nextRotation(key, ctx.db.getVersion(key.name, key.currentVersion)?.createdAt);
    if (due !== undefined && due <= now.getTime()) out.push(key.name);
  }
  return out;
}

/**
 * Rotation policy and minimum versions, validated together against the stored key. Minimum versions are bounded by
 * the current version so new wraps always stay readable; lowering the minimum decryption version again is allowed
 * while the old material still exists (as in Vault).
 */
export function setPolicy(ctx: LifecycleContext, name: string, patch: KeyPolicyPatch): KeyringKeyInfo {
  assertKeyName(name);
  ctx.cache.check();
  ctx.db.transaction(() => {
    const key = ctx.db.getKey(name);
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
    ctx.db.setKeyPolicy(name, { ...rotation, minDecryptionVersion: minDec, minEncryptionVersion: minEnc });
  });
  ctx.cache.forget(name);
  return ctx.cache.info(name);
}

/** Manual state change (activate a pre-active version, deactivate, mark compromised). Never to `destroyed`. */
export function setVersionState(ctx: LifecycleContext, name: string, version: number, state: KeyState) {
  assertKeyName(name);
  if (state === "destroyed") {
    throw new AtrestError("INVALID_INPUT", "destruction needs dual control: kms key destroy <name> (a request)");
  }
  ctx.cache.check();
  ctx.db.transaction(() => {
    const v = ctx.db.getVersion(name, version);
    if (!v) throw new AtrestError("NOT_FOUND", `unknown key version: ${formatKeyRef(name, version)}`);
    if (v.state === state) return;
    if (!TRANSITIONS[v.state].includes(state)) {
      const allowed = TRANSITIONS[v.state];
      throw new AtrestError(
        "INVALID_INPUT",
        `${formatKeyRef(name, version)} is ${v.state}: it can become ${allowed.length ? allowed.join(" or ") : "nothing else"} (not ${state})`,
      );
    }
    ctx.db.setVersionState(name, version, state, ctx.now().toISOString());
  });
  ctx.cache.forget(name);
  return ctx.cache.info(name);
}

/** Versions a destroy of `name` (optionally one `version`) would cover: every version not yet destroyed. */
export function destroyableVersions(info: KeyringKeyInfo, version?: number): number[] {
  const name = info.name;
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
export function scheduleDestroy(
  ctx: LifecycleContext,
  name: string,
  versions: readonly number[],
  at: Date | null,
  requestId: string | null,
): void {
  assertKeyName(name);
  ctx.cache.check();
  ctx.db.transaction(() => {
    for (const version of versions) {
      const v = ctx.db.getVersion(name, version);
      if (!v || v.state === "destroyed") continue;
      ctx.db.scheduleDestroy(name, version, at ? at.toISOString() : null, requestId);
    }
  });
  ctx.cache.forget(name);
}

/** Destroys every version whose scheduled time has come; returns their refs. Idempotent across processes. */
export function destroyDue(ctx: LifecycleContext, now: Date): string[] {
  ctx.cache.check();
  const done: { name: string; version: number }[] = [];
  ctx.db.transaction(() => {
    for (const v of ctx.db.dueDestructions(now.toISOString())) {
      if (v.state === "destroyed") continue;
      ctx.db.destroyVersion(v.name, v.version, now.toISOString());
      done.push({ name: v.name, version: v.version });
    }
  });
  for (const v of done) ctx.cache.forgetVersion(v.name, v.version);
  return done.map((v) => formatKeyRef(v.name, v.version));
}

/** Version 1 of a new key (generated, or imported `material`), sealed under `master`. */
export function insertNewKey(
  db: KmsDb,
  master: MasterKeyLike,
  name: string,
  at: string,
  options: CreateKeyOptions,
): void {
  const type = options.type ?? DEFAULT_KEY_TYPE;
  const kek = newKek(type, options.material);
  try {
    db.insertKey(name, 1, at);
    db.insertVersion(name, 1, options.preActive ? "pre-active" : "active", at, sealKek(master, name, 1, kek));
    if (options.material) db.setOrigin(name, "imported");
    if (type !== DEFAULT_KEY_TYPE) db.setType(name, type);
  } finally {
    kek.fill(0);
  }
}

function insertVersion(ctx: LifecycleContext, name: string, type: KeyType, material: Buffer | undefined): number {
  const next = ctx.db.maxVersion(name) + 1;
  const kek = newKek(type, material);
  try {
    const at = ctx.now().toISOString();
    ctx.db.insertVersion(name, next, "active", at, sealKek(ctx.master(), name, next, kek));
  } finally {
    kek.fill(0);
  }
  ctx.db.setCurrentVersion(name, next);
  return next;
}

/** A copy of imported material, or fresh material of `type`; the caller zeroes it. */
function newKek(type: KeyType, material: Buffer | undefined): Buffer {
  if (!material) return generateMaterial(type);
  if (type !== DEFAULT_KEY_TYPE)
    throw new AtrestError("INVALID_INPUT", `only ${DEFAULT_KEY_TYPE} keys take imported material`);
  if (material.length !== MATERIAL_BYTES) {
    throw new AtrestError("INVALID_INPUT", `key material must be ${MATERIAL_BYTES} bytes`);
  }
  return Buffer.from(material);
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
