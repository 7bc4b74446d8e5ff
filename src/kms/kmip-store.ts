// The kmip_objects table of kms.db (KMS migration 6): rows, the destruction itself and the re-seal on master rotation;
// shared by the KMIP facade (kmip-objects.ts) and the execution of an approved dual-control destroy.

import { AtrestError } from "../errors.ts";
import type { KmsDb } from "./db.ts";

export type KmipObjectType = "symmetric-key" | "secret-data";
export type KmipState = "pre-active" | "active" | "deactivated" | "compromised" | "destroyed" | "destroyed-compromised";

export interface KmipObject {
  uid: string;
  objectType: KmipObjectType;
  name: string | null;
  /** "AES" for symmetric keys. */
  algorithm: "AES" | null;
  /** Bits (a key's length; 8 × the secret's bytes). */
  length: number;
  usageMask: number;
  /** KMIP Secret Data Type (1 password, 2 seed) of secret data. */
  secretType: number | null;
  state: KmipState;
  owner: string;
  createdAt: string;
  activatedAt: string | null;
  deactivatedAt: string | null;
  compromisedAt: string | null;
  destroyedAt: string | null;
  revocationReason: number | null;
  destroyRequest: string | null;
}

/** Why a KMIP operation was refused beyond the shared error codes (the protocol maps it to a Result Reason). */
export type KmipRefusal = "wrong-state" | "destroyed" | "active";

export class KmipObjectError extends AtrestError {
  readonly refusal: KmipRefusal;
  constructor(refusal: KmipRefusal, message: string) {
    super("CONFLICT", message);
    this.name = "KmipObjectError";
    this.refusal = refusal;
  }
}

export const AES_LENGTHS = [128, 256] as const;
export const MAX_SECRET_BYTES = 64 * 1024;
export const GCM_IV_BYTES = 12;
export const NAME_MAX = 255;

export interface Row {
  uid: string;
  object_type: KmipObjectType;
  name: string | null;
  algorithm: "AES" | null;
  length: number;
  usage_mask: number;
  secret_type: number | null;
  state: KmipState;
  sealed: Uint8Array | null;
  owner: string;
  created_at: string;
  activated_at: string | null;
  deactivated_at: string | null;
  compromised_at: string | null;
  destroyed_at: string | null;
  revocation_reason: number | null;
  destroy_request: string | null;
}

export const toObject = (r: Row): KmipObject => ({
  uid: r.uid,
  objectType: r.object_type,
  name: r.name,
  algorithm: r.algorithm,
  length: r.length,
  usageMask: r.usage_mask,
  secretType: r.secret_type,
  state: r.state,
  owner: r.owner,
  createdAt: r.created_at,
  activatedAt: r.activated_at,
  deactivatedAt: r.deactivated_at,
  compromisedAt: r.compromised_at,
  destroyedAt: r.destroyed_at,
  revocationReason: r.revocation_reason,
  destroyRequest: r.destroy_request,
});

export const label = (uid: string): string => `kmip:${uid}`;
export const isDestroyed = (s: KmipState): boolean => s === "destroyed" || s === "destroyed-compromised";

export function rowOf(db: KmsDb, uid: string): Row | undefined {
  return db.prepare("SELECT * FROM kmip_objects WHERE uid = ?").get(uid) as Row | undefined;
}

/** The destruction itself (also run by an approved dual-control request): the sealed value is deleted. */
export function destroyKmipObject(db: KmsDb, uid: string, at: Date): KmipObject {
  const row = rowOf(db, uid);
  if (!row) throw new AtrestError("NOT_FOUND", `no such KMIP object: ${uid}`);
  if (isDestroyed(row.state)) throw new KmipObjectError("destroyed", `KMIP object ${uid} is already destroyed`);
  if (row.state === "active") {
    throw new KmipObjectError("active", `KMIP object ${uid} is active: revoke it before destroying it`);
  }
  const state: KmipState = row.state === "compromised" ? "destroyed-compromised" : "destroyed";
  db.prepare("UPDATE kmip_objects SET state = ?, sealed = NULL, destroyed_at = ? WHERE uid = ?").run(
    state,
    at.toISOString(),
    uid,
  );
  return toObject(rowOf(db, uid) as Row);
}

/** Re-seals every live object's value under a new master (inside the keyring's master-rotation transaction). */
export function resealKmipObjects(db: KmsDb, reseal: (label: string, sealed: Uint8Array) => Buffer): number {
  const rows = db.prepare("SELECT uid, sealed FROM kmip_objects WHERE sealed IS NOT NULL").all() as {
    uid: string;
    sealed: Uint8Array;
  }[];
  const update = db.prepare("UPDATE kmip_objects SET sealed = ? WHERE uid = ?");
  for (const r of rows) update.run(reseal(label(r.uid), r.sealed), r.uid);
  return rows.length;
}
