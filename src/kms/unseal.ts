// Shamir sealing of the master key, and the seal state machine custodians drive with `atrest kms unseal`.
//
// At `kms init --shares n --threshold k`: a random master key and a random unseal key; the unseal key is split into
// n shares (printed once, never stored); kms.db stores the master key sealed under the unseal key:
//   meta "master_sealed" = nonce(12) ‖ AES-256-GCM(unsealKey, master)(32) ‖ tag(16), AAD = "atrest-master-v1\0" ‖ sealId
//   meta "seal_config"   = JSON { kind: "shamir", shares, threshold, sealId (hex), createdAt, oneSharePerCustodian? }
// Unsealing combines k shares into the unseal key, opens the master key and checks it against the keyring's master
// check value. Master-key rotation stores a new master under the same unseal key, so the shares never change.

import type { KeyObject } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { aeadKey, open, seal } from "../crypto/aead.ts";
import { randomBytes } from "../crypto/random.ts";
import { AtrestError, IntegrityError, KeyUnavailableError } from "../errors.ts";
import { newBackupKeyRows } from "./backup-key.ts";
import type { KmsDb } from "./db.ts";
import { type HsmAccess, type Pkcs11Config, Pkcs11Source } from "./hsm-source.ts";
import { Keyring } from "./keyring.ts";
import { createMasterKeyFile, readMasterKeyFile } from "./master-file.ts";
import type { MasterKeySource, MasterSourceStatus, UnsealProgress } from "./master-source.ts";
import { MASTER_KEY_BYTES, type MasterKeyLike, verifyMasterCheck } from "./seal.ts";
import { combineShares, type ParsedShare, parseShare, splitUnsealKey, UNSEAL_KEY_BYTES } from "./shares.ts";

export const MASTER_KEY_FILE = "master.key";
const SEAL_CONFIG = "seal_config";
const MASTER_SEALED = "master_sealed";
// Written by Keyring.initialise: an AEAD tag over nothing under the master key.
const MASTER_CHECK = "master_check";
const MASTER_AAD = Buffer.from("atrest-master-v1\0", "latin1");

export interface ShamirConfig {
  kind: "shamir";
  shares: number;
  threshold: number;
  sealId: string;
  createdAt: string;
  /**
   * Each custodian identity (the client name of its certificate) counts once toward the threshold: a second share
   * from the same custodian is refused. Default of `atrest kms init`; absent (false) in KMS directories made before.
   */
  oneSharePerCustodian?: boolean;
}

export type SealConfig = ShamirConfig | Pkcs11Config | { kind: "dev-file" };

/** The seal configuration of an initialised KMS directory, or undefined if it is not initialised. */
export function readSealConfig(db: KmsDb, dir: string): SealConfig | undefined {
  const raw = db.getMeta(SEAL_CONFIG);
  if (raw) return JSON.parse(Buffer.from(raw).toString("utf8")) as ShamirConfig | Pkcs11Config;
  if (db.getMeta(MASTER_CHECK) && existsSync(join(dir, MASTER_KEY_FILE))) return { kind: "dev-file" };
  if (db.getMeta(MASTER_CHECK)) {
    throw new KeyUnavailableError(`${dir} has a KMS database but neither a seal configuration nor ${MASTER_KEY_FILE}`);
  }
  return undefined;
}

function masterAad(sealId: Buffer): Buffer {
  return Buffer.concat([MASTER_AAD, sealId]);
}

export interface ShamirInit {
  /** Printed once to the custodians; never stored. */
  shares: string[];
  config: ShamirConfig;
}

/**
 * Initialises `db` (which must be empty) with a new master key sealed under a new Shamir-split unseal key, and the
 * keyring's `default` KEK. One transaction: a crash leaves an uninitialised database, never a half one.
 */
export async function initShamir(
  db: KmsDb,
  dir: string,
  shares: number,
  threshold: number,
  now: () => Date = () => new Date(),
  options: { oneSharePerCustodian?: boolean } = {},
): Promise<ShamirInit> {
  if (readSealConfig(db, dir)) throw new AtrestError("EXISTS", `the KMS in ${dir} is already initialised`);
  const master = randomBytes(MASTER_KEY_BYTES);
  const unsealKey = randomBytes(UNSEAL_KEY_BYTES);
  const sealId = randomBytes(16);
  try {
    const texts = await splitUnsealKey(unsealKey, sealId, shares, threshold);
    const config: ShamirConfig = {
      kind: "shamir",
      shares,
      threshold,
      sealId: sealId.toString("hex"),
      createdAt: now().toISOString(),
      ...(options.oneSharePerCustodian ? { oneSharePerCustodian: true } : {}),
    };
    const sealed = seal(unsealKey, randomBytes(12), master, masterAad(sealId));
    db.transaction(() => {
      if (db.getMeta(SEAL_CONFIG) || db.getMeta(MASTER_CHECK)) {
        throw new AtrestError("EXISTS", `the KMS in ${dir} is already initialised`);
      }
      db.setMeta(SEAL_CONFIG, Buffer.from(JSON.stringify(config)));
      db.setMeta(MASTER_SEALED, sealed);
      for (const [k, v] of newBackupKeyRows(unsealKey, sealId)) db.setMeta(k, v);
      Keyring.initialise(db, master, now);
    });
    return { shares: texts, config };
  } finally {
    master.fill(0);
    unsealKey.fill(0);
  }
}

/** Dev mode: the existing key file beside the database (loud warning), unsealed at start. */
export async function initDevFile(db: KmsDb, dir: string, now: () => Date = () => new Date()): Promise<boolean> {
  const existing = readSealConfig(db, dir);
  if (existing && existing.kind !== "dev-file") {
    throw new AtrestError("EXISTS", `the KMS in ${dir} is already initialised (${existing.kind})`);
  }
  const keyCreated = await createMasterKeyFile(join(dir, MASTER_KEY_FILE));
  const master = await readMasterKeyFile(join(dir, MASTER_KEY_FILE));
  try {
    return Keyring.initialise(db, master, now) || keyCreated;
  } finally {
    master.fill(0);
  }
}

/**
 * Opens the master key stored under `unsealKey` and checks it against the keyring's check value. The master key is
 * returned in a fresh buffer the caller owns. A wrong unseal key → KeyUnavailableError.
 */
export function openMaster(db: KmsDb, config: ShamirConfig, unsealKey: Buffer): Buffer {
  const sealed = db.getMeta(MASTER_SEALED);
  const check = db.getMeta(MASTER_CHECK);
  if (!sealed || !check) throw new KeyUnavailableError("KMS database has no sealed master key (not initialised?)");
  let master: Buffer;
  try {
    master = open(unsealKey, Buffer.from(sealed), masterAad(Buffer.from(config.sealId, "hex")));
  } catch (e) {
    if (!(e instanceof IntegrityError)) throw e;
    throw new KeyUnavailableError(
      `the ${config.threshold} shares do not combine to this KMS's unseal key (one of them is wrong); ` +
        "progress reset to 0: submit the shares again",
    );
  }
  try {
    verifyMasterCheck(master, check);
  } catch (e) {
    master.fill(0);
    throw e;
  }
  return master;
}

/** Throws unless `unsealKey` opens this database's master key (used to verify a restore). */
export function verifyUnsealKey(db: KmsDb, config: ShamirConfig, unsealKey: Buffer): void {
  openMaster(db, config, unsealKey).fill(0);
}

export class ShamirSource implements MasterKeySource {
  readonly kind = "shamir" as const;
  readonly #db: KmsDb;
  readonly #config: ShamirConfig;
  readonly #sealId: Buffer;
  readonly #pending = new Map<number, Buffer>();
  /** Custodian identity → the share (x) it submitted, in one-share-per-custodian mode. */
  readonly #custodians = new Map<string, number>();
  readonly #onePerCustodian: boolean;
  #unsealKey: KeyObject | undefined;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(db: KmsDb, config: ShamirConfig, options: { oneSharePerCustodian?: boolean } = {}) {
    this.#db = db;
    this.#config = config;
    this.#sealId = Buffer.from(config.sealId, "hex");
    this.#onePerCustodian = (config.oneSharePerCustodian ?? false) || (options.oneSharePerCustodian ?? false);
  }

  /** Each custodian identity counts once toward the threshold (seal config, or `kms serve --one-share-per-custodian`). */
  get oneSharePerCustodian(): boolean {
    return this.#onePerCustodian;
  }

  status(): MasterSourceStatus {
    return {
      kind: "shamir",
      threshold: this.#config.threshold,
      shares: this.#config.shares,
      progress: this.#pending.size,
    };
  }

  async autoUnseal(): Promise<undefined> {
    return undefined;
  }

  submitShare(text: string, custodian?: string): Promise<UnsealProgress & { master?: Buffer }> {
    // Serialised: two custodians submitting at once must not both see "threshold reached".
    const run = this.#queue.then(() => this.#submit(text, custodian));
    this.#queue = run.catch(() => {});
    return run;
  }

  async #submit(text: string, custodian: string | undefined): Promise<UnsealProgress & { master?: Buffer }> {
    const threshold = this.#config.threshold;
    if (this.#onePerCustodian) {
      if (custodian === undefined) {
        throw new AtrestError("INVALID_INPUT", "this key manager counts one share per custodian: name the custodian");
      }
      if (this.#custodians.has(custodian)) {
        throw new AtrestError(
          "CONFLICT",
          `custodian ${custodian} already submitted a share: each custodian counts once; ` +
            `progress unchanged (${this.#pending.size}/${threshold})`,
        );
      }
    }
    let share: ParsedShare;
    try {
      share = parseShare(text, this.#sealId);
    } catch (e) {
      // A mistyped share does not cost the others their progress: it never entered the combination.
      throw new AtrestError(
        "INVALID_INPUT",
        `${(e as Error).message}; progress unchanged (${this.#pending.size}/${threshold})`,
      );
    }
    if (this.#pending.has(share.x)) {
      share.bytes.fill(0);
      throw new AtrestError(
        "CONFLICT",
        `this share was already submitted; progress unchanged (${this.#pending.size}/${threshold})`,
      );
    }
    this.#pending.set(share.x, share.bytes);
    if (this.#onePerCustodian && custodian !== undefined) this.#custodians.set(custodian, share.x);
    if (this.#pending.size < threshold) return { unsealed: false, progress: this.#pending.size, threshold };
    let unsealKey: Buffer | undefined;
    try {
      unsealKey = await combineShares([...this.#pending.values()]);
      const master = this.#openMaster(unsealKey);
      this.#unsealKey = aeadKey(unsealKey);
      return { unsealed: true, progress: 0, threshold, master };
    } finally {
      unsealKey?.fill(0);
      this.reset();
    }
  }

  #openMaster(unsealKey: Buffer): Buffer {
    return openMaster(this.#db, this.#config, unsealKey);
  }

  reset(): void {
    for (const b of this.#pending.values()) b.fill(0);
    this.#pending.clear();
    this.#custodians.clear();
  }

  newMaster(): Buffer {
    return randomBytes(MASTER_KEY_BYTES);
  }

  storeMaster(master: MasterKeyLike): void {
    if (!this.#unsealKey) throw new KeyUnavailableError("key manager is sealed");
    if (!Buffer.isBuffer(master) || master.length !== MASTER_KEY_BYTES) {
      throw new AtrestError("INVALID_INPUT", "a Shamir-sealed master key is 32 bytes");
    }
    putMeta(this.#db, MASTER_SEALED, seal(this.#unsealKey, randomBytes(12), master, masterAad(this.#sealId)));
  }

  seal(): void {
    this.reset();
    // The KeyObject's native copy is freed (OPENSSL_clear_free) once collected; dropping the reference is all JS can do.
    this.#unsealKey = undefined;
  }
}

export class DevFileSource implements MasterKeySource {
  readonly kind = "dev-file" as const;
  readonly #path: string;

  constructor(dir: string) {
    this.#path = join(dir, MASTER_KEY_FILE);
  }

  status(): MasterSourceStatus {
    return { kind: "dev-file", threshold: 0, shares: 0, progress: 0 };
  }

  autoUnseal(): Promise<Buffer> {
    return readMasterKeyFile(this.#path);
  }

  async submitShare(): Promise<never> {
    throw new AtrestError("UNSUPPORTED", "this KMS is in dev mode (key file): there are no shares to submit");
  }

  reset(): void {}

  newMaster(): never {
    return this.storeMaster();
  }

  storeMaster(): never {
    throw new AtrestError(
      "UNSUPPORTED",
      "master-key rotation needs a Shamir-sealed KMS (atrest kms init --shares N --threshold K); " +
        "a dev-mode key file is unprotected anyway",
    );
  }

  seal(): void {}
}

/** The master-key source an initialised KMS directory was set up with. */
export function masterSourceFor(
  db: KmsDb,
  dir: string,
  options: { oneSharePerCustodian?: boolean; hsm?: HsmAccess } = {},
): MasterKeySource {
  const config = readSealConfig(db, dir);
  if (!config) throw new KeyUnavailableError(`KMS not initialised in ${dir} (run atrest kms init --data ${dir})`);
  if (config.kind === "shamir") return new ShamirSource(db, config, options);
  if (config.kind === "pkcs11") return new Pkcs11Source(db, config, options.hsm);
  return new DevFileSource(dir);
}

function putMeta(db: KmsDb, k: string, v: Uint8Array): void {
  db.putMeta(k, v);
}
