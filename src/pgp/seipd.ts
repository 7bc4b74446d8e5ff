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
import type * as openpgp from "openpgp";
import { zero } from "../crypto/bytes.ts";
import { randomBytes } from "../crypto/random.ts";
import { openpgpLib, SYMMETRIC_AES256 } from "./lib.ts";

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
    if (!prefs.includes(SYMMETRIC_AES256)) return false;
  }
  return !allV2;
}

/**
 * Encrypts a byte stream as one OpenPGP message (PKESKs + SEIPD v1, AES-256, uncompressed binary literal data),
 * synchronously per chunk: `push` and `end` return the message bytes produced so far. Check `seipdV1Applies` first.
 */
export class SeipdV1Encryptor {
  readonly #cipher: Cipheriv;
  readonly #hash: Hash = createHash("sha1");
  readonly #outer: PartialFramer;
  readonly #literal: PartialFramer;
  #out: Buffer[] = [];
  #ended = false;

  private constructor(header: Buffer, cipher: Cipheriv, opts: SeipdOptions) {
    this.#out.push(header);
    this.#cipher = cipher;
    this.#outer = new PartialFramer(TAG_SEIPD, (piece) => this.#out.push(piece));
    this.#outer.push(Buffer.from([1]));
    const prefix = randomBytes(16);
    this.#encrypt(Buffer.concat([prefix, prefix.subarray(14)]));
    this.#literal = new PartialFramer(TAG_LITERAL, (plain) => this.#encrypt(plain));
    const name = Buffer.from(opts.filename ?? "", "utf8").subarray(0, 255);
    const meta = Buffer.alloc(6 + name.length);
    meta[0] = 0x62; // 'b': binary
    meta[1] = name.length;
    name.copy(meta, 2);
    meta.writeUInt32BE(Math.floor((opts.date ?? new Date()).getTime() / 1000), 2 + name.length);
    this.#literal.push(meta);
  }

  /** Makes the session key, encrypts it to every recipient (openpgp), and keeps it only inside the cipher. */
  static async create(recipients: openpgp.PublicKey[], opts: SeipdOptions = {}): Promise<SeipdV1Encryptor> {
    const sessionKey = randomBytes(32);
    try {
      const header = await (await openpgpLib()).encryptSessionKey({
        data: sessionKey,
        algorithm: "aes256",
        encryptionKeys: recipients,
        format: "binary",
      });
      return new SeipdV1Encryptor(
        Buffer.from(header),
        createCipheriv("aes-256-cfb", sessionKey, Buffer.alloc(16)),
        opts,
      );
    } finally {
      zero(sessionKey);
    }
  }

  #encrypt(plain: Buffer): void {
    this.#hash.update(plain);
    const c = this.#cipher.update(plain);
    if (c.length > 0) this.#outer.push(c);
  }

  #take(): Buffer {
    const pieces = this.#out;
    this.#out = [];
    return pieces.length === 1 ? pieces[0] : Buffer.concat(pieces);
  }

  /** Message bytes for the next chunk of data (possibly empty: data is framed in 1 MiB parts). */
  push(data: Buffer): Buffer {
    if (this.#ended) throw new Error("SEIPD encryptor already ended");
    if (data.length > 0) this.#literal.push(data);
    return this.#take();
  }

  /** The rest of the message: the literal packet's last part, the MDC, the SEIPD packet's last part. */
  end(): Buffer {
    this.#ended = true;
    this.#literal.end();
    this.#encrypt(MDC_HEADER);
    const c = this.#cipher.update(this.#hash.digest());
    if (c.length > 0) this.#outer.push(c);
    const tail = this.#cipher.final();
    if (tail.length > 0) this.#outer.push(tail);
    this.#outer.end();
    return this.#take();
  }
}

/** The SeipdV1Encryptor as a stream transform: a web ReadableStream of the binary message, with backpressure. */
export async function seipdV1Stream(
  input: ReadableStream<Uint8Array>,
  recipients: openpgp.PublicKey[],
  opts: SeipdOptions = {},
): Promise<ReadableStream<Uint8Array>> {
  const enc = await SeipdV1Encryptor.create(recipients, opts);
  const reader = input.getReader();
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) {
            controller.enqueue(enc.end());
            controller.close();
            return;
          }
          const out = enc.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
          if (out.length === 0) continue;
          controller.enqueue(out);
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
