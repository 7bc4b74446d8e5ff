// Object tagging: Put/Get/DeleteObjectTagging, x-amz-tagging on PutObject and CopyObject (x-amz-tagging-directive),
// the `tagging` field of a POST Object form, x-amz-tagging-count on GET/HEAD. Tags are sealed with the version's
// attributes like the other object metadata (never in clear in meta.db, never in the audit); a new version starts
// without them, as in S3; a set is kept sorted by key, as S3 answers it. S3's limits: 10 tags, keys 1-128 and values 0-256 characters, keys unique.
import type { IncomingMessage } from "node:http";
import { S3Error } from "./errors.ts";
import { xmlTexts } from "./xml.ts";

export type Tags = [string, string][];

const MAX_TAGS = 10;
/** A bucket takes up to 50 tags (S3's limit). */
export const MAX_BUCKET_TAGS = 50;
const invalidTag = (m: string) => new S3Error("InvalidTag", 400, m);

function checked(tags: Tags, max = MAX_TAGS): Tags {
  if (tags.length > max) {
    throw invalidTag(
      max === MAX_TAGS ? "Object tags cannot be greater than 10" : "Bucket tag count cannot be greater than 50",
    );
  }
  const seen = new Set<string>();
  for (const [k, v] of tags) {
    if ([...k].length < 1 || [...k].length > 128) throw invalidTag("The TagKey you have provided is invalid");
    if ([...v].length > 256) throw invalidTag("The TagValue you have provided is invalid");
    if (seen.has(k)) throw invalidTag("Cannot provide multiple Tags with the same key");
    seen.add(k);
  }
  // S3 answers a tag set sorted by key
  return [...tags].sort((a, b) => Buffer.compare(Buffer.from(a[0]), Buffer.from(b[0])));
}

/** A Tagging document (<Tagging><TagSet><Tag><Key/><Value/></Tag>…). */
export function parseTagging(xml: string, max = MAX_TAGS): Tags {
  if (!/<Tagging[\s>]/.test(xml) || !/<TagSet[\s>/]/.test(xml)) {
    throw new S3Error("MalformedXML", 400, "The XML you provided was not well-formed or did not validate");
  }
  return checked(
    xmlTexts(xml.replace(/<Tag\s*\/>/g, "<Tag></Tag>"), "Tag").map((t) => {
      const key = xmlTexts(`<x>${t}</x>`, "Key")[0];
      if (key === undefined) throw new S3Error("MalformedXML", 400, "a Tag without a Key");
      return [key, xmlTexts(`<x>${t}</x>`, "Value")[0] ?? ""];
    }),
    max,
  );
}

/** The tags of an x-amz-tagging header (or form field): URL query form, k1=v1&k2=v2. */
export function parseTagQuery(raw: string): Tags {
  const dec = (s: string) => {
    try {
      return decodeURIComponent(s.replace(/\+/g, " "));
    } catch {
      throw invalidTag("The tag is not URL-encoded");
    }
  };
  return checked(
    raw
      .split("&")
      .filter(Boolean)
      .map((p) => {
        const eq = p.indexOf("=");
        return eq < 0 ? [dec(p), ""] : [dec(p.slice(0, eq)), dec(p.slice(eq + 1))];
      }),
  );
}

/** x-amz-tagging of a PutObject / CopyObject (REPLACE) request; undefined without one. */
export function taggingHeader(req: Pick<IncomingMessage, "headers">): Tags | undefined {
  const h = req.headers["x-amz-tagging"];
  return h === undefined ? undefined : parseTagQuery(Array.isArray(h) ? h.join("&") : h);
}

/** The tags a CopyObject gives its copy: the source's (COPY, the default) or the request's (REPLACE). */
export function copyTags(req: IncomingMessage, source: Tags | undefined): Tags | undefined {
  const directive = req.headers["x-amz-tagging-directive"] ?? "COPY";
  if (directive === "COPY") return source;
  if (directive === "REPLACE") return taggingHeader(req) ?? [];
  throw new S3Error("InvalidArgument", 400, "Unknown tagging directive.");
}

/** x-amz-tagging-count of a GET/HEAD answer. */
export function tagCountHeader(tags: Tags | undefined): Record<string, string> {
  return tags && tags.length > 0 ? { "x-amz-tagging-count": String(tags.length) } : {};
}
