// The per-request context of the S3 door and the small helpers every operation shares (responses, errors, paths).
import type { IncomingMessage, ServerResponse } from "node:http";
import { AtrestError } from "../../errors.ts";
import type { Logger } from "../../logger.ts";
import type { S3Buckets } from "../../service/s3-buckets.ts";
import type { VfsSession } from "../../vfs/types.ts";
import { readBody } from "./body.ts";
import { noSuchBucket, S3Error, toS3Error } from "./errors.ts";
import type { ParsedAuth } from "./sigv4.ts";
import { xmlDoc } from "./xml.ts";

export interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  session: VfsSession;
  bucket: string;
  key: string;
  query: Map<string, string>;
  auth: ParsedAuth;
  signingKey: Buffer | undefined;
  requestId: string;
  /** The region this endpoint is (GetBucketLocation, CreateBucket's LocationConstraint). */
  region: string;
  /** Over TLS (SSE-C needs it). */
  secure: boolean;
  /** SSE-C key of this request, decoded; zeroed when the request ends. */
  customerKey?: CustomerKey;
  logger: Logger;
  /** CopyObject / UploadPartCopy: the SSE-C key of the copy source (x-amz-copy-source-server-side-encryption-customer-*). */
  copySourceKey?: CustomerKey;
  /** Who asks: the signing key's user, or `anonymous` for an unsigned request. */
  requester: string;
  /**
   * The bucket's owner in the global namespace (undefined: no such bucket, or no bucket named). `session` is the
   * owner's, on the requester's behalf, when they differ (what the bucket's and objects' ACLs let in).
   */
  owner: string | undefined;
  buckets?: S3Buckets;
  /** Public grants (AllUsers, AuthenticatedUsers) may be set and count (--s3-public-access allow). */
  publicAcls: boolean;
  /**
   * A session of `owner`'s tree on the requester's behalf (the requester's own for themselves), closed when the
   * request ends: a copy source in another bucket than the one the request is placed in.
   */
  openAs?: (owner: string) => Promise<VfsSession>;
}

export interface CustomerKey {
  key: Buffer;
  /** base64 MD5 of the key, as the client sent it (echoed). */
  md5: string;
}

export function send(res: ServerResponse, status: number, body?: string, headers: Record<string, string> = {}): void {
  const h: Record<string, string | number> = { ...headers };
  if (body !== undefined) {
    h["content-type"] = "application/xml";
    h["content-length"] = Buffer.byteLength(body);
  } else if (h["content-length"] === undefined) h["content-length"] = 0;
  res.writeHead(status, h);
  res.end(body);
}

export function sendError(
  res: ServerResponse,
  err: unknown,
  resource: string,
  requestId: string,
  logger: Logger,
): void {
  const f = toS3Error(err);
  // a client that left mid-response (its socket is gone) is not a server fault: no error-level record for it
  if (f.internal && res.destroyed) logger.info({ requestId, reason: (err as Error)?.message }, "s3: client went away");
  else if (f.internal) logger.error({ err, requestId }, "s3: internal error");
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = xmlDoc("Error", { Code: f.code, Message: f.message, Resource: resource, RequestId: requestId }).replace(
    ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"',
    "",
  );
  send(res, f.status, res.req?.method === "HEAD" ? undefined : body, { ...f.headers, "x-amz-request-id": requestId });
}

/** A control character (C0, DEL, C1): refused in keys, as Ceph RGW refuses them. */
export function hasControl(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || (c >= 0x7f && c <= 0x9f)) return true;
  }
  return false;
}

export const iso = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, ".000Z");
export const httpDate = (ms: number) => new Date(ms).toUTCString();

export function objectPath(bucket: string, key: string): string {
  return `/${bucket}/${key}`;
}

export async function bucketExists(s: VfsSession, bucket: string): Promise<void> {
  try {
    const st = await s.stat(`/${bucket}`);
    if (st.kind !== "dir") throw noSuchBucket();
  } catch (err) {
    if (err instanceof AtrestError && err.code === "NOT_FOUND") throw noSuchBucket();
    throw err;
  }
}

export async function mkdirs(s: VfsSession, dir: string): Promise<void> {
  const parts = dir.split("/").filter(Boolean);
  let p = "";
  for (const part of parts) {
    p += `/${part}`;
    try {
      await s.mkdir(p);
    } catch (err) {
      if (!(err instanceof AtrestError && err.code === "EXISTS")) throw err;
    }
  }
}

/** A small request body (XML) as text; `objectChecksumHeaders` as in BodyOptions. */
export async function readSmallBody(c: Ctx, limit = 64 * 1024, objectChecksumHeaders = false): Promise<string> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const piece of readBody(c.req, { auth: c.auth, key: c.signingKey, objectChecksumHeaders }).pieces) {
    total += piece.length;
    if (total > limit) throw new S3Error("MalformedXML", 400, "request body too large");
    chunks.push(piece);
  }
  return Buffer.concat(chunks).toString("utf8");
}

export function notImplemented(): never {
  throw new S3Error(
    "NotImplemented",
    501,
    "A header or query you provided implies functionality that is not implemented.",
  );
}
