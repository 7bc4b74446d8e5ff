// Multipart uploads: CreateMultipartUpload (POST ?uploads), UploadPart (PUT ?partNumber&uploadId), UploadPartCopy
// (the same with x-amz-copy-source, optionally x-amz-copy-source-range), CompleteMultipartUpload (POST ?uploadId),
// AbortMultipartUpload (DELETE ?uploadId), ListParts (GET ?uploadId), ListMultipartUploads (GET bucket?uploads).
// Parts are staged by the vfs as encrypted blobs (src/vfs/multipart.ts); Complete checks the part list as S3 does
// (InvalidPart, InvalidPartOrder, EntityTooSmall) and has the vfs stream the parts into one normal new version, whose
// ETag is S3's multipart ETag: MD5 of the concatenated binary part MD5s, "-", the number of parts.
import { createHash } from "node:crypto";
import { AtrestError } from "../../errors.ts";
import type {
  FileStat,
  MultipartChecksum,
  MultipartUploadInfo,
  ObjectMeta,
  PartHandle,
  WriteHandle,
} from "../../vfs/types.ts";
import { newVersionId } from "../../vfs/versions.ts";
import { readBody } from "./body.ts";
import {
  apiName,
  Checksum,
  type ChecksumAlgorithm,
  checksumAlgorithm,
  checkType,
  multipartChecksum,
} from "./checksum.ts";
import { bucketExists, type Ctx, iso, mkdirs, notImplemented, objectPath, readSmallBody, send } from "./context.ts";
import { copySource, pump, sourceRead } from "./copy.ts";
import { S3Error, toS3Error } from "./errors.ts";
import { aclToKeep, requestedAcl } from "./grants.ts";
import { metadataOf } from "./metadata.ts";
import { writePlan, writePrecondition } from "./objects.ts";
import { SSE_C } from "./sse.ts";
import { taggingHeader } from "./tagging.ts";
import { xmlDoc, xmlTexts } from "./xml.ts";

/** S3's smallest part (all but the last). */
export const MIN_PART_SIZE = 5 * 1024 * 1024;
const MAX_PART_SIZE = 5 * 1024 * 1024 * 1024;

const noSuchUpload = () =>
  new S3Error(
    "NoSuchUpload",
    404,
    "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
  );

/** A vfs call about one upload: NOT_FOUND there means the upload (not the key) does not exist. */
async function onUpload<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof AtrestError && err.code === "NOT_FOUND") throw noSuchUpload();
    throw err;
  }
}

function sessionMultipart(c: Ctx) {
  const s = c.session;
  if (
    !s.createMultipart ||
    !s.uploadPart ||
    !s.listParts ||
    !s.listMultipart ||
    !s.abortMultipart ||
    !s.completeMultipart
  ) {
    notImplemented();
  }
  return s as Required<
    Pick<
      typeof s,
      "createMultipart" | "uploadPart" | "listParts" | "listMultipart" | "abortMultipart" | "completeMultipart"
    >
  > &
    typeof s;
}

/** SSE headers of a multipart response: the request's SSE-C key, the upload's named key, or SSE-S3. */
function uploadSse(c: Ctx, upload: { customerKey: boolean }, kmsKey?: string): Record<string, string> {
  if (upload.customerKey && c.customerKey) {
    return { [`${SSE_C}algorithm`]: "AES256", [`${SSE_C}key-MD5`]: c.customerKey.md5 };
  }
  if (kmsKey)
    return { "x-amz-server-side-encryption": "aws:kms", "x-amz-server-side-encryption-aws-kms-key-id": kmsKey };
  return { "x-amz-server-side-encryption": "AES256" };
}

/** x-amz-checksum-algorithm / -type of an upload created with a checksum (Create's answer). */
function checksumChoice(upload: MultipartUploadInfo): Record<string, string> {
  const k = upload.checksum;
  return k
    ? { "x-amz-checksum-algorithm": apiName(k.algorithm as ChecksumAlgorithm), "x-amz-checksum-type": k.type }
    : {};
}

/** A part's checksum as the answers and listings give it: ChecksumCRC32 etc. */
function partChecksumXml(upload: MultipartUploadInfo, value: string | undefined): Record<string, string> {
  const k = upload.checksum;
  return k && value ? { [`Checksum${apiName(k.algorithm as ChecksumAlgorithm)}`]: value } : {};
}

export async function createMultipartUpload(c: Ctx): Promise<void> {
  const s = sessionMultipart(c);
  await bucketExists(c.session, c.bucket);
  if (c.key.endsWith("/"))
    throw new S3Error("InvalidArgument", 400, "a key ending in / names a folder and holds no data");
  const plan = await writePlan(c);
  // the object's tags, kept (sealed) with the upload and given to the object at Complete
  const tags = taggingHeader(c.req);
  // the object's ACL, kept (sealed) with the upload and given to the object at Complete, as a PutObject sets it
  const acl = aclToKeep(requestedAcl(c, c.session.username), c.session.username);
  const headers = metadataOf(c.req);
  const algo = c.req.headers["x-amz-checksum-algorithm"];
  const type = c.req.headers["x-amz-checksum-type"];
  let checksum: MultipartChecksum | undefined;
  if (typeof algo === "string") {
    const algorithm = checksumAlgorithm(algo);
    checksum = { algorithm, type: checkType(algorithm, typeof type === "string" ? type : undefined) };
  } else if (type !== undefined) {
    throw new S3Error("InvalidRequest", 400, "x-amz-checksum-type needs x-amz-checksum-algorithm.");
  }
  for await (const _ of readBody(c.req, { auth: c.auth, key: c.signingKey }).pieces) {
    // no body
  }
  const upload = await s.createMultipart(objectPath(c.bucket, c.key), {
    ...plan,
    headers,
    checksum,
    ...(tags ? { tags } : {}),
    ...(acl ? { acl } : {}),
  });
  send(c.res, 200, xmlDoc("InitiateMultipartUploadResult", { Bucket: c.bucket, Key: c.key, UploadId: upload.id }), {
    ...uploadSse(c, upload, plan.key),
    ...checksumChoice(upload),
  });
}

function partNumberOf(c: Ctx): number {
  const raw = c.query.get("partNumber") ?? "";
  const n = /^\d{1,5}$/.test(raw) ? Number(raw) : Number.NaN;
  if (!(n >= 1 && n <= 10_000)) {
    throw new S3Error("InvalidArgument", 400, "Part number must be an integer between 1 and 10000, inclusive");
  }
  return n;
}

/** A PartHandle as the copy pump's WriteHandle (sequential appends only). */
function asWriteHandle(part: PartHandle): WriteHandle {
  return {
    get size() {
      return part.size;
    },
    write: (_offset, data) => part.write(data),
    close: () => Promise.reject(new Error("not used")),
    abort: () => part.abort(),
  };
}

export async function uploadPart(c: Ctx): Promise<void> {
  const s = sessionMultipart(c);
  await bucketExists(c.session, c.bucket);
  const n = partNumberOf(c);
  const id = c.query.get("uploadId") as string;
  const path = objectPath(c.bucket, c.key);
  const copying = c.req.headers["x-amz-copy-source"] !== undefined;
  const src = copying ? await copySource(c) : undefined;
  let range: { start: number; end: number } | undefined;
  if (src) {
    const size = src.stat.size;
    const h = c.req.headers["x-amz-copy-source-range"];
    if (typeof h === "string") {
      const m = /^bytes=(\d+)-(\d+)$/.exec(h.trim());
      if (!m)
        throw new S3Error(
          "InvalidArgument",
          400,
          "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy",
        );
      const start = Number(m[1]);
      const end = Number(m[2]);
      if (start > end || end >= size) throw new S3Error("InvalidRange", 416, "The requested range is not satisfiable");
      range = { start, end };
    } else range = { start: 0, end: size - 1 };
    if (range.end - range.start + 1 > MAX_PART_SIZE)
      throw new S3Error("EntityTooLarge", 400, "Your proposed upload exceeds the maximum allowed object size.");
  }
  const part = await onUpload(() => s.uploadPart(path, id, n, c.customerKey?.key));
  let etag: string;
  const algorithm = part.upload.checksum?.algorithm as ChecksumAlgorithm | undefined;
  if (src && range) {
    c.req.resume();
    const md5 = createHash("md5");
    const sum = algorithm ? new Checksum(algorithm) : undefined;
    try {
      const r = await src.session.openRead(src.path, sourceRead(src));
      try {
        await pump(r, asWriteHandle(part), range.start, range.end, md5, sum);
      } finally {
        await r.close();
      }
    } catch (err) {
      await part.abort();
      throw err;
    }
    etag = md5.digest("hex");
    const value = sum?.digest().toString("base64");
    const done = await onUpload(() => part.close(etag, value));
    send(
      c.res,
      200,
      xmlDoc("CopyPartResult", {
        LastModified: iso(done.mtime),
        ETag: `"${etag}"`,
        ...partChecksumXml(part.upload, value),
      }),
      uploadSse(c, part.upload, part.upload.requestedKey),
    );
    return;
  }
  const body = readBody(c.req, { auth: c.auth, key: c.signingKey, checksum: algorithm });
  try {
    for await (const piece of body.pieces) {
      if (part.size + piece.length > MAX_PART_SIZE)
        throw new S3Error("EntityTooLarge", 400, "Your proposed upload exceeds the maximum allowed object size.");
      await part.write(piece);
    }
  } catch (err) {
    await part.abort();
    throw err;
  }
  const result = body.result();
  etag = result.md5.toString("hex");
  // the part's checksum: of the upload's algorithm, or the one the client sent (checked, answered, not kept)
  const value = result.checksum?.digest.toString("base64");
  await onUpload(() => part.close(etag, algorithm ? value : undefined));
  send(c.res, 200, undefined, {
    etag: `"${etag}"`,
    ...uploadSse(c, part.upload, part.upload.requestedKey),
    ...(result.checksum && value ? { [`x-amz-checksum-${result.checksum.algorithm}`]: value } : {}),
  });
}

export async function abortMultipartUpload(c: Ctx): Promise<void> {
  const s = sessionMultipart(c);
  await bucketExists(c.session, c.bucket);
  await onUpload(() => s.abortMultipart(objectPath(c.bucket, c.key), c.query.get("uploadId") as string));
  send(c.res, 204);
}

export async function listParts(c: Ctx): Promise<void> {
  const s = sessionMultipart(c);
  await bucketExists(c.session, c.bucket);
  const id = c.query.get("uploadId") as string;
  const { upload, parts } = await onUpload(() => s.listParts(objectPath(c.bucket, c.key), id));
  const marker = Number(c.query.get("part-number-marker") ?? 0) || 0;
  const maxParts = Math.min(Number(c.query.get("max-parts") ?? 1000), 1000);
  if (!Number.isInteger(maxParts) || maxParts < 0)
    throw new S3Error("InvalidArgument", 400, "max-parts must be a non-negative integer");
  const after = parts.filter((p) => p.partNumber > marker);
  const page = after.slice(0, maxParts);
  const truncated = after.length > page.length;
  const who = upload.initiator ?? c.session.username;
  const owner = { ID: who, DisplayName: who };
  send(
    c.res,
    200,
    xmlDoc("ListPartsResult", {
      Bucket: c.bucket,
      Key: c.key,
      UploadId: id,
      Initiator: owner,
      Owner: owner,
      StorageClass: "STANDARD",
      PartNumberMarker: marker,
      NextPartNumberMarker: page.at(-1)?.partNumber ?? marker,
      MaxParts: maxParts,
      IsTruncated: truncated,
      Part: page.map((p) => ({
        PartNumber: p.partNumber,
        LastModified: iso(p.mtime),
        ETag: `"${p.etag}"`,
        Size: p.size,
        ...partChecksumXml(upload, p.checksum),
      })),
    }),
  );
}

export async function listMultipartUploads(c: Ctx): Promise<void> {
  const s = sessionMultipart(c);
  await bucketExists(c.session, c.bucket);
  const q = c.query;
  const prefix = q.get("prefix") ?? "";
  const delimiter = q.get("delimiter") ?? "";
  const keyMarker = q.get("key-marker") ?? "";
  const idMarker = q.get("upload-id-marker") ?? "";
  const maxUploads = Math.min(Number(q.get("max-uploads") ?? 1000), 1000);
  if (!Number.isInteger(maxUploads) || maxUploads < 0)
    throw new S3Error("InvalidArgument", 400, "max-uploads must be a non-negative integer");
  const base = `/${c.bucket}/`;
  const all = (await s.listMultipart(`/${c.bucket}`))
    .map((u) => ({ ...u, key: u.path.slice(base.length) }))
    .filter((u) => u.key.startsWith(prefix))
    .sort((a, b) => Buffer.compare(Buffer.from(a.key), Buffer.from(b.key)) || a.initiated - b.initiated);
  const uploads: (MultipartUploadInfo & { key: string })[] = [];
  const prefixes: string[] = [];
  let truncated = false;
  for (const u of all) {
    const cmp = Buffer.compare(Buffer.from(u.key), Buffer.from(keyMarker));
    if (keyMarker && (cmp < 0 || (cmp === 0 && (!idMarker || u.id <= idMarker)))) continue;
    let cp: string | undefined;
    if (delimiter) {
      const at = u.key.indexOf(delimiter, prefix.length);
      if (at >= 0) cp = u.key.slice(0, at + delimiter.length);
    }
    if (cp !== undefined && prefixes.at(-1) === cp) continue;
    if (uploads.length + prefixes.length >= maxUploads) {
      truncated = true;
      break;
    }
    if (cp !== undefined) prefixes.push(cp);
    else uploads.push(u);
  }
  const who = (u: MultipartUploadInfo) => ({
    ID: u.initiator ?? c.session.username,
    DisplayName: u.initiator ?? c.session.username,
  });
  const last = uploads.at(-1);
  send(
    c.res,
    200,
    xmlDoc("ListMultipartUploadsResult", {
      Bucket: c.bucket,
      KeyMarker: keyMarker,
      UploadIdMarker: idMarker,
      NextKeyMarker: truncated ? (last?.key ?? prefixes.at(-1)) : undefined,
      NextUploadIdMarker: truncated ? last?.id : undefined,
      Prefix: prefix,
      Delimiter: delimiter || undefined,
      MaxUploads: maxUploads,
      IsTruncated: truncated,
      Upload: uploads.map((u) => ({
        Key: u.key,
        UploadId: u.id,
        Initiator: who(u),
        Owner: who(u),
        StorageClass: "STANDARD",
        Initiated: iso(u.initiated),
      })),
      CommonPrefixes: prefixes.map((p) => ({ Prefix: p })),
    }),
  );
}

/**
 * The checksum of an object completed from parts of an upload with a checksum algorithm: COMPOSITE, the checksum of
 * the parts' checksums with "-N"; FULL_OBJECT, the parts' CRCs combined (the CRC of the whole object, no byte read
 * again). A part uploaded without one (before a restart of an older version): 400 InvalidPart. A checksum the
 * Complete request sends (x-amz-checksum-<algorithm>) must match it: 400 BadDigest.
 */
function objectChecksum(
  c: Ctx,
  kind: MultipartChecksum,
  parts: { checksum?: string; size: number }[],
): NonNullable<FileStat["object"]>["checksum"] {
  const algorithm = kind.algorithm as ChecksumAlgorithm;
  if (parts.some((p) => !p.checksum)) {
    throw new S3Error("InvalidPart", 400, `A part of this upload has no ${apiName(algorithm)} checksum.`);
  }
  const value = multipartChecksum(
    algorithm,
    kind.type,
    parts.map((p) => ({ digest: Buffer.from(p.checksum as string, "base64"), size: p.size })),
  );
  const given = c.req.headers[`x-amz-checksum-${algorithm}`];
  if (typeof given === "string" && given !== value && `${given}-${parts.length}` !== value) {
    throw new S3Error(
      "BadDigest",
      400,
      `The ${apiName(algorithm)} you specified did not match the calculated checksum.`,
    );
  }
  return { algorithm, value, type: kind.type };
}

/** An object's checksum in CompleteMultipartUploadResult: ChecksumCRC32 etc. and ChecksumType. */
function checksumXml(checksum: ObjectMeta["checksum"]): Record<string, string> {
  if (!checksum) return {};
  return {
    [`Checksum${apiName(checksum.algorithm as ChecksumAlgorithm)}`]: checksum.value,
    ChecksumType: checksum.type,
  };
}

/** The file at `path`, or undefined when there is none. */
async function currentFile(c: Ctx, path: string): Promise<FileStat | undefined> {
  try {
    const st = await c.session.stat(path);
    return st.kind === "file" ? st : undefined;
  } catch (err) {
    if (err instanceof AtrestError && err.code === "NOT_FOUND") return undefined;
    throw err;
  }
}

export async function completeMultipartUpload(c: Ctx): Promise<void> {
  const s = sessionMultipart(c);
  await bucketExists(c.session, c.bucket);
  const id = c.query.get("uploadId") as string;
  const path = objectPath(c.bucket, c.key);
  // x-amz-checksum-* headers of a Complete are the object's checksum, not the XML's
  const xml = await readSmallBody(c, 1024 * 1024, true);
  const malformed = () =>
    new S3Error(
      "MalformedXML",
      400,
      "The XML you provided was not well-formed or did not validate against our published schema.",
    );
  if (!xml.includes("<CompleteMultipartUpload")) throw malformed();
  const listed = xmlTexts(xml, "Part").map((p) => {
    const n = Number(xmlTexts(p, "PartNumber")[0]?.trim());
    const etag = (xmlTexts(p, "ETag")[0] ?? "").trim().replace(/^"(.*)"$/, "$1");
    if (!Number.isInteger(n)) throw malformed();
    const sums: Record<string, string> = {};
    for (const a of ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"]) {
      const v = xmlTexts(p, `Checksum${a}`)[0]?.trim();
      if (v) sums[a.toLowerCase()] = v;
    }
    return { n, etag, sums };
  });
  if (listed.length === 0) throw malformed();
  let listing: Awaited<ReturnType<typeof s.listParts>>;
  try {
    // a customer key is checked now, so that a wrong one is a 400, not an error inside the early 200
    listing = await onUpload(() => s.listParts(path, id, c.customerKey?.key));
  } catch (err) {
    // a Complete repeated after it succeeded answers the same result, as S3 does
    const done =
      err instanceof S3Error && err.code === "NoSuchUpload" ? await s.completedMultipart?.(path, id) : undefined;
    if (done === undefined) throw err;
    return send(
      c.res,
      200,
      xmlDoc("CompleteMultipartUploadResult", {
        Location: `/${c.bucket}/${c.key}`,
        Bucket: c.bucket,
        Key: c.key,
        ETag: `"${done.etag}"`,
        ...checksumXml(done.checksum),
      }),
    );
  }
  const { upload, parts } = listing;
  if (upload.customerKey && !c.customerKey) {
    throw new S3Error(
      "InvalidRequest",
      400,
      "The multipart upload was initiated with a customer-provided key (SSE-C): CompleteMultipartUpload needs the same key.",
    );
  }
  // a part number named twice (a part sent again): the last entry is the one
  const asked = listed.filter((a, i) => (listed[i + 1] as { n: number } | undefined)?.n !== a.n);
  const stored = new Map(parts.map((p) => [p.partNumber, p]));
  // as S3 checks: the order first, then that every part exists with that ETag, then the sizes
  for (let i = 1; i < listed.length; i++) {
    if ((listed[i] as { n: number }).n < (listed[i - 1] as { n: number }).n) {
      throw new S3Error(
        "InvalidPartOrder",
        400,
        "The list of parts was not in ascending order. Parts must be ordered by part number.",
      );
    }
  }
  const kind = upload.checksum;
  const found = asked.map((a) => {
    const p = stored.get(a.n);
    // a part's checksum named in the list must be the one it was uploaded with
    const sumsDiffer = Object.entries(a.sums).some(([k, v]) => !kind || k !== kind.algorithm || v !== p?.checksum);
    if (!p || p.etag !== a.etag || sumsDiffer) {
      throw new S3Error(
        "InvalidPart",
        400,
        "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.",
      );
    }
    return p;
  });
  if (found.slice(0, -1).some((p) => p.size < MIN_PART_SIZE)) {
    throw new S3Error("EntityTooSmall", 400, "Your proposed upload is smaller than the minimum allowed object size.");
  }
  const md5 = createHash("md5");
  for (const a of asked) md5.update(Buffer.from(a.etag, "hex"));
  const etag = `${md5.digest("hex")}-${asked.length}`;
  const checksum = kind ? objectChecksum(c, kind, found) : undefined;
  await mkdirs(c.session, path.slice(0, path.lastIndexOf("/")));
  // a conditional Complete that fails now is a 412 / 404 before the early 200 (the commit checks it again)
  const precondition = writePrecondition(c);
  if (precondition) precondition(await currentFile(c, path));
  // the version id goes in the header sent before the commit: chosen now when the bucket keeps versions
  const versionId = (await c.session.getVersioning?.(`/${c.bucket}`)) === "Enabled" ? newVersionId() : undefined;
  // Copying a large upload takes a while: answer 200 now and keep the connection alive with whitespace, then the
  // result, or an Error document in the 200 (as S3 does; the SDKs and awscli read it as the error).
  c.res.writeHead(200, {
    "content-type": "application/xml",
    ...uploadSse(c, upload, upload.requestedKey),
    ...(versionId !== undefined ? { "x-amz-version-id": versionId } : {}),
  });
  c.res.write('<?xml version="1.0" encoding="UTF-8"?>\n');
  const keepAlive = setInterval(() => c.res.write(" "), 10_000);
  try {
    await onUpload(() =>
      s.completeMultipart(
        path,
        id,
        asked.map((a) => a.n),
        {
          customerKey: c.customerKey?.key,
          etag,
          partSizes: found.map((p) => p.size),
          precondition,
          checksum,
          ...(versionId !== undefined ? { versionId } : {}),
        },
      ),
    );
    clearInterval(keepAlive);
    c.res.end(
      xmlDoc("CompleteMultipartUploadResult", {
        Location: `/${c.bucket}/${c.key}`,
        Bucket: c.bucket,
        Key: c.key,
        ETag: `"${etag}"`,
        ...checksumXml(checksum),
      }).replace(/^<\?xml[^>]*>\n/, ""),
    );
  } catch (err) {
    clearInterval(keepAlive);
    const f = toS3Error(err);
    c.res.end(
      xmlDoc("Error", { Code: f.code, Message: f.message, Resource: `/${c.bucket}/${c.key}`, RequestId: c.requestId })
        .replace(/^<\?xml[^>]*>\n/, "")
        .replace(' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"', ""),
    );
    if (f.internal) c.logger.error({ err, requestId: c.requestId }, "s3: internal error");
  }
}
