// The organisation's OpenPGP signing key: signs files in PGP folders and certifies users' public keys. Its private
// half exists on disk only sealed (AES-256-GCM) under a service key that the key manager wraps, like the metadata and
// audit keys: a copy of the database without the key manager yields the public key and nothing else.
import type * as openpgp from "openpgp";
import { aeadKey, open, seal } from "../crypto/aead.ts";
import { zero } from "../crypto/bytes.ts";
import { randomBytes } from "../crypto/random.ts";
import { AtrestError } from "../errors.ts";
import { serviceKey } from "../keys/service-keys.ts";
import type { KeyProvider } from "../kms/api/types.ts";
import type { MetaStore } from "../store/types.ts";
import { readPublicKey } from "./keys.ts";
import { openpgpLib } from "./lib.ts";

const PUBLIC_SETTING = "pgp.org.public";
const PRIVATE_SETTING = "pgp.org.private";
const WRAP_SETTING = "pgp.org.wrap";
const CONTEXT = { purpose: "pgp-org-key" };
const AAD = Buffer.from("atrest pgp org key v1");

export class OrgKey {
  readonly #store: MetaStore;
  readonly #keys: KeyProvider;
  #public: openpgp.PublicKey | undefined;
  #private: openpgp.PrivateKey | undefined;

  constructor(store: MetaStore, keys: KeyProvider) {
    this.#store = store;
    this.#keys = keys;
  }

  /** The public key, or undefined when no organisation key was created. */
  async publicKey(): Promise<openpgp.PublicKey | undefined> {
    if (this.#public) return this.#public;
    const armored = await this.#store.getSetting(PUBLIC_SETTING);
    if (!armored) return undefined;
    this.#public = await readPublicKey(armored.toString("utf8"));
    return this.#public;
  }

  async requirePublicKey(): Promise<openpgp.PublicKey> {
    const key = await this.publicKey();
    if (!key) throw new AtrestError("NOT_FOUND", "no organisation OpenPGP key: run `atrest pgp org-key create` first");
    return key;
  }

  /**
   * Creates the organisation key (v4 Ed25519 signing key with a Curve25519 encryption subkey: GnuPG 2.2 verifies
   * its signatures). Refuses to replace an existing one: certifications made by it would silently stop counting.
   */
  async create(userId: { name: string; email?: string }): Promise<openpgp.PublicKey> {
    if (await this.#store.getSetting(PUBLIC_SETTING)) {
      throw new AtrestError("EXISTS", "an organisation OpenPGP key already exists");
    }
    const { privateKey } = await (await openpgpLib()).generateKey({
      type: "ecc",
      curve: "curve25519Legacy",
      userIDs: [userId],
      format: "object",
      config: { aeadProtect: false },
    });
    const secret = Buffer.from(privateKey.write());
    const wrapKey = await serviceKey(this.#store, this.#keys, WRAP_SETTING, "default", CONTEXT);
    try {
      const sealed = seal(aeadKey(wrapKey), randomBytes(12), secret, AAD);
      const publicKey = privateKey.toPublic();
      await this.#store.transaction(async (tx) => {
        await tx.setSetting(PRIVATE_SETTING, sealed);
        await tx.setSetting(PUBLIC_SETTING, Buffer.from(publicKey.armor()));
      });
      this.#public = publicKey;
      this.#private = privateKey;
      return publicKey;
    } finally {
      zero(wrapKey);
      zero(secret);
    }
  }

  /** The private key, unsealed through the key manager (kept in memory for the process's lifetime). */
  async privateKey(): Promise<openpgp.PrivateKey> {
    if (this.#private) return this.#private;
    const sealed = await this.#store.getSetting(PRIVATE_SETTING);
    if (!sealed)
      throw new AtrestError("NOT_FOUND", "no organisation OpenPGP key: run `atrest pgp org-key create` first");
    const wrapKey = await serviceKey(this.#store, this.#keys, WRAP_SETTING, "default", CONTEXT);
    let secret: Buffer | undefined;
    try {
      secret = open(wrapKey, sealed, AAD);
      // openpgp keeps views into the buffer it parses (signed data of self-signatures): give it its own copy, so
      // zeroing ours does not corrupt the key.
      this.#private = await (await openpgpLib()).readPrivateKey({ binaryKey: Uint8Array.from(secret) });
      return this.#private;
    } finally {
      zero(wrapKey);
      if (secret) zero(secret);
    }
  }

  /** Adds the organisation's certification to every user id of `key` (a "signed public key"). */
  async certify(key: openpgp.PublicKey): Promise<openpgp.PublicKey> {
    const signer = await this.privateKey();
    return (await key.signAllUsers([signer])) as openpgp.PublicKey;
  }
}
