import { randomBytes as nodeRandomBytes } from "node:crypto";

/** A source of random bytes. Production uses the CSPRNG; tests inject a deterministic one for vectors. */
export type RandomSource = (length: number) => Buffer;

/** `length` bytes from the OS CSPRNG (via OpenSSL). */
export const randomBytes: RandomSource = (length) => nodeRandomBytes(length);
