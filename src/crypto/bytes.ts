import { timingSafeEqual } from "node:crypto";

/** Equality whose running time does not depend on where the inputs differ. Lengths are not secret. */
export function constantTimeEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Overwrites key material the caller owns. */
export function zero(...buffers: Buffer[]): void {
  for (const buffer of buffers) buffer.fill(0);
}
