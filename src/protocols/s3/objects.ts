// Object operations: PutObject, GetObject/HeadObject (Range, conditionals), DeleteObject, DeleteObjects.
import { AtrestError, NotFoundError, PreconditionFailedError } from "../../errors.ts";
import type { FileStat, ObjectMeta, Precondition, RemovedVersion, VfsSession } from "../../vfs/types.ts";
import { WriteBatcher } from "../../vfs/write-batch.ts";
import { readBody } from "./body.ts";
import { bucketExists, type Ctx, hasControl, httpDate, mkdirs, objectPath, send } from "./context.ts";
import { S3Error, toS3Error } from "./errors.ts";
import { aclToKeep, requestedAcl } from "./grants.ts";
import { checksumHeaders, etagOf, metadataOf, objectMeta, responseMetadata } from "./metadata.ts";
import { bucketDefault, requestedSse, sseHeaders } from "./sse.ts";
import { tagCountHeader, taggingHeader } from "./tagging.ts";
import { type XmlObject, xmlDoc, xmlTexts } from "./xml.ts";

export const READ_PIECE = 1024 * 1024;

export async function putObject(c: Ctx): Promise<void> {
  await bucketExists(c.session, c.bucket);
  if (c.key.endsWith("/")) {
    // a "folder" marker object: the folder itself
    for await (const piece of readBody(c.req, { auth: c.auth, key: c.signingKey }).pieces) {
      if (piece.length > 0)
        throw new S3Error("InvalidArgument", 400, "a key ending in / names a folder and holds no data");
    }
    await mkdirs(c.session, objectPath(c.bucket, c.key));
    send(c.res, 200, undefined, { etag: '"d41d8cd98f00b204e9800998ecf8427e"' });
    return;
  }
  const path = objectPath(c.bucket, c.key);
  const plan = await writePlan(c);
  const customerKey = c.customerKey;
  const headers = metadataOf(c.req);
  const tags = taggingHeader(c.req);
  const acl = aclToKeep(requestedAcl(c, c.session.username), c.session.username);
  const body = readBody(c.req, { auth: c.auth, key: c.signingKey });
  await mkdirs(c.session, path.slice(0, path.lastIndexOf("/")));
  const w = await c.session.openWrite(path, {
    truncate: true,
    ...plan,
    precondition: writePrecondition(c),
    parents: true,
  });
  try {
    // 16–64 KiB socket reads gathered into ~1 MiB writes (vfs/write-batch.ts)
    const out = new WriteBatcher(w);
    for await (const piece of body.pieces) await out.push(piece);
    await out.flush();
  } catch (err) {
    await w.abort(false).catch(() => undefined);
    throw err;
  }
  const { md5, checksum } = body.result();
  const sum = checksum && { algorithm: checksum.algorithm, value: checksum.digest.toString("base64") };
  const st = await w.close(
    undefined,
    objectMeta(md5.toString("hex"), headers, sum && { ...sum, type: "FULL_OBJECT" }, tags, acl),
  );
  send(c.res, 200, undefined, {
    etag: `"${md5.toString("hex")}"`,
    ...versionHeader(st),
    ...(sum ? { [`x-amz-checksum-${sum.algorithm}`]: sum.value, "x-amz-checksum-type": "FULL_OBJECT" } : {}),
    ...sseHeaders(await c.session.keyOf?.(path, customerKey?.key), customerKey),
  });
}

/**
 * x-amz-version-id of a version written or read in a versioned bucket: its id; none for the version "null" (as S3
 * answers a write in a suspended bucket) unless the request named it.
 */
export function versionHeader(st: FileStat, asked?: string): Record<string, string> {
  const id = asked ?? st.versionId;
  return id !== undefined && (id !== "null" || asked !== undefined) ? { "x-amz-version-id": id } : {};
}

/** The ?versionId= of a request, checked: S3 version ids are short printable strings. */
export function versionIdOf(c: Ctx): string | undefined {
  const v = c.query.get("versionId");
  if (v === undefined) return undefined;
  if (v === "" || v.length > 1024 || hasControl(v)) {
    throw new S3Error("InvalidArgument", 400, "Invalid version id specified");
  }
  return v;
}

const noSuchVersion = () => new S3Error("NoSuchVersion", 404, "The specified version does not exist.");

/**
 * A conditional write's If-Match / If-None-Match (PutObject, CompleteMultipartUpload), checked by the vfs at open and
 * again in the commit's transaction, so that of two writes racing with `If-None-Match: *` exactly one creates the key.
 * `If-None-Match: *` or a tag the current version has: 412; `If-Match` a tag it has not: 412, and no current version at
 * all: 404 NoSuchKey (as S3 answers both); `If-Match: *` needs the key to exist.
 */
export function writePrecondition(c: Ctx): Precondition | undefined {
  const im = c.req.headers["if-match"];
  const inm = c.req.headers["if-none-match"];
  if (im === undefined && inm === undefined) return undefined;
  const tags = (v: string) =>
    v.split(",").map((t) =>
      t
        .trim()
        .replace(/^W\//, "")
        .replace(/^"(.*)"$/, "$1"),
    );
  return (current) => {
    const etag = current ? etagOf(current).slice(1, -1) : undefined;
    if (im !== undefined) {
      if (!current || etag === undefined) throw new NotFoundError("no such key");
      if (!tags(im).some((t) => t === "*" || t === etag)) throw new PreconditionFailedError();
    }
    if (inm !== undefined && current && tags(inm).some((t) => t === "*" || t === etag)) {
      throw new PreconditionFailedError();
    }
  };
}

/**
 * How a new object of this request is encrypted: the SSE headers (SSE-S3, SSE-KMS with a key, SSE-C with the request's
 * customer key) or, without any, the bucket's default; with the audit note naming the choice.
 */
export async function writePlan(c: Ctx): Promise<WritePlan> {
  // no SSE header: the bucket's default encryption, if it has one
  const asked = requestedSse(c.req);
  const customerKey = c.customerKey;
  if (customerKey && asked.mode) {
    throw new S3Error(
      "InvalidArgument",
      400,
      "Server Side Encryption with Customer provided key is incompatible with the encryption method specified",
    );
  }
  const sse = asked.mode || customerKey ? asked : await bucketDefault(c);
  return {
    key: sse.key,
    customerKey: customerKey?.key,
    encryptionNote: customerKey
      ? "sse-c"
      : sse.mode
        ? `sse ${sse.mode}${sse.key ? ` key ${sse.key}` : ""}${asked.mode ? "" : " (bucket default)"}`
        : undefined,
  };
}

export interface WritePlan {
  key?: string;
  customerKey?: Buffer;
  encryptionNote?: string;
}

export function parseRange(h: string | undefined, size: number): { start: number; end: number } | undefined {
  if (!h) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(h.trim());
  if (!m || (m[1] === "" && m[2] === "")) return undefined;
  let start: number;
  let end: number;
  if (m[1] === "") {
    const n = Number(m[2]);
    if (n === 0) throw new S3Error("InvalidRange", 416, "The requested range is not satisfiable");
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (m[2] !== "" && Number(m[2]) < start) return undefined;
  }
  if (start >= size) throw new S3Error("InvalidRange", 416, "The requested range is not satisfiable");
  return { start, end };
}

/**
 * GET/HEAD ?partNumber=N: part N of an object completed from a multipart upload (its sizes are kept with it), with
 * x-amz-mp-parts-count; an object that was not is its one part 1. Another number: 400 InvalidPart.
 */
function partRange(c: Ctx, st: FileStat, headers: Record<string, string>): { start: number; end: number } | undefined {
  const raw = c.query.get("partNumber") ?? "";
  const n = /^\d{1,5}$/.test(raw) ? Number(raw) : Number.NaN;
  if (!(n >= 1 && n <= 10_000)) {
    throw new S3Error("InvalidArgument", 400, "Part number must be an integer between 1 and 10000, inclusive");
  }
  const invalid = () => new S3Error("InvalidPart", 400, "The requested partnumber is not satisfiable");
  const runs = st.object?.parts;
  if (!runs) {
    if (n !== 1) throw invalid();
    return undefined;
  }
  const count = runs.reduce((t, [, k]) => t + k, 0);
  if (n > count) throw invalid();
  headers["x-amz-mp-parts-count"] = String(count);
  let start = 0;
  let left = n - 1;
  for (const [size, k] of runs) {
    if (left < k) {
      start += left * size;
      return size === 0 ? undefined : { start, end: start + size - 1 };
    }
    start += k * size;
    left -= k;
  }
  throw invalid();
}

export async function statObject(c: Ctx): Promise<FileStat> {
  await bucketExists(c.session, c.bucket);
  if (c.key.endsWith("/")) {
    const st = await c.session.stat(objectPath(c.bucket, c.key.slice(0, -1)));
    if (st.kind !== "dir") throw new AtrestError("NOT_FOUND", "no such key");
    return { ...st, size: 0 };
  }
  const versionId = versionIdOf(c);
  if (versionId !== undefined) {
    if (!c.session.statVersion) throw noSuchVersion();
    let found: Awaited<ReturnType<NonNullable<VfsSession["statVersion"]>>>;
    try {
      found = await c.session.statVersion(objectPath(c.bucket, c.key), versionId);
    } catch (err) {
      if (err instanceof AtrestError && err.code === "NOT_FOUND") throw noSuchVersion();
      throw err;
    }
    if (found.deleteMarker) {
      // S3: a delete marker has no content; GET/HEAD of it by id is 405 with the marker's headers
      throw new S3Error("MethodNotAllowed", 405, "The specified method is not allowed against this resource.", {
        "x-amz-delete-marker": "true",
        "x-amz-version-id": versionId,
      });
    }
    return found.stat;
  }
  const path = objectPath(c.bucket, c.key);
  let st: FileStat | undefined;
  try {
    st = await c.session.stat(path);
  } catch (err) {
    if (!(err instanceof AtrestError && err.code === "NOT_FOUND")) throw err;
  }
  if (st?.kind === "file") return st;
  // a key whose newest version is a delete marker says so (x-amz-delete-marker, its version id), as S3 answers
  const marker = await c.session.deleteMarkerOf?.(path);
  throw new S3Error(
    "NoSuchKey",
    404,
    "The specified key does not exist.",
    marker !== undefined
      ? { "x-amz-delete-marker": "true", "x-amz-version-id": marker }
      : { "x-amz-delete-marker": "false" },
  );
}

export function conditional(c: Ctx, st: FileStat): boolean {
  const etag = etagOf(st);
  const h = c.req.headers;
  const im = h["if-match"];
  if (im !== undefined && im !== "*" && !im.split(",").some((t) => t.trim() === etag)) {
    throw new S3Error("PreconditionFailed", 412, "At least one of the pre-conditions you specified did not hold");
  }
  const ius = h["if-unmodified-since"];
  if (im === undefined && ius !== undefined && Date.parse(ius) < Math.floor(st.mtime / 1000) * 1000) {
    throw new S3Error("PreconditionFailed", 412, "At least one of the pre-conditions you specified did not hold");
  }
  const inm = h["if-none-match"];
  if (inm !== undefined && (inm === "*" || inm.split(",").some((t) => t.trim() === etag))) {
    send(c.res, 304, undefined, { etag });
    return false;
  }
  const ims = h["if-modified-since"];
  if (inm === undefined && ims !== undefined && Date.parse(ims) >= Math.floor(st.mtime / 1000) * 1000) {
    send(c.res, 304, undefined, { etag });
    return false;
  }
  return true;
}

/**
 * x-amz-checksum-mode on GET/HEAD ?partNumber=N: the part's own checksum (kept with a multipart object uploaded with
 * a checksum algorithm), which is what its bytes hash to; an object that is its one part 1 answers its whole checksum.
 */
function partChecksumHeaders(c: Ctx, object: ObjectMeta | undefined): Record<string, string> {
  const n = Number(c.query.get("partNumber"));
  if (!object?.parts) return n === 1 ? checksumHeaders(object) : {};
  const value = object.partChecksums?.[n - 1];
  const algorithm = object.checksum?.algorithm;
  return value && algorithm ? { [`x-amz-checksum-${algorithm}`]: value } : {};
}

/** A GET/HEAD of a part of the object (Range or partNumber). */
const rangeAsked = (c: Ctx) => c.req.headers.range !== undefined || c.query.has("partNumber");

export async function getObject(c: Ctx, head: boolean): Promise<void> {
  const st = await statObject(c);
  if (!conditional(c, st)) return;
  // the part number is checked before the SSE-C key (S3 answers InvalidPart for a part that is not there)
  const partHeaders: Record<string, string> = {};
  const range = c.query.has("partNumber") ? partRange(c, st, partHeaders) : parseRange(c.req.headers.range, st.size);
  // the stored checksum covers the whole object: answered for a GET/HEAD of all of it, as S3 does
  const wantChecksum = String(c.req.headers["x-amz-checksum-mode"]).toUpperCase() === "ENABLED";
  const headers: Record<string, string> = {
    ...partHeaders,
    ...(wantChecksum && !rangeAsked(c) ? checksumHeaders(st.object) : {}),
    ...(wantChecksum && c.query.has("partNumber") ? partChecksumHeaders(c, st.object) : {}),
    etag: etagOf(st),
    ...versionHeader(st, versionIdOf(c)),
    ...tagCountHeader(st.object?.tags),
    "last-modified": httpDate(st.mtime),
    "accept-ranges": "bytes",
    ...responseMetadata(st, c.query),
    ...(st.kind === "file"
      ? sseHeaders(
          await c.session.keyOf?.(objectPath(c.bucket, c.key), c.customerKey?.key, versionIdOf(c)),
          c.customerKey,
        )
      : {}),
  };
  const start = range?.start ?? 0;
  const end = range?.end ?? st.size - 1;
  const length = Math.max(0, end - start + 1);
  if (range) headers["content-range"] = `bytes ${start}-${end}/${st.size}`;
  headers["content-length"] = String(length);
  if (head || c.key.endsWith("/") || st.size === 0) {
    c.res.writeHead(range ? 206 : 200, headers);
    c.res.end();
    return;
  }
  // a Range (awscli's multipart GET asks for 8 MiB at a time) reads nothing past its end: no read-ahead there, and no
  // next part of a multipart object opened (its data key unwrapped) for nothing
  const versionId = versionIdOf(c);
  const r = await c.session.openRead(objectPath(c.bucket, c.key), {
    customerKey: c.customerKey?.key,
    end: end + 1,
    ...(versionId !== undefined ? { versionId } : {}),
  });
  try {
    c.res.writeHead(range ? 206 : 200, headers);
    // views of the reader's decrypted windows, each given back once the socket took it (as the HTTP door does): a
    // fresh 1 MiB copy per piece was garbage the GC freed late (awscli's 10 ranged GETs at once: main-thread
    // ArrayBuffers peaked at 100 MB, 44-52 MB with views and no read-ahead behind a busy seal worker)
    const view =
      r.readView?.bind(r) ?? (async (o: number, n: number) => ({ data: await r.read(o, n), release: () => {} }));
    let at = start;
    while (at <= end) {
      if (c.res.destroyed) throw new Error("client went away");
      const { data, release } = await view(at, Math.min(READ_PIECE, end - at + 1));
      if (data.length === 0) {
        release();
        break;
      }
      at += data.length;
      if (!c.res.write(data, () => release())) await drained(c.res);
    }
    c.res.end();
  } finally {
    await r.close();
  }
}

/** Resolves when the response takes more; rejects when the client has gone (listeners removed either way). */
function drained(res: Ctx["res"]): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    // a write to a response already destroyed returns false too, and its "close" has been and gone
    if (res.destroyed) {
      reject(new Error("client went away"));
      return;
    }
    const done = (err?: Error) => {
      res.off("drain", onDrain);
      res.off("close", onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => done();
    const onClose = () => done(new Error("client went away"));
    res.on("drain", onDrain);
    res.on("close", onClose);
  });
}

/**
 * Deletes one key (a missing key is no error in S3) and the folders it leaves empty: S3 has no empty prefixes. In a
 * versioned bucket the current version is kept under a delete marker, or with `versionId` that version goes for good.
 */
export async function removeKey(
  s: VfsSession,
  bucket: string,
  key: string,
  versionId?: string,
): Promise<RemovedVersion | undefined> {
  let removed: RemovedVersion | undefined;
  try {
    if (versionId !== undefined) {
      if (!s.removeVersion) throw noSuchVersion();
      removed = await s.removeVersion(objectPath(bucket, key), versionId);
    } else if (key.endsWith("/")) await s.rmdir(objectPath(bucket, key.slice(0, -1)));
    else {
      removed = await s.deleteVersioned?.(objectPath(bucket, key));
      if (!removed) await s.remove(objectPath(bucket, key));
    }
  } catch (err) {
    // a version that is not there: nothing to delete, as S3 answers (204)
    if (!(err instanceof AtrestError && (err.code === "NOT_FOUND" || err.code === "NOT_EMPTY"))) throw err;
  }
  await removeEmptyFolders(s, bucket, key);
  return removed;
}

async function removeEmptyFolders(s: VfsSession, bucket: string, key: string): Promise<void> {
  const parts = key.split("/").filter(Boolean);
  for (let n = parts.length - 1; n > 0; n--) {
    try {
      await s.rmdir(objectPath(bucket, parts.slice(0, n).join("/")));
    } catch {
      return;
    }
  }
}

export async function deleteObject(c: Ctx): Promise<void> {
  await bucketExists(c.session, c.bucket);
  const removed = await removeKey(c.session, c.bucket, c.key, versionIdOf(c));
  send(c.res, 204, undefined, removedHeaders(removed));
}

function removedHeaders(removed: RemovedVersion | undefined): Record<string, string> {
  if (!removed) return {};
  return {
    ...(removed.deleteMarker ? { "x-amz-delete-marker": "true" } : {}),
    ...(removed.versionId !== undefined ? { "x-amz-version-id": removed.versionId } : {}),
  };
}

export async function deleteObjects(c: Ctx): Promise<void> {
  await bucketExists(c.session, c.bucket);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const piece of readBody(c.req, { auth: c.auth, key: c.signingKey }).pieces) {
    total += piece.length;
    if (total > 2 * 1024 * 1024) throw new S3Error("MalformedXML", 400, "request body too large");
    chunks.push(piece);
  }
  const xml = Buffer.concat(chunks).toString("utf8");
  const quiet = xmlTexts(xml, "Quiet")[0] === "true";
  const objects = xmlTexts(xml, "Object");
  if (objects.length > 1000) throw new S3Error("MalformedXML", 400, "more than 1000 keys");
  const deleted: XmlObject[] = [];
  const errors: XmlObject[] = [];
  for (const o of objects) {
    const key = xmlTexts(o, "Key")[0] ?? "";
    const versionId = xmlTexts(o, "VersionId")[0]?.trim();
    try {
      if (!key) throw new S3Error("InvalidArgument", 400, "empty key");
      const removed = await removeKey(c.session, c.bucket, key, versionId || undefined);
      if (!quiet) {
        deleted.push({
          Key: key,
          VersionId: versionId || undefined,
          ...(removed?.deleteMarker ? { DeleteMarker: true } : {}),
          ...(removed?.deleteMarker && removed.versionId !== undefined && !versionId
            ? { DeleteMarkerVersionId: removed.versionId }
            : {}),
        });
      }
    } catch (err) {
      const f = toS3Error(err);
      errors.push({ Key: key, Code: f.code, Message: f.message });
    }
  }
  send(c.res, 200, xmlDoc("DeleteResult", { Deleted: deleted, Error: errors }));
}
