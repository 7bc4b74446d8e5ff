// KmsService: the one facade every caller of the key manager goes through (the HTTPS server's routes, the embedded
// provider, the local CLI). Each method authorizes the caller (role + client policy), calls the keyring, and audits
// the outcome with who, key, version, operation and encryption context. Synchronous like the keyring: the hot path
// (unwrap) is a policy lookup, one AES-GCM open and one buffered audit record.

import type { AuditAction, AuditSink } from "../audit/types.ts";
import { AtrestError, KeyUnavailableError } from "../errors.ts";
import type { KmsCaller } from "./api/caller.ts";
import { INTERNAL_ERROR_MESSAGE, type KmsItemError, kmsErrorCode } from "./api/errors.ts";
import { assertKeyName, formatKeyRef, isValidKeyName } from "./api/key-ref.ts";
import type { DataKey, EncryptionContext } from "./api/types.ts";
import { parseWrapped } from "./api/wrapped.ts";
import {
  Approvals,
  DEFAULT_QUORUM,
  DEFAULT_REQUEST_TTL_MS,
  type KmsRequest,
  type RequestStatus,
  readQuorum,
} from "./approvals.ts";
import {
  createRequest,
  executeRequest,
  type RequestDeps,
  refOfRequest,
  runScheduled,
  type ScheduledRun,
} from "./approved-requests.ts";
import {
  createImportParams,
  exportPublicKey,
  IMPORT_ALGORITHM,
  type ImportParams,
  pruneImportTokens,
  unwrapImport,
} from "./byok.ts";
import type { RotationPolicy } from "./db.ts";
import type { KeyringKeyInfo } from "./key-info.ts";
import { type CreateKeyOptions, MAX_DESTROY_DAYS, MIN_DESTROY_DAYS } from "./key-lifecycle.ts";
import type { Keyring } from "./keyring.ts";
import {
  ClientPolicies,
  type ClientPolicy,
  type KmsOperation,
  parseClientPolicy,
  type StoredClientPolicy,
} from "./policy.ts";
import { type PendingEvent, ServiceAudit, scrub } from "./service-audit.ts";

export const DEFAULT_DESTROY_DAYS = 30;

export interface KmsServiceOptions {
  /** The KMS audit log (see kms-audit.ts); every call is recorded there. */
  auditLog?: AuditSink;
  /**
   * Refuse operations when the audit record cannot be written (default false: the failure is reported through
   * `onAuditError` and the operation proceeds).
   */
  failClosed?: boolean;
  onAuditError?: (err: unknown) => void;
  /**
   * An unexpected (non-AtrestError) failure of one batch item, for the server's log: the item itself carries only
   * INTERNAL_ERROR_MESSAGE, as a single request's problem+json does.
   */
  onInternalError?: (err: unknown, op: KmsOperation) => void;
  /** Approvals needed when kms.db has no quorum set at init (default 2). */
  quorum?: number;
  /** How long a request waits for its approvals (default 24 h). */
  requestTtlMs?: number;
  /**
   * Where a rotated master key is stored (the unseal module of a sealed KMS). Without it master rotation is refused:
   * the dev-mode key file cannot be replaced atomically with the database.
   */
  persistMaster?: (newMaster: Buffer) => void;
}

export interface DestroyRequestInput {
  /** One version; default every version of the key not yet destroyed. */
  version?: number;
  /** Waiting period after approval, 7–30 days (default 30). */
  waitingDays?: number;
  reason?: string;
}

export interface ExportRequestInput {
  /** Default: the current version. */
  version?: number;
  /** RSA (≥ 2048-bit) public key, PEM, the material will be wrapped to. */
  publicKeyPem: string;
  reason?: string;
}

export interface WrapResult {
  wrapped: Buffer;
  keyRef: string;
}
export interface UnwrapResult {
  plaintext: Buffer;
  keyRef: string;
}
export type ItemError = KmsItemError;

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
  readonly approvals: Approvals;
  readonly #audit: ServiceAudit;
  readonly #quorum: number;
  readonly #persistMaster: ((newMaster: Buffer) => void) | undefined;
  readonly #deps: RequestDeps;
  readonly #onInternalError: (err: unknown, op: KmsOperation) => void;
  #closed = false;

  /** Takes ownership of the keyring (closed by close()); the database stays the caller's. */
  constructor(keyring: Keyring, options: KmsServiceOptions = {}) {
    this.keyring = keyring;
    this.policies = new ClientPolicies(keyring.db);
    this.approvals = new Approvals(keyring.db);
    this.#audit = new ServiceAudit(options.auditLog, options.failClosed ?? false, options.onAuditError ?? (() => {}));
    this.#quorum = options.quorum ?? DEFAULT_QUORUM;
    this.#persistMaster = options.persistMaster;
    this.#onInternalError = options.onInternalError ?? (() => {});
    this.#deps = {
      keyring,
      approvals: this.approvals,
      policies: this.policies,
      audit: this.#audit,
      persistMaster: options.persistMaster,
      ttlMs: options.requestTtlMs ?? DEFAULT_REQUEST_TTL_MS,
      quorum: () => this.quorum,
    };
  }

  /** Approvals a request needs: set at `kms init`, else the option, else 2. */
  get quorum(): number {
    return readQuorum(this.keyring.db, this.#quorum);
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
      this.#flagCompromised(ev, wrapped);
      return { plaintext: dek, keyRef };
    });
  }

  /** One result per item, in order: a failed item carries its error and does not fail the others. */
  unwrapBatch(
    caller: KmsCaller,
    items: readonly { wrapped: Buffer; context: EncryptionContext }[],
  ): (UnwrapResult | ItemError)[] {
    return items.map((item) => this.#settle("unwrap", () => this.unwrap(caller, item.wrapped, item.context)));
  }

  /** Re-wraps under the current version of the key the blob names; the DEK never leaves the KMS. */
  rewrap(caller: KmsCaller, wrapped: Buffer, context: EncryptionContext): WrapResult {
    const name = keyNameOf(wrapped);
    return this.#op(caller, "rewrap", "key.wrap", name, context, (ev) => {
      ev.detailExtra = { from: refOf(wrapped) };
      const r = this.keyring.rewrap(wrapped, context);
      this.#flagCompromised(ev, wrapped);
      ev.keyRef = r.keyRef;
      return r;
    });
  }

  rewrapBatch(
    caller: KmsCaller,
    items: readonly { wrapped: Buffer; context: EncryptionContext }[],
  ): (WrapResult | ItemError)[] {
    return items.map((item) => this.#settle("rewrap", () => this.rewrap(caller, item.wrapped, item.context)));
  }

  wrapBatch(
    caller: KmsCaller,
    keyName: string,
    items: readonly { plaintext: Buffer; context: EncryptionContext }[],
  ): (WrapResult | ItemError)[] {
    return items.map((item) => this.#settle("wrap", () => this.wrap(caller, keyName, item.plaintext, item.context)));
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

  // ---- dual control: requests, approvals, their execution ----

  /** Asks for destruction of a key (every live version) or one version; runs after quorum + the waiting period. */
  requestDestroy(caller: KmsCaller, name: string, input: DestroyRequestInput = {}): KmsRequest {
    return this.#op(caller, "request-destroy", "key.request", name, undefined, (ev) => {
      const days = input.waitingDays ?? DEFAULT_DESTROY_DAYS;
      if (!Number.isInteger(days) || days < MIN_DESTROY_DAYS || days > MAX_DESTROY_DAYS) {
        throw new AtrestError(
          "INVALID_INPUT",
          `the waiting period before destruction must be ${MIN_DESTROY_DAYS} to ${MAX_DESTROY_DAYS} days`,
        );
      }
      const versions = this.keyring.destroyableVersions(name, input.version);
      const key = this.keyring.getKey(name);
      const live = key.versions.filter((v) => v.state !== "destroyed").length;
      if (input.version === key.currentVersion && live > 1) {
        throw new AtrestError(
          "INVALID_INPUT",
          `kek:${name}:v${key.currentVersion} is the current version: rotate first, or destroy the whole key`,
        );
      }
      return createRequest(this.#deps, caller, ev, "destroy", name, { versions, waitingDays: days }, input.reason);
    });
  }

  /** Clears a scheduled destruction (all scheduled versions of the key, or one). One person may stop a destroy. */
  cancelDestroy(caller: KmsCaller, name: string, version?: number): KeyringKeyInfo {
    return this.#op(caller, "cancel-destroy", "key.destroy", name, undefined, (ev) => {
      const key = this.keyring.getKey(name);
      const scheduled = key.versions.filter((v) => v.destroyAt && (version === undefined || v.version === version));
      if (scheduled.length === 0) {
        throw new AtrestError(
          "INVALID_INPUT",
          `no destruction is scheduled for kek:${name}${version ? `:v${version}` : ""}`,
        );
      }
      const versions = scheduled.map((v) => v.version);
      ev.detailExtra = { cancelled: versions.map((v) => formatKeyRef(name, v)) };
      this.keyring.scheduleDestroy(name, versions, null, null);
      return this.keyring.getKey(name);
    });
  }

  /** Asks for the key material wrapped to `publicKeyPem` (CKM_RSA_AES_KEY_WRAP); fetch it with fetchExport. */
  exportKey(caller: KmsCaller, name: string, input: ExportRequestInput): KmsRequest {
    return this.#op(caller, "request-export", "key.request", name, undefined, (ev) => {
      exportPublicKey(input.publicKeyPem);
      const key = this.keyring.getKey(name);
      const version = input.version ?? key.currentVersion;
      const v = key.versions.find((x) => x.version === version);
      if (!v) throw new AtrestError("NOT_FOUND", `unknown key version: ${formatKeyRef(name, version)}`);
      if (v.state === "destroyed") throw new KeyUnavailableError(`${formatKeyRef(name, version)} is destroyed`);
      return createRequest(
        this.#deps,
        caller,
        ev,
        "export",
        name,
        { version, publicKeyPem: input.publicKeyPem },
        input.reason,
      );
    });
  }

  /** The exported material (wrapped to the requester's public key), for the requester of an executed export. */
  fetchExport(caller: KmsCaller, id: string): { wrapped: Buffer; keyRef: string; algorithm: string } {
    return this.#op(caller, "request-export", "key.export", undefined, undefined, (ev) => {
      ev.target = id;
      const r = this.approvals.get(id, this.keyring.now());
      if (r.kind !== "export") throw new AtrestError("INVALID_INPUT", `request ${id} is not an export`);
      if (r.requester !== caller.name) {
        throw new AtrestError("PERMISSION_DENIED", `permission denied: only ${r.requester} may fetch export ${id}`);
      }
      const blob = this.approvals.resultBlob(id);
      if (r.status !== "executed" || !blob) {
        throw new AtrestError(
          "INVALID_INPUT",
          `export ${id} is ${r.status}${r.status === "pending" ? " (needs approvals)" : ""}`,
        );
      }
      ev.keyRef = formatKeyRef(r.target, Number(r.params.version));
      return { wrapped: blob, keyRef: ev.keyRef, algorithm: IMPORT_ALGORITHM };
    });
  }

  /** Asks to set (or with null remove) a client's key policy. */
  setClientPolicy(caller: KmsCaller, client: string, policy: ClientPolicy | null, reason?: string): KmsRequest {
    return this.#op(caller, "request-client-policy", "key.request", undefined, undefined, (ev) => {
      if (!/^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/.test(client)) {
        throw new AtrestError("INVALID_INPUT", `invalid client name ${JSON.stringify(client.slice(0, 80))}`);
      }
      const checked = policy === null ? null : parseClientPolicy(policy);
      return createRequest(this.#deps, caller, ev, "client-policy", client, { policy: checked }, reason);
    });
  }

  getClientPolicy(caller: KmsCaller, client: string): StoredClientPolicy | undefined {
    return this.#op(caller, "read-client-policy", "key.read", undefined, undefined, (ev) => {
      ev.target = client;
      return this.policies.get(client);
    });
  }

  listClientPolicies(caller: KmsCaller): StoredClientPolicy[] {
    return this.#op(caller, "read-client-policy", "key.read", undefined, undefined, () => this.policies.list());
  }

  /** Asks for a new master key; on approval every KEK version is re-sealed under it in one transaction. */
  requestMasterRotation(caller: KmsCaller, reason?: string): KmsRequest {
    return this.#op(caller, "request-master-rotation", "key.request", undefined, undefined, (ev) => {
      if (!this.#persistMaster) {
        throw new AtrestError(
          "UNSUPPORTED",
          "master key rotation needs a sealed key manager (kms init --shares): a dev-mode key file cannot be rotated",
        );
      }
      return createRequest(this.#deps, caller, ev, "master-rotation", "master", {}, reason);
    });
  }

  listRequests(caller: KmsCaller, status?: RequestStatus): KmsRequest[] {
    return this.#op(caller, "list-requests", "key.read", undefined, undefined, () =>
      this.approvals.list(this.keyring.now(), status),
    );
  }

  getRequest(caller: KmsCaller, id: string): KmsRequest {
    return this.#op(caller, "list-requests", "key.read", undefined, undefined, (ev) => {
      ev.target = id;
      return this.approvals.get(id, this.keyring.now());
    });
  }

  /** A custodian's approval; the request runs as soon as the quorum is reached (a destroy is then scheduled). */
  approve(caller: KmsCaller, id: string, reason = ""): KmsRequest {
    const decided = this.#op(caller, "decide-request", "key.approve", undefined, undefined, (ev) => {
      ev.target = id;
      const { request, reached } = this.approvals.decide(id, caller, "approve", reason, this.keyring.now());
      ev.keyRef = refOfRequest(request);
      ev.detailExtra = { kind: request.kind, approvals: approvedBy(request), quorum: request.quorum };
      return { request, reached };
    });
    return decided.reached ? executeRequest(this.#deps, caller, decided.request) : decided.request;
  }

  /** One custodian's rejection ends a request. */
  reject(caller: KmsCaller, id: string, reason = ""): KmsRequest {
    return this.#op(caller, "decide-request", "key.reject", undefined, undefined, (ev) => {
      ev.target = id;
      const { request } = this.approvals.decide(id, caller, "reject", reason, this.keyring.now());
      ev.keyRef = refOfRequest(request);
      ev.detailExtra = { kind: request.kind };
      return request;
    });
  }

  // ---- BYOK ----

  /** An RSA-3072 wrapping public key and a single-use import token (24 h) for importing material into `name`. */
  importParams(caller: KmsCaller, name: string): ImportParams {
    return this.#op(caller, "import", "key.import", name, undefined, (ev) => {
      assertKeyName(name);
      this.#checkImportTarget(name);
      ev.detailExtra = { step: "import-params" };
      pruneImportTokens(this.keyring, this.keyring.now());
      return createImportParams(this.keyring, name, this.keyring.now());
    });
  }

  /**
   * Imports material wrapped as RSA-OAEP-SHA256(ephemeral AES key) ‖ AES-KWP(ephemeral, material): a new key, or a
   * new version of an imported key.
   */
  importKey(caller: KmsCaller, name: string, importToken: string, wrappedMaterial: Buffer): KeyringKeyInfo {
    return this.#op(caller, "import", "key.import", name, undefined, (ev) => {
      assertKeyName(name);
      const existing = this.#checkImportTarget(name);
      const material = unwrapImport(this.keyring, name, importToken, wrappedMaterial, this.keyring.now());
      try {
        const info = existing
          ? this.keyring.rotateKey(name, material)
          : this.keyring.createKey(name, { material, rotation: "manual" });
        ev.keyRef = formatKeyRef(name, info.currentVersion);
        return info;
      } finally {
        material.fill(0);
      }
    });
  }

  // ---- scheduler ----

  /**
   * One scheduler pass at the keyring's clock: automatic rotations that are due, destructions whose waiting period
   * ended, and approved requests whose execution did not finish. Safe to run from several processes at once.
   */
  runScheduled(): ScheduledRun {
    return runScheduled(this.#deps);
  }

  #checkImportTarget(name: string): KeyringKeyInfo | undefined {
    let existing: KeyringKeyInfo | undefined;
    try {
      existing = this.keyring.getKey(name);
    } catch (e) {
      if ((e as AtrestError).code !== "NOT_FOUND") throw e;
    }
    if (existing && existing.origin !== "imported") {
      throw new AtrestError(
        "INVALID_INPUT",
        `kek:${name} was generated by the key manager: import into a new key name (only imported keys take new material)`,
      );
    }
    return existing;
  }

  /** Zeroes the master key and cached KEKs. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.keyring.close();
  }

  // ---- internals ----

  /** Use of a compromised version is marked in its audit record, so a SIEM rule can alert on it. */
  #flagCompromised(ev: PendingEvent, wrapped: Buffer): void {
    const p = parseWrapped(wrapped);
    if (this.keyring.stateOf(p.name, p.version) === "compromised") {
      ev.detailExtra = { ...ev.detailExtra, compromised: formatKeyRef(p.name, p.version) };
    }
  }

  /** One batch item: its result, or its error (an unexpected one logged here and reported without its text). */
  #settle<T>(op: KmsOperation, fn: () => T): T | ItemError {
    try {
      return fn();
    } catch (e) {
      const code = kmsErrorCode(e);
      if (code !== "INTERNAL") return { error: { code, message: (e as Error).message } };
      this.#onInternalError(e, op);
      return { error: { code, message: INTERNAL_ERROR_MESSAGE } };
    }
  }

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
      this.#audit.record(caller, action, op, "failure", ev, context, (e as Error).message);
      throw e;
    }
    try {
      this.#audit.record(caller, action, op, "success", ev, context);
    } catch (e) {
      scrub(result);
      throw e;
    }
    return result;
  }
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

function approvedBy(r: KmsRequest): string[] {
  return r.approvals.filter((a) => a.decision === "approve").map((a) => a.custodian);
}
