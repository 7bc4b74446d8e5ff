// The encryption API for applications through KmsService: encrypt/decrypt with an encryption context, re-encryption
// under the current version, HMAC and signatures, one or a batch. Each call is authorized per client, key and
// operation and audited (who, key version, operation, context; never a plaintext, MAC or signature).

import type { KmsCaller } from "./api/caller.ts";
import { formatKeyRef } from "./api/key-ref.ts";
import type { EncryptionContext } from "./api/types.ts";
import {
  decryptWith,
  encryptWith,
  hmacWith,
  parseToken,
  signWithKey,
  verifyHmacWith,
  verifyWithKey,
} from "./app-crypto.ts";
import { type ItemError, settleItem } from "./data-keys.ts";
import { DEFAULT_KEY_TYPE, type KeyType, publicKeyPem, SIGNING_TYPES } from "./key-types.ts";
import type { KmsOperation } from "./policy.ts";
import type { ServiceOps } from "./service-op.ts";

const AES: readonly KeyType[] = [DEFAULT_KEY_TYPE];
const HMAC: readonly KeyType[] = ["hmac-sha256"];

export interface CiphertextResult {
  ciphertext: string;
  keyRef: string;
}
export interface PlaintextResult {
  /** A fresh buffer the caller owns and must zero. */
  plaintext: Buffer;
  keyRef: string;
}
export interface MacResult {
  hmac: string;
  keyRef: string;
}
export interface SignatureResult {
  signature: string;
  keyRef: string;
}
export interface VerifyResult {
  valid: boolean;
  keyRef: string;
}
export interface PublicKeyResult {
  keyRef: string;
  type: KeyType;
  publicKeyPem: string;
}

export class AppCrypto {
  readonly #ops: ServiceOps;
  readonly #onInternalError: (err: unknown, op: KmsOperation) => void;

  constructor(ops: ServiceOps, onInternalError: (err: unknown, op: KmsOperation) => void) {
    this.#ops = ops;
    this.#onInternalError = onInternalError;
  }

  encrypt(
    caller: KmsCaller,
    name: string,
    plaintext: Buffer,
    context: EncryptionContext,
    version?: number,
  ): CiphertextResult {
    return this.#ops.run(caller, "encrypt", "key.encrypt", name, context, (ev) => {
      const k = this.#ops.keyring.useKey(name, AES, "encrypt", version);
      ev.keyRef = formatKeyRef(name, k.version);
      return { ciphertext: encryptWith(k.key, name, k.version, plaintext, context), keyRef: ev.keyRef };
    });
  }

  decrypt(caller: KmsCaller, name: string, ciphertext: string, context: EncryptionContext): PlaintextResult {
    return this.#ops.run(caller, "decrypt", "key.decrypt", name, context, (ev) => {
      const t = parseToken(ciphertext, "ciphertext", name);
      ev.keyRef = formatKeyRef(name, t.version);
      const k = this.#ops.keyring.checkKey(name, t.version, AES, "decrypt");
      this.#flagCompromised(ev, name, t.version);
      return { plaintext: decryptWith(k.key, t, context), keyRef: ev.keyRef };
    });
  }

  /**
   * Decrypts and encrypts again under the current version, inside the KMS: the plaintext never leaves. Like the
   * wrapped-key rewrap it ignores the minimum decryption version, so raising the minimum and rewrapping retires a
   * version.
   */
  rewrap(caller: KmsCaller, name: string, ciphertext: string, context: EncryptionContext): CiphertextResult {
    return this.#ops.run(caller, "rewrap", "key.encrypt", name, context, (ev) => {
      const t = parseToken(ciphertext, "ciphertext", name);
      ev.detailExtra = { from: formatKeyRef(name, t.version) };
      const old = this.#ops.keyring.checkKey(name, t.version, AES, "rewrap", false);
      this.#flagCompromised(ev, name, t.version);
      const plaintext = decryptWith(old.key, t, context);
      try {
        const k = this.#ops.keyring.useKey(name, AES, "rewrap");
        ev.keyRef = formatKeyRef(name, k.version);
        return { ciphertext: encryptWith(k.key, name, k.version, plaintext, context), keyRef: ev.keyRef };
      } finally {
        plaintext.fill(0);
      }
    });
  }

  hmac(caller: KmsCaller, name: string, input: Buffer, version?: number): MacResult {
    return this.#ops.run(caller, "hmac", "key.hmac", name, undefined, (ev) => {
      const k = this.#ops.keyring.useKey(name, HMAC, "hmac", version);
      ev.keyRef = formatKeyRef(name, k.version);
      return { hmac: hmacWith(k.key, name, k.version, input), keyRef: ev.keyRef };
    });
  }

  verifyHmac(caller: KmsCaller, name: string, input: Buffer, hmac: string): VerifyResult {
    return this.#ops.run(caller, "verify-hmac", "key.verify", name, undefined, (ev) => {
      const t = parseToken(hmac, "hmac", name);
      ev.keyRef = formatKeyRef(name, t.version);
      const k = this.#ops.keyring.checkKey(name, t.version, HMAC, "verify-hmac");
      const valid = verifyHmacWith(k.key, t, input);
      ev.detailExtra = { valid };
      return { valid, keyRef: ev.keyRef };
    });
  }

  sign(caller: KmsCaller, name: string, input: Buffer, version?: number): SignatureResult {
    return this.#ops.run(caller, "sign", "key.sign", name, undefined, (ev) => {
      const k = this.#ops.keyring.useKey(name, SIGNING_TYPES, "sign", version);
      ev.keyRef = formatKeyRef(name, k.version);
      return { signature: signWithKey(k.key, k.type, name, k.version, input), keyRef: ev.keyRef };
    });
  }

  verify(caller: KmsCaller, name: string, input: Buffer, signature: string): VerifyResult {
    return this.#ops.run(caller, "verify", "key.verify", name, undefined, (ev) => {
      const t = parseToken(signature, "signature", name);
      ev.keyRef = formatKeyRef(name, t.version);
      const k = this.#ops.keyring.checkKey(name, t.version, SIGNING_TYPES, "verify");
      const valid = verifyWithKey(k.key, k.type, t, input);
      ev.detailExtra = { valid };
      return { valid, keyRef: ev.keyRef };
    });
  }

  /** The public half of a signing key's version (default: the current one), for verifying without the KMS. */
  publicKey(caller: KmsCaller, name: string, version?: number): PublicKeyResult {
    return this.#ops.run(caller, "read", "key.read", name, undefined, (ev) => {
      const info = this.#ops.keyring.getKey(name);
      const v = version ?? info.currentVersion;
      ev.keyRef = formatKeyRef(name, v);
      ev.detailExtra = { what: "public-key" };
      const k = this.#ops.keyring.checkKey(name, v, SIGNING_TYPES, "public-key", false);
      return { keyRef: ev.keyRef, type: k.type, publicKeyPem: publicKeyPem(k.key) };
    });
  }

  // ---- batch forms: one result or error per item, in order ----

  encryptBatch(
    caller: KmsCaller,
    name: string,
    items: readonly { plaintext: Buffer; context: EncryptionContext }[],
  ): (CiphertextResult | ItemError)[] {
    return items.map((it) => this.#settle("encrypt", () => this.encrypt(caller, name, it.plaintext, it.context)));
  }

  decryptBatch(
    caller: KmsCaller,
    name: string,
    items: readonly { ciphertext: string; context: EncryptionContext }[],
  ): (PlaintextResult | ItemError)[] {
    return items.map((it) => this.#settle("decrypt", () => this.decrypt(caller, name, it.ciphertext, it.context)));
  }

  rewrapBatch(
    caller: KmsCaller,
    name: string,
    items: readonly { ciphertext: string; context: EncryptionContext }[],
  ): (CiphertextResult | ItemError)[] {
    return items.map((it) => this.#settle("rewrap", () => this.rewrap(caller, name, it.ciphertext, it.context)));
  }

  hmacBatch(caller: KmsCaller, name: string, items: readonly { input: Buffer }[]): (MacResult | ItemError)[] {
    return items.map((it) => this.#settle("hmac", () => this.hmac(caller, name, it.input)));
  }

  verifyHmacBatch(
    caller: KmsCaller,
    name: string,
    items: readonly { input: Buffer; hmac: string }[],
  ): (VerifyResult | ItemError)[] {
    return items.map((it) => this.#settle("verify-hmac", () => this.verifyHmac(caller, name, it.input, it.hmac)));
  }

  signBatch(caller: KmsCaller, name: string, items: readonly { input: Buffer }[]): (SignatureResult | ItemError)[] {
    return items.map((it) => this.#settle("sign", () => this.sign(caller, name, it.input)));
  }

  verifyBatch(
    caller: KmsCaller,
    name: string,
    items: readonly { input: Buffer; signature: string }[],
  ): (VerifyResult | ItemError)[] {
    return items.map((it) => this.#settle("verify", () => this.verify(caller, name, it.input, it.signature)));
  }

  #settle<T>(op: KmsOperation, fn: () => T): T | ItemError {
    return settleItem(op, fn, this.#onInternalError);
  }

  #flagCompromised(ev: { detailExtra?: Record<string, unknown> }, name: string, version: number): void {
    if (this.#ops.keyring.stateOf(name, version) === "compromised") {
      ev.detailExtra = { ...ev.detailExtra, compromised: formatKeyRef(name, version) };
    }
  }
}
