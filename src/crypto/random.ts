import { randomBytes as nodeRandomBytes, randomFillSync } from "node:crypto";

/** A source of random bytes. Production uses the CSPRNG; tests inject a deterministic one for vectors. */
export type RandomSource = (length: number) => Buffer;

/** `length` fresh bytes from the OS CSPRNG (via OpenSSL). Use for keys. */
export const randomBytes: RandomSource = (length) => nodeRandomBytes(length);

const POOL_SIZE = 8192;
let pool = Buffer.alloc(0);
let poolAt = 0;

/**
 * CSPRNG bytes for values that are not secret (nonces, salts), served from a pool: a call to the CSPRNG costs
 * several microseconds, which matters once per 64 KiB segment. Each refill is a new buffer, so bytes handed out
 * never change afterwards.
 */
export const publicRandomBytes: RandomSource = (length) => {
  if (length > POOL_SIZE / 8) return nodeRandomBytes(length);
  if (poolAt + length > pool.length) {
    pool = randomFillSync(Buffer.allocUnsafeSlow(POOL_SIZE));
    poolAt = 0;
  }
  poolAt += length;
  return pool.subarray(poolAt - length, poolAt);
};
