// Device keys (docs/sync-protocol.md §2): Ed25519 for signatures, X25519 for receiving region keys, both node:crypto.
// Public keys travel as the 32 raw bytes (base64url); signatures are domain-separated by a context string.
import {
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  sign as edSign,
  verify as edVerify,
  generateKeyPairSync,
  type KeyObject,
} from "node:crypto";
import { IntegrityError } from "../../errors.ts";
import { b64, canonical, sha256Hex, unb64, unsigned } from "./canonical.ts";

export const PROTOCOL_VERSION = 1;
export type SignContext = "device" | "chain" | "envelope" | "manifest";

export interface DeviceSecrets {
  /** PKCS#8 DER of the Ed25519 private key. */
  sign: Buffer;
  /** PKCS#8 DER of the X25519 private key. */
  enc: Buffer;
}

export interface DevicePublic {
  signPub: string;
  encPub: string;
}

function rawPublic(key: KeyObject): Buffer {
  const jwk = key.export({ format: "jwk" });
  return unb64(jwk.x, 32);
}

export function generateDeviceKeys(): { secrets: DeviceSecrets; pub: DevicePublic } {
  const s = generateKeyPairSync("ed25519");
  const e = generateKeyPairSync("x25519");
  return {
    secrets: {
      sign: s.privateKey.export({ format: "der", type: "pkcs8" }) as Buffer,
      enc: e.privateKey.export({ format: "der", type: "pkcs8" }) as Buffer,
    },
    pub: { signPub: b64(rawPublic(s.publicKey)), encPub: b64(rawPublic(e.publicKey)) },
  };
}

export function publicKey(crv: "Ed25519" | "X25519", raw: string): KeyObject {
  const x = unb64(raw, 32);
  try {
    return createPublicKey({ key: { kty: "OKP", crv, x: b64(x) }, format: "jwk" });
  } catch {
    throw new IntegrityError(`bad ${crv} public key`);
  }
}

export function privateKey(der: Buffer): KeyObject {
  return createPrivateKey({ key: der, format: "der", type: "pkcs8" });
}

export function x25519PublicOf(priv: KeyObject): string {
  return b64(rawPublic(createPublicKey(priv)));
}

/** A fresh X25519 key pair for one envelope. */
export function ephemeralX25519(): { priv: KeyObject; pub: string } {
  const e = generateKeyPairSync("x25519");
  return { priv: e.privateKey, pub: b64(rawPublic(e.publicKey)) };
}

export function x25519(priv: KeyObject, peerRaw: string): Buffer {
  return diffieHellman({ privateKey: priv, publicKey: publicKey("X25519", peerRaw) });
}

function message(context: SignContext, body: unknown): Buffer {
  return Buffer.concat([Buffer.from(`atrest-sync v1 ${context}\0`, "ascii"), canonical(body)]);
}

/** `obj` with `sig` = Ed25519 over context ‖ 0 ‖ canonical(obj without sig). */
export function signObject<T extends object>(
  context: SignContext,
  obj: T,
  signKey: Buffer | KeyObject,
): T & { sig: string } {
  const key = Buffer.isBuffer(signKey) ? privateKey(signKey) : signKey;
  const body = unsigned(obj as T & { sig?: string });
  return { ...(body as T), sig: b64(edSign(null, message(context, body), key)) };
}

/** True when `obj.sig` is a valid signature of `signPub` over the object's other fields. */
export function verifyObject(context: SignContext, obj: { sig?: unknown }, signPub: string): boolean {
  if (typeof obj.sig !== "string") return false;
  let sig: Buffer;
  try {
    sig = unb64(obj.sig, 64);
  } catch {
    return false;
  }
  return edVerify(null, message(context, unsigned(obj as { sig?: string })), publicKey("Ed25519", signPub), sig);
}

/** hex(SHA-256("atrest-sync v1 device id" ‖ signPub ‖ encPub))[0..32]. */
export function deviceIdOf(pub: DevicePublic): string {
  return sha256Hex(
    Buffer.from("atrest-sync v1 device id", "ascii"),
    unb64(pub.signPub, 32),
    unb64(pub.encPub, 32),
  ).slice(0, 32);
}

/** hex SHA-256(signPub ‖ encPub): compare out of band. */
export function fingerprintOf(pub: DevicePublic): string {
  return sha256Hex(unb64(pub.signPub, 32), unb64(pub.encPub, 32));
}

/** `3f2a 9c01 …`: 16 groups of 4 hex digits. */
export function formatFingerprint(hex: string): string {
  return (hex.match(/.{1,4}/g) ?? []).join(" ");
}

/** Accepts a fingerprint typed with spaces, colons or upper case. */
export function normalizeFingerprint(text: string): string {
  const hex = text.replace(/[\s:]/g, "").toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new IntegrityError("a fingerprint is 64 hex digits");
  return hex;
}
