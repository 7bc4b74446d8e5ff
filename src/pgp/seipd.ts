// A direct SEIPD v1 writer (RFC 4880 §5.13, RFC 9580 §5.13.1) on node:crypto, for the common case of PGP folders:
// unsigned, binary, AES-256, recipients that do not all support SEIPD v2. openpgp.js produces the same bytes but
// spends about twice the CPU on its generic stream plumbing; here each input chunk costs one SHA-1 update, one
// AES-256-CFB update and no copy. openpgp.js still makes the session key packets (PKESK), so public-key crypto stays
// in the audited library; this file only frames and encrypts the data.
//
// Message = PKESK... ‖ SEIPD(tag 18, partial lengths) where the SEIPD body is 0x01 ‖ AES-256-CFB(zero IV) of
// prefix(16 random) ‖ prefix[14..16] ‖ literal packet(tag 11, partial lengths, 'b', name, date, data) ‖ 0xD3 0x14 ‖
// SHA-1(everything before, including 0xD3 0x14).
import { type Cipheriv, createCipheriv, createHash, type Hash } from "node:crypto";
import * as openpgp from "openpgp";
import { zero } from "../crypto/bytes.ts";
import { randomBytes } from "../crypto/random.ts";

/** Partial body chunk: 2^20 bytes (RFC: a power of two, the first at least 512). */
const CHUNK_BITS = 20;
const CHUNK = 1 << CHUNK_BITS;
const PARTIAL_HEADER = Buffer.from([0xe0 | CHUNK_BITS]);
const TAG_LITERAL = 11;
const TAG_SEIPD = 18;
const MDC_HEADER = Buffer.from([0xd3, 0x14]);
/** Features subpacket flag: the key's owner reads SEIPD v2 (RFC 9580 §5.2.3.32). */
const FEATURE_SEIPD_V2 = 0x08;

/** New-format definite length octets for `n` bytes. */
function lengthOctets(n: number): Buffer {
  if (n < 192) return Buffer.from([n]);
  if (n < 8384) return Buffer.from([((n - 192) >> 8) + 192, (n - 192) & 0xff]);
  const b = Buffer.alloc(5);
  b[0] = 0xff;
  b.writeUInt32BE(n, 1);
  return b;
}

/**
 * Frames a stream of bytes as one packet body with partial lengths: every full CHUNK gets a partial header, the rest
 * a definite length at the end. Emits pieces without copying the data.
 */
class PartialFramer {
  #inChunk = 0;
  readonly #emit: (piece: Buffer) => void;

  constructor(tag: number, emit: (piece: Buffer) => void) {
    this.#emit = emit;
    emit(Buffer.from([0xc0 | tag]));
  }

  /** `data` continues the body. The partial header is written lazily: the last chunk must carry a definite length. */
  push(data: Buffer): void {
    let at = 0;
    while (at < data.length) {
      const room = CHUNK - this.#inChunk;
      const n = Math.min(room, data.length - at);
      this.#pending.push(data.subarray(at, at + n));
      this.#inChunk += n;
      at += n;
      if (this.#inChunk === CHUNK) this.#flushChunk(false);
    }
  }

  #pending: Buffer[] = [];

  // A full chunk is only known to be "partial" once more data follows; holding it back by one chunk would cost
  // memory, so a full chunk is emitted as partial immediately and the end always emits a (possibly empty) final
  // definite-length part (RFC 9580 §4.2.1.4 allows a zero-length final part).
  #flushChunk(final: boolean): void {
    this.#emit(final ? lengthOctets(this.#inChunk) : PARTIAL_HEADER);
    for (const p of this.#pending) this.#emit(p);
    this.#pending = [];
    this.#inChunk = 0;
  }

  end(): void {
    this.#flushChunk(true);
  }
}

export interface SeipdOptions {
  filename?: string;
  date?: Date;
}

/** True when the fast writer produces what openpgp would: SEIPD v1 with AES-256 for these recipients. */
export async function seipdV1Applies(recipients: openpgp.PublicKey[]): Promise<boolean> {
  if (recipients.length === 0) return false;
  let allV2 = true;
  for (const key of recipients) {
    const sig = (await key.getPrimaryUser()).selfCertification;
    if (!(sig.features && sig.features[0] & FEATURE_SEIPD_V2)) allV2 = false;
    const prefs = sig.preferredSymmetricAlgorithms ?? [];
    if (!prefs.includes(openpgp.enums.symmetric.aes256)) return false;
  }
  return !allV2;
}

/**
 * Encrypts `input` as one OpenPGP message (PKESKs + SEIPD v1, AES-256, uncompressed binary literal data) to
 * `recipients`. Check `seipdV1Applies` first. Returns a web ReadableStream of the binary message, with backpressure.
 */
export async function seipdV1Stream(
  input: ReadableStream<Uint8Array>,
  recipients: openpgp.PublicKey[],
  opts: SeipdOptions = {},
): Promise<ReadableStream<Uint8Array>> {
  const sessionKey = randomBytes(32);
  let cipher: Cipheriv;
  let header: Buffer;
  try {
    header = Buffer.from(
      await openpgp.encryptSessionKey({
        data: sessionKey,
        algorithm: "aes256",
        encryptionKeys: recipients,
        format: "binary",
      }),
    );
    cipher = createCipheriv("aes-256-cfb", sessionKey, Buffer.alloc(16));
  } finally {
    zero(sessionKey);
  }
  const hash: Hash = createHash("sha1");
  const out: Buffer[] = [];
  const outer = new PartialFramer(TAG_SEIPD, (piece) => out.push(piece));
  outer.push(Buffer.from([1]));
  const encrypt = (plain: Buffer) => {
    hash.update(plain);
    const c = cipher.update(plain);
    if (c.length > 0) outer.push(c);
  };
  const prefix = randomBytes(16);
  encrypt(Buffer.concat([prefix, prefix.subarray(14)]));
  const literal = new PartialFramer(TAG_LITERAL, encrypt);
  const name = Buffer.from(opts.filename ?? "", "utf8").subarray(0, 255);
  const meta = Buffer.alloc(6 + name.length);
  meta[0] = 0x62; // 'b': binary
  meta[1] = name.length;
  name.copy(meta, 2);
  meta.writeUInt32BE(Math.floor((opts.date ?? new Date()).getTime() / 1000), 2 + name.length);
  literal.push(meta);

  const reader = input.getReader();
  let first = true;
  const take = (): Buffer[] => {
    const pieces = out.splice(0);
    if (first) {
      first = false;
      pieces.unshift(header);
    }
    return pieces;
  };
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) {
            literal.end();
            encrypt(MDC_HEADER);
            const digest = hash.digest();
            const c = cipher.update(digest);
            if (c.length > 0) outer.push(c);
            const tail = cipher.final();
            if (tail.length > 0) outer.push(tail);
            outer.end();
            const pieces = take();
            controller.enqueue(Buffer.concat(pieces));
            controller.close();
            return;
          }
          if (value.byteLength === 0) continue;
          literal.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
          const pieces = take();
          if (pieces.length === 0) continue;
          // One enqueue per input chunk: the pieces are small headers around views of the ciphertext.
          controller.enqueue(pieces.length === 1 ? pieces[0] : Buffer.concat(pieces));
          return;
        }
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    },
    new ByteLengthQueuingStrategy({ highWaterMark: 1 << 20 }),
  );
}
