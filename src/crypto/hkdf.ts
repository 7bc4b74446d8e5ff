import { hkdfSync, type KeyObject } from "node:crypto";

/**
 * HKDF-SHA256 (RFC 5869). The result is a fresh Buffer the caller owns and should zero. Pass a KeyObject
 * (`createSecretKey`) as `ikm` when deriving more than once from one key: Node 24 imports a Buffer key on every call.
 */
export function hkdfSha256(ikm: Buffer | KeyObject, salt: Buffer, info: Buffer, length = 32): Buffer {
  return Buffer.from(hkdfSync("sha256", ikm, salt, info, length));
}
