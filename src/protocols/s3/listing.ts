// Listings: ListObjects (v1), ListObjectsV2, ListObjectVersions (as an unversioned bucket answers it).
import type { FileStat, VfsSession } from "../../vfs/types.ts";
import { bucketExists, type Ctx, iso, send } from "./context.ts";
import { S3Error } from "./errors.ts";
import { etagOf } from "./metadata.ts";
import { type XmlObject, xmlDoc } from "./xml.ts";

/** Every object under `dir` (keys relative to the bucket), sorted by key as S3 lists them (UTF-8 byte order). */
export async function walk(s: VfsSession, bucket: string, prefix: string): Promise<{ key: string; stat: FileStat }[]> {
  const out: { key: string; stat: FileStat }[] = [];
  // only descend into folders that can hold keys with this prefix
  const visit = async (rel: string): Promise<void> => {
    for (const e of await s.list(`/${bucket}${rel ? `/${rel}` : ""}`)) {
      const k = rel ? `${rel}/${e.name}` : e.name;
      if (e.stat.kind === "dir") {
        const asPrefix = `${k}/`;
        if (asPrefix.startsWith(prefix) || prefix.startsWith(asPrefix)) await visit(k);
      } else if (k.startsWith(prefix)) out.push({ key: k, stat: e.stat });
    }
  };
  await visit("");
  return out.sort((a, b) => Buffer.compare(Buffer.from(a.key), Buffer.from(b.key)));
}

export async function listObjects(c: Ctx): Promise<void> {
  await bucketExists(c.session, c.bucket);
  const q = c.query;
  const v2 = q.get("list-type") === "2";
  const prefix = q.get("prefix") ?? "";
  const delimiter = q.get("delimiter") ?? "";
  const maxKeys = Math.min(Number(q.get("max-keys") ?? 1000), 1000);
  if (!Number.isInteger(maxKeys) || maxKeys < 0)
    throw new S3Error("InvalidArgument", 400, "max-keys must be a non-negative integer");
  let after = v2 ? (q.get("start-after") ?? "") : (q.get("marker") ?? "");
  const token = q.get("continuation-token");
  if (v2 && token !== undefined) after = Buffer.from(token, "base64url").toString("utf8");
  const encode = q.get("encoding-type") === "url";
  const enc = (s: string) => (encode ? encodeURIComponent(s).replace(/%2F/g, "/") : s);
  const all = await walk(c.session, c.bucket, prefix);
  const contents: XmlObject[] = [];
  const prefixes: string[] = [];
  let truncated = false;
  let last = "";
  // the owner goes with every v1 entry, and with v2 entries when asked for (fetch-owner=true)
  const owner = !v2 || q.get("fetch-owner") === "true";
  for (const o of all) {
    // max-keys=0 answers an empty, untruncated page (as S3 does)
    if (maxKeys === 0) break;
    if (Buffer.compare(Buffer.from(o.key), Buffer.from(after)) <= 0) continue;
    let cp: string | undefined;
    if (delimiter) {
      const at = o.key.indexOf(delimiter, prefix.length);
      if (at >= 0) cp = o.key.slice(0, at + delimiter.length);
    }
    // a common prefix at or before the marker was on an earlier page (the marker may be that prefix itself)
    if (cp !== undefined && (prefixes.at(-1) === cp || Buffer.compare(Buffer.from(cp), Buffer.from(after)) <= 0))
      continue;
    if (contents.length + prefixes.length >= maxKeys) {
      truncated = true;
      break;
    }
    if (cp !== undefined) {
      prefixes.push(cp);
      last = cp;
      // skip the rest of this common prefix: resume after its last possible key
      after = `${cp}\u{10ffff}`;
    } else {
      contents.push({
        Key: enc(o.key),
        LastModified: iso(o.stat.mtime),
        ETag: etagOf(o.stat),
        Size: o.stat.size,
        StorageClass: "STANDARD",
        ...(owner ? { Owner: { ID: c.session.username, DisplayName: c.session.username } } : {}),
      });
      last = o.key;
    }
  }
  const common = prefixes.map((p) => ({ Prefix: enc(p) }));
  const body = v2
    ? xmlDoc("ListBucketResult", {
        Name: c.bucket,
        Prefix: enc(prefix),
        StartAfter: q.has("start-after") ? enc(q.get("start-after") as string) : undefined,
        ContinuationToken: token,
        NextContinuationToken: truncated ? Buffer.from(last).toString("base64url") : undefined,
        KeyCount: contents.length + prefixes.length,
        MaxKeys: maxKeys,
        Delimiter: delimiter ? enc(delimiter) : undefined,
        EncodingType: encode ? "url" : undefined,
        IsTruncated: truncated,
        Contents: contents,
        CommonPrefixes: common,
      })
    : xmlDoc("ListBucketResult", {
        Name: c.bucket,
        // v1 echoes Prefix as sent: clients url-decode Delimiter, Marker, NextMarker, keys and prefixes only
        Prefix: prefix,
        Marker: enc(q.get("marker") ?? ""),
        NextMarker: truncated && delimiter ? enc(last) : undefined,
        MaxKeys: maxKeys,
        Delimiter: delimiter ? enc(delimiter) : undefined,
        EncodingType: encode ? "url" : undefined,
        IsTruncated: truncated,
        Contents: contents,
        CommonPrefixes: common,
      });
  send(c.res, 200, body);
}

export async function listVersions(c: Ctx): Promise<void> {
  // an unversioned bucket: every object is its one version, "null"
  await bucketExists(c.session, c.bucket);
  const prefix = c.query.get("prefix") ?? "";
  const all = await walk(c.session, c.bucket, prefix);
  const maxKeys = Math.min(Number(c.query.get("max-keys") ?? 1000), 1000);
  const after = c.query.get("key-marker") ?? "";
  const list = all.filter((o) => Buffer.compare(Buffer.from(o.key), Buffer.from(after)) > 0);
  const page = list.slice(0, maxKeys);
  const truncated = list.length > page.length;
  send(
    c.res,
    200,
    xmlDoc("ListVersionsResult", {
      Name: c.bucket,
      Prefix: prefix,
      KeyMarker: after,
      VersionIdMarker: c.query.get("version-id-marker") ?? "",
      NextKeyMarker: truncated ? page.at(-1)?.key : undefined,
      // clients page on with both markers (boto3 refuses a missing one)
      NextVersionIdMarker: truncated ? "null" : undefined,
      MaxKeys: maxKeys,
      IsTruncated: truncated,
      Version: page.map((o) => ({
        Key: o.key,
        VersionId: "null",
        IsLatest: true,
        LastModified: iso(o.stat.mtime),
        ETag: etagOf(o.stat),
        Size: o.stat.size,
        StorageClass: "STANDARD",
        Owner: { ID: c.session.username, DisplayName: c.session.username },
      })),
    }),
  );
}
