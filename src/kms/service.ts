// KmsService: the one facade every caller of the key manager goes through (the HTTPS server's routes, the embedded
// provider, the local CLI). It composes one module per job, each running every call through service-op.ts (authorize
// the caller by role + client policy, call the keyring, audit who, key, version, operation and encryption context):
// data-key operations (data-keys.ts), the encryption API for applications (app-ops.ts), key administration (key-admin.ts), dual-control requests (dual-control.ts; their
// execution and the scheduler pass in approved-requests.ts) and BYOK (key-import.ts). Synchronous like the keyring:
// the hot path (unwrap) is a policy lookup, one AES-GCM open and one buffered audit record.

import type { AuditSink } from "../audit/types.ts";
import { randomBytes } from "../crypto/random.ts";
import type { KmsCaller } from "./api/caller.ts";
import type { AuditMark, DataKey, EncryptionContext, KeyStateSnapshot } from "./api/types.ts";
import {
  AppCrypto,
  type CiphertextResult,
  type MacResult,
  type PlaintextResult,
  type PublicKeyResult,
  type SignatureResult,
  type VerifyResult,
} from "./app-ops.ts";
import {
  Approvals,
  DEFAULT_QUORUM,
  DEFAULT_REQUEST_TTL_MS,
  type KmsRequest,
  type RequestStatus,
  readQuorum,
} from "./approvals.ts";
import { type RequestDeps, runScheduled, type ScheduledRun } from "./approved-requests.ts";
import { AuditMarkOps } from "./audit-mark-ops.ts";
import type { ImportParams } from "./byok.ts";
import { DataKeys, type ItemError, type UnwrapResult, type WrapResult } from "./data-keys.ts";
import { type DestroyRequestInput, DualControl, type ExportRequestInput } from "./dual-control.ts";
import { KeyAdmin, type KeyPolicyInput, type SettableState } from "./key-admin.ts";
import { KeyImport } from "./key-import.ts";
import type { KeyringKeyInfo } from "./key-info.ts";
import type { CreateKeyOptions } from "./key-lifecycle.ts";
import type { Keyring } from "./keyring.ts";
import { KmipObjects } from "./kmip-objects.ts";
import { ClientPolicies, type ClientPolicy, type KmsOperation, type StoredClientPolicy } from "./policy.ts";
import { MASTER_KEY_BYTES, type MasterKeyLike } from "./seal.ts";
import { SecretOps } from "./secret-ops.ts";
import type { SecretInfo, SecretValue, SecretVersionInfo } from "./secrets.ts";
import { ServiceAudit } from "./service-audit.ts";
import { ServiceOps } from "./service-op.ts";

export type {
  CiphertextResult,
  MacResult,
  PlaintextResult,
  PublicKeyResult,
  SignatureResult,
  VerifyResult,
} from "./app-ops.ts";
export type { ItemError, UnwrapResult, WrapResult } from "./data-keys.ts";
export { DEFAULT_DESTROY_DAYS, type DestroyRequestInput, type ExportRequestInput } from "./dual-control.ts";
export type { KeyPolicyInput, SettableState } from "./key-admin.ts";
export type { SecretInfo, SecretValue, SecretVersionInfo } from "./secrets.ts";

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
  persistMaster?: (newMaster: MasterKeyLike) => void;
  /** Makes the next master key for a rotation: a random buffer by default; an HSM source generates a token key. */
  newMaster?: () => MasterKeyLike;
}

export class KmsService {
  readonly keyring: Keyring;
  readonly policies: ClientPolicies;
  readonly approvals: Approvals;
  /** Objects managed over KMIP (kmip-objects.ts), through the same authorize-run-audit step. */
  readonly kmip: KmipObjects;
  readonly #ops: ServiceOps;
  readonly #dataKeys: DataKeys;
  readonly #app: AppCrypto;
  readonly #secrets: SecretOps;
  readonly #marks: AuditMarkOps;
  readonly #admin: KeyAdmin;
  readonly #requests: DualControl;
  readonly #import: KeyImport;
  readonly #quorum: number;
  readonly #deps: RequestDeps;

  /** Takes ownership of the keyring (closed by close()); the database stays the caller's. */
  constructor(keyring: Keyring, options: KmsServiceOptions = {}) {
    this.keyring = keyring;
    this.policies = new ClientPolicies(keyring.db);
    this.approvals = new Approvals(keyring.db);
    const audit = new ServiceAudit(options.auditLog, options.failClosed ?? false, options.onAuditError ?? (() => {}));
    this.#ops = new ServiceOps(keyring, this.policies, audit);
    this.#quorum = options.quorum ?? DEFAULT_QUORUM;
    this.#deps = {
      keyring,
      approvals: this.approvals,
      policies: this.policies,
      audit,
      persistMaster: options.persistMaster,
      newMaster: options.newMaster ?? (() => randomBytes(MASTER_KEY_BYTES)),
      ttlMs: options.requestTtlMs ?? DEFAULT_REQUEST_TTL_MS,
      quorum: () => this.quorum,
    };
    this.#dataKeys = new DataKeys(this.#ops, options.onInternalError ?? (() => {}));
    this.#app = new AppCrypto(this.#ops, options.onInternalError ?? (() => {}));
    this.#secrets = new SecretOps(this.#ops, audit);
    this.#marks = new AuditMarkOps(this.#ops);
    this.#admin = new KeyAdmin(this.#ops);
    this.#requests = new DualControl(this.#ops, this.#deps);
    this.#import = new KeyImport(this.#ops);
    this.kmip = new KmipObjects(this.#ops, this.#deps);
  }

  /** Approvals a request needs: set at `kms init`, else the option, else 2. */
  get quorum(): number {
    return readQuorum(this.keyring.db, this.#quorum);
  }

  // ---- data-key operations (role server): data-keys.ts ----

  generateDataKey(caller: KmsCaller, keyName: string, context: EncryptionContext, version?: number): DataKey {
    return this.#dataKeys.generateDataKey(caller, keyName, context, version);
  }

  generateDataKeys(caller: KmsCaller, keyName: string, contexts: readonly EncryptionContext[]): DataKey[] {
    return this.#dataKeys.generateDataKeys(caller, keyName, contexts);
  }

  /** Wraps a caller-supplied 32-byte key. */
  wrap(
    caller: KmsCaller,
    keyName: string,
    plaintext: Buffer,
    context: EncryptionContext,
    version?: number,
  ): WrapResult {
    return this.#dataKeys.wrap(caller, keyName, plaintext, context, version);
  }

  /** The plaintext is a fresh buffer the caller owns and must zero. */
  unwrap(caller: KmsCaller, wrapped: Buffer, context: EncryptionContext): UnwrapResult {
    return this.#dataKeys.unwrap(caller, wrapped, context);
  }

  /** One result per item, in order: a failed item carries its error and does not fail the others. */
  unwrapBatch(
    caller: KmsCaller,
    items: readonly { wrapped: Buffer; context: EncryptionContext }[],
  ): (UnwrapResult | ItemError)[] {
    return this.#dataKeys.unwrapBatch(caller, items);
  }

  /** Re-wraps under the current version of the key the blob names; the DEK never leaves the KMS. */
  rewrap(caller: KmsCaller, wrapped: Buffer, context: EncryptionContext): WrapResult {
    return this.#dataKeys.rewrap(caller, wrapped, context);
  }

  rewrapBatch(
    caller: KmsCaller,
    items: readonly { wrapped: Buffer; context: EncryptionContext }[],
  ): (WrapResult | ItemError)[] {
    return this.#dataKeys.rewrapBatch(caller, items);
  }

  wrapBatch(
    caller: KmsCaller,
    keyName: string,
    items: readonly { plaintext: Buffer; context: EncryptionContext }[],
  ): (WrapResult | ItemError)[] {
    return this.#dataKeys.wrapBatch(caller, keyName, items);
  }

  // ---- the encryption API for applications (role server, narrowed by client policy): app-ops.ts ----

  encrypt(
    caller: KmsCaller,
    keyName: string,
    plaintext: Buffer,
    context: EncryptionContext,
    version?: number,
  ): CiphertextResult {
    return this.#app.encrypt(caller, keyName, plaintext, context, version);
  }

  /** The plaintext is a fresh buffer the caller owns and must zero. */
  decrypt(caller: KmsCaller, keyName: string, ciphertext: string, context: EncryptionContext): PlaintextResult {
    return this.#app.decrypt(caller, keyName, ciphertext, context);
  }

  /** Re-encrypts a ciphertext under the key's current version; the plaintext never leaves the KMS. */
  rewrapCiphertext(
    caller: KmsCaller,
    keyName: string,
    ciphertext: string,
    context: EncryptionContext,
  ): CiphertextResult {
    return this.#app.rewrap(caller, keyName, ciphertext, context);
  }

  hmac(caller: KmsCaller, keyName: string, input: Buffer, version?: number): MacResult {
    return this.#app.hmac(caller, keyName, input, version);
  }

  verifyHmac(caller: KmsCaller, keyName: string, input: Buffer, hmac: string): VerifyResult {
    return this.#app.verifyHmac(caller, keyName, input, hmac);
  }

  sign(caller: KmsCaller, keyName: string, input: Buffer, version?: number): SignatureResult {
    return this.#app.sign(caller, keyName, input, version);
  }

  verify(caller: KmsCaller, keyName: string, input: Buffer, signature: string): VerifyResult {
    return this.#app.verify(caller, keyName, input, signature);
  }

  publicKey(caller: KmsCaller, keyName: string, version?: number): PublicKeyResult {
    return this.#app.publicKey(caller, keyName, version);
  }

  /** The encryption API's batch forms: one result or error per item, in order (see AppCrypto). */
  get batch(): Pick<
    AppCrypto,
    "encryptBatch" | "decryptBatch" | "rewrapBatch" | "hmacBatch" | "verifyHmacBatch" | "signBatch" | "verifyBatch"
  > {
    return this.#app;
  }

  // ---- application secrets (put/remove: operator; get: server, policy-narrowed): secret-ops.ts ----

  /** Writes a new version of `name` (copied and sealed; the caller zeroes `value`). */
  putSecret(caller: KmsCaller, name: string, value: Buffer, rotateAfterDays?: number | null): SecretInfo {
    return this.#secrets.put(caller, name, value, rotateAfterDays);
  }

  /** The current version or `version`; the value is a fresh buffer the caller owns and must zero. */
  getSecret(caller: KmsCaller, name: string, version?: number): SecretValue {
    return this.#secrets.get(caller, name, version);
  }

  listSecrets(caller: KmsCaller, dueOnly = false): SecretInfo[] {
    return this.#secrets.list(caller, dueOnly);
  }

  secretVersions(caller: KmsCaller, name: string): { secret: SecretInfo; versions: SecretVersionInfo[] } {
    return this.#secrets.versions(caller, name);
  }

  removeSecret(caller: KmsCaller, name: string): { name: string; destroyedVersions: number } {
    return this.#secrets.remove(caller, name);
  }

  // ---- audit high-water marks (raise: server, its own; read: all; reset: custodian): audit-mark-ops.ts ----

  raiseAuditMark(caller: KmsCaller, log: string, seq: number, hash: string): { mark: AuditMark; raised: boolean } {
    return this.#marks.raise(caller, log, seq, hash);
  }

  getAuditMark(caller: KmsCaller, log: string, client?: string): AuditMark | undefined {
    return this.#marks.get(caller, log, client);
  }

  listAuditMarks(caller: KmsCaller): AuditMark[] {
    return this.#marks.list(caller);
  }

  resetAuditMark(caller: KmsCaller, client: string, log: string, reason: string): AuditMark | undefined {
    return this.#marks.reset(caller, client, log, reason);
  }

  // ---- key management (role operator; reads also auditor, custodian, admin, server): key-admin.ts ----

  createKey(caller: KmsCaller, name: string, options: Omit<CreateKeyOptions, "material"> = {}): KeyringKeyInfo {
    return this.#admin.createKey(caller, name, options);
  }

  rotateKey(caller: KmsCaller, name: string): KeyringKeyInfo {
    return this.#admin.rotateKey(caller, name);
  }

  getKey(caller: KmsCaller, name: string): KeyringKeyInfo {
    return this.#admin.getKey(caller, name);
  }

  /** Keys the caller may read: a client policy narrows the list to its globs. */
  listKeys(caller: KmsCaller): KeyringKeyInfo[] {
    return this.#admin.listKeys(caller);
  }

  /** Key states the caller may read, when they differ from `since` or after `waitMs` (long poll; see KeyAdmin). */
  watchKeyStates(caller: KmsCaller, since: string | undefined, waitMs: number): Promise<KeyStateSnapshot> {
    return this.#admin.watchKeyStates(caller, since, waitMs);
  }

  setKeyPolicy(caller: KmsCaller, name: string, policy: KeyPolicyInput): KeyringKeyInfo {
    return this.#admin.setKeyPolicy(caller, name, policy);
  }

  setVersionState(caller: KmsCaller, name: string, version: number, state: SettableState): KeyringKeyInfo {
    return this.#admin.setVersionState(caller, name, version, state);
  }

  // ---- dual control: requests and decisions (dual-control.ts), their execution (approved-requests.ts) ----

  /** Asks for destruction of a key (every live version) or one version; runs after quorum + the waiting period. */
  requestDestroy(caller: KmsCaller, name: string, input: DestroyRequestInput = {}): KmsRequest {
    return this.#requests.requestDestroy(caller, name, input);
  }

  /** Clears a scheduled destruction (all scheduled versions of the key, or one). One person may stop a destroy. */
  cancelDestroy(caller: KmsCaller, name: string, version?: number): KeyringKeyInfo {
    return this.#requests.cancelDestroy(caller, name, version);
  }

  /** Asks for the key material wrapped to `publicKeyPem` (CKM_RSA_AES_KEY_WRAP); fetch it with fetchExport. */
  exportKey(caller: KmsCaller, name: string, input: ExportRequestInput): KmsRequest {
    return this.#requests.exportKey(caller, name, input);
  }

  /** The exported material (wrapped to the requester's public key), for the requester of an executed export. */
  fetchExport(caller: KmsCaller, id: string): { wrapped: Buffer; keyRef: string; algorithm: string } {
    return this.#requests.fetchExport(caller, id);
  }

  /** Asks to set (or with null remove) a client's key policy. */
  setClientPolicy(caller: KmsCaller, client: string, policy: ClientPolicy | null, reason?: string): KmsRequest {
    return this.#requests.setClientPolicy(caller, client, policy, reason);
  }

  getClientPolicy(caller: KmsCaller, client: string): StoredClientPolicy | undefined {
    return this.#requests.getClientPolicy(caller, client);
  }

  listClientPolicies(caller: KmsCaller): StoredClientPolicy[] {
    return this.#requests.listClientPolicies(caller);
  }

  /** Asks for a new master key; on approval every KEK version is re-sealed under it in one transaction. */
  requestMasterRotation(caller: KmsCaller, reason?: string): KmsRequest {
    return this.#requests.requestMasterRotation(caller, reason);
  }

  listRequests(caller: KmsCaller, status?: RequestStatus): KmsRequest[] {
    return this.#requests.listRequests(caller, status);
  }

  getRequest(caller: KmsCaller, id: string): KmsRequest {
    return this.#requests.getRequest(caller, id);
  }

  /** A custodian's approval; the request runs as soon as the quorum is reached (a destroy is then scheduled). */
  approve(caller: KmsCaller, id: string, reason = ""): KmsRequest {
    return this.#requests.approve(caller, id, reason);
  }

  /** One custodian's rejection ends a request. */
  reject(caller: KmsCaller, id: string, reason = ""): KmsRequest {
    return this.#requests.reject(caller, id, reason);
  }

  // ---- BYOK: key-import.ts ----

  /** An RSA-3072 wrapping public key and a single-use import token (24 h) for importing material into `name`. */
  importParams(caller: KmsCaller, name: string): ImportParams {
    return this.#import.importParams(caller, name);
  }

  /** Imports material wrapped to an importParams public key: a new key, or a new version of an imported key. */
  importKey(caller: KmsCaller, name: string, importToken: string, wrappedMaterial: Buffer): KeyringKeyInfo {
    return this.#import.importKey(caller, name, importToken, wrappedMaterial);
  }

  // ---- scheduler ----

  /**
   * One scheduler pass at the keyring's clock: automatic rotations that are due, destructions whose waiting period
   * ended, and approved requests whose execution did not finish. Safe to run from several processes at once.
   */
  runScheduled(): ScheduledRun {
    const run = runScheduled(this.#deps);
    const due = this.#secrets.warnDue();
    return due.length ? { ...run, secretsDue: due } : run;
  }

  /** Zeroes the master key and cached KEKs. */
  close(): void {
    if (this.#ops.closed) return;
    this.#ops.close();
    this.keyring.close();
  }
}
