// The KMS directory: kms.db (or store.url, naming the PostgreSQL store that several KMS nodes share), the CA and the
// server's TLS files (and master.key in dev mode). Operations an operator runs on the directory itself, on the KMS
// host: init (or joining a store another node initialised), issuing and revoking client certificates.

import { createPublicKey, type KeyObject } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { chmod, copyFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { AtrestError, KeyUnavailableError } from "../errors.ts";
import { writeFileDurable } from "../fsutil/durable.ts";
import { redactPostgresUrl } from "../store/postgres/index.ts";
import type { KmsRole } from "./api/caller.ts";
import { CLIENT_CA_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE } from "./api/cert-files.ts";
import { CA_CERT_FILE, CA_KEY_FILE } from "./cert-files.ts";
import { assertClientName, type ClientRow, recordClient } from "./clients.ts";
import { isPostgresStore, KMS_STORE_FILE, KmsDb } from "./db.ts";
import { initPkcs11, type Pkcs11Config, type Pkcs11InitOptions } from "./hsm-source.ts";
import { initDevFile, initShamir, MASTER_KEY_FILE, readSealConfig, type ShamirConfig } from "./unseal.ts";

export const KMS_DB_FILE = "kms.db";
export { KMS_STORE_FILE };

export interface InitOptions {
  /** Shamir: n shares, k threshold. Omit both for dev mode (key file). */
  shares?: number;
  threshold?: number;
  dev?: boolean;
  /** Extra names for the server certificate. */
  sans?: readonly string[];
  /** Shamir: each custodian identity counts once toward the threshold (the CLI's default). */
  oneSharePerCustodian?: boolean;
  /** The master key in a PKCS#11 token (generated there unless a key with that label exists). */
  hsm?: Pkcs11InitOptions;
  /** A postgres:// URL (`?schema=`): the store several KMS nodes share, instead of kms.db. */
  store?: string;
  /**
   * Join `store`, which another node initialised: no new master key. The directory holds copies of that node's
   * ca.crt and ca.key (and master.key in dev mode); this node gets its own server certificate.
   */
  joinFrom?: string;
}

export type InitResult =
  | { mode: "shamir"; shares: string[]; config: ShamirConfig; created: true }
  | { mode: "dev-file"; created: boolean }
  | { mode: "pkcs11"; config: Pkcs11Config; generated: boolean; created: true }
  | { mode: "joined"; kind: string; created: true };

/** The PostgreSQL store the directory is bound to, if any. */
export function kmsStoreUrl(dir: string): string | undefined {
  const path = join(dir, KMS_STORE_FILE);
  if (!existsSync(path)) return undefined;
  const url = readFileSync(path, "utf8").split("\n")[0]?.trim() ?? "";
  if (!isPostgresStore(url)) throw new AtrestError("INVALID_INPUT", `${path} does not hold a postgres:// URL`);
  return url;
}

/** Whether the directory has a database to open (kms.db, or a store URL). */
export function hasKmsDb(dir: string): boolean {
  return existsSync(join(dir, KMS_STORE_FILE)) || existsSync(join(dir, KMS_DB_FILE));
}

/** Opens an initialised KMS directory's database (or throws a clear "not initialised"). */
export function openKmsDb(dir: string): KmsDb {
  const url = kmsStoreUrl(dir);
  if (url) return new KmsDb(url);
  const path = join(dir, KMS_DB_FILE);
  if (!existsSync(path)) {
    throw new KeyUnavailableError(`KMS not initialised: ${path} not found (run atrest kms init --data ${dir})`);
  }
  return new KmsDb(path);
}

/** Copies the first node's CA (and dev key file) into a joining node's directory. */
async function copyJoinFiles(from: string, dir: string): Promise<void> {
  for (const f of [CA_KEY_FILE, CA_CERT_FILE, MASTER_KEY_FILE]) {
    const src = join(from, f);
    if (!existsSync(src)) {
      if (f === MASTER_KEY_FILE) continue;
      throw new AtrestError("NOT_FOUND", `--join ${from}: no ${f} there (copy the first node's ${f})`);
    }
    if (existsSync(join(dir, f))) throw new AtrestError("EXISTS", `${join(dir, f)} exists already`);
    await copyFile(src, join(dir, f));
    await chmod(join(dir, f), 0o600);
  }
}

async function joinStore(dir: string, store: string, from: string, sans: readonly string[]): Promise<InitResult> {
  if (existsSync(join(dir, KMS_DB_FILE)) || existsSync(join(dir, KMS_STORE_FILE))) {
    throw new AtrestError("EXISTS", `the KMS in ${dir} is already initialised`);
  }
  const db = new KmsDb(store);
  try {
    if (!db.getMeta("master_check")) {
      throw new AtrestError(
        "NOT_FOUND",
        "nothing to join: the store holds no KMS yet (initialise the first node without --join)",
      );
    }
    await copyJoinFiles(from, dir);
    const config = readSealConfig(db, dir);
    if (!config) throw new KeyUnavailableError("nothing to join: the store has no seal configuration");
    const { issueServerCert, loadCa } = await import("./ca.ts");
    await issueServerCert(dir, await loadCa(dir), sans);
    await writeFileDurable(join(dir, KMS_STORE_FILE), `${redactPostgresUrl(store)}\n`, { exclusive: true });
    return { mode: "joined", kind: config.kind, created: true };
  } finally {
    db.close();
  }
}

/**
 * Creates the directory (0700), the database, the master key (Shamir-sealed, or a dev key file) and the CA with the
 * server's TLS certificate. Shamir init refuses an initialised directory; dev init is idempotent.
 */
export async function initKmsDir(dir: string, options: InitOptions): Promise<InitResult> {
  const shamir = options.shares !== undefined || options.threshold !== undefined;
  if ([shamir, options.dev === true, options.hsm !== undefined].filter(Boolean).length > 1) {
    throw new AtrestError("INVALID_INPUT", "--dev, --shares/--threshold and --hsm-* exclude each other");
  }
  if (!shamir && !options.dev && !options.hsm && options.joinFrom === undefined) {
    throw new AtrestError(
      "INVALID_INPUT",
      "choose --shares N --threshold K (production), --hsm-library/--hsm-token (master key in an HSM) or --dev (key file)",
    );
  }
  if (options.store !== undefined && !isPostgresStore(options.store)) {
    throw new AtrestError("INVALID_INPUT", "--store must be a postgres:// URL (the default store is kms.db)");
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  if (options.joinFrom !== undefined) {
    if (options.store === undefined) throw new AtrestError("INVALID_INPUT", "--join needs --store postgres://…");
    if (shamir || options.hsm) {
      throw new AtrestError("INVALID_INPUT", "--join takes the seal configuration from the store: no --shares/--hsm-*");
    }
    return joinStore(dir, options.store, options.joinFrom, options.sans ?? []);
  }
  if (options.store !== undefined && existsSync(join(dir, KMS_DB_FILE))) {
    throw new AtrestError("EXISTS", `${dir} has a kms.db already: a directory uses one store`);
  }
  const db = new KmsDb(options.store ?? join(dir, KMS_DB_FILE));
  try {
    if (options.store !== undefined && db.getMeta("master_check") && !existsSync(join(dir, KMS_STORE_FILE))) {
      throw new AtrestError(
        "EXISTS",
        "the store holds a KMS already: to add a node, kms init --store URL --join DIR (copies of ca.crt, ca.key)",
      );
    }
    let result: InitResult;
    if (options.hsm) {
      if (readSealConfig(db, dir)) throw new AtrestError("EXISTS", `the KMS in ${dir} is already initialised`);
      const r = initPkcs11(db, dir, options.hsm);
      result = { mode: "pkcs11", config: r.config, generated: r.generated, created: true };
    } else if (shamir) {
      if (options.shares === undefined || options.threshold === undefined) {
        throw new AtrestError("INVALID_INPUT", "--shares and --threshold go together");
      }
      const r = await initShamir(db, dir, options.shares, options.threshold, undefined, {
        oneSharePerCustodian: options.oneSharePerCustodian,
      });
      result = { mode: "shamir", shares: r.shares, config: r.config, created: true };
    } else {
      result = { mode: "dev-file", created: await initDevFile(db, dir) };
    }
    const { createCa } = await import("./ca.ts");
    const caCreated = await createCa(dir, { sans: options.sans });
    if (caCreated && result.mode === "dev-file") result.created = true;
    if (options.store !== undefined && !existsSync(join(dir, KMS_STORE_FILE))) {
      await writeFileDurable(join(dir, KMS_STORE_FILE), `${redactPostgresUrl(options.store)}\n`, { exclusive: true });
    }
    return result;
  } finally {
    db.close();
  }
}

export function isInitialised(dir: string): boolean {
  if (!hasKmsDb(dir)) return false;
  const db = openKmsDb(dir);
  try {
    return readSealConfig(db, dir) !== undefined;
  } finally {
    db.close();
  }
}

export interface IssueOptions {
  /** Validity in days (default 365). */
  days?: number;
  now?: () => Date;
  /** Certify this public key (PEM, ECDSA P-256) instead of generating a key pair: only client.crt and ca.crt are written. */
  publicKeyPem?: string;
}

/**
 * Issues a client certificate, records it in kms.db and writes client.key, client.crt and ca.crt (0600) to `outDir`
 * (created 0700). The private key exists only there.
 */
export async function issueClient(
  dir: string,
  name: string,
  role: KmsRole,
  outDir: string,
  options: IssueOptions = {},
): Promise<ClientRow> {
  assertClientName(name);
  const days = options.days ?? 365;
  if (!Number.isInteger(days) || days < 1 || days > 3650) {
    throw new AtrestError("INVALID_INPUT", "--days must be an integer from 1 to 3650");
  }
  const db = openKmsDb(dir);
  try {
    const { issueClientCert, loadCa } = await import("./ca.ts");
    const ca = await loadCa(dir);
    let publicKey: KeyObject | undefined;
    if (options.publicKeyPem !== undefined) {
      try {
        publicKey = createPublicKey(options.publicKeyPem);
      } catch {
        throw new AtrestError("INVALID_INPUT", "cannot read the public key (expected a PEM SubjectPublicKeyInfo)");
      }
    }
    const issued = await issueClientCert(ca, name, role, days, publicKey);
    const row: ClientRow = {
      fingerprint: issued.fingerprint,
      name,
      role,
      serial: issued.serial,
      issuedAt: (options.now ?? (() => new Date()))().toISOString(),
      notAfter: issued.notAfter,
      revokedAt: null,
    };
    recordClient(db, row);
    await mkdir(outDir, { recursive: true, mode: 0o700 });
    if (issued.keyPem) await writeFileDurable(join(outDir, CLIENT_KEY_FILE), issued.keyPem);
    await writeFileDurable(join(outDir, CLIENT_CERT_FILE), issued.certPem);
    await writeFileDurable(join(outDir, CLIENT_CA_FILE), ca.certPem);
    return row;
  } finally {
    db.close();
  }
}
