// S3-compatible endpoint (issue 13) over node:http / node:https, path-style requests (http://host:port/bucket/key).
// Buckets are the top-level folders of the user's tree (their home is '/'); an object key a/b/c is the file a/b/c in
// that folder. Every request is signed (SigV4, ./sigv4.ts) and logged in through the service's LoginService (defender,
// login audit); the file operations go through the user's VfsSession, which checks permissions and quotas and
// audits them with protocol s3. Errors become S3 XML once (./errors.ts).
import { createHash, randomUUID, timingSafeEqual } from "node:crypto";
import { createServer as createHttp, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttps } from "node:https";
import type { AddressInfo } from "node:net";
import { zero } from "../../crypto/bytes.ts";
import { AtrestError } from "../../errors.ts";
import { isValidKeyName } from "../../kms/api/key-ref.ts";
import type { Logger } from "../../logger.ts";
import type { LoginService } from "../../service/login.ts";
import { testHooks } from "../../test-hooks.ts";
import type { FileKey, FileStat, VfsSession } from "../../vfs/types.ts";
import { readBody } from "./body.ts";
import { accessDenied, noSuchBucket, S3Error, toS3Error } from "./errors.ts";
import { canonicalRequest, type ParsedAuth, parseAuth, queryPairs, verifier } from "./sigv4.ts";
import { type XmlObject, xmlDoc, xmlTexts } from "./xml.ts";

export interface S3ServerOptions {
  login: LoginService;
  host: string;
  /** 0 = any free port. */
  port: number;
  logger: Logger;
  /** PEM certificate and key for HTTPS; absent = plain HTTP (loopback tests: --s3-tls off). */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Clock (tests). */
  now?: () => number;
}

export interface S3Server {
  port: number;
  close(): Promise<void>;
}

const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const READ_PIECE = 1024 * 1024;

interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  session: VfsSession;
  bucket: string;
  key: string;
  query: Map<string, string>;
  auth: ParsedAuth;
  signingKey: Buffer | undefined;
  requestId: string;
  /** Over TLS (SSE-C needs it). */
  secure: boolean;
  /** SSE-C key of this request, decoded; zeroed when the request ends. */
  customerKey?: CustomerKey;
}

interface CustomerKey {
  key: Buffer;
  /** base64 MD5 of the key, as the client sent it (echoed). */
  md5: string;
}

function send(res: ServerResponse, status: number, body?: string, headers: Record<string, string> = {}): void {
  const h: Record<string, string | number> = { ...headers };
  if (body !== undefined) {
    h["content-type"] = "application/xml";
    h["content-length"] = Buffer.byteLength(body);
  } else if (h["content-length"] === undefined) h["content-length"] = 0;
  res.writeHead(status, h);
  res.end(body);
}

function sendError(res: ServerResponse, err: unknown, resource: string, requestId: string, logger: Logger): void {
  const f = toS3Error(err);
  if (f.internal) logger.error({ err, requestId }, "s3: internal error");
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = xmlDoc("Error", { Code: f.code, Message: f.message, Resource: resource, RequestId: requestId }).replace(
    ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"',
    "",
  );
  send(res, f.status, res.req?.method === "HEAD" ? undefined : body, { "x-amz-request-id": requestId });
}

const iso = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, ".000Z");
const httpDate = (ms: number) => new Date(ms).toUTCString();

/** ETag of an object: the MD5 of its plaintext is not kept yet, so a stable tag of version size and time. */
function etagOf(st: FileStat): string {
  return `"${st.size.toString(16)}-${Math.floor(st.mtime).toString(16)}"`;
}

function objectPath(bucket: string, key: string): string {
  return `/${bucket}/${key}`;
}

async function bucketExists(s: VfsSession, bucket: string): Promise<void> {
  try {
    const st = await s.stat(`/${bucket}`);
    if (st.kind !== "dir") throw noSuchBucket();
  } catch (err) {
    if (err instanceof AtrestError && err.code === "NOT_FOUND") throw noSuchBucket();
    throw err;
  }
}

async function mkdirs(s: VfsSession, dir: string): Promise<void> {
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

/** Every object under `dir` (keys relative to the bucket), sorted by key as S3 lists them (UTF-8 byte order). */
async function walk(s: VfsSession, bucket: string, prefix: string): Promise<{ key: string; stat: FileStat }[]> {
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

async function listBuckets(c: Ctx): Promise<void> {
  const entries = (await c.session.list("/")).filter((e) => e.stat.kind === "dir");
  const body = xmlDoc("ListAllMyBucketsResult", {
    Owner: { ID: c.session.username, DisplayName: c.session.username },
    Buckets: { Bucket: entries.map((e) => ({ Name: e.name, CreationDate: iso(e.stat.mtime) })) },
  });
  send(c.res, 200, body);
}

async function createBucket(c: Ctx): Promise<void> {
  if (!BUCKET_NAME.test(c.bucket) || c.bucket.includes(".."))
    throw new S3Error("InvalidBucketName", 400, "The specified bucket is not valid.");
  for await (const _ of readBody(c.req, { auth: c.auth, key: c.signingKey }).pieces) {
    // CreateBucketConfiguration (location) is accepted and ignored: one region
  }
  try {
    await c.session.mkdir(`/${c.bucket}`);
  } catch (err) {
    if (err instanceof AtrestError && err.code === "EXISTS") {
      throw new S3Error(
        "BucketAlreadyOwnedByYou",
        409,
        "Your previous request to create the named bucket succeeded and you already own it.",
      );
    }
    throw err;
  }
  send(c.res, 200, undefined, { location: `/${c.bucket}` });
}

async function deleteBucket(c: Ctx): Promise<void> {
  await bucketExists(c.session, c.bucket);
  await c.session.rmdir(`/${c.bucket}`);
  send(c.res, 204);
}

async function listObjects(c: Ctx): Promise<void> {
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
  for (const o of all) {
    if (Buffer.compare(Buffer.from(o.key), Buffer.from(after)) <= 0) continue;
    let cp: string | undefined;
    if (delimiter) {
      const at = o.key.indexOf(delimiter, prefix.length);
      if (at >= 0) cp = o.key.slice(0, at + delimiter.length);
    }
    if (cp !== undefined && prefixes.at(-1) === cp) continue;
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
        ...(v2 ? {} : { Owner: { ID: c.session.username, DisplayName: c.session.username } }),
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
        Prefix: enc(prefix),
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

async function putObject(c: Ctx): Promise<void> {
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
  const body = readBody(c.req, { auth: c.auth, key: c.signingKey });
  await mkdirs(c.session, path.slice(0, path.lastIndexOf("/")));
  const w = await c.session.openWrite(path, {
    truncate: true,
    key: sse.key,
    customerKey: customerKey?.key,
    encryptionNote: customerKey
      ? "sse-c"
      : sse.mode
        ? `sse ${sse.mode}${sse.key ? ` key ${sse.key}` : ""}${asked.mode ? "" : " (bucket default)"}`
        : undefined,
  });
  try {
    for await (const piece of body.pieces) await w.write(w.size, piece);
  } catch (err) {
    await w.abort(false).catch(() => undefined);
    throw err;
  }
  await w.close();
  const { md5 } = body.result();
  send(c.res, 200, undefined, {
    etag: `"${md5.toString("hex")}"`,
    ...sseHeaders(await c.session.keyOf?.(path, customerKey?.key), customerKey),
  });
}

/**
 * The server-side encryption a PUT asks for (docs/s3.md "Server-side encryption"): every object is encrypted at rest
 * anyway, the headers only choose the key. AES256 (SSE-S3) = the key the folder > user > group > default rule gives;
 * aws:kms (SSE-KMS) with x-amz-server-side-encryption-aws-kms-key-id = that atrest KMS key (the vfs checks it is
 * allowed), without a key id = the rule's key.
 */
function requestedSse(req: IncomingMessage): { mode?: "AES256" | "aws:kms"; key?: string } {
  const mode = req.headers["x-amz-server-side-encryption"];
  const keyId = req.headers["x-amz-server-side-encryption-aws-kms-key-id"];
  if (req.headers["x-amz-server-side-encryption-context"] !== undefined) notImplemented();
  if (mode === undefined) {
    if (keyId !== undefined) {
      throw new S3Error(
        "InvalidArgument",
        400,
        "Server Side Encryption with KMS managed key requires HTTP header x-amz-server-side-encryption : aws:kms",
      );
    }
    return {};
  }
  if (mode === "AES256") {
    if (keyId !== undefined) {
      throw new S3Error(
        "InvalidArgument",
        400,
        "x-amz-server-side-encryption-aws-kms-key-id is only valid with x-amz-server-side-encryption aws:kms",
      );
    }
    return { mode };
  }
  if (mode === "aws:kms") {
    if (keyId === undefined || keyId === "") return { mode };
    return { mode, key: kmsKeyName(String(keyId)) };
  }
  throw new S3Error("InvalidArgument", 400, "The encryption method specified is not supported");
}

async function bucketDefault(c: Ctx): Promise<{ mode?: "AES256" | "aws:kms"; key?: string }> {
  const d = await c.session.getEncryption?.(`/${c.bucket}`);
  return d ? { mode: d.algorithm, key: d.key } : {};
}

async function readSmallBody(c: Ctx): Promise<string> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const piece of readBody(c.req, { auth: c.auth, key: c.signingKey }).pieces) {
    total += piece.length;
    if (total > 64 * 1024) throw new S3Error("MalformedXML", 400, "request body too large");
    chunks.push(piece);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** Get/Put/DeleteBucketEncryption: the bucket folder's default encryption for new objects (docs/s3.md). */
async function bucketEncryption(c: Ctx): Promise<void> {
  await bucketExists(c.session, c.bucket);
  const dir = `/${c.bucket}`;
  const m = c.req.method;
  if (!c.session.getEncryption || !c.session.setEncryption) notImplemented();
  if (m === "GET") {
    const d = await c.session.getEncryption(dir);
    if (!d) {
      throw new S3Error(
        "ServerSideEncryptionConfigurationNotFoundError",
        404,
        "The server side encryption configuration was not found",
      );
    }
    return send(
      c.res,
      200,
      xmlDoc("ServerSideEncryptionConfiguration", {
        Rule: {
          ApplyServerSideEncryptionByDefault: { SSEAlgorithm: d.algorithm, KMSMasterKeyID: d.key },
          BucketKeyEnabled: false,
        },
      }),
    );
  }
  if (m === "DELETE") {
    await c.session.setEncryption(dir, undefined);
    return send(c.res, 204);
  }
  if (m === "PUT") {
    const xml = await readSmallBody(c);
    const rules = xmlTexts(xml, "Rule");
    if (!xml.includes("<ServerSideEncryptionConfiguration") || rules.length !== 1) {
      throw new S3Error("MalformedXML", 400, "The XML you provided was not well-formed or did not validate");
    }
    const algorithm = xmlTexts(rules[0] as string, "SSEAlgorithm")[0]?.trim();
    const keyId = xmlTexts(rules[0] as string, "KMSMasterKeyID")[0]?.trim();
    if (algorithm !== "AES256" && algorithm !== "aws:kms") {
      throw new S3Error("MalformedXML", 400, "SSEAlgorithm must be AES256 or aws:kms");
    }
    if (keyId && algorithm !== "aws:kms") {
      throw new S3Error("InvalidArgument", 400, "KMSMasterKeyID goes with SSEAlgorithm aws:kms only");
    }
    const key = keyId ? kmsKeyName(keyId) : undefined;
    await c.session.setEncryption(dir, { algorithm, ...(key ? { key } : {}) });
    return send(c.res, 200);
  }
  throw new S3Error("MethodNotAllowed", 405, "The specified method is not allowed against this resource.");
}

/** An atrest KEK name from an SSE-KMS key id; an ARN or alias form names it after its last ':' or '/'. */
function kmsKeyName(keyId: string): string {
  const name = keyId.slice(Math.max(keyId.lastIndexOf("/"), keyId.lastIndexOf(":")) + 1);
  if (!isValidKeyName(name))
    throw new S3Error("KMS.NotFoundException", 400, "Invalid keyId: not an atrest KMS key name");
  return name;
}

const SSE_C = "x-amz-server-side-encryption-customer-";

/**
 * The SSE-C key of a request (x-amz-server-side-encryption-customer-algorithm / -key / -key-MD5), checked as AWS
 * checks it; undefined when the request has none. Refused over plain HTTP, as AWS does (tests on loopback: the
 * sseCOverHttp test hook). The decoded key lives in a Buffer the request handler zeroes; the header strings node:http
 * parsed cannot be zeroed (JavaScript strings are immutable) and are dropped with the request.
 */
function customerKeyOf(req: IncomingMessage, secure: boolean, prefix = SSE_C): CustomerKey | undefined {
  const h = req.headers;
  const alg = h[`${prefix}algorithm`];
  const key = h[`${prefix}key`];
  const md5 = h[`${prefix}key-md5`];
  if (alg === undefined && key === undefined && md5 === undefined) return undefined;
  const loopback = /^(127\.|::1$|::ffff:127\.)/.test(req.socket.remoteAddress ?? "");
  if (!secure && !(loopback && testHooks().sseCOverHttp?.())) {
    throw new S3Error(
      "InvalidRequest",
      400,
      "Requests specifying Server Side Encryption with Customer provided keys must be made over a secure connection.",
    );
  }
  const bad = (m: string) => new S3Error("InvalidArgument", 400, m);
  if (alg === undefined) {
    throw bad(
      "Requests specifying Server Side Encryption with Customer provided keys must provide a valid encryption algorithm.",
    );
  }
  if (alg !== "AES256") {
    throw new S3Error(
      "InvalidEncryptionAlgorithmError",
      400,
      "The encryption request you specified is not valid. The valid value is AES256.",
    );
  }
  if (typeof key !== "string" || key === "") {
    throw bad(
      "Requests specifying Server Side Encryption with Customer provided keys must provide an appropriate secret key.",
    );
  }
  if (typeof md5 !== "string" || md5 === "") {
    throw bad(
      "Requests specifying Server Side Encryption with Customer provided keys must provide the client calculated MD5 of the secret key.",
    );
  }
  if (!/^[A-Za-z0-9+/]{43}=$/.test(key)) throw bad("The secret key was invalid for the specified algorithm.");
  const raw = Buffer.from(key, "base64");
  const digest = createHash("md5").update(raw).digest();
  const given = /^[A-Za-z0-9+/]{22}==$/.test(md5) ? Buffer.from(md5, "base64") : Buffer.alloc(16);
  if (raw.length !== 32 || !timingSafeEqual(digest, given)) {
    zero(raw);
    throw bad("The calculated MD5 hash of the key did not match the hash that was provided.");
  }
  return { key: raw, md5 };
}

/** x-amz-server-side-encryption (and the KMS key id, or the SSE-C algorithm and key MD5) as AWS echoes them. */
function sseHeaders(key: FileKey | undefined, customer?: CustomerKey): Record<string, string> {
  if (!key) return {};
  if (key.customerKey && customer) {
    return { [`${SSE_C}algorithm`]: "AES256", [`${SSE_C}key-MD5`]: customer.md5 };
  }
  if (key.requested) {
    return { "x-amz-server-side-encryption": "aws:kms", "x-amz-server-side-encryption-aws-kms-key-id": key.kek };
  }
  return { "x-amz-server-side-encryption": "AES256" };
}

function parseRange(h: string | undefined, size: number): { start: number; end: number } | undefined {
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

async function statObject(c: Ctx): Promise<FileStat> {
  await bucketExists(c.session, c.bucket);
  if (c.key.endsWith("/")) {
    const st = await c.session.stat(objectPath(c.bucket, c.key.slice(0, -1)));
    if (st.kind !== "dir") throw new AtrestError("NOT_FOUND", "no such key");
    return { ...st, size: 0 };
  }
  const st = await c.session.stat(objectPath(c.bucket, c.key));
  if (st.kind !== "file") throw new AtrestError("NOT_FOUND", "no such key");
  return st;
}

function conditional(c: Ctx, st: FileStat): boolean {
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

async function getObject(c: Ctx, head: boolean): Promise<void> {
  const st = await statObject(c);
  if (!conditional(c, st)) return;
  const headers: Record<string, string> = {
    etag: etagOf(st),
    "last-modified": httpDate(st.mtime),
    "accept-ranges": "bytes",
    "content-type": "binary/octet-stream",
    ...(st.kind === "file"
      ? sseHeaders(await c.session.keyOf?.(objectPath(c.bucket, c.key), c.customerKey?.key), c.customerKey)
      : {}),
  };
  const range = parseRange(c.req.headers.range, st.size);
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
  const r = await c.session.openRead(objectPath(c.bucket, c.key), { customerKey: c.customerKey?.key });
  try {
    c.res.writeHead(range ? 206 : 200, headers);
    let at = start;
    while (at <= end) {
      const piece = await r.read(at, Math.min(READ_PIECE, end - at + 1));
      if (piece.length === 0) break;
      at += piece.length;
      if (!c.res.write(piece)) {
        await new Promise<void>((resolve, reject) => {
          c.res.once("drain", resolve);
          c.res.once("close", () => reject(new Error("client went away")));
        });
      }
    }
    c.res.end();
  } finally {
    await r.close();
  }
}

/** Deletes one key (a missing key is no error in S3) and the folders it leaves empty: S3 has no empty prefixes. */
async function removeKey(s: VfsSession, bucket: string, key: string): Promise<void> {
  try {
    if (key.endsWith("/")) await s.rmdir(objectPath(bucket, key.slice(0, -1)));
    else await s.remove(objectPath(bucket, key));
  } catch (err) {
    if (!(err instanceof AtrestError && (err.code === "NOT_FOUND" || err.code === "NOT_EMPTY"))) throw err;
  }
  const parts = key.split("/").filter(Boolean);
  for (let n = parts.length - 1; n > 0; n--) {
    try {
      await s.rmdir(objectPath(bucket, parts.slice(0, n).join("/")));
    } catch {
      return;
    }
  }
}

async function deleteObject(c: Ctx): Promise<void> {
  await bucketExists(c.session, c.bucket);
  await removeKey(c.session, c.bucket, c.key);
  send(c.res, 204);
}

async function deleteObjects(c: Ctx): Promise<void> {
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
    const key = xmlTexts(`<x>${o}</x>`.replace(/<\/?x>/g, ""), "Key")[0] ?? "";
    try {
      const sub = { ...c, key };
      if (!key) throw new S3Error("InvalidArgument", 400, "empty key");
      void sub;
      await removeKey(c.session, c.bucket, key);
      if (!quiet) deleted.push({ Key: key });
    } catch (err) {
      const f = toS3Error(err);
      errors.push({ Key: key, Code: f.code, Message: f.message });
    }
  }
  send(c.res, 200, xmlDoc("DeleteResult", { Deleted: deleted, Error: errors }));
}

async function listVersions(c: Ctx): Promise<void> {
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

function notImplemented(): never {
  throw new S3Error(
    "NotImplemented",
    501,
    "A header or query you provided implies functionality that is not implemented.",
  );
}

async function dispatch(c: Ctx): Promise<void> {
  const m = c.req.method;
  const q = c.query;
  if (!c.bucket) {
    if (m === "GET") return listBuckets(c);
    throw new S3Error("MethodNotAllowed", 405, "The specified method is not allowed against this resource.");
  }
  if (!c.key) {
    if (q.has("versioning") && m === "GET") {
      await bucketExists(c.session, c.bucket);
      return send(c.res, 200, xmlDoc("VersioningConfiguration", {}));
    }
    if (q.has("location") && m === "GET") {
      await bucketExists(c.session, c.bucket);
      return send(c.res, 200, xmlDoc("LocationConstraint", {}));
    }
    if (q.has("delete") && m === "POST") return deleteObjects(c);
    if (q.has("encryption")) return bucketEncryption(c);
    if (q.has("versions") && m === "GET") return listVersions(c);
    for (const sub of [
      "acl",
      "policy",
      "cors",
      "lifecycle",
      "tagging",
      "uploads",
      "website",
      "logging",
      "notification",
      "replication",
      "object-lock",
      "ownershipControls",
      "publicAccessBlock",
      "requestPayment",
      "accelerate",
    ]) {
      if (q.has(sub)) notImplemented();
    }
    if (m === "PUT") return createBucket(c);
    if (m === "HEAD") {
      await bucketExists(c.session, c.bucket);
      return send(c.res, 200);
    }
    if (m === "DELETE") return deleteBucket(c);
    if (m === "GET") return listObjects(c);
    throw new S3Error("MethodNotAllowed", 405, "The specified method is not allowed against this resource.");
  }
  for (const sub of [
    "acl",
    "tagging",
    "uploads",
    "uploadId",
    "retention",
    "legal-hold",
    "attributes",
    "restore",
    "select",
  ]) {
    if (q.has(sub)) notImplemented();
  }
  if (m === "PUT") {
    if (c.req.headers["x-amz-copy-source"] !== undefined) notImplemented();
    return putObject(c);
  }
  if (m === "GET") return getObject(c, false);
  if (m === "HEAD") return getObject(c, true);
  if (m === "DELETE") return deleteObject(c);
  throw new S3Error("MethodNotAllowed", 405, "The specified method is not allowed against this resource.");
}

export async function startS3Server(options: S3ServerOptions): Promise<S3Server> {
  const { login, logger } = options;
  const now = options.now ?? Date.now;
  const sockets = new Set<import("node:net").Socket>();

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const requestId = randomUUID().replace(/-/g, "").slice(0, 16).toUpperCase();
    res.setHeader("x-amz-request-id", requestId);
    res.setHeader("server", "atrest");
    const url = req.url ?? "/";
    const qAt = url.indexOf("?");
    const rawPath = qAt < 0 ? url : url.slice(0, qAt);
    let resource = rawPath;
    let sessionId: string | undefined;
    let session: VfsSession | undefined;
    let signingKey: Buffer | undefined;
    let customerKey: CustomerKey | undefined;
    try {
      const pairs = queryPairs(qAt < 0 ? "" : url.slice(qAt + 1));
      const segments = rawPath.split("/");
      const decode = (s: string) => {
        try {
          return decodeURIComponent(s);
        } catch {
          throw new S3Error("InvalidURI", 400, "Couldn't parse the specified URI.");
        }
      };
      const bucket = decode(segments[1] ?? "");
      const key = segments.slice(2).map(decode).join("/");
      resource = key ? `/${bucket}/${key}` : `/${bucket}`;
      const auth = parseAuth(req, pairs, now());
      const canonical = canonicalRequest(req, rawPath, pairs, auth);
      const check = verifier(auth, canonical);
      sessionId = randomUUID();
      const result = await login.login({
        user: auth.accessKeyId,
        protocol: "s3",
        sessionId,
        sourceIp: req.socket.remoteAddress,
        credential: { method: "s3-sigv4", verify: (secret) => check.verify(secret) },
      });
      signingKey = check.signingKey();
      if (result.outcome !== "success") {
        // unknown key, wrong signature and a ban look alike
        throw new S3Error(
          "SignatureDoesNotMatch",
          403,
          "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
        );
      }
      if (key.length > 1024) throw new S3Error("KeyTooLongError", 400, "Your key is too long");
      session = await login.openSession(sessionId);
      customerKey = customerKeyOf(req, !!options.tls);
      await dispatch({
        req,
        res,
        session,
        bucket,
        key,
        query: new Map(pairs),
        auth,
        signingKey,
        requestId,
        secure: !!options.tls,
        customerKey,
      });
    } catch (err) {
      if (err instanceof AtrestError && err.code === "NOT_FOUND" && resource.split("/").length <= 2) {
        sendError(res, noSuchBucket(), resource, requestId, logger);
      } else sendError(res, err, resource, requestId, logger);
      // drain what the client still sends, so it reads the answer instead of a reset
      if (!req.complete) req.resume();
    } finally {
      if (signingKey) zero(signingKey);
      if (customerKey) zero(customerKey.key);
      await session?.close().catch(() => undefined);
      if (sessionId) login.logout(sessionId);
    }
  };

  const listener = (req: IncomingMessage, res: ServerResponse) => {
    void handle(req, res).catch((err) => {
      logger.error({ err }, "s3: request failed");
      res.destroy();
    });
  };
  const server: Server = options.tls
    ? createHttps({ cert: options.tls.cert, key: options.tls.key }, listener)
    : createHttp(listener);
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  server.keepAliveTimeout = 60_000;
  server.on("connection", (s) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => resolve());
  });
  void accessDenied;
  return {
    port: (server.address() as AddressInfo).port,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        setTimeout(() => {
          for (const s of sockets) s.destroy();
        }, 5000).unref();
      });
    },
  };
}
