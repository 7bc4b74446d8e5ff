// Objects managed over KMIP (kmip/server.ts): AES keys (128 or 256 bits) a KMIP client creates or registers, and
// secret data (passwords, seeds) it registers. They live in kms.db (table kmip_objects), each value sealed under the
// KMS master key like every KEK (label kmip:<uid>, re-sealed on master rotation), with the KMIP lifecycle
// (pre-active → active → deactivated/compromised → destroyed). Unlike the keyring's KEKs, whose material never
// leaves the KMS, a KMIP object's value is handed to the clients its policy allows (Get) — that is what KMIP clients
// such as MySQL's keyring_okv or VMware come for.
//
// Every call runs through ServiceOps (role + client policy, then one audit record), as the HTTPS API's do. The policy
// subject is the object's Name when it is a valid key name (so `kms policy set` globs such as mysql-* apply), else its
// unique identifier. Destroy is immediate for a client whose policy allows kmip-destroy; one whose policy allows only
// kmip-request-destroy gets a dual-control request (custodians approve; the object is destroyed on approval).

import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { AtrestError, IntegrityError } from "../errors.ts";
import type { KmsCaller } from "./api/caller.ts";
import { isValidKeyName } from "./api/key-ref.ts";
import type { KmsRequest } from "./approvals.ts";
import { createRequest, type RequestDeps } from "./approved-requests.ts";
import type { KmsDb } from "./db.ts";
import type { Keyring } from "./keyring.ts";
import {
  AES_LENGTHS,
  destroyKmipObject,
  GCM_IV_BYTES,
  isDestroyed,
  type KmipObject,
  KmipObjectError,
  type KmipObjectType,
  type KmipState,
  label,
  MAX_SECRET_BYTES,
  NAME_MAX,
  type Row,
  rowOf,
  toObject,
} from "./kmip-store.ts";
import { fillRandom } from "./random.ts";
import type { ServiceOps } from "./service-op.ts";

export type { KmipObject, KmipObjectType, KmipRefusal, KmipState } from "./kmip-store.ts";
export { KmipObjectError } from "./kmip-store.ts";

export interface CreateInput {
  name?: string;
  /** 128 or 256. */
  length: number;
  usageMask: number;
  /** Activate at once (an Activation Date at or before now). */
  activate?: boolean;
}

export interface RegisterInput {
  objectType: KmipObjectType;
  name?: string;
  /** The value (copied and sealed; the caller zeroes its buffer). */
  material: Buffer;
  usageMask: number;
  secretType?: number;
  activate?: boolean;
}

export interface LocateInput {
  name?: string;
  state?: KmipState;
  objectType?: KmipObjectType;
  maxItems?: number;
}

export interface GcmInput {
  /** 12 bytes; generated when absent (encrypt only). */
  iv?: Buffer;
  aad?: Buffer;
  /** Authentication tag bytes, 12 to 16 (default 16). */
  tagLength?: number;
}

export class KmipObjects {
  readonly #ops: ServiceOps;
  readonly #deps: RequestDeps;

  constructor(ops: ServiceOps, deps: RequestDeps) {
    this.#ops = ops;
    this.#deps = deps;
  }

  get #keyring(): Keyring {
    return this.#ops.keyring;
  }

  get #db(): KmsDb {
    return this.#ops.keyring.db;
  }

  create(caller: KmsCaller, input: CreateInput): KmipObject {
    const subject = subjectOf(input.name, undefined);
    return this.#ops.run(caller, "kmip-create", "key.create", subject, undefined, (ev) => {
      if (!(AES_LENGTHS as readonly number[]).includes(input.length)) {
        throw new AtrestError("UNSUPPORTED", `AES keys are 128 or 256 bits, not ${input.length}`);
      }
      const material = fillRandom(Buffer.alloc(input.length / 8));
      try {
        const obj = this.#insert(caller, "symmetric-key", input.name, material, input.usageMask, null, input.activate);
        ev.keyRef = label(obj.uid);
        ev.detailExtra = { kmip: "create", length: obj.length, ...(obj.name ? { name: obj.name } : {}) };
        return obj;
      } finally {
        material.fill(0);
      }
    });
  }

  register(caller: KmsCaller, input: RegisterInput): KmipObject {
    const subject = subjectOf(input.name, undefined);
    return this.#ops.run(caller, "kmip-create", "key.import", subject, undefined, (ev) => {
      const n = input.material.length;
      if (input.objectType === "symmetric-key" && !(AES_LENGTHS as readonly number[]).includes(n * 8)) {
        throw new AtrestError("UNSUPPORTED", `AES keys are 128 or 256 bits, not ${n * 8}`);
      }
      if (input.objectType === "secret-data" && (n === 0 || n > MAX_SECRET_BYTES)) {
        throw new AtrestError("INVALID_INPUT", `secret data must be 1 to ${MAX_SECRET_BYTES} bytes`);
      }
      const obj = this.#insert(
        caller,
        input.objectType,
        input.name,
        input.material,
        input.usageMask,
        input.objectType === "secret-data" ? (input.secretType ?? 1) : null,
        input.activate,
      );
      ev.keyRef = label(obj.uid);
      ev.detailExtra = { kmip: "register", objectType: obj.objectType, ...(obj.name ? { name: obj.name } : {}) };
      return obj;
    });
  }

  /** The object and its value, in a fresh buffer the caller zeroes. */
  get(caller: KmsCaller, uid: string): { object: KmipObject; material: Buffer } {
    return this.#onObject(caller, uid, "kmip-get", "key.export", (row, ev) => {
      ev.detailExtra = { kmip: "get" };
      if (isDestroyed(row.state) || !row.sealed) {
        throw new KmipObjectError("destroyed", `KMIP object ${uid} is destroyed: its value is gone`);
      }
      const material = this.#keyring.openSecret(label(uid), row.sealed);
      return { object: toObject(row), material };
    });
  }

  attributes(caller: KmsCaller, uid: string): KmipObject {
    return this.#onObject(caller, uid, "read", "key.read", (row, ev) => {
      ev.detailExtra = { kmip: "get-attributes" };
      return toObject(row);
    });
  }

  /** Unique identifiers of the objects matching every given criterion that the caller may read, oldest first. */
  locate(caller: KmsCaller, input: LocateInput): string[] {
    return this.#ops.run(caller, "read", "key.read", undefined, undefined, (ev) => {
      ev.detailExtra = { kmip: "locate", ...(input.name !== undefined ? { name: input.name } : {}) };
      const where: string[] = [];
      const args: string[] = [];
      if (input.name !== undefined) {
        where.push("name = ?");
        args.push(input.name);
      }
      if (input.state !== undefined) {
        where.push("state = ?");
        args.push(input.state);
      }
      if (input.objectType !== undefined) {
        where.push("object_type = ?");
        args.push(input.objectType);
      }
      const sql = `SELECT uid, name FROM kmip_objects${where.length ? ` WHERE ${where.join(" AND ")}` : ""}
        ORDER BY created_at, uid`;
      const rows = this.#db.prepare(sql).all(...args) as { uid: string; name: string | null }[];
      const out: string[] = [];
      const max = input.maxItems ?? Number.POSITIVE_INFINITY;
      for (const r of rows) {
        if (out.length >= max) break;
        if (this.#may(caller, "read", subjectOf(r.name ?? undefined, r.uid))) out.push(r.uid);
      }
      return out;
    });
  }

  activate(caller: KmsCaller, uid: string): KmipObject {
    return this.#onObject(caller, uid, "kmip-state", "key.state", (row, ev) => {
      ev.detailExtra = { kmip: "activate" };
      if (row.state !== "pre-active") {
        throw new KmipObjectError("wrong-state", `KMIP object ${uid} is ${row.state}: only a pre-active one activates`);
      }
      this.#db
        .prepare("UPDATE kmip_objects SET state = 'active', activated_at = ? WHERE uid = ?")
        .run(this.#now(), uid);
      return toObject(rowOf(this.#db, uid) as Row);
    });
  }

  /** KMIP Revoke: Key Compromise (or CA Compromise) → compromised, any other reason → deactivated. */
  revoke(caller: KmsCaller, uid: string, reasonCode: number, compromised: boolean): KmipObject {
    return this.#onObject(caller, uid, "kmip-state", "key.state", (row, ev) => {
      ev.detailExtra = { kmip: "revoke", reason: reasonCode };
      if (isDestroyed(row.state)) throw new KmipObjectError("destroyed", `KMIP object ${uid} is destroyed`);
      const now = this.#now();
      if (compromised) {
        this.#db
          .prepare(
            "UPDATE kmip_objects SET state = 'compromised', compromised_at = ?, revocation_reason = ? WHERE uid = ?",
          )
          .run(now, reasonCode, uid);
      } else {
        if (row.state === "compromised" || row.state === "deactivated") {
          throw new KmipObjectError("wrong-state", `KMIP object ${uid} is already ${row.state}`);
        }
        this.#db
          .prepare(
            "UPDATE kmip_objects SET state = 'deactivated', deactivated_at = ?, revocation_reason = ? WHERE uid = ?",
          )
          .run(now, reasonCode, uid);
      }
      return toObject(rowOf(this.#db, uid) as Row);
    });
  }

  /**
   * Destroys at once when the caller's policy allows kmip-destroy; else, when it allows kmip-request-destroy, asks
   * for destruction under dual control (the same request again returns the pending one).
   */
  destroy(caller: KmsCaller, uid: string): { object: KmipObject } | { request: KmsRequest } {
    const row = rowOf(this.#db, uid);
    const subject = subjectOf(row?.name ?? undefined, uid);
    const direct = this.#may(caller, "kmip-destroy", subject);
    if (direct || !this.#may(caller, "kmip-request-destroy", subject)) {
      return this.#onObject(caller, uid, "kmip-destroy", "key.destroy", (_row, ev) => {
        ev.detailExtra = { kmip: "destroy" };
        return { object: destroyKmipObject(this.#db, uid, this.#keyring.now()) };
      });
    }
    return this.#onObject(caller, uid, "kmip-request-destroy", "key.request", (r, ev) => {
      if (isDestroyed(r.state)) throw new KmipObjectError("destroyed", `KMIP object ${uid} is already destroyed`);
      if (r.state === "active") {
        throw new KmipObjectError("active", `KMIP object ${uid} is active: revoke it before destroying it`);
      }
      if (r.destroy_request) {
        const existing = this.#deps.approvals.get(r.destroy_request, this.#keyring.now());
        if (existing.status === "pending") {
          ev.target = existing.id;
          ev.detailExtra = { kmip: "destroy", pending: existing.id };
          return { request: existing };
        }
      }
      const request = createRequest(this.#deps, caller, ev, "destroy", label(uid), { kmip: true }, "KMIP Destroy");
      this.#db.prepare("UPDATE kmip_objects SET destroy_request = ? WHERE uid = ?").run(request.id, uid);
      return { request };
    });
  }

  /** AES-GCM under an active key: a fresh 12-byte IV unless the client gives one. */
  encrypt(caller: KmsCaller, uid: string, plaintext: Buffer, gcm: GcmInput): { data: Buffer; iv: Buffer; tag: Buffer } {
    return this.#onObject(caller, uid, "encrypt", "key.encrypt", (row, ev) => {
      ev.detailExtra = { kmip: "encrypt" };
      const tagLength = checkGcm(gcm);
      if (row.state !== "active") {
        throw new KmipObjectError(isDestroyed(row.state) ? "destroyed" : "wrong-state", notUsable(row, "encrypt"));
      }
      const iv = gcm.iv ?? randomBytes(GCM_IV_BYTES);
      const key = this.#aesKey(row);
      try {
        const c = createCipheriv(row.length === 128 ? "aes-128-gcm" : "aes-256-gcm", key, iv, {
          authTagLength: tagLength,
        });
        if (gcm.aad) c.setAAD(gcm.aad);
        const data = Buffer.concat([c.update(plaintext), c.final()]);
        return { data, iv, tag: c.getAuthTag() };
      } finally {
        key.fill(0);
      }
    });
  }

  /** The plaintext, in a fresh buffer the caller zeroes; a wrong tag is an IntegrityError. */
  decrypt(caller: KmsCaller, uid: string, data: Buffer, tag: Buffer, gcm: GcmInput): Buffer {
    return this.#onObject(caller, uid, "decrypt", "key.decrypt", (row, ev) => {
      ev.detailExtra = { kmip: "decrypt" };
      checkGcm({ ...gcm, tagLength: tag.length });
      if (!gcm.iv) throw new AtrestError("INVALID_INPUT", "AES-GCM decryption needs the IV/Counter/Nonce");
      if (row.state !== "active" && row.state !== "deactivated" && row.state !== "compromised") {
        throw new KmipObjectError(isDestroyed(row.state) ? "destroyed" : "wrong-state", notUsable(row, "decrypt"));
      }
      const key = this.#aesKey(row);
      try {
        const d = createDecipheriv(row.length === 128 ? "aes-128-gcm" : "aes-256-gcm", key, gcm.iv, {
          authTagLength: tag.length,
        });
        d.setAuthTag(tag);
        if (gcm.aad) d.setAAD(gcm.aad);
        const out = d.update(data);
        try {
          d.final();
        } catch {
          out.fill(0);
          throw new IntegrityError(`AES-GCM authentication failed under KMIP object ${uid}`);
        }
        return out;
      } finally {
        key.fill(0);
      }
    });
  }

  #aesKey(row: Row): Buffer {
    if (row.object_type !== "symmetric-key" || !row.sealed) {
      throw new AtrestError("INVALID_INPUT", `KMIP object ${row.uid} is not an AES key`);
    }
    return this.#keyring.openSecret(label(row.uid), row.sealed);
  }

  #onObject<R>(
    caller: KmsCaller,
    uid: string,
    op: "read" | "kmip-get" | "kmip-state" | "kmip-destroy" | "kmip-request-destroy" | "encrypt" | "decrypt",
    action: "key.read" | "key.export" | "key.state" | "key.destroy" | "key.request" | "key.encrypt" | "key.decrypt",
    fn: (row: Row, ev: { keyRef: string | undefined; target?: string; detailExtra?: Record<string, unknown> }) => R,
  ): R {
    const row = typeof uid === "string" && uid.length <= NAME_MAX ? rowOf(this.#db, uid) : undefined;
    const subject = subjectOf(row?.name ?? undefined, isValidKeyName(uid) ? uid : undefined);
    return this.#ops.run(
      caller,
      op,
      action,
      subject,
      undefined,
      (ev) => {
        if (!row) throw new AtrestError("NOT_FOUND", `no such KMIP object: ${uid.slice(0, 80)}`);
        return fn(row, ev);
      },
      row ? label(row.uid) : undefined,
    );
  }

  #insert(
    caller: KmsCaller,
    type: KmipObjectType,
    name: string | undefined,
    material: Buffer,
    usageMask: number,
    secretType: number | null,
    activate: boolean | undefined,
  ): KmipObject {
    if (name !== undefined && (name.length === 0 || name.length > NAME_MAX)) {
      throw new AtrestError("INVALID_INPUT", `a KMIP Name is 1 to ${NAME_MAX} characters`);
    }
    const uid = `kmip-${randomBytes(10).toString("hex")}`;
    const sealed = this.#keyring.sealSecret(label(uid), material);
    const now = this.#now();
    this.#db
      .prepare(
        `INSERT INTO kmip_objects (uid, object_type, name, algorithm, length, usage_mask, secret_type, state, sealed,
           owner, created_at, activated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        uid,
        type,
        name ?? null,
        type === "symmetric-key" ? "AES" : null,
        material.length * 8,
        usageMask,
        secretType,
        activate ? "active" : "pre-active",
        sealed,
        caller.name,
        now,
        activate ? now : null,
      );
    return toObject(rowOf(this.#db, uid) as Row);
  }

  #may(caller: KmsCaller, op: "read" | "kmip-destroy" | "kmip-request-destroy", subject: string | undefined): boolean {
    try {
      this.#ops.policies.authorize(caller, op, subject, this.#keyring.epoch());
      return true;
    } catch {
      return false;
    }
  }

  #now(): string {
    return this.#keyring.now().toISOString();
  }
}

/** What the client policy is checked against: the Name when it is a valid key name, else the unique identifier. */
function subjectOf(name: string | undefined, uid: string | undefined): string | undefined {
  if (name !== undefined && isValidKeyName(name)) return name;
  return uid;
}

function checkGcm(gcm: GcmInput): number {
  const tagLength = gcm.tagLength ?? 16;
  if (!Number.isInteger(tagLength) || tagLength < 12 || tagLength > 16) {
    throw new AtrestError("INVALID_INPUT", `an AES-GCM tag is 12 to 16 bytes, not ${tagLength}`);
  }
  if (gcm.iv !== undefined && gcm.iv.length !== GCM_IV_BYTES) {
    throw new AtrestError("INVALID_INPUT", `an AES-GCM IV is ${GCM_IV_BYTES} bytes, not ${gcm.iv.length}`);
  }
  return tagLength;
}

function notUsable(row: Row, op: string): string {
  return `KMIP object ${row.uid} is ${row.state}: it cannot ${op}`;
}
