// Bucket padding for small sealed records (metadata names, attributes, rows): the ciphertext's length reveals only
// the bucket, never the exact length. ISO/IEC 7816-4 style: data ‖ 0x80 ‖ 0x00…, so any length (0 included) pads.
import { IntegrityError } from "../errors.ts";

/** Smallest bucket; buckets double up to LARGE_BUCKET, then grow in steps of LARGE_BUCKET. */
export const MIN_BUCKET = 32;
export const LARGE_BUCKET = 4096;

/** The padded length for `length` data bytes (at least one byte of padding). */
export function bucketLength(length: number, min = MIN_BUCKET): number {
  const needed = length + 1;
  if (needed > LARGE_BUCKET) return Math.ceil(needed / LARGE_BUCKET) * LARGE_BUCKET;
  let bucket = min;
  while (bucket < needed) bucket *= 2;
  return bucket;
}

/** data ‖ 0x80 ‖ zeros, to `bucketLength(data.length, min)` bytes. A fresh buffer. */
export function padToBucket(data: Buffer, min = MIN_BUCKET): Buffer {
  const out = Buffer.alloc(bucketLength(data.length, min));
  data.copy(out, 0);
  out[data.length] = 0x80;
  return out;
}

/** Inverse of padToBucket (a view into `padded`); IntegrityError when the padding is not canonical. */
export function unpad(padded: Buffer): Buffer {
  let i = padded.length - 1;
  while (i >= 0 && padded[i] === 0) i--;
  if (i < 0 || padded[i] !== 0x80) throw new IntegrityError("invalid record padding");
  return padded.subarray(0, i);
}
