import { createHmac, type KeyObject } from "node:crypto";

/**
 * HMAC-SHA256 over the concatenation of `parts` (fed in order, not copied together). Pass a KeyObject
 * (`createSecretKey`) for a key used many times: Node 24 re-imports a Buffer key on every call (~40 µs).
 */
export function hmacSha256(key: Buffer | KeyObject, ...parts: Buffer[]): Buffer {
  const mac = createHmac("sha256", key);
  for (const part of parts) mac.update(part);
  return mac.digest();
}
