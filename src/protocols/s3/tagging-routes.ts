// The tagging subresources: Put/Get/DeleteObjectTagging (?tagging on a key, ?versionId= for one version's, a noncurrent one too) and
// Put/Get/DeleteBucketTagging. Apart from tagging.ts, whose parsing and headers objects.ts uses, so that neither
// module imports the other.
import { AtrestError } from "../../errors.ts";
import { bucketExists, type Ctx, objectPath, readSmallBody, send } from "./context.ts";
import { S3Error } from "./errors.ts";
import { statObject, versionHeader, versionIdOf } from "./objects.ts";
import { MAX_BUCKET_TAGS, parseTagging, type Tags } from "./tagging.ts";
import { xmlDoc } from "./xml.ts";

export async function objectTagging(c: Ctx): Promise<void> {
  const m = c.req.method;
  await bucketExists(c.session, c.bucket);
  const path = objectPath(c.bucket, c.key);
  // ?versionId=: that version's tags (statObject finds it, or answers NoSuchVersion / a marker's 405)
  const versionId = versionIdOf(c);
  const st = versionId === undefined ? await c.session.stat(path) : await statObject(c);
  if (st.kind !== "file") throw new AtrestError("NOT_FOUND", "no such key");
  const version = versionId !== undefined ? versionHeader(st, versionId) : versionHeader(st);
  if (m === "GET") {
    const tags = st.object?.tags ?? [];
    return send(
      c.res,
      200,
      xmlDoc("Tagging", { TagSet: { Tag: tags.map(([Key, Value]) => ({ Key, Value })) } }),
      version,
    );
  }
  if (!c.session.setObjectTags) throw new S3Error("NotImplemented", 501, "tags are not kept by this store");
  if (m === "PUT") {
    const tags = parseTagging(await readSmallBody(c));
    await c.session.setObjectTags(path, tags, versionId);
    return send(c.res, 200, undefined, version);
  }
  if (m === "DELETE") {
    await c.session.setObjectTags(path, [], versionId);
    return send(c.res, 204, undefined, version);
  }
  throw new S3Error("MethodNotAllowed", 405, "The specified method is not allowed against this resource.");
}

/**
 * Get/Put/DeleteBucketTagging: the bucket folder's tags, a sealed record of the folder (vfs dirRecord "tags"); setting
 * them needs `mkdir` there and is audited with the count only. A bucket without tags answers 404 NoSuchTagSet.
 */
export async function bucketTagging(c: Ctx): Promise<void> {
  await bucketExists(c.session, c.bucket);
  const s = c.session;
  if (!s.getDirRecord || !s.setDirRecord) throw new S3Error("NotImplemented", 501, "tags are not kept by this store");
  const dir = `/${c.bucket}`;
  const m = c.req.method;
  if (m === "GET") {
    const tags = await s.getDirRecord<Tags>(dir, "tags");
    if (!tags) throw new S3Error("NoSuchTagSet", 404, "The TagSet does not exist");
    return send(c.res, 200, xmlDoc("Tagging", { TagSet: { Tag: tags.map(([Key, Value]) => ({ Key, Value })) } }));
  }
  if (m === "PUT") {
    const tags = parseTagging(await readSmallBody(c), MAX_BUCKET_TAGS);
    await s.setDirRecord(
      dir,
      "tags",
      tags.length > 0 ? tags : undefined,
      tags.length > 0 ? `tags ${tags.length}` : "tags removed",
    );
    return send(c.res, 204);
  }
  if (m === "DELETE") {
    await s.setDirRecord(dir, "tags", undefined, "tags removed");
    return send(c.res, 204);
  }
  throw new S3Error("MethodNotAllowed", 405, "The specified method is not allowed against this resource.");
}
