// Blobs in an S3-compatible object store (`--blobs s3://bucket/prefix`): one object per blob, `<prefix><id>`, the id
// random as on disk, so neither names nor the tree show in the bucket. Several server nodes share one bucket.
// - Writes stream: bytes are buffered up to one part (`partSize`, default 8 MiB) and sent as a multipart upload part
//   while the next part fills (at most two parts in memory per upload); a blob smaller than one part is a single
//   PutObject. Nothing is visible under the id before commit (CompleteMultipartUpload / PutObject).
// - Resume (`create(copyFrom)`) copies the kept prefix inside the store (UploadPartCopy) where the server offers it,
//   so the uploaded bytes are not sent again; elsewhere (or for a prefix under 5 MiB, S3's minimum part) the prefix is
//   read back with ranged GETs and re-sent.
// - Reads are ranged GETs of `readAhead` bytes (default 4 MiB) with the next window fetched while the current one is
//   consumed: a sequential download keeps one request in flight.
// - No in-place header access (`heads()`): objects cannot be patched, so `keys rewrap` falls back to re-encryption
//   (a new object per file) on this backend.
// - sweep(): aborts multipart uploads started over `staleMs` ago (default 24 h: another node's upload may still be
//   running) and deletes objects no node references that are older than that too (a blob another node committed a
//   moment ago has its metadata commit still to come).
import { randomBytes } from "node:crypto";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
  UploadPartCommand,
  UploadPartCopyCommand,
} from "@aws-sdk/client-s3";
import { AtrestError, NotFoundError } from "../errors.ts";
import type { BlobReader, BlobStore, BlobWriter } from "./blobs.ts";

const ID = /^[0-9a-f]{32}$/;
/** S3's smallest part (all but the last). */
const MIN_PART = 5 * 1024 * 1024;

export interface S3BlobOptions {
  /** `s3://bucket/prefix`. */
  url: string;
  /** e.g. http://127.0.0.1:9000 for MinIO or a test server; default AWS. */
  endpoint?: string | undefined;
  region?: string | undefined;
  /** Default: the SDK's chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profiles, instance roles). */
  credentials?: { accessKeyId: string; secretAccessKey: string } | undefined;
  /** Path-style requests (`endpoint/bucket/key`), which most S3-compatible servers want; default true with an endpoint. */
  forcePathStyle?: boolean | undefined;
  partSize?: number;
  readAhead?: number;
  staleMs?: number;
}

/** `s3://bucket/prefix` → bucket and key prefix (ending in `/` unless empty). */
export function parseS3Url(url: string): { bucket: string; prefix: string } {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(url);
  if (!m) throw new AtrestError("INVALID_INPUT", "blob store: expected s3://bucket/prefix");
  let prefix = m[2] ?? "";
  if (prefix && !prefix.endsWith("/")) prefix += "/";
  return { bucket: m[1] as string, prefix };
}

function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
}

function notImplemented(err: unknown): boolean {
  const name = (err as { name?: string }).name;
  return name === "NotImplemented" || statusOf(err) === 501;
}

function missing(err: unknown): boolean {
  const name = (err as { name?: string }).name;
  return name === "NoSuchKey" || name === "NotFound" || statusOf(err) === 404;
}

export class S3BlobStore implements BlobStore {
  readonly client: S3Client;
  readonly bucket: string;
  readonly prefix: string;
  readonly partSize: number;
  readonly readAhead: number;
  readonly staleMs: number;
  /** The server refused UploadPartCopy once: resume re-sends the prefix from then on. */
  #noPartCopy = false;

  constructor(o: S3BlobOptions) {
    const { bucket, prefix } = parseS3Url(o.url);
    this.bucket = bucket;
    this.prefix = prefix;
    this.partSize = Math.max(MIN_PART, o.partSize ?? 8 * 1024 * 1024);
    this.readAhead = o.readAhead ?? 4 * 1024 * 1024;
    this.staleMs = o.staleMs ?? 24 * 3_600_000;
    const config: S3ClientConfig = {
      region: o.region ?? process.env.AWS_REGION ?? "us-east-1",
      forcePathStyle: o.forcePathStyle ?? o.endpoint !== undefined,
      // checksums only where the server asks for them: several S3-compatible servers refuse the trailers
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      // a request the server never answers fails (and the upload with it) instead of holding a session forever
      requestHandler: { connectionTimeout: 10_000, requestTimeout: 120_000 },
    };
    if (o.endpoint) config.endpoint = o.endpoint;
    if (o.credentials) config.credentials = o.credentials;
    this.client = new S3Client(config);
  }

  key(id: string): string {
    if (!ID.test(id)) throw new NotFoundError(`blob ${id}`);
    return `${this.prefix}${id}`;
  }

  async ping(): Promise<void> {
    await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
  }

  async init(): Promise<void> {
    // fails early (and clearly) when the bucket is not there or the credentials do not reach it
    try {
      await this.ping();
    } catch (err) {
      throw new AtrestError(
        "INVALID_INPUT",
        `blob store s3://${this.bucket}/${this.prefix} unreachable: ${(err as Error).name}`,
        { cause: err },
      );
    }
  }

  async create(copyFrom?: { id: string; length: number }): Promise<BlobWriter> {
    const id = randomBytes(16).toString("hex");
    const w = new S3Writer(this, id, this.key(id));
    if (copyFrom && copyFrom.length > 0) await w.copyPrefix(this.key(copyFrom.id), copyFrom.length);
    return w;
  }

  /** UploadPartCopy unless the server lacks it (remembered). */
  async partCopy(uploadId: string, key: string, source: string, length: number): Promise<string | undefined> {
    if (this.#noPartCopy) return undefined;
    try {
      const r = await this.client.send(
        new UploadPartCopyCommand({
          Bucket: this.bucket,
          Key: key,
          UploadId: uploadId,
          PartNumber: 1,
          CopySource: `${this.bucket}/${source}`,
          CopySourceRange: `bytes=0-${length - 1}`,
        }),
      );
      return r.CopyPartResult?.ETag;
    } catch (err) {
      if (!notImplemented(err)) throw err;
      this.#noPartCopy = true;
      return undefined;
    }
  }

  async open(id: string): Promise<BlobReader> {
    const key = this.key(id);
    let size: number;
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      size = Number(head.ContentLength ?? 0);
    } catch (err) {
      if (missing(err)) throw new NotFoundError(`blob ${id}`);
      throw err;
    }
    return new S3Reader(this, key, size);
  }

  /** Bytes [start, end) of an object. */
  async range(key: string, start: number, end: number): Promise<Buffer> {
    if (end <= start) return Buffer.alloc(0);
    const r = await this.client.send(
      new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: `bytes=${start}-${end - 1}` }),
    );
    const body = r.Body as AsyncIterable<Uint8Array> | undefined;
    const chunks: Buffer[] = [];
    if (body) for await (const c of body) chunks.push(Buffer.from(c));
    return Buffer.concat(chunks);
  }

  async remove(id: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.key(id) }));
  }

  async sweep(keep: Set<string>): Promise<{ temp: number; orphans: number }> {
    const before = Date.now() - this.staleMs;
    let temp = 0;
    try {
      let keyMarker: string | undefined;
      let uploadIdMarker: string | undefined;
      for (;;) {
        const r = await this.client.send(
          new ListMultipartUploadsCommand({
            Bucket: this.bucket,
            Prefix: this.prefix,
            KeyMarker: keyMarker,
            UploadIdMarker: uploadIdMarker,
          }),
        );
        for (const u of r.Uploads ?? []) {
          if (!u.Key || !u.UploadId || (u.Initiated?.getTime() ?? 0) > before) continue;
          await this.client.send(
            new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: u.Key, UploadId: u.UploadId }),
          );
          temp++;
        }
        if (!r.IsTruncated) break;
        keyMarker = r.NextKeyMarker;
        uploadIdMarker = r.NextUploadIdMarker;
      }
    } catch (err) {
      // a server without ListMultipartUploads keeps its own expiry of abandoned uploads
      if (!notImplemented(err)) throw err;
    }
    let orphans = 0;
    let token: string | undefined;
    for (;;) {
      const r = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix, ContinuationToken: token }),
      );
      for (const o of r.Contents ?? []) {
        const id = o.Key?.slice(this.prefix.length) ?? "";
        if (!ID.test(id) || keep.has(id) || (o.LastModified?.getTime() ?? 0) > before) continue;
        await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: o.Key }));
        orphans++;
      }
      if (!r.IsTruncated) break;
      token = r.NextContinuationToken;
    }
    return { temp, orphans };
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}

class S3Writer implements BlobWriter {
  readonly id: string;
  length = 0;
  readonly #s: S3BlobStore;
  readonly #key: string;
  /** The part being filled (`#filled` bytes of it). */
  #part: Buffer | undefined;
  #filled = 0;
  #uploadId: string | undefined;
  readonly #parts: { PartNumber: number; ETag: string }[] = [];
  #inFlight: Promise<void> | undefined;
  #failed: unknown;
  #done = false;

  constructor(s: S3BlobStore, id: string, key: string) {
    this.#s = s;
    this.id = id;
    this.#key = key;
  }

  async #start(): Promise<string> {
    if (!this.#uploadId) {
      const r = await this.#s.client.send(new CreateMultipartUploadCommand({ Bucket: this.#s.bucket, Key: this.#key }));
      if (!r.UploadId) throw new Error("blob store: CreateMultipartUpload returned no upload id");
      this.#uploadId = r.UploadId;
    }
    return this.#uploadId;
  }

  /** The first `length` bytes of `source` as this blob's start (resume). */
  async copyPrefix(source: string, length: number): Promise<void> {
    if (length >= MIN_PART) {
      const uploadId = await this.#start();
      const etag = await this.#s.partCopy(uploadId, this.#key, source, length);
      if (etag) {
        this.#parts.push({ PartNumber: 1, ETag: etag });
        this.length = length;
        return;
      }
    }
    // read back and re-send, one part at a time (memory stays at two parts)
    for (let at = 0; at < length; ) {
      const end = Math.min(length, at + this.#s.partSize);
      await this.write([await this.#s.range(source, at, end)]);
      at = end;
    }
  }

  async write(chunks: Buffer[]): Promise<void> {
    if (this.#failed) throw this.#failed;
    // copied into the part buffer: the caller reuses (or transfers) its buffers once write() resolves
    for (const c of chunks) {
      let at = 0;
      while (at < c.length) {
        this.#part ??= Buffer.allocUnsafe(this.#s.partSize);
        const n = c.copy(this.#part, this.#filled, at);
        this.#filled += n;
        at += n;
        this.length += n;
        if (this.#filled === this.#part.length) await this.#flush();
      }
    }
  }

  /** Sends the buffered bytes as the next part, after the part in flight (at most two parts in memory). */
  async #flush(): Promise<void> {
    const body = (this.#part ?? Buffer.alloc(0)).subarray(0, this.#filled);
    this.#part = undefined;
    this.#filled = 0;
    await this.#inFlight;
    if (this.#failed) throw this.#failed;
    const uploadId = await this.#start();
    const number = this.#parts.length + 1;
    this.#parts.push({ PartNumber: number, ETag: "" });
    this.#inFlight = this.#s.client
      .send(
        new UploadPartCommand({
          Bucket: this.#s.bucket,
          Key: this.#key,
          UploadId: uploadId,
          PartNumber: number,
          Body: body,
          ContentLength: body.length,
        }),
      )
      .then((r) => {
        const part = this.#parts[number - 1];
        if (part) part.ETag = r.ETag ?? "";
      })
      .catch((err: unknown) => {
        this.#failed = err;
      });
  }

  async commit(): Promise<void> {
    if (this.#failed) throw this.#failed;
    if (!this.#uploadId) {
      // smaller than one part: one PutObject
      const body = (this.#part ?? Buffer.alloc(0)).subarray(0, this.#filled);
      await this.#s.client.send(
        new PutObjectCommand({ Bucket: this.#s.bucket, Key: this.#key, Body: body, ContentLength: body.length }),
      );
    } else {
      if (this.#filled > 0 || this.#parts.length === 0) await this.#flush();
      await this.#inFlight;
      if (this.#failed) throw this.#failed;
      await this.#s.client.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.#s.bucket,
          Key: this.#key,
          UploadId: this.#uploadId,
          MultipartUpload: { Parts: this.#parts },
        }),
      );
    }
    this.#done = true;
    this.#part = undefined;
  }

  async abort(): Promise<void> {
    this.#part = undefined;
    this.#filled = 0;
    await this.#inFlight;
    if (this.#uploadId && !this.#done) {
      await this.#s.client
        .send(new AbortMultipartUploadCommand({ Bucket: this.#s.bucket, Key: this.#key, UploadId: this.#uploadId }))
        .catch(() => undefined);
    }
    this.#done = true;
  }
}

class S3Reader implements BlobReader {
  readonly size: number;
  readonly #s: S3BlobStore;
  readonly #key: string;
  /** The window held: bytes [start, start + data.length). */
  #window: { start: number; data: Promise<Buffer> } | undefined;
  #next: { start: number; data: Promise<Buffer> } | undefined;

  constructor(s: S3BlobStore, key: string, size: number) {
    this.#s = s;
    this.#key = key;
    this.size = size;
  }

  #fetch(start: number): { start: number; data: Promise<Buffer> } {
    const data = this.#s.range(this.#key, start, Math.min(this.size, start + this.#s.readAhead));
    data.catch(() => undefined);
    return { start, data };
  }

  /** The window holding `position`, with the following one requested behind it. */
  async #windowAt(position: number): Promise<{ start: number; data: Buffer }> {
    const step = this.#s.readAhead;
    const start = Math.floor(position / step) * step;
    if (this.#window?.start !== start) {
      this.#window = this.#next?.start === start ? this.#next : this.#fetch(start);
      this.#next = start + step < this.size ? this.#fetch(start + step) : undefined;
    }
    return { start, data: await this.#window.data };
  }

  async readInto(position: number, buffer: Buffer): Promise<number> {
    let done = 0;
    while (done < buffer.length && position + done < this.size) {
      const w = await this.#windowAt(position + done);
      const from = position + done - w.start;
      const n = w.data.copy(buffer, done, from, Math.min(w.data.length, from + buffer.length - done));
      if (n === 0) break;
      done += n;
    }
    return done;
  }

  async read(position: number, length: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(Math.max(0, Math.min(length, this.size - position)));
    const n = await this.readInto(position, out);
    return n === out.length ? out : out.subarray(0, n);
  }

  async close(): Promise<void> {
    this.#window = undefined;
    this.#next = undefined;
  }
}
