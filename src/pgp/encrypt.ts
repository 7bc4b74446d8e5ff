// Streaming OpenPGP encryption (and optional signing) with openpgp v6, in the shape GnuPG 2.2 reads: v4 keys,
// SEIPD v1 (openpgp picks SEIPD v2 only when every recipient's self-signature advertises it), no compression.
import { Readable } from "node:stream";
import type * as openpgp from "openpgp";
import { AtrestError } from "../errors.ts";
import { COMPRESSION_UNCOMPRESSED, openpgpLib, SYMMETRIC_AES256 } from "./lib.ts";
import { seipdV1Applies, seipdV1Stream } from "./seipd.ts";

/**
 * Encryption settings shared by every atrest OpenPGP writer. No compression: stored files are mostly already
 * compressed or random, compression costs CPU on the upload path and leaks plaintext length patterns (CRIME-style);
 * gpg reads uncompressed messages. AES-256 when every recipient prefers it (gpg and openpgp keys list it first).
 * The algorithm ids as numbers (RFC 9580 §9.3 and §9.4: what openpgp.enums holds), so that this constant does not
 * load openpgp (./lib.ts).
 */
export const PGP_CONFIG: openpgp.PartialConfig = {
  preferredCompressionAlgorithm: COMPRESSION_UNCOMPRESSED,
  preferredSymmetricAlgorithm: SYMMETRIC_AES256,
  aeadProtect: false,
};

export interface EncryptOptions {
  /** Adds a one-pass signature by this (decrypted) key; gpg reports it while decrypting. */
  signingKey?: openpgp.PrivateKey;
  /** File name recorded in the literal data packet (gpg may use it with --use-embedded-filename). Default empty. */
  filename?: string;
  /** ASCII-armored output instead of binary. */
  armor?: boolean;
}

/** Accepts a web ReadableStream or a Node Readable (converted; Node streams are async iterables). */
export function toWebStream(input: ReadableStream<Uint8Array> | NodeJS.ReadableStream): ReadableStream<Uint8Array> {
  if (input instanceof ReadableStream) return input;
  return Readable.toWeb(input instanceof Readable ? input : Readable.from(input)) as ReadableStream<Uint8Array>;
}

/**
 * Encrypts a stream of bytes to `recipients` as one OpenPGP message, as it streams: memory stays flat for any size
 * and backpressure propagates from the returned stream to `input`. Validate recipients first (PgpKeyStore
 * .resolveRecipients): openpgp's own errors for an expired or revoked key do not name the key.
 * Returns a web ReadableStream of the binary (or armored, as UTF-8 bytes) message.
 */
export async function encryptStream(
  input: ReadableStream<Uint8Array> | NodeJS.ReadableStream,
  recipients: openpgp.PublicKey[],
  opts: EncryptOptions = {},
): Promise<ReadableStream<Uint8Array>> {
  if (recipients.length === 0) throw new AtrestError("INVALID_INPUT", "no OpenPGP recipients");
  // The common case (unsigned, binary, SEIPD v1 with AES-256) takes the direct writer: same bytes, about a third
  // less CPU. Signing, armor and SEIPD v2 go through openpgp.
  if (!opts.signingKey && !opts.armor && (await seipdV1Applies(recipients))) {
    return seipdV1Stream(toWebStream(input), recipients, { filename: opts.filename });
  }
  const message = await (await openpgpLib()).createMessage({
    binary: toWebStream(input),
    filename: opts.filename ?? "",
  });
  const common = {
    message,
    encryptionKeys: recipients,
    signingKeys: opts.signingKey ? [opts.signingKey] : undefined,
    config: PGP_CONFIG,
  };
  if (!opts.armor)
    return (await (await openpgpLib()).encrypt({ ...common, format: "binary" })) as ReadableStream<Uint8Array>;
  const armored = (await (await openpgpLib()).encrypt({ ...common, format: "armored" })) as ReadableStream<string>;
  return armored.pipeThrough(new TextEncoderStream());
}

/** A stream of bytes as one OpenPGP signed (not encrypted) message, one-pass signature, streaming. */
export async function signStream(
  input: ReadableStream<Uint8Array> | NodeJS.ReadableStream,
  signingKey: openpgp.PrivateKey,
  opts: Omit<EncryptOptions, "signingKey"> = {},
): Promise<ReadableStream<Uint8Array>> {
  const message = await (await openpgpLib()).createMessage({
    binary: toWebStream(input),
    filename: opts.filename ?? "",
  });
  const common = { message, signingKeys: [signingKey], config: PGP_CONFIG };
  if (!opts.armor)
    return (await (await openpgpLib()).sign({ ...common, format: "binary" })) as ReadableStream<Uint8Array>;
  const armored = (await (await openpgpLib()).sign({ ...common, format: "armored" })) as ReadableStream<string>;
  return armored.pipeThrough(new TextEncoderStream());
}
