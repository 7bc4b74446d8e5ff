// Where bytes sit in a container and how long the final segment is. Pure arithmetic, no keys.
import { SEAL_OVERHEAD } from "../crypto/aead.ts";
import { AtrestError, IntegrityError } from "../errors.ts";

export const MIN_SEGMENT_LOG2 = 10;
export const MAX_SEGMENT_LOG2 = 24;
export const DEFAULT_SEGMENT_LOG2 = 16;
/** Smallest padded plaintext of a one-segment file, so tiny files all look alike on disk. */
export const MIN_PADDED_LENGTH = 256;
/** First byte of the ISO/IEC 7816-4 padding; the rest of the padding is zeros. */
export const PAD_MARKER = 0x80;

/** Sizes fixed by a container's header. */
export interface Layout {
  /** Bytes of the header slot; segment 0 starts here. */
  readonly headerLength: number;
  /** Plaintext bytes per full segment (2^segmentLog2). */
  readonly segmentSize: number;
  /** On-disk bytes of a full segment: nonce ‖ ciphertext ‖ tag. */
  readonly sealedSegmentSize: number;
}

export function makeLayout(headerLength: number, segmentLog2: number): Layout {
  const segmentSize = 2 ** segmentLog2;
  return { headerLength, segmentSize, sealedSegmentSize: segmentSize + SEAL_OVERHEAD };
}

/** Ciphertext byte offset where segment `index` starts. */
export function segmentOffset(layout: Layout, index: number): number {
  return layout.headerLength + index * layout.sealedSegmentSize;
}

/** Index of the segment holding plaintext byte `offset`. */
export function segmentIndexAt(layout: Layout, offset: number): number {
  if (!Number.isSafeInteger(offset) || offset < 0) throw new AtrestError("INVALID_INPUT", "bad plaintext offset");
  return Math.floor(offset / layout.segmentSize);
}

/**
 * Number of segments in a container of `ciphertextLength` bytes (header included). Every valid container has at
 * least one segment and a final segment of SEAL_OVERHEAD + 1 .. sealedSegmentSize bytes; anything else was truncated
 * or extended.
 */
export function segmentCount(layout: Layout, ciphertextLength: number): number {
  const body = ciphertextLength - layout.headerLength;
  if (!Number.isSafeInteger(body) || body <= SEAL_OVERHEAD) throw new IntegrityError("container too short");
  const count = Math.ceil(body / layout.sealedSegmentSize);
  const last = body - (count - 1) * layout.sealedSegmentSize;
  if (last <= SEAL_OVERHEAD) throw new IntegrityError("container length is not a valid segment layout");
  return count;
}

/** Byte range [start, end) of segment `index` and whether it is the final one. */
export function segmentRange(
  layout: Layout,
  ciphertextLength: number,
  index: number,
): { start: number; end: number; last: boolean } {
  const count = segmentCount(layout, ciphertextLength);
  if (!Number.isSafeInteger(index) || index < 0 || index >= count) {
    throw new AtrestError("INVALID_INPUT", `segment ${index} out of range (container has ${count})`);
  }
  const start = segmentOffset(layout, index);
  const last = index === count - 1;
  return { start, end: last ? ciphertextLength : start + layout.sealedSegmentSize, last };
}

/** Plaintext length, from the container length and the opened (unpadded) final segment's data. */
export function plaintextLength(layout: Layout, ciphertextLength: number, lastSegmentData: Buffer): number {
  return (segmentCount(layout, ciphertextLength) - 1) * layout.segmentSize + lastSegmentData.length;
}

/** Exact container length for `length` plaintext bytes (padding is deterministic). */
export function containerLength(layout: Layout, length: number): number {
  const finalIndex = Math.floor(length / layout.segmentSize);
  const finalData = length - finalIndex * layout.segmentSize;
  return (
    segmentOffset(layout, finalIndex) + paddedFinalLength(layout.segmentSize, finalIndex, finalData) + SEAL_OVERHEAD
  );
}

function bitLength(n: number): number {
  return n.toString(2).length;
}

/**
 * Padmé (Nikitin et al., PETS 2019): round `length` up so that only O(log log length) bits of it remain,
 * at most ~12% overhead.
 */
export function padme(length: number): number {
  if (length < 2) return length;
  const e = bitLength(length) - 1;
  const s = bitLength(e);
  const step = 2 ** (e - s);
  return Math.ceil(length / step) * step;
}

/**
 * Padded plaintext length of the final segment (index `finalIndex`) holding `dataLength` (< segmentSize) data bytes:
 * the whole file's data plus the mandatory 0x80 byte is rounded up by Padmé (at least MIN_PADDED_LENGTH), but the
 * padding never leaves the final segment, so the result is capped at segmentSize.
 */
export function paddedFinalLength(segmentSize: number, finalIndex: number, dataLength: number): number {
  const before = finalIndex * segmentSize;
  const bucket = Math.max(MIN_PADDED_LENGTH, padme(before + dataLength + 1));
  return Math.min(bucket, before + segmentSize) - before;
}
