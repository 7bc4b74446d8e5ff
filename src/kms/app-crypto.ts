// The cryptography of the encryption API for applications (encrypt/decrypt, HMAC, signatures), pure over KeyObjects the
// keyring hands out. Every result is a self-describing token naming the key and the version that made it:
//
//   atrest:<key name>:v<version>:<base64>
//
//   ciphertext  base64 = nonce(12) ‖ AES-256-GCM ciphertext ‖ tag(16)
//               AAD    = "atrest-encrypt-v1\0" ‖ u8 len(name) ‖ name ‖ u32 version ‖ canonicalContext(context)
//   hmac        base64 = HMAC-SHA256(key, input) (32 bytes)
//   signature   base64 = Ed25519 signature (64 bytes), or ECDSA P-256 / SHA-256 signature, DER (≤ 72 bytes)
//
// The AAD's label keeps application ciphertexts and wrapped data keys (AKW1, api/wrapped.ts) apart under the same AES
// key: neither authenticates as the other, so `decrypt` can never be used to unwrap a file server's data key. The
// nonce is 96 random bits per encryption; see docs/kms-clients.md for the per-version message limit this implies.

import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  type KeyObject,
  sign as signWith,
  timingSafeEqual,
  verify as verifyWith,
} from "node:crypto";
import { AtrestError, IntegrityError } from "../errors.ts";
import { formatKeyRef, isValidKeyName } from "./api/key-ref.ts";
import type { EncryptionContext } from "./api/types.ts";
import { encodeAad } from "./api/wrapped.ts";
import type { KeyType } from "./key-types.ts";
import { fillRandom } from "./random.ts";

const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const ENCRYPT_LABEL = Buffer.from("atrest-encrypt-v1\0", "latin1");
const TOKEN = /^atrest:([a-z0-9][a-z0-9._-]{0,62}):v([1-9]\d{0,9}):([A-Za-z0-9+/]+={0,2})$/;
const MAX_VERSION = 0xffffffff;

export interface Token {
  name: string;
  version: number;
  bytes: Buffer;
}

export function formatToken(name: string, version: number, bytes: Buffer): string {
  return `atrest:${name}:v${version}:${bytes.toString("base64")}`;
}

/**
 * Parses `atrest:<name>:v<N>:<base64>`; `expectName` (the key the request named) must be the one the token names.
 * `what` says which token (ciphertext, hmac, signature) in the INVALID_INPUT message.
 */
export function parseToken(token: string, what: string, expectName?: string): Token {
  const m = typeof token === "string" ? TOKEN.exec(token) : null;
  const version = m ? Number(m[2]) : 0;
  if (!m || !isValidKeyName(m[1]) || version > MAX_VERSION || m[3].length % 4 !== 0) {
    throw new AtrestError("INVALID_INPUT", `${what} is not an atrest:<key>:v<version>:<base64> token`);
  }
  const name = m[1] as string;
  if (expectName !== undefined && name !== expectName) {
    throw new AtrestError("INVALID_INPUT", `${what} was made with kek:${name}, not kek:${expectName}`);
  }
  return { name, version, bytes: Buffer.from(m[3] as string, "base64") };
}

function encryptAad(name: string, version: number, context: EncryptionContext): Buffer {
  const prefix = Buffer.alloc(ENCRYPT_LABEL.length + 1 + name.length + 4);
  let off = ENCRYPT_LABEL.copy(prefix, 0);
  off = prefix.writeUInt8(name.length, off);
  off += prefix.write(name, off, "ascii");
  prefix.writeUInt32BE(version, off);
  return encodeAad(prefix, context);
}

/** AES-256-GCM under `key` (version `version` of `name`), a fresh random nonce every call. */
export function encryptWith(
  key: KeyObject,
  name: string,
  version: number,
  plaintext: Buffer,
  context: EncryptionContext,
): string {
  const aad = encryptAad(name, version, context);
  const out = Buffer.alloc(NONCE_BYTES + plaintext.length + TAG_BYTES);
  const nonce = fillRandom(out.subarray(0, NONCE_BYTES));
  const cipher = createCipheriv("aes-256-gcm", key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  const ct = cipher.update(plaintext);
  const fin = cipher.final();
  ct.copy(out, NONCE_BYTES);
  fin.copy(out, NONCE_BYTES + ct.length);
  cipher.getAuthTag().copy(out, NONCE_BYTES + plaintext.length);
  return formatToken(name, version, out);
}

/** Opens a parsed ciphertext; wrong context, wrong key or any change → IntegrityError. The caller zeroes the result. */
export function decryptWith(key: KeyObject, token: Token, context: EncryptionContext): Buffer {
  const ref = formatKeyRef(token.name, token.version);
  const b = token.bytes;
  if (b.length < NONCE_BYTES + TAG_BYTES) throw new IntegrityError(`ciphertext too short: ${ref}`);
  const decipher = createDecipheriv("aes-256-gcm", key, b.subarray(0, NONCE_BYTES), { authTagLength: TAG_BYTES });
  decipher.setAAD(encryptAad(token.name, token.version, context));
  decipher.setAuthTag(b.subarray(b.length - TAG_BYTES));
  const size = b.length - NONCE_BYTES - TAG_BYTES;
  const out = Buffer.alloc(size);
  let tmp: Buffer | undefined;
  try {
    tmp = decipher.update(b.subarray(NONCE_BYTES, NONCE_BYTES + size));
    decipher.final();
    tmp.copy(out); // only after the tag verified: no unauthenticated byte escapes
    return out;
  } catch (cause) {
    out.fill(0);
    throw new IntegrityError(`ciphertext failed authentication (wrong encryption context or tampered): ${ref}`, {
      cause,
    });
  } finally {
    tmp?.fill(0);
  }
}

export function hmacWith(key: KeyObject, name: string, version: number, input: Buffer): string {
  return formatToken(name, version, createHmac("sha256", key).update(input).digest());
}

/** Constant-time comparison of the MAC a token carries with the MAC of `input`. */
export function verifyHmacWith(key: KeyObject, token: Token, input: Buffer): boolean {
  const expected = createHmac("sha256", key).update(input).digest();
  return token.bytes.length === expected.length && timingSafeEqual(token.bytes, expected);
}

export function signWithKey(key: KeyObject, type: KeyType, name: string, version: number, input: Buffer): string {
  const sig = type === "ed25519" ? signWith(null, input, key) : signWith("sha256", input, { key, dsaEncoding: "der" });
  return formatToken(name, version, sig);
}

export function verifyWithKey(key: KeyObject, type: KeyType, token: Token, input: Buffer): boolean {
  try {
    return type === "ed25519"
      ? verifyWith(null, input, key, token.bytes)
      : verifyWith("sha256", input, { key, dsaEncoding: "der" }, token.bytes);
  } catch {
    return false; // a malformed DER signature is simply not a valid signature
  }
}
