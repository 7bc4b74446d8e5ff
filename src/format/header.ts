// Header codec: structure only. Authenticity comes from the key commitment, checked in container.ts.
import { AtrestError, IntegrityError } from "../errors.ts";
import { type Layout, MAX_SEGMENT_LOG2, MIN_SEGMENT_LOG2, makeLayout } from "./layout.ts";

export const MAGIC = Buffer.from("ATRS", "ascii");
export const FORMAT_VERSION = 1;
/** AES-256-GCM segments, HKDF-SHA256 key derivation, HMAC-SHA256 commitment. */
export const ALGORITHM_AES256GCM_HKDF_SHA256 = 1;
export const SALT_LENGTH = 32;
export const COMMITMENT_LENGTH = 32;
/** Bytes covered by the commitment: magic … salt. */
export const COMMITTED_LENGTH = 44;
/** Bytes before the wrapped DEK. */
export const FIXED_LENGTH = 78;
/** Header slots are multiples of this. */
export const HEADER_ALIGN = 256;
/** Spare bytes a new header keeps after its wrapped DEK, so a rewrap under a longer key name fits in place. */
export const HEADER_ROOM = 128;
/** Largest header slot this version writes or accepts; reading this many bytes always covers a whole header. */
export const HEADER_PROBE_BYTES = 4096;

export interface ParsedHeader {
  readonly version: number;
  readonly algorithm: number;
  readonly segmentLog2: number;
  /** Bytes the header slot occupies (segment 0 starts here). */
  readonly headerLength: number;
  readonly salt: Buffer;
  readonly commitment: Buffer;
  /** Opaque bytes from the key manager; they name their KEK and version. */
  readonly wrappedDek: Buffer;
  readonly layout: Layout;
}

function slotLengthFor(wrappedLength: number): number {
  return Math.ceil((FIXED_LENGTH + wrappedLength + HEADER_ROOM) / HEADER_ALIGN) * HEADER_ALIGN;
}

/** The committed prefix (magic … salt) of a header with these fields. */
export function committedBytes(segmentLog2: number, headerLength: number, salt: Buffer): Buffer {
  const out = Buffer.alloc(COMMITTED_LENGTH);
  MAGIC.copy(out, 0);
  out[4] = FORMAT_VERSION;
  out[5] = ALGORITHM_AES256GCM_HKDF_SHA256;
  out[6] = segmentLog2;
  out[7] = 0;
  out.writeUInt32BE(headerLength, 8);
  salt.copy(out, 12);
  return out;
}

/** Lays out a full header slot; the commitment is computed by the caller over `committedBytes`. */
export function encodeHeader(
  segmentLog2: number,
  salt: Buffer,
  wrappedDek: Buffer,
  commit: (committed: Buffer) => Buffer,
): Buffer {
  if (wrappedDek.length === 0) throw new AtrestError("INVALID_INPUT", "wrapped DEK is empty");
  const headerLength = slotLengthFor(wrappedDek.length);
  if (headerLength > HEADER_PROBE_BYTES) {
    throw new AtrestError("INVALID_INPUT", `wrapped DEK of ${wrappedDek.length} bytes does not fit a header`);
  }
  const committed = committedBytes(segmentLog2, headerLength, salt);
  const out = Buffer.alloc(headerLength);
  committed.copy(out, 0);
  commit(committed).copy(out, COMMITTED_LENGTH);
  writeWrapped(out, wrappedDek);
  return out;
}

function writeWrapped(slot: Buffer, wrappedDek: Buffer): void {
  slot.writeUInt16BE(wrappedDek.length, FIXED_LENGTH - 2);
  wrappedDek.copy(slot, FIXED_LENGTH);
  slot.fill(0, FIXED_LENGTH + wrappedDek.length);
}

/**
 * Parses the structure of a header from the first bytes of a container (at least the header slot; extra bytes,
 * e.g. a HEADER_PROBE_BYTES read, are ignored). Malformed, truncated or unsupported → IntegrityError.
 * Nothing here is authenticated yet: call openContainer before trusting any field.
 */
export function parseHeader(bytes: Buffer): ParsedHeader {
  if (bytes.length < FIXED_LENGTH) throw new IntegrityError("container header truncated");
  if (!bytes.subarray(0, 4).equals(MAGIC)) throw new IntegrityError("not an atrest container (bad magic)");
  const version = bytes[4];
  if (version !== FORMAT_VERSION) {
    throw new IntegrityError(`unsupported container format version ${version} (this build reads ${FORMAT_VERSION})`);
  }
  const algorithm = bytes[5];
  if (algorithm !== ALGORITHM_AES256GCM_HKDF_SHA256) {
    throw new IntegrityError(`unsupported container algorithm ${algorithm}`);
  }
  const segmentLog2 = bytes[6];
  if (segmentLog2 < MIN_SEGMENT_LOG2 || segmentLog2 > MAX_SEGMENT_LOG2) {
    throw new IntegrityError(`invalid container segment size 2^${segmentLog2}`);
  }
  if (bytes[7] !== 0) throw new IntegrityError("invalid container header flags");
  const headerLength = bytes.readUInt32BE(8);
  if (headerLength % HEADER_ALIGN !== 0 || headerLength === 0 || headerLength > HEADER_PROBE_BYTES) {
    throw new IntegrityError("invalid container header length");
  }
  if (bytes.length < headerLength) throw new IntegrityError(`container header truncated (needs ${headerLength} bytes)`);
  const wrappedLength = bytes.readUInt16BE(FIXED_LENGTH - 2);
  const wrappedEnd = FIXED_LENGTH + wrappedLength;
  if (wrappedLength === 0 || wrappedEnd > headerLength) throw new IntegrityError("invalid wrapped DEK length");
  // The padding is not covered by the commitment, so it must be canonical or a flipped byte would go unnoticed.
  for (let i = wrappedEnd; i < headerLength; i++) {
    if (bytes[i] !== 0) throw new IntegrityError("non-zero container header padding");
  }
  return {
    version,
    algorithm,
    segmentLog2,
    headerLength,
    salt: Buffer.from(bytes.subarray(12, COMMITTED_LENGTH)),
    commitment: Buffer.from(bytes.subarray(COMMITTED_LENGTH, FIXED_LENGTH - 2)),
    wrappedDek: Buffer.from(bytes.subarray(FIXED_LENGTH, wrappedEnd)),
    layout: makeLayout(headerLength, segmentLog2),
  };
}

/**
 * Header slot with its wrapped DEK replaced (rewrap), same length as `headerBytes`, so it can be written over the
 * old header in place without moving segments. Throws INVALID_INPUT if `newWrapped` does not fit the slot.
 */
export function replaceWrappedDek(headerBytes: Buffer, newWrapped: Buffer): Buffer {
  const { headerLength } = parseHeader(headerBytes);
  if (newWrapped.length === 0 || FIXED_LENGTH + newWrapped.length > headerLength) {
    throw new AtrestError(
      "INVALID_INPUT",
      `wrapped DEK of ${newWrapped.length} bytes does not fit the ${headerLength}-byte header slot`,
    );
  }
  const out = Buffer.from(headerBytes.subarray(0, headerLength));
  writeWrapped(out, newWrapped);
  return out;
}
