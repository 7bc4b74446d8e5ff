// KmsService: the one facade every caller of the key manager goes through (the HTTPS server's routes, the embedded
// provider, the local CLI). Each method authorizes the caller (role + client policy), calls the keyring, and audits
// the outcome with who, key, version, operation and encryption context. Synchronous like the keyring: the hot path
// (unwrap) is a policy lookup, one AES-GCM open and one buffered audit record.

import type { AuditAction, AuditEvent, AuditSink } from "../audit/types.ts";
import { AtrestError, KeyUnavailableError } from "../errors.ts";
import type { KmsCaller } from "./caller.ts";
import type { RotationPolicy } from "./db.ts";
import type { CreateKeyOptions, Keyring, KeyringKeyInfo } from "./keyring.ts";
import { ClientPolicies, type KmsOperation } from "./policy.ts";
import type { DataKey, EncryptionContext } from "./types.ts";
import { formatKeyRef, isValidKeyName, parseWrapped } from "./wrap.ts";

export interface KmsServiceOptions {
  /** The KMS audit log (see kms-audit.ts); every call is recorded there. */
  auditLog?: AuditSink;
  /**
   * Refuse operations when the audit record cannot be written (default false: the failure is reported through
   * `onAuditError` and the operation proceeds).
   */
  failClosed?: boolean;
  onAuditError?: (err: unknown) => void;
}

export interface WrapResult {
  wrapped: Buffer;
  keyRef: string;
}
export interface UnwrapResult {
  plaintext: Buffer;
  keyRef: string;
}
export interface ItemError {
  error: { code: string; message: string };
}

export interface KeyPolicyInput {
  rotation?: RotationPolicy;
  /** Cryptoperiod for `auto` rotation. */
  rotationDays?: number;
  minDecryptionVersion?: number;
  minEncryptionVersion?: number;
}

export type SettableState = "active" | "deactivated" | "compromised";

export class KmsService {
  readonly keyring: Keyring;
  readonly policies: ClientPolicies;
  readonly #audit: AuditSink | undefined;
  readonly #failClosed: boolean;
  readonly #onAuditError: (err: unknown) => void;
  #closed = false;

  /** Takes ownership of the keyring (closed by close()); the database stays the caller's. */
  constructor(keyring: Keyring, options: KmsServiceOptions = {}) {
    this.keyring = keyring;
    this.policies = new ClientPolicies(keyring.db);
    this.#audit = options.auditLog;
    this.#failClosed = options.failClosed ?? false;
    this.#onAuditError = options.onAuditError ?? (() => {});
  }

  // ---- data-key operations (role server) ----

  generateDataKey(caller: KmsCaller, keyName: string, context: EncryptionContext, version?: number): DataKey {
    return this.#op(caller, "generate-data-key", "key.wrap", keyName, context, (ev) => {
      const dk = this.keyring.generateDataKey(keyName, context, version);
      ev.keyRef = dk.keyRef;
      return dk;
    });
  }

  generateDataKeys(caller: KmsCaller, keyName: string, contexts: readonly EncryptionContext[]): DataKey[] {
    const out: DataKey[] = [];
    try {
      for (const context of contexts) out.push(this.generateDataKey(caller, keyName, context));
    } catch (e) {
      for (const dk of out) dk.plaintext.fill(0);
      throw e;
    }
    return out;
  }

  /** Wraps a caller-supplied 32-byte key. */
  wrap(
    caller: KmsCaller,
    keyName: string,
    plaintext: Buffer,
    context: EncryptionContext,
    version?: number,
  ): WrapResult {
    return this.#op(caller, "wrap", "key.wrap", keyName, context, (ev) => {
      const r = this.keyring.wrap(keyName, plaintext, context, version);
      ev.keyRef = r.keyRef;
      return r;
    });
  }

  /** The plaintext is a fresh buffer the caller owns and must zero. */
  unwrap(caller: KmsCaller, wrapped: Buffer, context: EncryptionContext): UnwrapResult {
    const name = keyNameOf(wrapped);
    return this.#op(caller, "unwrap", "key.unwrap", name, context, (ev) => {
      ev.keyRef = refOf(wrapped);
      const { dek, keyRef } = this.keyring.unwrap(wrapped, context);
      return { plaintext: dek, keyRef };
    });
  }

  /** One result per item, in order: a failed item carries its error and does not fail the others. */
  unwrapBatch(
    caller: KmsCaller,
    items: readonly { wrapped: Buffer; context: EncryptionContext }[],
  ): (UnwrapResult | ItemError)[] {
    return items.map((item) => settle(() => this.unwrap(caller, item.wrapped, item.context)));
  }

  /** Re-wraps under the current version of the key the blob names; the DEK never leaves the KMS. */
  rewrap(caller: KmsCaller, wrapped: Buffer, context: EncryptionContext): WrapResult {
    const name = keyNameOf(wrapped);
    return this.#op(caller, "rewrap", "key.wrap", name, context, (ev) => {
      ev.detailExtra = { from: refOf(wrapped) };
      const r = this.keyring.rewrap(wrapped, context);
      ev.keyRef = r.keyRef;
      return r;
    });
  }

  rewrapBatch(
    caller: KmsCaller,
    items: readonly { wrapped: Buffer; context: EncryptionContext }[],
  ): (WrapResult | ItemError)[] {
    return items.map((item) => settle(() => this.rewrap(caller, item.wrapped, item.context)));
  }

  wrapBatch(
    caller: KmsCaller,
    keyName: string,
    items: readonly { plaintext: Buffer; context: EncryptionContext }[],
  ): (WrapResult | ItemError)[] {
    return items.map((item) => settle(() => this.wrap(caller, keyName, item.plaintext, item.context)));
  }

  // ---- key management (role operator; reads also auditor, custodian, admin, server) ----

  createKey(caller: KmsCaller, name: string, options: Omit<CreateKeyOptions, "material"> = {}): KeyringKeyInfo {
    return this.#op(caller, "create", "key.create", name, undefined, (ev) => {
      const info = this.keyring.createKey(name, { ...options, material: undefined });
      ev.keyRef = formatKeyRef(name, info.currentVersion);
      ev.detailExtra = { state: info.versions[0]?.state, rotation: info.rotation.policy };
      return info;
    });
  }

  rotateKey(caller: KmsCaller, name: string): KeyringKeyInfo {
    return this.#op(caller, "rotate", "key.rotate", name, undefined, (ev) => {
      const info = this.keyring.rotateKey(name);
      ev.keyRef = formatKeyRef(name, info.currentVersion);
      return info;
    });
  }

  getKey(caller: KmsCaller, name: string): KeyringKeyInfo {
    return this.#op(caller, "read", "key.read", name, undefined, () => this.keyring.getKey(name));
  }

  /** Keys the caller may read: a client policy narrows the list to its globs. */
  listKeys(caller: KmsCaller): KeyringKeyInfo[] {
    return this.#op(caller, "read", "key.read", undefined, undefined, () => {
      const epoch = this.keyring.epoch();
      return this.keyring.listKeys().filter((k) => {
        try {
          this.policies.authorize(caller, "read", k.name, epoch);
          return true;
        } catch {
          return false;
        }
      });
    });
  }

  setKeyPolicy(caller: KmsCaller, name: string, policy: KeyPolicyInput): KeyringKeyInfo {
    return this.#op(caller, "set-policy", "key.state", name, undefined, (ev) => {
      ev.detailExtra = { policy };
      const info = this.keyring.setPolicy(name, policy);
      ev.keyRef = formatKeyRef(name, info.currentVersion);
      return info;
    });
  }

  setVersionState(caller: KmsCaller, name: string, version: number, state: SettableState): KeyringKeyInfo {
    return this.#op(caller, "set-state", "key.state", name, undefined, (ev) => {
      ev.keyRef = formatKeyRef(name, version);
      ev.detailExtra = { state };
      return this.keyring.setVersionState(name, version, state);
    });
  }

  /** Zeroes the master key and cached KEKs. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.keyring.close();
  }

  // ---- internals ----

  /** Authorizes, runs and audits one operation. `ev` lets `fn` fill in what it learns (the version used). */
  #op<T>(
    caller: KmsCaller,
    op: KmsOperation,
    action: AuditAction,
    key: string | undefined,
    context: EncryptionContext | undefined,
    fn: (ev: PendingEvent) => T,
  ): T {
    const ev: PendingEvent = { keyRef: key !== undefined && isValidKeyName(key) ? `kek:${key}` : undefined };
    let result: T;
    try {
      if (this.#closed) throw new KeyUnavailableError("key manager is closed");
      this.policies.authorize(caller, op, key, this.keyring.epoch());
      result = fn(ev);
    } catch (e) {
      this.#record(caller, action, op, "failure", ev, context, (e as Error).message);
      throw e;
    }
    try {
      this.#record(caller, action, op, "success", ev, context);
    } catch (e) {
      scrub(result);
      throw e;
    }
    return result;
  }

  #record(
    caller: KmsCaller,
    action: AuditAction,
    op: string,
    outcome: "success" | "failure",
    ev: PendingEvent,
    context: EncryptionContext | undefined,
    reason?: string,
  ): void {
    if (!this.#audit) return;
    const event: AuditEvent = {
      action,
      outcome,
      user: caller.name,
      role: caller.role,
      protocol: "kms",
      detail: canonicalJson({ op, ...(context ? { context } : {}), ...ev.detailExtra }),
    };
    if (caller.certFingerprint) event.userId = caller.certFingerprint;
    if (caller.sourceIp) event.sourceIp = caller.sourceIp;
    if (ev.keyRef) event.keyRef = ev.keyRef;
    if (ev.target) event.target = ev.target;
    if (reason !== undefined) event.reason = reason;
    try {
      this.#audit.record(event);
    } catch (err) {
      if (this.#failClosed) {
        throw new KeyUnavailableError("key manager audit log cannot be written: refusing the operation (fail closed)", {
          cause: err,
        });
      }
      this.#onAuditError(err);
    }
  }
}

interface PendingEvent {
  keyRef: string | undefined;
  target?: string;
  detailExtra?: Record<string, unknown>;
}

/** Key name a wrapped blob names, or undefined when it is malformed (the keyring then reports IntegrityError). */
function keyNameOf(wrapped: Buffer): string | undefined {
  try {
    return parseWrapped(wrapped).name;
  } catch {
    return undefined;
  }
}

function refOf(wrapped: Buffer): string | undefined {
  try {
    const p = parseWrapped(wrapped);
    return formatKeyRef(p.name, p.version);
  } catch {
    return undefined;
  }
}

function settle<T>(fn: () => T): T | ItemError {
  try {
    return fn();
  } catch (e) {
    const code = e instanceof AtrestError ? e.code : "INTERNAL";
    return { error: { code, message: e instanceof Error ? e.message : String(e) } };
  }
}

/** JSON with object keys sorted at every level: the same context always audits as the same bytes. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (v && typeof v === "object" && !Array.isArray(v) && !Buffer.isBuffer(v)) {
      const o = v as Record<string, unknown>;
      return Object.fromEntries(
        Object.keys(o)
          .sort()
          .filter((k) => o[k] !== undefined)
          .map((k) => [k, o[k]]),
      );
    }
    return v;
  });
}

/** If auditing fails after key material was produced, the caller never sees it, so zero it here. */
function scrub(result: unknown): void {
  if (result && typeof result === "object") {
    const r = result as { plaintext?: unknown };
    if (Buffer.isBuffer(r.plaintext)) r.plaintext.fill(0);
  }
}
