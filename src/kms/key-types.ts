// Key types of the keyring. Every type's material is 32 bytes, so every version is sealed the same way (seal.ts):
//   aes-256-gcm  a KEK: wraps data keys (the file server) and encrypts application data (encrypt API)
//   hmac-sha256  a MAC key (hmac / verify-hmac)
//   ed25519      a signing key: the 32-byte private seed (RFC 8032)
//   ecdsa-p256   a signing key: the 32-byte private scalar d (SEC 1), ECDSA with SHA-256, DER signatures
// A key's type is fixed at creation and applies to every version; an operation on a key of another type is refused.

import { createPrivateKey, createPublicKey, createSecretKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { AtrestError } from "../errors.ts";
import { fillRandom } from "./random.ts";

export const KEY_TYPES = ["aes-256-gcm", "hmac-sha256", "ed25519", "ecdsa-p256"] as const;
export type KeyType = (typeof KEY_TYPES)[number];
export const DEFAULT_KEY_TYPE: KeyType = "aes-256-gcm";
export const SIGNING_TYPES: readonly KeyType[] = ["ed25519", "ecdsa-p256"];

export const MATERIAL_BYTES = 32;

// PKCS#8 prefixes for a raw 32-byte private key: Ed25519 (RFC 8410) and P-256 (an ECPrivateKey without its public
// key; OpenSSL derives the point).
const ED25519_PKCS8 = Buffer.from("302e020100300506032b657004220420", "hex");
const P256_PKCS8 = Buffer.from("3041020100301306072a8648ce3d020106082a8648ce3d030107042730250201010420", "hex");

export function isKeyType(v: unknown): v is KeyType {
  return typeof v === "string" && (KEY_TYPES as readonly string[]).includes(v);
}

/** Fresh material for a new version of a key of `type`, in a buffer the caller zeroes. */
export function generateMaterial(type: KeyType): Buffer {
  if (type === "aes-256-gcm" || type === "hmac-sha256") return fillRandom(Buffer.alloc(MATERIAL_BYTES));
  // A signing key's private part must be in range for its curve: let OpenSSL make one and take its raw bytes.
  const pair = type === "ed25519" ? generateKeyPairSync("ed25519") : generateKeyPairSync("ec", { namedCurve: "P-256" });
  const d = pair.privateKey.export({ format: "jwk" }).d;
  if (typeof d !== "string") throw new AtrestError("INVALID_INPUT", `cannot generate a ${type} key`);
  const raw = Buffer.from(d, "base64url");
  if (raw.length !== MATERIAL_BYTES) {
    raw.fill(0);
    throw new AtrestError("INVALID_INPUT", `cannot generate a ${type} key`);
  }
  return raw;
}

/** The KeyObject for `raw` material of `type` (the caller zeroes `raw`; the DER copy made here is zeroed too). */
export function materialKey(type: KeyType, raw: Buffer): KeyObject {
  if (raw.length !== MATERIAL_BYTES)
    throw new AtrestError("INVALID_INPUT", `key material must be ${MATERIAL_BYTES} bytes`);
  if (type === "aes-256-gcm" || type === "hmac-sha256") return createSecretKey(raw);
  const der = Buffer.concat([type === "ed25519" ? ED25519_PKCS8 : P256_PKCS8, raw]);
  try {
    return createPrivateKey({ key: der, format: "der", type: "pkcs8" });
  } finally {
    der.fill(0);
  }
}

/** SPKI PEM of a signing key's public half. */
export function publicKeyPem(key: KeyObject): string {
  return createPublicKey(key).export({ format: "pem", type: "spki" }).toString();
}
