// Object metadata the S3 door keeps with a version (sealed with its attributes by the vfs, never in clear in meta.db):
// Content-Type, Content-Disposition, Content-Encoding, Content-Language, Cache-Control, Expires and x-amz-meta-*, and
// the ETag (MD5 of the plaintext, or the multipart form). GET and HEAD answer them; response-* query parameters
// override them for one response, as in S3.
import type { IncomingMessage } from "node:http";
import type { FileStat, ObjectMeta } from "../../vfs/types.ts";
import { S3Error } from "./errors.ts";

const STORED = [
  "content-type",
  "content-disposition",
  "content-encoding",
  "content-language",
  "cache-control",
  "expires",
] as const;

/** S3's limit on user metadata: names and values of x-amz-meta-* together. */
export const MAX_USER_METADATA = 2048;

/** The metadata headers of a PutObject / CreateMultipartUpload / CopyObject (REPLACE) request. */
export function metadataOf(req: Pick<IncomingMessage, "headers">): Record<string, string> {
  const out: Record<string, string> = {};
  let user = 0;
  for (const [name, raw] of Object.entries(req.headers)) {
    if (raw === undefined) continue;
    const value = Array.isArray(raw) ? raw.join(",") : raw;
    if (name.startsWith("x-amz-meta-")) {
      user += name.length - 11 + Buffer.byteLength(value);
      out[name] = value;
    } else if ((STORED as readonly string[]).includes(name)) {
      if (name === "content-encoding") {
        // aws-chunked is how the body travelled, not how the object is encoded
        const kept = value
          .split(",")
          .map((v) => v.trim())
          .filter((v) => v && v.toLowerCase() !== "aws-chunked")
          .join(", ");
        if (kept) out[name] = kept;
      } else out[name] = value;
    }
  }
  if (user > MAX_USER_METADATA) {
    throw new S3Error(
      "MetadataTooLarge",
      400,
      `Your metadata headers exceed the maximum allowed metadata size of ${MAX_USER_METADATA} bytes.`,
    );
  }
  return out;
}

/** What to store with a version written from `headers`, with its ETag (unquoted) and checksum. */
export function objectMeta(
  etag: string,
  headers: Record<string, string>,
  checksum?: ObjectMeta["checksum"],
  tags?: ObjectMeta["tags"],
  acl?: ObjectMeta["acl"],
): ObjectMeta {
  return {
    ...(acl && acl.length > 0 ? { acl } : {}),
    etag,
    ...(Object.keys(headers).length > 0 ? { headers } : {}),
    ...(checksum ? { checksum } : {}),
    ...(tags && tags.length > 0 ? { tags } : {}),
  };
}

/** The version's x-amz-checksum-<algorithm> and x-amz-checksum-type headers (GET/HEAD with x-amz-checksum-mode). */
export function checksumHeaders(object: ObjectMeta | undefined): Record<string, string> {
  const c = object?.checksum;
  return c ? { [`x-amz-checksum-${c.algorithm}`]: c.value, "x-amz-checksum-type": c.type } : {};
}

/** ETag of an object as S3 answers it (quoted): the stored one, else a stable tag of version size and time. */
export function etagOf(st: FileStat): string {
  if (st.object?.etag) return `"${st.object.etag}"`;
  return `"${st.size.toString(16)}-${Math.floor(st.mtime).toString(16)}"`;
}

const OVERRIDES: Record<string, string> = {
  "response-content-type": "content-type",
  "response-content-language": "content-language",
  "response-expires": "expires",
  "response-cache-control": "cache-control",
  "response-content-disposition": "content-disposition",
  "response-content-encoding": "content-encoding",
};

/** The stored headers of a GET/HEAD answer, with the request's response-* overrides. */
export function responseMetadata(st: FileStat, query: Map<string, string>): Record<string, string> {
  const out: Record<string, string> = { "content-type": "binary/octet-stream", ...(st.object?.headers ?? {}) };
  for (const [param, header] of Object.entries(OVERRIDES)) {
    const v = query.get(param);
    if (v !== undefined) out[header] = v;
  }
  return out;
}
