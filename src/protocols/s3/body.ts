// Request bodies: plain (x-amz-content-sha256 a hex hash or UNSIGNED-PAYLOAD) or aws-chunked
// (STREAMING-AWS4-HMAC-SHA256-PAYLOAD with a signature per chunk, STREAMING-UNSIGNED-PAYLOAD-TRAILER with a checksum
// trailer). Yields the decoded payload piece by piece with the request's backpressure; every check that fails throws
// an S3Error before the last piece is handed over, so a caller that commits only after the loop never commits a body
// that did not verify.
import { createHash, createHmac } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { constantTimeEqual } from "../../crypto/bytes.ts";
import { apiName, Checksum, type ChecksumAlgorithm, checksumAlgorithm } from "./checksum.ts";
import { S3Error } from "./errors.ts";
import { chunkStringToSign, type ParsedAuth, sha256hex } from "./sigv4.ts";

const MAX_CHUNK = 16 * 1024 * 1024;

export interface BodyOptions {
  auth: ParsedAuth;
  /** The signing key (for chunk signatures). */
  key: Buffer | undefined;
  /**
   * A checksum to compute whether or not the client sends one (the algorithm of a multipart upload, for its parts);
   * a client checksum of another algorithm is refused.
   */
  checksum?: ChecksumAlgorithm;
  /** x-amz-checksum-* headers are not about this body (CompleteMultipartUpload: they give the object's checksum). */
  objectChecksumHeaders?: boolean;
}

export interface BodyResult {
  md5: Buffer;
  size: number;
  /** The x-amz-checksum-* of the body (verified against the client's value when it sent one). */
  checksum?: { algorithm: ChecksumAlgorithm; digest: Buffer };
}

/**
 * The checksum a request announces: a header x-amz-checksum-<algorithm> with its value, a trailer of that name
 * (x-amz-trailer), or only x-amz-sdk-checksum-algorithm (computed, nothing to compare).
 */
function checksumHeader(req: IncomingMessage, headers = true): { algo: string; value?: string } | undefined {
  const trailer = req.headers["x-amz-trailer"];
  if (typeof trailer === "string" && trailer.startsWith("x-amz-checksum-"))
    return { algo: trailer.slice(15).toLowerCase() };
  if (!headers) return undefined;
  for (const [name, value] of Object.entries(req.headers)) {
    if (
      name.startsWith("x-amz-checksum-") &&
      name !== "x-amz-checksum-algorithm" &&
      name !== "x-amz-checksum-type" &&
      typeof value === "string"
    ) {
      return { algo: name.slice(15), value };
    }
  }
  const sdk = req.headers["x-amz-sdk-checksum-algorithm"];
  return typeof sdk === "string" ? { algo: sdk.toLowerCase() } : undefined;
}

/** The decoded body; `result()` after the loop has the MD5 (ETag) and size. */
/** Requests sent with `Expect: 100-continue` whose answer has not said to go on yet. */
const awaitingContinue = new WeakMap<IncomingMessage, ServerResponse>();

/**
 * Defers `100 Continue` until the body is wanted: a request that is refused (signature, ACL) gets its final status
 * instead, and the client never sends the body (s3-tests test_100_continue).
 */
export function expectContinue(req: IncomingMessage, res: ServerResponse): void {
  awaitingContinue.set(req, res);
}

/** Tells a client waiting on `Expect: 100-continue` to send the body (once). */
export function sendContinue(req: IncomingMessage): void {
  const res = awaitingContinue.get(req);
  if (!res) return;
  awaitingContinue.delete(req);
  if (!res.headersSent) res.writeContinue();
}

export function readBody(
  req: IncomingMessage,
  opts: BodyOptions,
): { pieces: AsyncGenerator<Buffer>; result(): BodyResult } {
  const md5 = createHash("md5");
  let size = 0;
  let digest: Buffer | undefined;
  const mode = opts.auth.payload;
  const sum = checksumHeader(req, !opts.objectChecksumHeaders);
  const algorithm = sum ? checksumAlgorithm(sum.algo) : opts.checksum;
  if (opts.checksum && algorithm !== opts.checksum) {
    throw new S3Error(
      "InvalidRequest",
      400,
      `Checksum Type mismatch occurred, expected checksum Type: ${opts.checksum}, actual checksum Type: ${algorithm}`,
    );
  }
  const checksum = algorithm ? new Checksum(algorithm) : undefined;
  let checksumDigest: Buffer | undefined;
  const rawMd5 = req.headers["content-md5"];
  const contentMd5 = Array.isArray(rawMd5) ? rawMd5.join(",") : rawMd5;
  if (contentMd5 !== undefined && !/^[A-Za-z0-9+/]{22}==$/.test(contentMd5))
    throw new S3Error("InvalidDigest", 400, "The Content-MD5 you specified was invalid.");
  const declared = req.headers["x-amz-decoded-content-length"];

  const account = (b: Buffer) => {
    md5.update(b);
    checksum?.update(b);
    size += b.length;
  };
  const finish = (trailerValue?: string) => {
    digest = md5.digest();
    if (contentMd5 !== undefined && !constantTimeEqual(digest, Buffer.from(contentMd5, "base64"))) {
      throw new S3Error("BadDigest", 400, "The Content-MD5 you specified did not match what we received.");
    }
    if (declared !== undefined && Number(declared) !== size) {
      throw new S3Error(
        "IncompleteBody",
        400,
        "You did not provide the number of bytes specified by the Content-Length HTTP header",
      );
    }
    if (checksum) {
      checksumDigest = checksum.digest();
      const trailed = typeof req.headers["x-amz-trailer"] === "string";
      const expected = sum?.value ?? trailerValue;
      if (expected === undefined && trailed)
        throw new S3Error("InvalidRequest", 400, `x-amz-checksum-${checksum.algorithm} trailer is missing`);
      if (expected !== undefined && checksumDigest.toString("base64") !== expected) {
        throw new S3Error(
          "BadDigest",
          400,
          `The ${apiName(checksum.algorithm)} you specified did not match the calculated checksum.`,
        );
      }
    }
  };

  async function* plain(): AsyncGenerator<Buffer> {
    const sha = /^[0-9a-f]{64}$/.test(mode) ? createHash("sha256") : undefined;
    if (!sha && mode !== "UNSIGNED-PAYLOAD")
      throw new S3Error("InvalidArgument", 400, "x-amz-content-sha256 is not valid");
    const length = req.headers["content-length"];
    let got = 0;
    for await (const c of req) {
      const b = c as Buffer;
      sha?.update(b);
      account(b);
      got += b.length;
      yield b;
    }
    if (length !== undefined && Number(length) !== got)
      throw new S3Error(
        "IncompleteBody",
        400,
        "You did not provide the number of bytes specified by the Content-Length HTTP header",
      );
    if (sha && sha.digest("hex") !== mode) {
      throw new S3Error(
        "XAmzContentSHA256Mismatch",
        400,
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
      );
    }
    finish();
  }

  async function* chunked(signed: boolean, trailer: boolean): AsyncGenerator<Buffer> {
    let buf: Buffer = Buffer.alloc(0);
    let previous = opts.auth.signature;
    const it = req[Symbol.asyncIterator]();
    const more = async (): Promise<boolean> => {
      const n = await it.next();
      if (n.done) return false;
      buf = buf.length === 0 ? (n.value as Buffer) : Buffer.concat([buf, n.value as Buffer]);
      return true;
    };
    const line = async (): Promise<string> => {
      for (;;) {
        const at = buf.indexOf("\r\n");
        if (at >= 0) {
          const s = buf.subarray(0, at).toString("latin1");
          buf = buf.subarray(at + 2);
          return s;
        }
        if (buf.length > 4096 || !(await more()))
          throw new S3Error("IncompleteBody", 400, "malformed aws-chunked body");
      }
    };
    for (;;) {
      const head = await line();
      const m = /^([0-9a-fA-F]+)(?:;chunk-signature=([0-9a-f]{64}))?$/.exec(head);
      if (!m) throw new S3Error("IncompleteBody", 400, "malformed aws-chunked chunk header");
      const n = Number.parseInt(m[1] as string, 16);
      if (n > MAX_CHUNK) throw new S3Error("InvalidArgument", 400, "aws-chunked chunk too large");
      if (signed && !m[2]) throw new S3Error("SignatureDoesNotMatch", 403, "chunk signature missing");
      while (buf.length < n + (n > 0 || !trailer ? 2 : 0)) {
        if (!(await more())) throw new S3Error("IncompleteBody", 400, "aws-chunked body ended early");
      }
      const data = Buffer.from(buf.subarray(0, n));
      buf = buf.subarray(n);
      if (signed) {
        const key = opts.key;
        if (!key) throw new S3Error("SignatureDoesNotMatch", 403, "no signing key");
        const expect = createHmac("sha256", key)
          .update(chunkStringToSign(opts.auth, previous, sha256hex(data)))
          .digest("hex");
        if (!constantTimeEqual(Buffer.from(expect), Buffer.from(m[2] as string))) {
          throw new S3Error(
            "SignatureDoesNotMatch",
            403,
            "The request signature we calculated does not match the signature you provided.",
          );
        }
        previous = m[2] as string;
      }
      if (n === 0) break;
      if (buf.subarray(0, 2).toString("latin1") !== "\r\n")
        throw new S3Error("IncompleteBody", 400, "malformed aws-chunked chunk");
      buf = buf.subarray(2);
      account(data);
      yield data;
    }
    let trailerValue: string | undefined;
    if (trailer) {
      for (;;) {
        const l = await line().catch(() => "");
        if (l === "") break;
        const colon = l.indexOf(":");
        const name = l.slice(0, colon).trim().toLowerCase();
        if (name.startsWith("x-amz-checksum-")) trailerValue = l.slice(colon + 1).trim();
      }
    } else {
      await line().catch(() => "");
    }
    finish(trailerValue);
  }

  async function* continued(inner: AsyncGenerator<Buffer>): AsyncGenerator<Buffer> {
    sendContinue(req);
    yield* inner;
  }

  const pieces = continued(
    mode === "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
      ? chunked(true, false)
      : mode === "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
        ? chunked(false, true)
        : mode === "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
          ? chunked(true, true)
          : plain(),
  );
  return {
    pieces,
    result: () => {
      if (!digest) throw new Error("body not read to the end");
      return {
        md5: digest,
        size,
        ...(checksum && checksumDigest ? { checksum: { algorithm: checksum.algorithm, digest: checksumDigest } } : {}),
      };
    },
  };
}
