import { hkdfSync } from "node:crypto";

/** HKDF-SHA256 (RFC 5869). The result is a fresh Buffer the caller owns and should zero. */
export function hkdfSha256(ikm: Buffer, salt: Buffer, info: Buffer, length = 32): Buffer {
  return Buffer.from(hkdfSync("sha256", ikm, salt, info, length));
}
