// The contract between the file server and a key manager. The embedded key manager (in process, src/kms/embedded.ts)
// and the remote client (./client.ts: HTTPS + mTLS to `atrest kms serve`) both implement it; the vfs only ever sees
// this interface.

/**
 * A file server's audit log high-water mark kept by the key manager (kms/audit-marks.ts): the newest signed checkpoint
 * (entry `seq`, chain hash `hash`, hex) the server `client` reported for its log `log`, recorded at `at` (ISO).
 */
export interface AuditMark {
  client: string;
  log: string;
  seq: number;
  hash: string;
  at: string;
}

/** Encryption context: bound as AAD into every wrap, recorded in the key manager's audit. Never secret. */
export type EncryptionContext = Readonly<Record<string, string>>;

export interface DataKey {
  /** 32 random bytes. The caller owns it and must zero it (`buf.fill(0)`) when done. */
  plaintext: Buffer;
  /** Opaque wrapped form; self-describing (names key and version), safe to store beside the data. */
  wrapped: Buffer;
  /** `kek:<name>:v<version>` of the KEK that wrapped it. */
  keyRef: string;
}

export interface KeyVersionInfo {
  version: number;
  createdAt: string;
  state: "active" | "deactivated" | "compromised" | "destroyed" | "pre-active";
}

export interface KeyInfo {
  name: string;
  currentVersion: number;
  versions: KeyVersionInfo[];
}

export interface KeyProvider {
  /** New random DEK, wrapped under the current version of `keyName` with `context` as AAD. */
  generateDataKey(keyName: string, context: EncryptionContext): Promise<DataKey>;
  /** Several at once, all under the current version of `keyName`, one per context in order (one call, one audit record). */
  generateDataKeys?(keyName: string, contexts: readonly EncryptionContext[]): Promise<DataKey[]>;
  /**
   * The version a new data key of `keyName` would be wrapped under now; throws KeyUnavailableError when none can be.
   * Offered where it is a cheap local look-up (the embedded key manager), for checking keys made ahead before use.
   */
  encryptionVersion?(keyName: string): number;
  /** Unwrap a DEK; throws KeyUnavailableError if the key/version is unusable, IntegrityError on a context mismatch. */
  unwrap(wrapped: Buffer, context: EncryptionContext): Promise<Buffer>;
  /** Key ref (`kek:<name>:v<N>`) named by a wrapped blob, without unwrapping it. */
  keyRefOf(wrapped: Buffer): string;
  listKeys(): Promise<KeyInfo[]>;
  createKey(name: string): Promise<KeyInfo>;
  rotateKey(name: string): Promise<KeyInfo>;
  close(): Promise<void>;
}

/** Seal state of a key manager service (`GET /v1/status`, `atrest kms status`). */
export interface KmsStatus {
  sealed: boolean;
  /** Where the master key comes from: custodians' unseal shares, or the dev key file beside the database. */
  kind: "shamir" | "dev-file" | "pkcs11";
  threshold: number;
  shares: number;
  progress: number;
  version: string;
  /** Why nothing changed (e.g. "already unsealed"). */
  detail?: string;
}

/** The state of the keys a client may read, as `GET /v1/key-states` reports it; `etag` changes with any of it. */
export interface KeyStateSnapshot {
  etag: string;
  keys: {
    name: string;
    minDecryptionVersion: number;
    /** destroyAt: the version is scheduled for destruction then (it encrypts nothing new meanwhile). */
    versions: { version: number; state: KeyVersionInfo["state"]; destroyAt?: string }[];
  }[];
}

/**
 * A key manager that reports key state changes (a version deactivated, compromised or destroyed, a minimum decryption
 * version raised, a rotation) as they happen, so caches of unwrapped data keys can drop what is affected at once.
 */
export interface KeyStateWatcher {
  /**
   * Calls `onChange` with the names of the keys whose state changed, and `onUnreachable` (if given) whenever a look
   * at the key manager fails, since a change made meanwhile cannot be seen; the returned function stops watching.
   */
  watchKeyStates(onChange: (keys: string[]) => void, onUnreachable?: () => void): () => void;
}

/** Names of keys whose entry differs between two snapshots (changed, added or gone). */
export function changedKeys(before: KeyStateSnapshot, after: KeyStateSnapshot): string[] {
  const was = new Map(before.keys.map((k) => [k.name, JSON.stringify(k)]));
  const now = new Map(after.keys.map((k) => [k.name, JSON.stringify(k)]));
  const out = new Set<string>();
  for (const [name, v] of now) if (was.get(name) !== v) out.add(name);
  for (const name of was.keys()) if (!now.has(name)) out.add(name);
  return [...out].sort();
}
