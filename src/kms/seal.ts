// Sealing of KEK material under the master key, and the master key's check value. Pure: no I/O.
//
// Sealed KEK row = nonce(12) ‖ AES-256-GCM(master, KEK)(32) ‖ tag(16),
//   AAD = "atrest-kek\0" ‖ u8 len(name) ‖ name ‖ u32 version.
// The AAD binds a row to its key name and version, so rows cannot be swapped (e.g. copying an attacker-known
// version's material over another key's row) without failing authentication.

import { createCipheriv, createDecipheriv, randomFillSync } from "node:crypto";
import { AtrestError, IntegrityError, KeyUnavailableError } from "../errors.ts";
import { formatKeyRef } from "./api/key-ref.ts";
import { KEK_BYTES } from "./wrap.ts";

export const MASTER_KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const KEK_LABEL = Buffer.from("atrest-kek\0", "latin1");
const CHECK_LABEL = Buffer.from("atrest-master-check\0", "latin1");

function kekAad(name: string, version: number): Buffer {
  const aad = Buffer.alloc(KEK_LABEL.length + 1 + name.length + 4);
  let off = KEK_LABEL.copy(aad, 0);
  off = aad.writeUInt8(name.length, off);
  off += aad.write(name, off, "ascii");
  aad.writeUInt32BE(version, off);
  return aad;
}

/**
 * A master key that is not a buffer in this process: an HSM-held key (src/kms/hsm-token.ts). It seals with the same layout
 * as the software path, nonce(12) ‖ AES-256-GCM ciphertext ‖ tag(16) with the same AAD, so rows do not say where
 * the master key lives.
 */
export interface MasterKey {
  /** Where the key lives, for status and logs ("pkcs11"). */
  readonly kind: string;
  seal(plaintext: Buffer, aad: Buffer): Buffer;
  /** The plaintext in a fresh buffer the caller owns; throws (any error) if the sealed bytes do not authenticate. */
  open(sealed: Buffer, aad: Buffer): Buffer;
  /** Closes what the key holds open (a token session); the key itself stays in its device. */
  destroy(): void;
}

/** The software master key (Shamir, dev file) is a 32-byte buffer; an HSM's is a MasterKey. */
export type MasterKeyLike = Buffer | MasterKey;

/** Zeroes a software master key, closes an HSM one. */
export function disposeMaster(master: MasterKeyLike): void {
  if (Buffer.isBuffer(master)) master.fill(0);
  else master.destroy();
}

/** Throws unless a software master key has the right length (an HSM key's length is the token's business). */
export function assertMasterKey(master: MasterKeyLike): void {
  if (Buffer.isBuffer(master) && master.length !== MASTER_KEY_BYTES) {
    throw new AtrestError("INVALID_INPUT", "master key must be 32 bytes");
  }
}

function seal(master: MasterKeyLike, plaintext: Buffer, aad: Buffer): Buffer {
  if (!Buffer.isBuffer(master)) return master.seal(plaintext, aad);
  const out = Buffer.alloc(NONCE_BYTES + plaintext.length + TAG_BYTES);
  const nonce = out.subarray(0, NONCE_BYTES);
  randomFillSync(nonce);
  const cipher = createCipheriv("aes-256-gcm", master, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  const ct = cipher.update(plaintext);
  cipher.final();
  ct.copy(out, NONCE_BYTES);
  cipher.getAuthTag().copy(out, NONCE_BYTES + plaintext.length);
  return out;
}

/** Returns the plaintext in a fresh buffer the caller owns, or throws IntegrityError. */
function open(master: MasterKeyLike, sealed: Uint8Array, size: number, aad: Buffer, what: string): Buffer {
  const buf = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
  if (buf.length !== NONCE_BYTES + size + TAG_BYTES) throw new IntegrityError(`${what}: bad sealed length`);
  if (!Buffer.isBuffer(master)) {
    let out: Buffer;
    try {
      out = master.open(buf, aad);
    } catch (cause) {
      throw new IntegrityError(`${what}: sealed material failed authentication`, { cause });
    }
    if (out.length !== size) {
      out.fill(0);
      throw new IntegrityError(`${what}: bad sealed length`);
    }
    return out;
  }
  const decipher = createDecipheriv("aes-256-gcm", master, buf.subarray(0, NONCE_BYTES), { authTagLength: TAG_BYTES });
  decipher.setAAD(aad);
  decipher.setAuthTag(buf.subarray(NONCE_BYTES + size));
  const out = Buffer.alloc(size);
  let tmp: Buffer | undefined;
  try {
    tmp = decipher.update(buf.subarray(NONCE_BYTES, NONCE_BYTES + size));
    decipher.final();
    tmp.copy(out);
    return out;
  } catch (cause) {
    out.fill(0);
    throw new IntegrityError(`${what}: sealed material failed authentication`, { cause });
  } finally {
    tmp?.fill(0);
  }
}

export function sealKek(master: MasterKeyLike, name: string, version: number, kek: Buffer): Buffer {
  return seal(master, kek, kekAad(name, version));
}

export function unsealKek(master: MasterKeyLike, name: string, version: number, sealed: Uint8Array): Buffer {
  return open(master, sealed, KEK_BYTES, kekAad(name, version), formatKeyRef(name, version));
}

const SECRET_LABEL = Buffer.from("atrest-secret\0", "latin1");

/** Seals any KMS-internal secret (audit keys, BYOK wrapping keys) under the master key, bound to `label`. */
export function sealSecret(master: MasterKeyLike, label: string, plaintext: Buffer): Buffer {
  return seal(master, plaintext, Buffer.concat([SECRET_LABEL, Buffer.from(label, "utf8")]));
}

/** Inverse of sealSecret; the plaintext is a fresh buffer the caller owns and must zero. */
export function openSecret(master: MasterKeyLike, label: string, sealed: Uint8Array): Buffer {
  const size = sealed.byteLength - NONCE_BYTES - TAG_BYTES;
  if (size < 0) throw new IntegrityError(`${label}: bad sealed length`);
  return open(master, sealed, size, Buffer.concat([SECRET_LABEL, Buffer.from(label, "utf8")]), label);
}

/** A tag-only seal of nothing: lets open() tell "wrong master key" apart from a corrupted KEK row. */
export function makeMasterCheck(master: MasterKeyLike): Buffer {
  return seal(master, Buffer.alloc(0), CHECK_LABEL);
}

export function verifyMasterCheck(master: MasterKeyLike, check: Uint8Array): void {
  try {
    open(master, check, 0, CHECK_LABEL, "master key check");
  } catch {
    throw new KeyUnavailableError("master key does not match the KMS database (wrong or replaced master.key?)");
  }
}
