import { createHmac } from "node:crypto";

/** HMAC-SHA256 over the concatenation of `parts` (fed in order, not copied together). */
export function hmacSha256(key: Buffer, ...parts: Buffer[]): Buffer {
  const mac = createHmac("sha256", key);
  for (const part of parts) mac.update(part);
  return mac.digest();
}
