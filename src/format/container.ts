// Keys of one container: the key commitment, segment key derivation, and sealing/opening of segments.

import { createSecretKey, type KeyObject } from "node:crypto";
import {
  aeadKey,
  openInto as aeadOpenInto,
  seal as aeadSeal,
  sealInto as aeadSealInto,
  KEY_LENGTH,
  NONCE_LENGTH,
  SEAL_OVERHEAD,
} from "../crypto/aead.ts";
import { constantTimeEqual, zero } from "../crypto/bytes.ts";
import { hkdfSha256 } from "../crypto/hkdf.ts";
import { hmacSha256 } from "../crypto/hmac.ts";
import { publicRandomBytes, type RandomSource } from "../crypto/random.ts";
import { AtrestError, IntegrityError } from "../errors.ts";
import { committedBytes, encodeHeader, type ParsedHeader, SALT_LENGTH } from "./header.ts";
import {
  DEFAULT_SEGMENT_LOG2,
  type Layout,
  MAX_SEGMENT_LOG2,
  MIN_SEGMENT_LOG2,
  makeLayout,
  PAD_MARKER,
  paddedFinalLength,
} from "./layout.ts";

const COMMIT_INFO = Buffer.from("atrest v1 commit", "ascii");
const SEGMENT_INFO = Buffer.from("atrest v1 segment", "ascii");
/** Longest file id in UTF-8 bytes; keeps the HKDF info under OpenSSL's 1024-byte limit. */
export const MAX_FILE_ID_BYTES = 512;

function encodeFileId(fileId: string): Buffer {
  if (typeof fileId !== "string" || !fileId.isWellFormed()) throw new AtrestError("INVALID_INPUT", "bad file id");
  const bytes = Buffer.from(fileId, "utf8");
  if (bytes.length === 0 || bytes.length > MAX_FILE_ID_BYTES) {
    throw new AtrestError("INVALID_INPUT", `file id must be 1..${MAX_FILE_ID_BYTES} UTF-8 bytes`);
  }
  const out = Buffer.alloc(2 + bytes.length);
  out.writeUInt16BE(bytes.length, 0);
  bytes.copy(out, 2);
  return out;
}

/** Bytes after the file id field in a segment AAD: u64 index ‖ u8 last. */
const AAD_TAIL = 9;

/**
 * A segment AAD with a zero tail: "atrest v1 segment" ‖ u16 len ‖ file id ‖ u64 0 ‖ u8 0. `setSegmentAad` rewrites
 * the tail per segment, so one template serves every segment of a container (ContainerKeys and the seal workers).
 */
export function segmentAadTemplate(fileIdField: Uint8Array): Buffer {
  return Buffer.concat([SEGMENT_INFO, fileIdField, Buffer.alloc(AAD_TAIL)]);
}

/**
 * Seals the full (non-final) segments in `plaintext`, the first being segment `startIndex`, into `out` (nonce ‖
 * ciphertext ‖ tag each, layout.sealedSegmentSize apart), segment i under nonce i of `nonces` (12 bytes each, fresh:
 * the caller draws them in one CSPRNG call). The seal workers and ContainerKeys.sealSegmentsInto share it.
 */
export function sealSegmentsInto(
  key: KeyObject,
  aad: Buffer,
  layout: Layout,
  startIndex: number,
  plaintext: Buffer,
  out: Buffer,
  nonces: Buffer,
): void {
  const size = layout.segmentSize;
  const sealedSize = layout.sealedSegmentSize;
  const count = plaintext.length / size;
  if (!Number.isSafeInteger(count) || count < 1 || !Number.isSafeInteger(startIndex) || startIndex < 0) {
    throw new AtrestError("INVALID_INPUT", "seal a whole number of segments at a valid index");
  }
  if (nonces.length < count * NONCE_LENGTH || out.length < count * sealedSize) {
    throw new AtrestError("INVALID_INPUT", "nonces or output too small");
  }
  for (let i = 0; i < count; i++) {
    const nonce = nonces.subarray(i * NONCE_LENGTH, (i + 1) * NONCE_LENGTH);
    const data = plaintext.subarray(i * size, (i + 1) * size);
    aeadSealInto(key, nonce, data, setSegmentAad(aad, startIndex + i, false), out, i * sealedSize);
  }
}

/**
 * Opens consecutive segments `sealed` (as on disk: full sealed segments, the last one shorter when `last` says the
 * range ends with the container's final segment), the first being segment `startIndex`, into `out` (segment i's
 * plaintext at i * segmentSize; room for a full segment each) and returns the plaintext length (the final segment
 * unpadded). As ContainerKeys.open does, segment by segment; any failure → IntegrityError with nothing of the range
 * left in `out` (segments before the failing one were authentic, but a failed range hands back no plaintext). The
 * seal workers and ContainerKeys.openSegmentsInto share it.
 */
export function openSegmentsInto(
  key: KeyObject,
  aad: Buffer,
  layout: Layout,
  startIndex: number,
  sealed: Buffer,
  last: boolean,
  out: Buffer,
): number {
  const full = layout.sealedSegmentSize;
  const count = Math.ceil(sealed.length / full);
  if (!Number.isSafeInteger(startIndex) || startIndex < 0 || count < 1) {
    throw new AtrestError("INVALID_INPUT", "open at least one segment at a valid index");
  }
  if (out.length < count * layout.segmentSize) throw new AtrestError("INVALID_INPUT", "output too small");
  let length = 0;
  try {
    for (let i = 0; i < count; i++) {
      const index = startIndex + i;
      const isLast = last && i === count - 1;
      const segment = sealed.subarray(i * full, Math.min(sealed.length, (i + 1) * full));
      checkSealedSegmentLength(layout, index, segment.length, isLast);
      // Decrypted in place in the output: openInto zeroes what it wrote when the tag does not verify, and
      // finalDataLength zeroes a final segment whose padding is bad.
      const plain = aeadOpenInto(key, segment, setSegmentAad(aad, index, isLast), out, length);
      length += isLast ? finalDataLength(out.subarray(length, length + plain), layout.segmentSize, index) : plain;
    }
  } catch (err) {
    zero(out.subarray(0, length));
    throw err;
  }
  return length;
}

/** Writes segment `index` and its last flag into `aad` (from segmentAadTemplate) in place and returns it. */
export function setSegmentAad(aad: Buffer, index: number, last: boolean): Buffer {
  const at = aad.length - AAD_TAIL;
  aad.writeUInt32BE(Math.floor(index / 2 ** 32), at);
  aad.writeUInt32BE(index % 2 ** 32, at + 4);
  aad[at + 8] = last ? 1 : 0;
  return aad;
}

/**
 * Checks the on-disk length of segment `index` (nonce ‖ ciphertext ‖ tag): a full sealed segment, or for the final
 * one SEAL_OVERHEAD + 1 .. sealedSegmentSize bytes. Anything else → IntegrityError.
 */
export function checkSealedSegmentLength(layout: Layout, index: number, length: number, last: boolean): void {
  const full = layout.sealedSegmentSize;
  if (last ? length <= SEAL_OVERHEAD || length > full : length !== full) {
    throw new IntegrityError(`segment ${index} has a bad length`);
  }
}

/**
 * Data bytes in the authenticated, padded final segment `index` (its plaintext `plain`): checks the padding is
 * canonical (the marker, then zeros, exactly the length the padding rule gives). Bad padding → IntegrityError, and
 * `plain` is zeroed.
 */
export function finalDataLength(plain: Buffer, segmentSize: number, index: number): number {
  let end = plain.length - 1;
  while (end >= 0 && plain[end] === 0) end--;
  if (end < 0 || plain[end] !== PAD_MARKER || paddedFinalLength(segmentSize, index, end) !== plain.length) {
    zero(plain);
    throw new IntegrityError(`segment ${index} has invalid padding`);
  }
  return end;
}

/** What a seal worker needs to seal full segments of one container (see ContainerKeys.sealWorkerParams). */
export interface SealWorkerParams {
  /** The segment key. KeyObjects survive postMessage; never log or persist it. */
  readonly key: KeyObject;
  /** u16 len ‖ file id, as bound into every segment AAD (input of segmentAadTemplate). */
  readonly fileIdField: Buffer;
  readonly layout: Layout;
}

function checkDek(dek: Buffer): void {
  if (!Buffer.isBuffer(dek) || dek.length !== KEY_LENGTH)
    throw new AtrestError("INVALID_INPUT", "DEK must be 32 bytes");
}

/**
 * The DEK imported once for the derivations of one container (commitment key, segment key). Node 24 imports a raw
 * Buffer key on every hkdfSync/createHmac call; with a KeyObject the three derivations per file open or create cost
 * about a third (createHeader + openContainer: 390-630 µs before, 126-235 µs after, on this 2-core machine at load ~15). Node frees its copy with OPENSSL_clear_free once collected.
 */
function dekKey(dek: Buffer): KeyObject {
  return createSecretKey(dek);
}

function commitment(dek: KeyObject, salt: Buffer, committed: Buffer, fileIdField: Buffer): Buffer {
  const commitKey = hkdfSha256(dek, salt, COMMIT_INFO);
  try {
    return hmacSha256(createSecretKey(commitKey), committed, fileIdField);
  } finally {
    zero(commitKey);
  }
}

/**
 * The per-file segment key and what every segment's AAD binds. Obtain from createHeader (writing) or openContainer
 * (reading); call destroy() when done so the key is zeroed.
 */
export class ContainerKeys {
  readonly layout: Layout;
  /** Imported once: per-segment import of a raw key would cost as much as sealing half a segment. */
  #key: KeyObject | undefined;
  /** "atrest v1 segment" ‖ u16 len ‖ file id ‖ u64 index ‖ u8 last; the tail is rewritten per segment. */
  readonly #aad: Buffer;
  readonly #random: RandomSource;

  /** @internal use createHeader or openContainer. */
  constructor(dek: KeyObject, salt: Buffer, fileIdField: Buffer, layout: Layout, random: RandomSource) {
    this.layout = layout;
    const raw = hkdfSha256(dek, salt, Buffer.concat([SEGMENT_INFO, fileIdField.subarray(2)]));
    this.#key = aeadKey(raw);
    zero(raw);
    this.#aad = segmentAadTemplate(fileIdField);
    this.#random = random;
  }

  #prepare(index: number, last: boolean): { key: KeyObject; aad: Buffer } {
    const key = this.#key;
    if (key === undefined) throw new AtrestError("INVALID_INPUT", "container keys were destroyed");
    if (!Number.isSafeInteger(index) || index < 0) throw new AtrestError("INVALID_INPUT", "bad segment index");
    return { key, aad: setSegmentAad(this.#aad, index, last) };
  }

  /**
   * For seal workers only (ParallelSegmentWriter): the segment key and the AAD's file id field, so full segments can
   * be sealed on another thread exactly as `seal` does. Throws once destroyed.
   */
  sealWorkerParams(): SealWorkerParams {
    const key = this.#key;
    if (key === undefined) throw new AtrestError("INVALID_INPUT", "container keys were destroyed");
    const fileIdField = Buffer.from(this.#aad.subarray(SEGMENT_INFO.length, this.#aad.length - AAD_TAIL));
    return { key, fileIdField, layout: this.layout };
  }

  /**
   * Seals segment `index` with a fresh random nonce. A non-final segment takes exactly `layout.segmentSize` bytes;
   * the final one takes fewer (0 .. segmentSize-1) and is padded here.
   */
  seal(index: number, data: Buffer, last: boolean): Buffer {
    const { key, aad } = this.#prepare(index, last);
    const size = this.layout.segmentSize;
    if (!last) {
      if (data.length !== size) throw new AtrestError("INVALID_INPUT", `a non-final segment holds ${size} bytes`);
      return aeadSeal(key, this.#random(NONCE_LENGTH), data, aad);
    }
    if (data.length >= size) throw new AtrestError("INVALID_INPUT", `a final segment holds fewer than ${size} bytes`);
    const padded = Buffer.alloc(paddedFinalLength(size, index, data.length));
    data.copy(padded);
    padded[data.length] = PAD_MARKER;
    try {
      return aeadSeal(key, this.#random(NONCE_LENGTH), padded, aad);
    } finally {
      zero(padded);
    }
  }

  /**
   * Seals the full (non-final) segments in `plaintext`, the first being segment `startIndex`, into `out`
   * (layout.sealedSegmentSize each), as `seal` does and as a seal worker does with a batch: for reused outputs.
   */
  sealSegmentsInto(startIndex: number, plaintext: Buffer, out: Buffer): void {
    const { key } = this.#prepare(startIndex, false);
    const count = Math.floor(plaintext.length / this.layout.segmentSize);
    sealSegmentsInto(key, this.#aad, this.layout, startIndex, plaintext, out, this.#random(count * NONCE_LENGTH));
  }

  /**
   * Opens consecutive sealed segments into `out` as a seal worker does with a range (openSegmentsInto): for
   * reused outputs. Returns the plaintext length.
   */
  openSegmentsInto(startIndex: number, sealed: Buffer, last: boolean, out: Buffer): number {
    const { key } = this.#prepare(startIndex, false);
    return openSegmentsInto(key, this.#aad, this.layout, startIndex, sealed, last, out);
  }

  /**
   * Opens segment `index` (nonce ‖ ciphertext ‖ tag, as on disk). For the final segment the padding is checked and
   * removed. Any failure → IntegrityError and no plaintext.
   */
  open(index: number, sealed: Buffer, last: boolean): Buffer {
    const { key, aad } = this.#prepare(index, last);
    checkSealedSegmentLength(this.layout, index, sealed.length, last);
    const plain = Buffer.allocUnsafe(sealed.length - SEAL_OVERHEAD);
    aeadOpenInto(key, sealed, aad, plain, 0);
    return last ? plain.subarray(0, finalDataLength(plain, this.layout.segmentSize, index)) : plain;
  }

  /**
   * Drops the segment key; the object is unusable afterwards. The raw key bytes were zeroed at import; Node frees
   * the KeyObject's copy with OPENSSL_clear_free when it is collected.
   */
  destroy(): void {
    this.#key = undefined;
  }
}

export interface CreateHeaderOptions {
  /** The file's 32-byte DEK (plaintext). Not retained; the caller still owns and zeroes it. */
  dek: Buffer;
  /** The file's immutable id from metadata; bound into the commitment and every segment. */
  fileId: string;
  /** The DEK as wrapped by the key manager. */
  wrappedDek: Buffer;
  /** log2 of the plaintext segment size, 10..24; default 16 (64 KiB). */
  segmentLog2?: number;
  /** Test vectors only: replaces the CSPRNG for the salt and every segment nonce. */
  random?: RandomSource;
}

/** A new container: its full header slot (write it at offset 0) and keys for sealing segments. */
export function createHeader(options: CreateHeaderOptions): { header: Buffer; keys: ContainerKeys } {
  const { dek, fileId, wrappedDek, segmentLog2 = DEFAULT_SEGMENT_LOG2, random = publicRandomBytes } = options;
  checkDek(dek);
  if (!Number.isInteger(segmentLog2) || segmentLog2 < MIN_SEGMENT_LOG2 || segmentLog2 > MAX_SEGMENT_LOG2) {
    throw new AtrestError("INVALID_INPUT", `segmentLog2 must be ${MIN_SEGMENT_LOG2}..${MAX_SEGMENT_LOG2}`);
  }
  const fileIdField = encodeFileId(fileId);
  const salt = random(SALT_LENGTH);
  const key = dekKey(dek);
  const header = encodeHeader(segmentLog2, salt, wrappedDek, (committed) =>
    commitment(key, salt, committed, fileIdField),
  );
  const keys = new ContainerKeys(key, salt, fileIdField, makeLayout(header.length, segmentLog2), random);
  return { header, keys };
}

/**
 * Verifies the header's key commitment against `dek` and `fileId` (constant time) and returns the segment keys.
 * Wrong DEK, wrong file id or a tampered header → IntegrityError; nothing has been decrypted at that point.
 */
export function openContainer(
  header: ParsedHeader,
  dek: Buffer,
  fileId: string,
  random: RandomSource = publicRandomBytes,
): ContainerKeys {
  checkDek(dek);
  const fileIdField = encodeFileId(fileId);
  const committed = committedBytes(header.segmentLog2, header.headerLength, header.salt);
  const key = dekKey(dek);
  if (!constantTimeEqual(commitment(key, header.salt, committed, fileIdField), header.commitment)) {
    throw new IntegrityError("container key commitment mismatch (wrong key or file id, or tampered header)");
  }
  return new ContainerKeys(key, header.salt, fileIdField, header.layout, random);
}
