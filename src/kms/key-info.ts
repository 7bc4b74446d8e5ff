// What the keyring reports about a key: its versions, states, minimum versions and rotation schedule.

import { createHash } from "node:crypto";
import type { KeyInfo, KeyStateSnapshot, KeyVersionInfo } from "./api/types.ts";
import type { KeyOrigin, KeyRow, RotationPolicy, VersionRow } from "./db.ts";
import type { KeyType } from "./key-types.ts";

const DAY_MS = 86_400_000;

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
  /** aes-256-gcm (wrap, encrypt), hmac-sha256, ed25519 or ecdsa-p256 (sign). */
  type: KeyType;
  /** True when any version is marked compromised: the key still decrypts, but its data should be re-encrypted. */
  compromised: boolean;
  versions: KeyringVersionInfo[];
}

/** Due time (ms) of automatic rotation, from stored timestamps only, so it survives restarts. */
export function nextRotation(key: KeyRow, currentCreatedAt: string | undefined): number | undefined {
  if (key.rotation !== "auto" || key.rotationDays === null || currentCreatedAt === undefined) return undefined;
  return Date.parse(currentCreatedAt) + key.rotationDays * DAY_MS;
}

export function toInfo(row: KeyRow, versions: VersionRow[]): KeyringKeyInfo {
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
    type: row.type,
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

/**
 * The state part of `keys` (versions' states and scheduled destructions, minimum decryption versions) with an etag
 * that changes with it.
 */
export function keyStateSnapshot(keys: readonly KeyringKeyInfo[]): KeyStateSnapshot {
  const out = keys.map((k) => ({
    name: k.name,
    minDecryptionVersion: k.minDecryptionVersion,
    // a scheduled destruction leaves the state active but stops new encryption (keyring.ts assertEncrypts): file
    // servers' pools of data keys made ahead (vfs/dek-pool.ts) must hear of it, and of its cancellation
    versions: k.versions.map((v) => ({
      version: v.version,
      state: v.state,
      ...(v.destroyAt ? { destroyAt: v.destroyAt } : {}),
    })),
  }));
  return { etag: createHash("sha256").update(JSON.stringify(out)).digest("base64url").slice(0, 22), keys: out };
}
