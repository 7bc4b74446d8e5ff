// A PKCS#11 token holding the key manager's master key: a non-extractable, sensitive AES-256 secret key object that
// seals and opens KEK rows with CKM_AES_GCM inside the token. The key's value never enters this process.
//
// pkcs11js is a Node-API addon (ABI-stable across Node versions); it is loaded lazily so that a key manager without
// an HSM never needs it.

import { randomFillSync } from "node:crypto";
import { createRequire } from "node:module";
import { AtrestError, KeyUnavailableError } from "../errors.ts";
import type { MasterKey } from "./seal.ts";

type Pkcs11Module = typeof import("pkcs11js");
type Pkcs11 = InstanceType<Pkcs11Module["PKCS11"]>;
type Handle = Buffer;

const NONCE_BYTES = 12;
const TAG_BYTES = 16;

let loaded: Pkcs11Module | undefined;
function pkcs11js(): Pkcs11Module {
  if (!loaded) {
    try {
      loaded = createRequire(import.meta.url)("pkcs11js") as Pkcs11Module;
    } catch (cause) {
      throw new AtrestError(
        "UNSUPPORTED",
        "the PKCS#11 binding (pkcs11js) does not load: run npm ci (its postinstall builds it) on this machine",
        { cause },
      );
    }
  }
  return loaded;
}

export interface TokenOptions {
  /** Path of the vendor's PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so. */
  library: string;
  /** CKA_LABEL of the token (softhsm2-util --init-token --label …). */
  tokenLabel: string;
  /** The user PIN. Never logged or stored. */
  pin: string;
}

/** The PKCS#11 return value name (CKR_…) of an error from pkcs11js, for messages that say what the token said. */
function rvName(e: unknown): string {
  const m = /CKR_[A-Z_]+/.exec(String((e as Error)?.message ?? e));
  return m ? m[0] : "an error";
}

/**
 * One logged-in session on one token. Synchronous, like the keyring that calls it. The module is initialised once
 * per process (PKCS#11 allows one C_Initialize per process); close() logs out and finalises.
 */
export class Token {
  readonly #p: Pkcs11;
  readonly #mod: Pkcs11Module;
  readonly #session: Handle;
  readonly label: string;
  #open = true;

  private constructor(mod: Pkcs11Module, p: Pkcs11, session: Handle, label: string) {
    this.#mod = mod;
    this.#p = p;
    this.#session = session;
    this.label = label;
  }

  static open(options: TokenOptions): Token {
    const mod = pkcs11js();
    const p = new mod.PKCS11();
    try {
      p.load(options.library);
    } catch (cause) {
      throw new KeyUnavailableError(`cannot load the PKCS#11 module ${options.library}`, { cause });
    }
    try {
      p.C_Initialize();
    } catch (e) {
      if (rvName(e) !== "CKR_CRYPTOKI_ALREADY_INITIALIZED") {
        throw new KeyUnavailableError(`the PKCS#11 module did not initialise (${rvName(e)})`, { cause: e });
      }
    }
    let session: Handle | undefined;
    try {
      const slot = p
        .C_GetSlotList(true)
        .find((s) => p.C_GetTokenInfo(s).label.replace(/\0/g, "").trim() === options.tokenLabel);
      if (!slot) {
        throw new KeyUnavailableError(
          `no PKCS#11 token labelled "${options.tokenLabel}" in ${options.library} (is the HSM connected and the token initialised?)`,
        );
      }
      session = p.C_OpenSession(slot, mod.CKF_RW_SESSION | mod.CKF_SERIAL_SESSION);
      try {
        p.C_Login(session, mod.CKU_USER, options.pin);
      } catch (e) {
        const rv = rvName(e);
        if (rv !== "CKR_USER_ALREADY_LOGGED_IN") {
          throw new KeyUnavailableError(
            rv === "CKR_PIN_INCORRECT" || rv === "CKR_PIN_LEN_RANGE"
              ? `the PIN for token "${options.tokenLabel}" is wrong`
              : rv === "CKR_PIN_LOCKED"
                ? `the PIN of token "${options.tokenLabel}" is locked (too many wrong PINs): unlock it with the SO PIN`
                : `login to token "${options.tokenLabel}" failed (${rv})`,
          );
        }
      }
      return new Token(mod, p, session, options.tokenLabel);
    } catch (e) {
      if (session) {
        try {
          p.C_CloseSession(session);
        } catch {}
      }
      try {
        p.C_Finalize();
      } catch {}
      throw e;
    }
  }

  /** The handle of the secret key with this CKA_LABEL, or undefined. Two keys with one label is a setup error. */
  findKey(keyLabel: string): Handle | undefined {
    const m = this.#mod;
    this.#p.C_FindObjectsInit(this.#session, [
      { type: m.CKA_CLASS, value: m.CKO_SECRET_KEY },
      { type: m.CKA_LABEL, value: keyLabel },
    ]);
    try {
      const found = this.#p.C_FindObjects(this.#session, 2);
      if (found.length > 1) {
        throw new AtrestError("CONFLICT", `token "${this.label}" holds two keys labelled "${keyLabel}"`);
      }
      return found[0];
    } finally {
      this.#p.C_FindObjectsFinal(this.#session);
    }
  }

  /**
   * Generates a persistent AES-256 key in the token that can encrypt and decrypt but never leave it: sensitive,
   * not extractable, not usable to wrap other keys out. Refuses a label that exists.
   */
  generateKey(keyLabel: string): Handle {
    if (this.findKey(keyLabel))
      throw new AtrestError("EXISTS", `token "${this.label}" already has a key "${keyLabel}"`);
    const m = this.#mod;
    return this.#p.C_GenerateKey(this.#session, { mechanism: m.CKM_AES_KEY_GEN }, [
      { type: m.CKA_CLASS, value: m.CKO_SECRET_KEY },
      { type: m.CKA_KEY_TYPE, value: m.CKK_AES },
      { type: m.CKA_VALUE_LEN, value: 32 },
      { type: m.CKA_LABEL, value: keyLabel },
      { type: m.CKA_TOKEN, value: true },
      { type: m.CKA_PRIVATE, value: true },
      { type: m.CKA_SENSITIVE, value: true },
      { type: m.CKA_EXTRACTABLE, value: false },
      { type: m.CKA_ENCRYPT, value: true },
      { type: m.CKA_DECRYPT, value: true },
      { type: m.CKA_WRAP, value: false },
      { type: m.CKA_UNWRAP, value: false },
      { type: m.CKA_DERIVE, value: false },
      { type: m.CKA_MODIFIABLE, value: false },
    ]);
  }

  /** What the token reports of a key's protection (checked at start: a key that became extractable is refused). */
  protection(key: Handle): { sensitive: boolean; extractable: boolean } {
    const m = this.#mod;
    const attrs = this.#p.C_GetAttributeValue(this.#session, key, [
      { type: m.CKA_SENSITIVE },
      { type: m.CKA_EXTRACTABLE },
    ]);
    const bool = (v: unknown) => Buffer.isBuffer(v) && v.length > 0 && v[0] !== 0;
    return { sensitive: bool(attrs[0]?.value), extractable: bool(attrs[1]?.value) };
  }

  #gcm(iv: Buffer, aad: Buffer) {
    const m = this.#mod;
    return {
      mechanism: m.CKM_AES_GCM,
      parameter: { type: m.CK_PARAMS_AES_GCM, iv, aad, ivBits: NONCE_BYTES * 8, tagBits: TAG_BYTES * 8 },
    };
  }

  /** nonce(12) ‖ ciphertext ‖ tag(16): the nonce is random (a 96-bit random nonce per seal, as the software path). */
  seal(key: Handle, plaintext: Buffer, aad: Buffer): Buffer {
    this.#assertOpen();
    const out = Buffer.alloc(NONCE_BYTES + plaintext.length + TAG_BYTES);
    const nonce = out.subarray(0, NONCE_BYTES);
    randomFillSync(nonce);
    this.#p.C_EncryptInit(this.#session, this.#gcm(Buffer.from(nonce), aad), key);
    // C_Encrypt refuses an empty input (CKR_ARGUMENTS_BAD); the multi-part form gives the tag over the AAD alone.
    const ct =
      plaintext.length === 0
        ? this.#p.C_EncryptFinal(this.#session, out.subarray(NONCE_BYTES))
        : this.#p.C_Encrypt(this.#session, plaintext, out.subarray(NONCE_BYTES));
    if (ct.length !== plaintext.length + TAG_BYTES)
      throw new AtrestError("INTEGRITY", "token returned a short AES-GCM output");
    return out;
  }

  /** Plaintext in a fresh buffer the caller owns; throws if the token refuses the tag. */
  open(key: Handle, sealed: Buffer, aad: Buffer): Buffer {
    this.#assertOpen();
    if (sealed.length < NONCE_BYTES + TAG_BYTES) throw new AtrestError("INTEGRITY", "sealed material too short");
    const out = Buffer.alloc(sealed.length - NONCE_BYTES - TAG_BYTES + TAG_BYTES);
    this.#p.C_DecryptInit(this.#session, this.#gcm(Buffer.from(sealed.subarray(0, NONCE_BYTES)), aad), key);
    let pt: Buffer;
    try {
      pt = this.#p.C_Decrypt(this.#session, sealed.subarray(NONCE_BYTES), out);
    } catch (e) {
      out.fill(0);
      throw e;
    }
    const result = Buffer.from(pt);
    out.fill(0);
    return result;
  }

  #assertOpen(): void {
    if (!this.#open) throw new KeyUnavailableError("the HSM session is closed (key manager sealed)");
  }

  close(): void {
    if (!this.#open) return;
    this.#open = false;
    try {
      this.#p.C_Logout(this.#session);
    } catch {}
    try {
      this.#p.C_CloseSession(this.#session);
    } catch {}
    try {
      this.#p.C_Finalize();
    } catch {}
  }
}

/** The master key as a handle in a token: what the keyring seals KEK rows with when the KMS is HSM-sealed. */
export class HsmMasterKey implements MasterKey {
  readonly kind = "pkcs11";
  readonly #token: Token;
  readonly #key: Handle;
  readonly keyLabel: string;

  constructor(token: Token, key: Handle, keyLabel: string) {
    this.#token = token;
    this.#key = key;
    this.keyLabel = keyLabel;
  }

  seal(plaintext: Buffer, aad: Buffer): Buffer {
    return this.#token.seal(this.#key, plaintext, aad);
  }

  open(sealed: Buffer, aad: Buffer): Buffer {
    return this.#token.open(this.#key, sealed, aad);
  }

  /** Several master keys (old and new, during a rotation) share one session: the source closes it. */
  destroy(): void {}
}
