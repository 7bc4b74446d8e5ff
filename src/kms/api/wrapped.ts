// Wrapped DEK layout and encryption-context encoding: pure (bytes in, bytes out, no I/O, no key lookup, no crypto) so
// both ends of the key manager API share it and it can be fuzzed. The AES-GCM wrap itself is the service's
// (src/kms/wrap.ts).
//
// Wrapped DEK format "AKW1" (all integers big-endian):
//
//   offset  size  field
//   0       4     magic "AKW1"
//   4       1     n = length of the KEK name (1..63)
//   5       n     KEK name, ASCII, matches [a-z0-9][a-z0-9._-]{0,62}
//   5+n     4     KEK version (u32, >= 1)
//   9+n     12    nonce, random per wrap
//   21+n    32    AES-256-GCM ciphertext of the 32-byte DEK
//   53+n    16    GCM tag
//   total = 69 + n bytes
//
//   AAD = bytes[0, 9+n) (magic ‖ n ‖ name ‖ version) ‖ canonicalContext(context)
//
//   canonicalContext = u32 count ‖ for each entry, sorted by the UTF-8 bytes of its key:
//                      u32 len(key) ‖ key UTF-8 ‖ u32 len(value) ‖ value UTF-8
//
// Binding the header into the AAD means the name/version cannot be edited to point at another KEK; the length-prefixed
// context encoding means {"a":"bc"} and {"ab":"c"} can never authenticate as each other.

import { AtrestError, IntegrityError } from "../../errors.ts";
import { assertKeyName, formatKeyRef, isValidKeyName } from "./key-ref.ts";
import type { EncryptionContext } from "./types.ts";

export const WRAP_MAGIC = Buffer.from("AKW1", "ascii");
export const DEK_BYTES = 32;
export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;
const MAX_VERSION = 0xffffffff;

export interface WrappedHeader {
  name: string;
  version: number;
  /** Header bytes (magic ‖ n ‖ name ‖ version): the first part of the AAD. */
  header: Buffer;
  nonce: Buffer;
  ciphertext: Buffer;
  tag: Buffer;
}

const SURROGATE = /[\ud800-\udfff]/;

/** Orders strings by their UTF-8 bytes (= code point order). UTF-16 `<` agrees unless a surrogate pair is involved. */
function compareUtf8(a: string, b: string): number {
  if (SURROGATE.test(a) || SURROGATE.test(b)) return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * `prefix ‖ canonicalContext(context)` in one buffer. Rejects non-string values and strings that are not
 * well-formed Unicode, because lone surrogates would all encode to U+FFFD and collide.
 */
export function encodeAad(prefix: Buffer, context: EncryptionContext): Buffer {
  if (context === null || typeof context !== "object" || Array.isArray(context)) {
    throw new AtrestError("INVALID_INPUT", "encryption context must be an object of strings");
  }
  const keys = Object.keys(context).sort(compareUtf8);
  let size = prefix.length + 4;
  for (const k of keys) {
    const v = context[k];
    if (typeof v !== "string") {
      throw new AtrestError("INVALID_INPUT", `encryption context value for ${JSON.stringify(k)} must be a string`);
    }
    if (!k.isWellFormed() || !v.isWellFormed()) {
      throw new AtrestError(
        "INVALID_INPUT",
        `encryption context entry ${JSON.stringify(k)} is not well-formed Unicode`,
      );
    }
    size += 8 + Buffer.byteLength(k, "utf8") + Buffer.byteLength(v, "utf8");
  }
  const out = Buffer.allocUnsafe(size); // every byte is written below; nothing secret goes in an AAD
  let off = prefix.copy(out, 0);
  off = out.writeUInt32BE(keys.length, off);
  for (const k of keys) {
    const v = context[k];
    const kl = out.write(k, off + 4, "utf8");
    off = out.writeUInt32BE(kl, off) + kl;
    const vl = out.write(v, off + 4, "utf8");
    off = out.writeUInt32BE(vl, off) + vl;
  }
  return out;
}

const NO_PREFIX = Buffer.alloc(0);

/** Canonical, injective encoding of an encryption context (see the format comment above). */
export function encodeContext(context: EncryptionContext): Buffer {
  return encodeAad(NO_PREFIX, context);
}

/** magic ‖ n ‖ name ‖ version: the first bytes of a wrapped key and of its AAD. */
export function encodeHeader(name: string, version: number): Buffer {
  assertKeyName(name);
  if (!Number.isInteger(version) || version < 1 || version > MAX_VERSION) {
    throw new AtrestError("INVALID_INPUT", `invalid key version ${version}`);
  }
  const header = Buffer.alloc(9 + name.length);
  WRAP_MAGIC.copy(header, 0);
  header.writeUInt8(name.length, 4);
  header.write(name, 5, "ascii");
  header.writeUInt32BE(version, 5 + name.length);
  return header;
}

/** Parses and strictly validates the layout; throws IntegrityError on anything malformed. Does not authenticate. */
export function parseWrapped(wrapped: Buffer): WrappedHeader {
  const w: unknown = wrapped;
  if (!(w instanceof Uint8Array)) throw new IntegrityError("wrapped key: not bytes");
  const buf = Buffer.isBuffer(w) ? w : Buffer.from(w.buffer, w.byteOffset, w.byteLength);
  if (buf.length < 5 || !buf.subarray(0, 4).equals(WRAP_MAGIC)) throw new IntegrityError("wrapped key: bad magic");
  const n = buf.readUInt8(4);
  if (buf.length !== 69 + n) throw new IntegrityError("wrapped key: bad length");
  const name = buf.toString("latin1", 5, 5 + n);
  if (!isValidKeyName(name)) throw new IntegrityError("wrapped key: bad key name");
  const version = buf.readUInt32BE(5 + n);
  if (version < 1) throw new IntegrityError("wrapped key: bad key version");
  const h = 9 + n;
  return {
    name,
    version,
    header: buf.subarray(0, h),
    nonce: buf.subarray(h, h + NONCE_BYTES),
    ciphertext: buf.subarray(h + NONCE_BYTES, h + NONCE_BYTES + DEK_BYTES),
    tag: buf.subarray(h + NONCE_BYTES + DEK_BYTES),
  };
}

export function keyRefOfWrapped(wrapped: Buffer): string {
  const p = parseWrapped(wrapped);
  return formatKeyRef(p.name, p.version);
}
