// Listings: ListObjects (v1), ListObjectsV2, ListObjectVersions.
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

/**
 * ListObjectVersions: every key's versions, newest first (its current file, then the noncurrent versions and delete
 * markers a versioned bucket keeps), keys in S3's order; paged with key-marker / version-id-marker.
 */
export async function listVersions(c: Ctx): Promise<void> {
  await bucketExists(c.session, c.bucket);
  const q = c.query;
  const prefix = q.get("prefix") ?? "";
  const delimiter = q.get("delimiter") ?? "";
  const maxKeys = Math.min(Number(q.get("max-keys") ?? 1000), 1000);
  if (!Number.isInteger(maxKeys) || maxKeys < 0)
    throw new S3Error("InvalidArgument", 400, "max-keys must be a non-negative integer");
  const keyMarker = q.get("key-marker") ?? "";
  const versionMarker = q.get("version-id-marker") ?? "";
  const encode = q.get("encoding-type") === "url";
  const enc = (s: string) => (encode ? encodeURIComponent(s).replace(/%2F/g, "/") : s);
  type Entry = { key: string; versionId: string; marker: boolean; seq: number; stat: FileStat };
  const all: Entry[] = (await walk(c.session, c.bucket, prefix)).map((o) => ({
    key: o.key,
    versionId: o.stat.versionId ?? "null",
    marker: false,
    seq: Number.POSITIVE_INFINITY,
    stat: o.stat,
  }));
  for (const v of (await c.session.listVersions?.(`/${c.bucket}`, prefix)) ?? []) {
    all.push({ key: v.key, versionId: v.versionId, marker: v.deleteMarker, seq: v.seq, stat: v.stat });
  }
  all.sort((a, b) => Buffer.compare(Buffer.from(a.key), Buffer.from(b.key)) || b.seq - a.seq);
  // the marker is an entry (key and version) or, with only a key, the end of that key's versions
  let start = all.findIndex((e) => Buffer.compare(Buffer.from(e.key), Buffer.from(keyMarker)) > 0);
  if (start < 0) start = all.length;
  if (keyMarker && versionMarker) {
    const at = all.findIndex((e) => e.key === keyMarker && e.versionId === versionMarker);
    if (at >= 0) start = at + 1;
  }
  const versions: XmlObject[] = [];
  const markers: XmlObject[] = [];
  const prefixes: string[] = [];
  let count = 0;
  let truncated = false;
  let last: Entry | undefined;
  let lastPrefix: string | undefined;
  const owner = { ID: c.session.username, DisplayName: c.session.username };
  for (let i = start; i < all.length && maxKeys > 0; i++) {
    const e = all[i] as Entry;
    const latest = i === 0 || (all[i - 1] as Entry).key !== e.key;
    let cp: string | undefined;
    if (delimiter) {
      const at = e.key.indexOf(delimiter, prefix.length);
      if (at >= 0) cp = e.key.slice(0, at + delimiter.length);
    }
    if (cp !== undefined && cp === prefixes.at(-1)) continue;
    if (count >= maxKeys) {
      truncated = true;
      break;
    }
    count++;
    if (cp !== undefined) {
      prefixes.push(cp);
      lastPrefix = cp;
      last = undefined;
      continue;
    }
    last = e;
    lastPrefix = undefined;
    const common = { Key: enc(e.key), VersionId: e.versionId, IsLatest: latest, LastModified: iso(e.stat.mtime) };
    if (e.marker) markers.push({ ...common, Owner: owner });
    else {
      versions.push({
        ...common,
        ETag: etagOf(e.stat),
        Size: e.stat.size,
        StorageClass: "STANDARD",
        Owner: owner,
      });
    }
  }
  send(
    c.res,
    200,
    xmlDoc("ListVersionsResult", {
      Name: c.bucket,
      Prefix: enc(prefix),
      KeyMarker: enc(keyMarker),
      VersionIdMarker: versionMarker,
      // clients page on with both markers (boto3 refuses a missing one)
      NextKeyMarker: truncated ? enc(last?.key ?? lastPrefix ?? "") : undefined,
      NextVersionIdMarker: truncated ? (last?.versionId ?? "") : undefined,
      MaxKeys: maxKeys,
      Delimiter: delimiter ? enc(delimiter) : undefined,
      EncodingType: encode ? "url" : undefined,
      IsTruncated: truncated,
      Version: versions,
      DeleteMarker: markers,
      CommonPrefixes: prefixes.map((p) => ({ Prefix: enc(p) })),
    }),
  );
}
