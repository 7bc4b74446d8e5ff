// What the master key protects besides KEKs, and its rotation: KMS-internal secrets sealed under it (named secrets
// such as the KMS audit log key, created on first use), KEK export under dual control, and re-sealing everything under
// a new master in one transaction.

import { randomFillSync } from "node:crypto";
import { AtrestError, KeyUnavailableError } from "../errors.ts";
import { assertKeyName, formatKeyRef } from "./api/key-ref.ts";
import type { LifecycleContext } from "./key-lifecycle.ts";
import {
  assertMasterKey,
  type MasterKeyLike,
  makeMasterCheck,
  openSecret,
  sealKek,
  sealSecret,
  unsealKek,
} from "./seal.ts";

export const MASTER_CHECK = "master_check";
const SECRET_PREFIX = "secret:";

/** Raw KEK material of one version in a fresh buffer the caller must zero (export under dual control only). */
export function exportMaterial(ctx: LifecycleContext, name: string, version: number): Buffer {
  assertKeyName(name);
  ctx.cache.check();
  const row = ctx.db.getVersion(name, version);
  if (!row) throw new AtrestError("NOT_FOUND", `unknown key version: ${formatKeyRef(name, version)}`);
  if (!row.sealed) throw new KeyUnavailableError(`${formatKeyRef(name, version)} is destroyed`);
  return unsealKek(ctx.master(), name, version, row.sealed);
}

/**
 * A named random 32-byte secret kept in the KMS database sealed under the master key, created on first use.
 * Survives master rotation. The result is a fresh buffer the caller must zero.
 */
export function namedSecret(ctx: LifecycleContext, name: string): Buffer {
  ctx.cache.check();
  const k = SECRET_PREFIX + name;
  const existing = ctx.db.getMeta(k);
  if (existing) return openSecret(ctx.master(), k, existing);
  const fresh = Buffer.alloc(32);
  randomFillSync(fresh);
  const stored = ctx.db.transaction(() => {
    const raced = ctx.db.getMeta(k);
    if (raced) return raced;
    ctx.db.setMeta(k, sealSecret(ctx.master(), k, fresh));
    return undefined;
  });
  if (stored) {
    fresh.fill(0);
    return openSecret(ctx.master(), k, stored);
  }
  return fresh;
}

/**
 * Re-seals every KEK version, every named secret and whatever `reseal` covers under `newMaster`, writes the new check
 * value and calls `persist(newMaster)` (which stores it under the unseal key), all in one transaction: a crash leaves
 * either the old or the new master valid, never a mix. Returns the number of KEK versions re-sealed; switching the
 * keyring to the new master is the caller's.
 */
export function resealUnderNewMaster(
  ctx: LifecycleContext,
  newMaster: MasterKeyLike,
  persist: (newMaster: MasterKeyLike) => void,
  reseal?: (reseal: (label: string, sealed: Uint8Array) => Buffer) => void,
): number {
  assertMasterKey(newMaster);
  ctx.cache.check();
  const old = ctx.master();
  return ctx.db.transaction(() => {
    let n = 0;
    for (const row of ctx.db.sealedVersions()) {
      const kek = unsealKek(old, row.name, row.version, row.sealed);
      try {
        ctx.db.resealVersion(row.name, row.version, sealKek(newMaster, row.name, row.version, kek));
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
    const secrets = ctx.db.prepare("SELECT k, v FROM meta WHERE k LIKE 'secret:%'").all() as {
      k: string;
      v: Uint8Array;
    }[];
    for (const { k, v } of secrets) ctx.db.putMeta(k, resealOne(k, v));
    resealAppSecrets(ctx, resealOne);
    resealAuditMarks(ctx, resealOne);
    reseal?.(resealOne);
    ctx.db.putMeta(MASTER_CHECK, makeMasterCheck(newMaster));
    persist(newMaster);
    return n;
  });
}

/** The seal label of an application secret's version (secrets.ts): binds the sealed value to its name and version. */
export function appSecretLabel(name: string, version: number): string {
  return `app-secret:${name}:v${version}`;
}

/** Every live application secret version, re-sealed under the new master (inside the rotation's transaction). */
function resealAppSecrets(ctx: LifecycleContext, reseal: (label: string, sealed: Uint8Array) => Buffer): void {
  const rows = ctx.db.prepare("SELECT name, version, sealed FROM secret_versions WHERE sealed IS NOT NULL").all() as {
    name: string;
    version: number;
    sealed: Uint8Array;
  }[];
  const update = ctx.db.prepare("UPDATE secret_versions SET sealed = ? WHERE name = ? AND version = ?");
  for (const r of rows) update.run(reseal(appSecretLabel(r.name, r.version), r.sealed), r.name, r.version);
}

/** The seal label of an audit high-water mark (audit-marks.ts): binds it to its client and log. */
export function auditMarkLabel(client: string, log: string): string {
  return `audit-mark:${client}:${log}`;
}

/** Every audit high-water mark, re-sealed under the new master (inside the rotation's transaction). */
function resealAuditMarks(ctx: LifecycleContext, reseal: (label: string, sealed: Uint8Array) => Buffer): void {
  const rows = ctx.db.prepare("SELECT client, log, sealed FROM audit_marks").all() as {
    client: string;
    log: string;
    sealed: Uint8Array;
  }[];
  const update = ctx.db.prepare("UPDATE audit_marks SET sealed = ? WHERE client = ? AND log = ?");
  for (const r of rows) update.run(reseal(auditMarkLabel(r.client, r.log), r.sealed), r.client, r.log);
}
