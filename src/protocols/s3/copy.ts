// CopyObject (PUT with x-amz-copy-source) and what UploadPartCopy shares with it: the source named by the header
// (`bucket/key`, URL-encoded, optionally `?versionId=null`), its x-amz-copy-source-if-* conditions, its SSE-C key
// (x-amz-copy-source-server-side-encryption-customer-*), and the streamed copy through the vfs (read 1 MiB, write it,
// the next read already under way: never the object in memory). The destination is a normal new version: encrypted as
// the request's SSE headers or the bucket default say (SSE-C with the request's customer key), metadata copied
// (x-amz-metadata-directive COPY, the default) or taken from the request (REPLACE). The vfs audits the download and
// the upload; the upload's detail names the source.
import { createHash, type Hash } from "node:crypto";
import { AtrestError } from "../../errors.ts";
import type { FileStat, OpenReadOptions, ReadHandle, VfsSession, WriteHandle } from "../../vfs/types.ts";
import { Checksum, checksumAlgorithm } from "./checksum.ts";
import { bucketExists, type Ctx, type CustomerKey, iso, mkdirs, objectPath, send } from "./context.ts";
import { accessDenied, noSuchBucket, S3Error } from "./errors.ts";
import { aclToKeep, granted, grantsOf, requestedAcl } from "./grants.ts";
import { etagOf, metadataOf, objectMeta } from "./metadata.ts";
import { READ_PIECE, versionHeader, writePlan } from "./objects.ts";
import { policyVerdict } from "./policy.ts";
import { sseHeaders } from "./sse.ts";
import { copyTags } from "./tagging.ts";
import { xmlDoc } from "./xml.ts";

export interface CopySource {
  bucket: string;
  key: string;
  /** The source's path in the user's view. */
  path: string;
  stat: FileStat;
  /** The session the source is read through (another than the request's when its bucket is another user's). */
  session: VfsSession;
  customerKey?: CustomerKey;
  /** The source's version (x-amz-copy-source `?versionId=`); undefined: the current one. */
  versionId?: string;
}

const precondition = () =>
  new S3Error("PreconditionFailed", 412, "At least one of the pre-conditions you specified did not hold");

const unquote = (t: string) => t.trim().replace(/^"(.*)"$/, "$1");

/** The copy source of the request, checked: it exists, the caller may see it, its conditions hold. */
export async function copySource(c: Ctx): Promise<CopySource> {
  const raw = c.req.headers["x-amz-copy-source"];
  if (typeof raw !== "string" || raw === "")
    throw new S3Error(
      "InvalidArgument",
      400,
      "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
    );
  const q = raw.indexOf("?");
  const pathPart = q < 0 ? raw : raw.slice(0, q);
  const versionId = q >= 0 ? (new URLSearchParams(raw.slice(q + 1)).get("versionId") ?? undefined) : undefined;
  let decoded: string;
  try {
    decoded = decodeURIComponent(pathPart);
  } catch {
    throw new S3Error("InvalidArgument", 400, "Invalid copy source encoding");
  }
  if (decoded.startsWith("/")) decoded = decoded.slice(1);
  const slash = decoded.indexOf("/");
  const bucket = slash < 0 ? decoded : decoded.slice(0, slash);
  const key = slash < 0 ? "" : decoded.slice(slash + 1);
  if (!bucket || !key || key.endsWith("/")) {
    throw new S3Error(
      "InvalidArgument",
      400,
      "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
    );
  }
  const at = await sourcePlace(c, bucket);
  const path = objectPath(bucket, key);
  // the source is weighed as a GET of it would be: its bucket's policy (a Deny refuses its owner too), then, in
  // another user's bucket, what the policy allows or else the object's ACL grants
  const sc: Ctx = {
    ...c,
    session: at.session,
    owner: at.owner,
    bucket,
    key,
    query: new Map(versionId !== undefined ? [["versionId", versionId]] : []),
  };
  const action = versionId === undefined ? "s3:GetObject" : "s3:GetObjectVersion";
  const verdict = await policyVerdict(sc, false, { action, resource: `arn:aws:s3:::${bucket}/${key}` });
  if (verdict === "deny") throw accessDenied();
  const foreign = at.owner !== c.requester && verdict !== "allow";
  try {
    await bucketExists(at.session, bucket);
  } catch (err) {
    if (err instanceof AtrestError && err.code === "NOT_FOUND") throw noSuchBucket();
    throw err;
  }
  let stat: FileStat;
  try {
    stat = versionId === undefined ? await at.session.stat(path) : await sourceVersion(sc, path, versionId);
    if (stat.kind !== "file") throw new AtrestError("NOT_FOUND", "no such key");
  } catch (err) {
    // a missing key is told only to someone who may list the bucket, as for a GET
    const missing =
      (err instanceof AtrestError && err.code === "NOT_FOUND") ||
      (err instanceof S3Error && err.code === "NoSuchVersion");
    if (missing && foreign && !granted(sc, grantsOf(await at.session.stat(`/${bucket}`), at.owner), "READ")) {
      throw accessDenied();
    }
    throw err;
  }
  if (foreign && !granted(sc, grantsOf(stat, at.owner), "READ")) throw accessDenied();
  checkCopyConditions(c, stat);
  return {
    bucket,
    key,
    path,
    stat,
    session: at.session,
    customerKey: c.copySourceKey,
    ...(versionId !== undefined ? { versionId } : {}),
  };
}

/**
 * The tree the copy source's bucket is in and its owner: the session the request is placed in when that owner holds
 * the bucket (or no one registered it), else a session of the bucket's owner on the requester's behalf.
 */
async function sourcePlace(c: Ctx, bucket: string): Promise<{ session: VfsSession; owner: string }> {
  const owner = (await c.buckets?.owner(bucket)) ?? c.session.username;
  if (owner === c.session.username || !c.openAs) return { session: c.session, owner: c.session.username };
  try {
    return { session: await c.openAs(owner), owner };
  } catch (err) {
    // the owner was removed or disabled: the name's row outlived them
    if (err instanceof AtrestError && (err.code === "NOT_FOUND" || err.code === "PERMISSION_DENIED"))
      throw noSuchBucket();
    throw err;
  }
}

/** The copy source's version `versionId` (a delete marker cannot be copied: 400 InvalidRequest, as S3). */
async function sourceVersion(c: Ctx, path: string, versionId: string): Promise<FileStat> {
  const noSuchVersion = () => new S3Error("NoSuchVersion", 404, "The specified version does not exist.");
  if (!c.session.statVersion) {
    // an unversioned door: every object is its one version, "null"
    if (versionId !== "null") throw noSuchVersion();
    return c.session.stat(path);
  }
  try {
    const found = await c.session.statVersion(path, versionId);
    if (found.deleteMarker) {
      throw new S3Error(
        "InvalidRequest",
        400,
        "The source of a copy request may not specifically refer to a delete marker by version id.",
      );
    }
    return found.stat;
  } catch (err) {
    if (err instanceof AtrestError && err.code === "NOT_FOUND") throw noSuchVersion();
    throw err;
  }
}

/**
 * x-amz-copy-source-if-match / -if-none-match / -if-unmodified-since / -if-modified-since, as S3 weighs them: a
 * matching If-Match wins over If-Unmodified-Since, a failing If-None-Match over If-Modified-Since; failure is 412.
 */
function checkCopyConditions(c: Ctx, st: FileStat): void {
  const h = c.req.headers;
  const etag = unquote(etagOf(st));
  const second = Math.floor(st.mtime / 1000) * 1000;
  const im = h["x-amz-copy-source-if-match"];
  const ius = h["x-amz-copy-source-if-unmodified-since"];
  const inm = h["x-amz-copy-source-if-none-match"];
  const ims = h["x-amz-copy-source-if-modified-since"];
  const matches = (v: string) => v.split(",").some((t) => unquote(t) === etag || t.trim() === "*");
  if (typeof im === "string") {
    if (!matches(im)) throw precondition();
  } else if (typeof ius === "string" && Date.parse(ius) < second) throw precondition();
  if (typeof inm === "string") {
    if (matches(inm)) throw precondition();
  } else if (typeof ims === "string" && !Number.isNaN(Date.parse(ims)) && Date.parse(ims) >= second) {
    throw precondition();
  }
}

/**
 * Copies bytes [start, end] of `r` to the end of `w`, 1 MiB at a time with the next read started before the write
 * (one piece ahead: memory stays at two pieces), feeding `md5` (and `also`, a checksum).
 */
export async function pump(
  r: ReadHandle,
  w: WriteHandle,
  start: number,
  end: number,
  md5: Hash,
  also?: { update(b: Buffer): void },
): Promise<void> {
  const next = (at: number) => (at <= end ? r.read(at, Math.min(READ_PIECE, end - at + 1)) : undefined);
  let at = start;
  let pending = next(at);
  while (pending) {
    const piece = await pending;
    if (piece.length === 0) break;
    at += piece.length;
    pending = next(at);
    md5.update(piece);
    also?.update(piece);
    try {
      await w.write(w.size, piece);
    } catch (err) {
      // the read under way must settle before the handle closes
      await pending?.catch(() => undefined);
      throw err;
    }
  }
}

export async function copyObject(c: Ctx): Promise<void> {
  await bucketExists(c.session, c.bucket);
  if (c.key.endsWith("/"))
    throw new S3Error("InvalidArgument", 400, "a key ending in / names a folder and holds no data");
  const directive = c.req.headers["x-amz-metadata-directive"] ?? "COPY";
  if (directive !== "COPY" && directive !== "REPLACE") {
    throw new S3Error("InvalidArgument", 400, "Unknown metadata directive.");
  }
  const src = await copySource(c);
  const dest = objectPath(c.bucket, c.key);
  const changesEncryption =
    c.customerKey !== undefined ||
    src.customerKey !== undefined ||
    c.req.headers["x-amz-server-side-encryption"] !== undefined;
  if (src.session === c.session && src.path === dest && directive === "COPY" && !changesEncryption) {
    throw new S3Error(
      "InvalidRequest",
      400,
      "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
    );
  }
  const headers = directive === "REPLACE" ? metadataOf(c.req) : { ...(src.stat.object?.headers ?? {}) };
  const tags = copyTags(c.req, src.stat.object?.tags);
  // a copy gets the ACL the request names (private by default), never the source's, as in S3
  const acl = aclToKeep(requestedAcl(c, c.session.username), c.session.username);
  const plan = await writePlan(c);
  // the request has no body; what a client sends anyway is ignored
  c.req.resume();
  const md5 = createHash("md5");
  // the copy keeps the source's whole-object checksum (the same bytes); x-amz-checksum-algorithm asks for another
  const algo = c.req.headers["x-amz-checksum-algorithm"];
  const sum = typeof algo === "string" ? new Checksum(checksumAlgorithm(algo)) : undefined;
  const kept = src.stat.object?.checksum?.type === "FULL_OBJECT" ? src.stat.object.checksum : undefined;
  const r = await src.session.openRead(src.path, sourceRead(src));
  let st: FileStat;
  try {
    await mkdirs(c.session, dest.slice(0, dest.lastIndexOf("/")));
    const note = [`copy of ${src.path}`, plan.encryptionNote].filter(Boolean).join("; ");
    const w = await c.session.openWrite(dest, { truncate: true, ...plan, encryptionNote: note, parents: true });
    try {
      await pump(r, w, 0, r.size - 1, md5, sum);
    } catch (err) {
      await w.abort(false).catch(() => undefined);
      throw err;
    }
    // the source is read: let it go before the copy commits (a copy onto itself retires the blob being read)
    await r.close();
    const checksum = sum
      ? { algorithm: sum.algorithm, value: sum.digest().toString("base64"), type: "FULL_OBJECT" as const }
      : kept;
    st = await w.close(undefined, objectMeta(md5.digest("hex"), headers, checksum, tags, acl));
  } finally {
    await r.close().catch(() => undefined);
  }
  send(c.res, 200, xmlDoc("CopyObjectResult", { LastModified: iso(st.mtime), ETag: etagOf(st) }), {
    ...sseHeaders(await c.session.keyOf?.(dest, c.customerKey?.key), c.customerKey),
    ...versionHeader(st),
    ...(src.versionId !== undefined || src.stat.versionId !== undefined
      ? { "x-amz-copy-source-version-id": src.versionId ?? (src.stat.versionId as string) }
      : {}),
  });
}

/** How a copy opens its source: with its SSE-C key, at its version. */
export function sourceRead(src: CopySource): OpenReadOptions {
  return { customerKey: src.customerKey?.key, ...(src.versionId !== undefined ? { versionId: src.versionId } : {}) };
}
