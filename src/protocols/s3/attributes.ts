// GetObjectAttributes (GET /bucket/key?attributes): what HEAD tells and more, in one XML answer: the ETag, the
// additional checksum kept with the version, the parts of an object completed from a multipart upload (paged with
// x-amz-max-parts / x-amz-part-number-marker), the storage class and the size. An SSE-C object needs its key, as HEAD.
import { apiName, checksumAlgorithm } from "./checksum.ts";
import { type Ctx, httpDate, objectPath, send } from "./context.ts";
import { S3Error } from "./errors.ts";
import { etagOf } from "./metadata.ts";
import { statObject, versionHeader, versionIdOf } from "./objects.ts";
import { sseHeaders } from "./sse.ts";
import { type XmlObject, xmlDoc } from "./xml.ts";

const ATTRIBUTES = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"];

/** An integer header within [min, max], or `fallback` when it is absent. */
function intHeader(c: Ctx, name: string, min: number, max: number, fallback: number): number {
  const raw = c.req.headers[name];
  if (raw === undefined) return fallback;
  const n = /^\d{1,6}$/.test(String(raw)) ? Number(raw) : Number.NaN;
  if (!(n >= min && n <= max))
    throw new S3Error("InvalidArgument", 400, `${name} must be an integer from ${min} to ${max}`);
  return n;
}

export async function getObjectAttributes(c: Ctx): Promise<void> {
  const wanted = new Set(
    String(c.req.headers["x-amz-object-attributes"] ?? "")
      .split(",")
      .map((a) => a.trim())
      .filter(Boolean),
  );
  if (wanted.size === 0) throw new S3Error("InvalidArgument", 400, "x-amz-object-attributes header is required.");
  for (const a of wanted) {
    if (!ATTRIBUTES.includes(a)) throw new S3Error("InvalidArgument", 400, "Invalid attribute name specified.");
  }
  const maxParts = intHeader(c, "x-amz-max-parts", 0, 1000, 1000);
  const marker = intHeader(c, "x-amz-part-number-marker", 0, 10_000, 0);
  const st = await statObject(c);
  // the customer key of an SSE-C version is checked before anything about it is told (KEY_REQUIRED without it)
  const key =
    st.kind === "file"
      ? await c.session.keyOf?.(objectPath(c.bucket, c.key), c.customerKey?.key, versionIdOf(c))
      : undefined;
  const out: XmlObject = {};
  if (wanted.has("ETag")) out.ETag = etagOf(st).slice(1, -1);
  const sum = st.object?.checksum;
  if (wanted.has("Checksum") && sum) {
    out.Checksum = { [`Checksum${apiName(checksumAlgorithm(sum.algorithm))}`]: sum.value, ChecksumType: sum.type };
  }
  const runs = st.object?.parts;
  if (wanted.has("ObjectParts") && runs) {
    const sizes = runs.flatMap(([size, n]) => Array.from({ length: n }, () => size));
    const page = sizes.slice(marker, marker + maxParts);
    const truncated = marker + page.length < sizes.length;
    out.ObjectParts = {
      PartsCount: sizes.length,
      PartNumberMarker: marker,
      NextPartNumberMarker: truncated ? marker + page.length : undefined,
      MaxParts: maxParts,
      IsTruncated: truncated,
      Part: page.map((size, i) => {
        // a part's checksum, when the upload named an algorithm (kept with the object since the pieced Complete)
        const partSum = sum && st.object?.partChecksums?.[marker + i];
        return {
          ...(partSum ? { [`Checksum${apiName(checksumAlgorithm(sum.algorithm))}`]: partSum } : {}),
          PartNumber: marker + i + 1,
          Size: size,
        };
      }),
    };
  }
  if (wanted.has("StorageClass")) out.StorageClass = "STANDARD";
  if (wanted.has("ObjectSize")) out.ObjectSize = st.size;
  send(c.res, 200, xmlDoc("GetObjectAttributesResponse", out), {
    "last-modified": httpDate(st.mtime),
    ...versionHeader(st, versionIdOf(c)),
    ...sseHeaders(key, c.customerKey),
  });
}
