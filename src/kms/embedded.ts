// Embedded (in-process) key provider: the keyring plus a dev-mode master key file. For development and single-node
// installs only; production runs the KMS as its own process (`atrest kms serve`, Shamir unseal) and the file server
// reaches it with the client in ./api/client.ts.

import { chmod, mkdir, stat } from "node:fs/promises";
import { userInfo } from "node:os";
import { join } from "node:path";
import { KeyUnavailableError } from "../errors.ts";
import type { KmsCaller } from "./api/caller.ts";
import {
  type AuditMark,
  changedKeys,
  type DataKey,
  type EncryptionContext,
  type KeyProvider,
  type KeyStateWatcher,
} from "./api/types.ts";
import { keyRefOfWrapped } from "./api/wrapped.ts";
import { kmsClock } from "./clock.ts";
import { KmsDb } from "./db.ts";
import { type KeyringKeyInfo, keyStateSnapshot } from "./key-info.ts";
import { Keyring, type KeyringOptions } from "./keyring.ts";
import { KmsAudit } from "./kms-audit.ts";
import { createMasterKeyFile, readMasterKeyFile } from "./master-file.ts";
import { DEFAULT_SCHEDULER_INTERVAL_MS, KmsScheduler } from "./scheduler.ts";
import { type ItemError, KmsService, type KmsServiceOptions, type WrapResult } from "./service.ts";

export const MASTER_KEY_FILE = "master.key";
export const KMS_DB_FILE = "kms.db";

export const DEV_MODE_WARNING =
  "WARNING: atrest KMS is in DEV MODE: the master key is stored unprotected in a key file beside the data. " +
  "Anyone who copies this directory can decrypt every file. Production must run a separate KMS with Shamir unseal.";

export type EmbeddedKmsOptions = KeyringOptions &
  KmsServiceOptions & {
    /** Scheduler period (auto rotation, due destruction); 0 disables. Default 60 s. */
    schedulerIntervalMs?: number;
  };

/** The file server's identity towards its in-process key manager: a `server` client with no policy (all keys). */
export const EMBEDDED_CALLER: KmsCaller = Object.freeze({ name: "embedded", role: "server" });

/**
 * The identity of someone running the CLI on the data directory. Nothing authenticates it (whoever can read the
 * directory holds the dev-mode master key anyway), so it only names who acted in the KMS audit; real separation of
 * duties needs the KMS service with client certificates.
 */
export function localCaller(role: KmsCaller["role"], name?: string): KmsCaller {
  let who = name;
  if (!who) {
    try {
      who = userInfo().username;
    } catch {
      who = "local";
    }
  }
  return { name: `local:${who}`, role };
}

/** How often the embedded key manager looks for key state changes made by other processes, ms. */
const EMBEDDED_WATCH_MS = 250;

export interface EmbeddedKms extends KeyProvider, KeyStateWatcher {
  /** The facade, for governance commands run on the data directory (`atrest kms key …`). */
  readonly service: KmsService;
  listKeys(): Promise<KeyringKeyInfo[]>;
  createKey(name: string): Promise<KeyringKeyInfo>;
  rotateKey(name: string): Promise<KeyringKeyInfo>;
  getKey(name: string): Promise<KeyringKeyInfo>;
  setMinDecryptionVersion(name: string, version: number): Promise<KeyringKeyInfo>;
  /** Re-wraps a DEK under the current version of the key it names, without exposing the DEK. */
  rewrap(wrapped: Buffer, context: EncryptionContext): Promise<{ wrapped: Buffer; keyRef: string }>;
  /** One result per item, in order; a failed item carries its error and does not fail the others. */
  rewrapBatch(items: readonly { wrapped: Buffer; context: EncryptionContext }[]): Promise<(WrapResult | ItemError)[]>;
  auditMark(log: string): Promise<AuditMark | undefined>;
  raiseAuditMark(log: string, seq: number, hash: string): Promise<AuditMark>;
  resetAuditMark(client: string, log: string, reason: string): Promise<AuditMark | undefined>;
  /** The KMS audit log this provider writes (undefined when the caller supplied its own sink). */
  readonly kmsAudit: KmsAudit | undefined;
  /** Always set for the embedded provider: it is dev mode by construction. */
  readonly warning: string;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw e;
  }
}

/**
 * Idempotent: creates `dir` (0700), a master key file (0600) and the KMS database with KEK `default` v1.
 * Never replaces an existing master key or key; refuses a database whose master key file has gone missing,
 * because a fresh master key would silently orphan every KEK in it.
 */
export async function initEmbeddedKms(dir: string): Promise<{ created: boolean; warning?: string }> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const keyPath = join(dir, MASTER_KEY_FILE);
  const dbPath = join(dir, KMS_DB_FILE);
  // Database first, key second: inits create the key before the database, so in this order a concurrent init that
  // is between the two steps cannot look like a lost key file.
  if ((await exists(dbPath)) && !(await exists(keyPath))) {
    throw new KeyUnavailableError(
      `${dbPath} exists but ${keyPath} is missing; refusing to create a new master key (restore the key file)`,
    );
  }
  const keyCreated = await createMasterKeyFile(keyPath);
  const master = await readMasterKeyFile(keyPath);
  let db: KmsDb | undefined;
  try {
    db = new KmsDb(dbPath);
    const dbCreated = Keyring.initialise(db, master);
    return { created: keyCreated || dbCreated, warning: DEV_MODE_WARNING };
  } finally {
    master.fill(0);
    db?.close();
  }
}

/** Loads the master key into memory and opens the keyring. Throws KeyUnavailableError if not initialised. */
export async function openEmbeddedKms(dir: string, options: EmbeddedKmsOptions = {}): Promise<EmbeddedKms> {
  const keyPath = join(dir, MASTER_KEY_FILE);
  const dbPath = join(dir, KMS_DB_FILE);
  if (!(await exists(dbPath))) {
    throw new KeyUnavailableError(`KMS not initialised: ${dbPath} not found (run atrest init)`);
  }
  const master = await readMasterKeyFile(keyPath);
  let db: KmsDb | undefined;
  let ring: Keyring;
  const now = options.now ?? kmsClock();
  try {
    db = new KmsDb(dbPath);
    ring = new Keyring(db, master, { ...options, now });
  } catch (e) {
    master.fill(0);
    db?.close();
    throw e;
  }
  const kdb = db;
  // The KMS audit log lives in the KMS directory, apart from the file server's (unless the caller supplies one).
  const kmsAudit = options.auditLog ? undefined : new KmsAudit(dir);
  let service: KmsService;
  try {
    kmsAudit?.unseal(ring);
    service = new KmsService(ring, { ...options, auditLog: options.auditLog ?? kmsAudit });
  } catch (e) {
    ring.close();
    kdb.close();
    await kmsAudit?.close();
    throw e;
  }
  const interval = options.schedulerIntervalMs ?? DEFAULT_SCHEDULER_INTERVAL_MS;
  const scheduler = interval > 0 ? new KmsScheduler(service).start(interval) : undefined;
  const me = EMBEDDED_CALLER;
  const operator = localCaller("operator");
  let closed = false;
  // Async facade over the synchronous service: the KeyProvider contract is async because the remote client is.
  return {
    warning: DEV_MODE_WARNING,
    service,
    kmsAudit,
    generateDataKey: async (name: string, context: EncryptionContext): Promise<DataKey> =>
      service.generateDataKey(me, name, context),
    generateDataKeys: async (name: string, contexts: readonly EncryptionContext[]): Promise<DataKey[]> =>
      service.generateDataKeys(me, name, contexts),
    encryptionVersion: (name: string): number => service.keyring.encryptionVersion(name),
    unwrap: async (wrapped: Buffer, context: EncryptionContext): Promise<Buffer> =>
      service.unwrap(me, wrapped, context).plaintext,
    rewrap: async (wrapped: Buffer, context: EncryptionContext) => service.rewrap(me, wrapped, context),
    rewrapBatch: async (items) => service.rewrapBatch(me, items),
    keyRefOf: (wrapped: Buffer): string => keyRefOfWrapped(wrapped),
    listKeys: async () => service.listKeys(operator),
    auditMark: async (log: string) => service.getAuditMark(me, log),
    raiseAuditMark: async (log: string, seq: number, hash: string) => service.raiseAuditMark(me, log, seq, hash).mark,
    // dev mode: nothing authenticates the local custodian (whoever reads the directory holds the master key anyway)
    resetAuditMark: async (client: string, log: string, reason: string) =>
      service.resetAuditMark(localCaller("custodian"), client, log, reason),
    getKey: async (name: string) => service.getKey(operator, name),
    createKey: async (name: string) => service.createKey(operator, name),
    rotateKey: async (name: string) => service.rotateKey(operator, name),
    setMinDecryptionVersion: async (name: string, version: number) =>
      service.setKeyPolicy(operator, name, { minDecryptionVersion: version }),
    // In process: key changes come from other processes sharing kms.db (the CLI), so look at it every 250 ms.
    watchKeyStates: (onChange: (keys: string[]) => void) => {
      let last = closed ? undefined : keyStateSnapshot(service.keyring.listKeys());
      const timer = setInterval(() => {
        if (closed || !last) return;
        try {
          const now = keyStateSnapshot(service.keyring.listKeys());
          if (now.etag !== last.etag) {
            const keys = changedKeys(last, now);
            last = now;
            if (keys.length) onChange(keys);
          }
        } catch {
          // closed meanwhile, or the database busy: look again next time
        }
      }, EMBEDDED_WATCH_MS);
      timer.unref();
      return () => clearInterval(timer);
    },
    close: async () => {
      if (closed) return;
      closed = true;
      scheduler?.stop();
      service.close();
      kdb.close();
      await kmsAudit?.close();
    },
  };
}
