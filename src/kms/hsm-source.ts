// The HSM master-key source: the master key is an AES-256 key object in a PKCS#11 token, generated there (or made
// by the operator with the HSM's own tools) as sensitive and not extractable. KEK rows and the KMS's internal secrets
// are sealed and opened by the token (AES-GCM inside the HSM, same row layout as the software master); the unsealed
// KEKs then live in this process's memory like with the other sources, which is what lets data-key unwraps stay fast.
//
// seal_config = JSON { kind: "pkcs11", library, tokenLabel, keyLabel, createdAt }. No secret is stored: the PIN comes
// from the operator at each start (file, environment or stdin), and a stolen kms.db opens nothing without the token.

import { AtrestError, KeyUnavailableError } from "../errors.ts";
import type { KmsDb } from "./db.ts";
import { HsmMasterKey, Token } from "./hsm-token.ts";
import { Keyring } from "./keyring.ts";
import type { MasterKeySource, MasterSourceStatus } from "./master-source.ts";
import type { MasterKeyLike } from "./seal.ts";

const SEAL_CONFIG = "seal_config";

export interface Pkcs11Config {
  kind: "pkcs11";
  library: string;
  tokenLabel: string;
  keyLabel: string;
  createdAt: string;
}

export interface HsmAccess {
  /** The token's user PIN (never stored or logged). */
  pin?: string;
  /** Overrides the module path recorded at init (the same HSM mounted elsewhere on this host). */
  library?: string;
}

export interface Pkcs11InitOptions {
  library: string;
  tokenLabel: string;
  keyLabel: string;
  pin: string;
}

function keyOf(token: Token, keyLabel: string): HsmMasterKey {
  const key = token.findKey(keyLabel);
  if (!key) throw new KeyUnavailableError(`token "${token.label}" has no key labelled "${keyLabel}"`);
  const p = token.protection(key);
  if (!p.sensitive || p.extractable) {
    throw new KeyUnavailableError(
      `key "${keyLabel}" in token "${token.label}" is ${p.extractable ? "extractable" : "not sensitive"}: ` +
        "a master key must be sensitive and not extractable",
    );
  }
  return new HsmMasterKey(token, key, keyLabel);
}

/**
 * Initialises an empty KMS database under a master key held by the token: uses the key labelled `keyLabel` if the
 * operator made one (checked sensitive and not extractable), else generates it in the token. One transaction.
 * Returns whether the key was generated here.
 */
export function initPkcs11(db: KmsDb, dir: string, options: Pkcs11InitOptions, now: () => Date = () => new Date()) {
  if (db.getMeta(SEAL_CONFIG) || db.getMeta("master_check")) {
    throw new AtrestError("EXISTS", `the KMS in ${dir} is already initialised`);
  }
  const token = Token.open({ library: options.library, tokenLabel: options.tokenLabel, pin: options.pin });
  try {
    const generated = token.findKey(options.keyLabel) === undefined;
    if (generated) token.generateKey(options.keyLabel);
    const master = keyOf(token, options.keyLabel);
    const config: Pkcs11Config = {
      kind: "pkcs11",
      library: options.library,
      tokenLabel: options.tokenLabel,
      keyLabel: options.keyLabel,
      createdAt: now().toISOString(),
    };
    db.transaction(() => {
      if (db.getMeta(SEAL_CONFIG) || db.getMeta("master_check")) {
        throw new AtrestError("EXISTS", `the KMS in ${dir} is already initialised`);
      }
      db.setMeta(SEAL_CONFIG, Buffer.from(JSON.stringify(config)));
      Keyring.initialise(db, master, now);
    });
    return { config, generated };
  } finally {
    token.close();
  }
}

export class Pkcs11Source implements MasterKeySource {
  readonly kind = "pkcs11" as const;
  readonly #db: KmsDb;
  #config: Pkcs11Config;
  readonly #access: HsmAccess;
  #token: Token | undefined;

  constructor(db: KmsDb, config: Pkcs11Config, access: HsmAccess = {}) {
    this.#db = db;
    this.#config = config;
    this.#access = access;
  }

  get config(): Pkcs11Config {
    return this.#config;
  }

  status(): MasterSourceStatus {
    return { kind: "pkcs11", threshold: 0, shares: 0, progress: 0 };
  }

  /** Logs in to the token and returns the master key's handle; the keyring then checks it against kms.db. */
  async autoUnseal(): Promise<MasterKeyLike> {
    if (this.#access.pin === undefined) {
      throw new KeyUnavailableError(
        `this key manager's master key is in the HSM token "${this.#config.tokenLabel}": give its PIN ` +
          "(--hsm-pin-file FILE, or ATREST_HSM_PIN)",
      );
    }
    this.seal();
    const raw = this.#db.getMeta(SEAL_CONFIG);
    if (raw) this.#config = JSON.parse(Buffer.from(raw).toString("utf8")) as Pkcs11Config;
    const token = Token.open({
      library: this.#access.library ?? this.#config.library,
      tokenLabel: this.#config.tokenLabel,
      pin: this.#access.pin,
    });
    try {
      const key = keyOf(token, this.#config.keyLabel);
      this.#token = token;
      return key;
    } catch (e) {
      token.close();
      throw e;
    }
  }

  async submitShare(): Promise<never> {
    throw new AtrestError(
      "UNSUPPORTED",
      "this key manager's master key is in an HSM: it unseals with the token's PIN at start, not with shares",
    );
  }

  reset(): void {}

  /** A new key in the same token for a master rotation; the old one stays until the operator deletes it. */
  newMaster(): MasterKeyLike {
    const token = this.#token;
    if (!token) throw new KeyUnavailableError("key manager is sealed");
    const base = this.#config.keyLabel.replace(/@[0-9TZ]+$/, "");
    const label = `${base}@${new Date().toISOString().replace(/[-:.]/g, "")}`;
    token.generateKey(label);
    return keyOf(token, label);
  }

  /** Records the new key's label (inside the rotation's transaction, so kms.db and the label change together). */
  storeMaster(master: MasterKeyLike): void {
    if (!(master instanceof HsmMasterKey)) {
      throw new AtrestError("INVALID_INPUT", "an HSM-sealed key manager rotates to another key in its token");
    }
    const config: Pkcs11Config = { ...this.#config, keyLabel: master.keyLabel };
    this.#db.putMeta(SEAL_CONFIG, Buffer.from(JSON.stringify(config)));
    this.#config = config;
  }

  seal(): void {
    this.#token?.close();
    this.#token = undefined;
  }
}
