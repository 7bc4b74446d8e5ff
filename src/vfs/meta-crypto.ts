import { createSecretKey, type KeyObject } from "node:crypto";
import { aeadKey, NONCE_LENGTH, open, SEAL_OVERHEAD, seal } from "../crypto/aead.ts";
import { zero } from "../crypto/bytes.ts";
import { hkdfSha256 } from "../crypto/hkdf.ts";
import { hmacSha256 } from "../crypto/hmac.ts";
import { bucketLength, padToBucket, unpad } from "../crypto/padding.ts";
import { randomBytes } from "../crypto/random.ts";
import { IntegrityError } from "../errors.ts";
import type { CustomerKeyCheck } from "./sse-c.ts";
import type { ObjectMeta } from "./types.ts";

export interface FileAttrs {
  size: number;
  mtime: number;
  mode: number;
  /** SSE-C versions: the salted check of the customer key (sse-c.ts); sealed with the rest. */
  ssec?: CustomerKeyCheck;
  /** S3 ETag and headers (types.ts ObjectMeta); sealed with the rest. */
  object?: ObjectMeta;
  /**
   * A pieced version (store FilePiece): each piece's content id and plaintext size, in order. The store's clear
   * file_pieces rows name the blobs; this sealed list is what the order and the sizes are checked against.
   */
  pieces?: PieceAttrs[];
  /** The S3 version id of a file in a versioned folder (vfs/versions.ts); absent = "null". Sealed with the rest. */
  versionId?: string;
}

export interface PieceAttrs {
  contentId: string;
  size: number;
}

type SealedObject = {
  e?: string;
  h?: Record<string, string>;
  p?: [number, number][];
  /** checksum: algorithm, base64 value, "F" (FULL_OBJECT) or "C" (COMPOSITE) */
  c?: [string, string, "F" | "C"];
  /** the parts' checksums (base64), in order */
  k?: string[];
  /** pieces: content id and size of each, in order */
  q?: [string, number][];
  /** S3 object tags: key and value pairs, in order */
  t?: [string, string][];
  /** the S3 version id (versioned folders) */
  v?: string;
  /** S3 ACL grants: grantee and permission pairs */
  a?: [string, string][];
  /** a bucket folder's S3 bucket policy (JSON text) */
  y?: string;
};

/**
 * Fixed width of the sealed attributes' head (v2): every record without S3 object metadata has this length; with it,
 * the object metadata (JSON) follows, padded to a bucket.
 */
export const ATTRS_LENGTH = 72;
const ATTRS_V2 = 0x02;
const ATTRS_SSEC = 0x01;
const ATTRS_OBJECT = 0x02;
// a v1 record is JSON (`[size, mtime, mode, …]`): its first byte is `[`
const ATTRS_V1_FIRST = 0x5b;

/**
 * Encrypts what the metadata database would otherwise reveal: names (AES-256-GCM, AAD = node id, with an HMAC
 * index for lookups) and sizes/times (AAD binds node, blob and content ids, so a row cannot be re-pointed).
 * Both keys derive from one metadata key that exists only wrapped by the KMS at rest.
 *
 * v2 (issue 11 item 9): a name is padded to a bucket (32, 64, 128, … bytes; crypto/padding.ts) under its own AAD
 * label, so its ciphertext gives the bucket, not the length; attributes are a fixed-width binary record
 * (ATTRS_LENGTH), so the size's digit count no longer shows. v1 records (unpadded name, JSON attrs) still open;
 * `resealLegacy` rewrites them. docs/format.md "Metadata at rest".
 */
function objectJson(object: ObjectMeta, pieces: PieceAttrs[] | undefined, versionId: string | undefined): string {
  const o: SealedObject = {};
  if (versionId !== undefined) o.v = versionId;
  if (pieces !== undefined) o.q = pieces.map((p) => [p.contentId, p.size]);
  if (object.etag !== undefined) o.e = object.etag;
  if (object.headers !== undefined) o.h = object.headers;
  if (object.parts !== undefined) o.p = object.parts;
  if (object.partChecksums !== undefined) o.k = object.partChecksums;
  if (object.checksum !== undefined) {
    const c = object.checksum;
    o.c = [c.algorithm, c.value, c.type === "FULL_OBJECT" ? "F" : "C"];
  }
  if (object.tags !== undefined && object.tags.length > 0) o.t = object.tags;
  if (object.acl !== undefined && object.acl.length > 0) o.a = object.acl;
  if (object.policy !== undefined) o.y = object.policy;
  return JSON.stringify(o);
}

function objectFrom(o: SealedObject): ObjectMeta {
  const out: ObjectMeta = {};
  if (o.e !== undefined) out.etag = o.e;
  if (o.h !== undefined) out.headers = o.h;
  if (o.p !== undefined) out.parts = o.p;
  if (o.k !== undefined) out.partChecksums = o.k;
  if (o.c !== undefined) {
    out.checksum = { algorithm: o.c[0], value: o.c[1], type: o.c[2] === "F" ? "FULL_OBJECT" : "COMPOSITE" };
  }
  if (o.t !== undefined) out.tags = o.t;
  if (o.a !== undefined) out.acl = o.a;
  if (o.y !== undefined) out.policy = o.y;
  return out;
}

/** A v1 record: JSON `[size, mtime, mode(, ssec | null(, object))]`. */
function legacyAttrs(plain: Buffer): FileAttrs {
  const [size, mtime, mode, ssec, object] = JSON.parse(plain.toString()) as [
    number,
    number,
    number,
    { s: string; m: string } | null | undefined,
    SealedObject | undefined,
  ];
  const out: FileAttrs = { size, mtime, mode };
  if (ssec) out.ssec = { salt: ssec.s, mac: ssec.m };
  if (object) out.object = objectFrom(object);
  return out;
}

function attrsAad(nodeId: string, blobId: string | null, contentId: string | null): string {
  return `attrs\0${nodeId}\0${blobId ?? ""}\0${contentId ?? ""}`;
}

function isBucketLength(n: number): boolean {
  return n >= 1 && bucketLength(n - 1) === n;
}

export class MetaCrypto {
  // KeyObjects: Node 24 re-imports a Buffer key on every cipher/HMAC call, which dominated listing time.
  #macKey: KeyObject | undefined;
  #encKey: KeyObject | undefined;

  constructor(metaKey: Buffer) {
    const mac = hkdfSha256(metaKey, Buffer.alloc(0), Buffer.from("atrest v1 name index"));
    const enc = hkdfSha256(metaKey, Buffer.alloc(0), Buffer.from("atrest v1 metadata aead"));
    this.#macKey = createSecretKey(mac);
    this.#encKey = aeadKey(enc);
    zero(mac, enc);
  }

  nameMac(parentId: string, name: string): Buffer {
    return hmacSha256(this.#keys().mac, Buffer.from(`${parentId}\0`), Buffer.from(name));
  }

  sealName(nodeId: string, name: string): Buffer {
    const padded = padToBucket(Buffer.from(name));
    try {
      return this.#seal(padded, `name\0v2\0${nodeId}`);
    } finally {
      zero(padded);
    }
  }

  openName(nodeId: string, ct: Buffer): string {
    if (isBucketLength(ct.length - SEAL_OVERHEAD)) {
      try {
        return unpad(this.#open(ct, `name\0v2\0${nodeId}`)).toString();
      } catch (err) {
        // a v1 name whose length happens to be a bucket's: fall through
        if (!(err instanceof IntegrityError)) throw err;
      }
    }
    return this.#open(ct, `name\0${nodeId}`).toString();
  }

  /** Whether a name ciphertext is still v1 (unpadded). */
  isLegacyName(nodeId: string, ct: Buffer): boolean {
    if (!isBucketLength(ct.length - SEAL_OVERHEAD)) return true;
    try {
      this.#open(ct, `name\0v2\0${nodeId}`).fill(0);
      return false;
    } catch {
      return true;
    }
  }

  sealAttrs(nodeId: string, blobId: string | null, contentId: string | null, attrs: FileAttrs): Buffer {
    const object =
      attrs.object || attrs.pieces || attrs.versionId !== undefined
        ? objectJson(attrs.object ?? {}, attrs.pieces, attrs.versionId)
        : undefined;
    const tail = object ? padToBucket(Buffer.from(object)) : Buffer.alloc(0);
    const plain = Buffer.alloc(ATTRS_LENGTH + tail.length);
    plain[0] = ATTRS_V2;
    plain[1] = (attrs.ssec ? ATTRS_SSEC : 0) | (object ? ATTRS_OBJECT : 0);
    plain.writeBigUInt64BE(BigInt(attrs.size), 2);
    plain.writeDoubleBE(attrs.mtime, 10);
    plain.writeUInt32BE(attrs.mode >>> 0, 18);
    if (attrs.ssec) {
      const salt = Buffer.from(attrs.ssec.salt, "base64");
      const mac = Buffer.from(attrs.ssec.mac, "base64");
      if (salt.length !== 16 || mac.length !== 32) {
        throw new Error("SSE-C check must be a 16-byte salt and a 32-byte MAC");
      }
      salt.copy(plain, 22);
      mac.copy(plain, 38);
    }
    tail.copy(plain, ATTRS_LENGTH);
    return this.#seal(plain, attrsAad(nodeId, blobId, contentId));
  }

  openAttrs(nodeId: string, blobId: string | null, contentId: string | null, ct: Buffer): FileAttrs {
    const plain = this.#open(ct, attrsAad(nodeId, blobId, contentId));
    if (plain[0] === ATTRS_V1_FIRST) return legacyAttrs(plain);
    if (plain[0] !== ATTRS_V2 || plain.length < ATTRS_LENGTH) throw new IntegrityError("unknown attributes record");
    const flags = plain[1] ?? 0;
    const attrs: FileAttrs = {
      size: Number(plain.readBigUInt64BE(2)),
      mtime: plain.readDoubleBE(10),
      mode: plain.readUInt32BE(18),
    };
    if (flags & ATTRS_SSEC) {
      attrs.ssec = {
        salt: plain.subarray(22, 38).toString("base64"),
        mac: plain.subarray(38, 70).toString("base64"),
      };
    }
    if (flags & ATTRS_OBJECT) {
      const sealed = JSON.parse(unpad(plain.subarray(ATTRS_LENGTH)).toString()) as SealedObject;
      const { q, v, ...rest } = sealed;
      if (Object.keys(rest).length > 0 || (!q && v === undefined)) attrs.object = objectFrom(rest);
      if (q) attrs.pieces = q.map(([contentId, size]) => ({ contentId, size }));
      if (v !== undefined) attrs.versionId = v;
    } else if (plain.length !== ATTRS_LENGTH) {
      throw new IntegrityError("attributes record length");
    }
    return attrs;
  }

  /** Whether an attributes ciphertext is still v1 (JSON), which `resealLegacyNodes` rewrites. */
  isLegacyAttrs(nodeId: string, blobId: string | null, contentId: string | null, ct: Buffer): boolean {
    const plain = this.#open(ct, attrsAad(nodeId, blobId, contentId));
    const legacy = plain[0] === ATTRS_V1_FIRST;
    plain.fill(0);
    return legacy;
  }

  /** Any small JSON record kept in the store (S3 multipart uploads), bound to `label` (its setting key) as AAD. */
  sealRecord(label: string, value: unknown): Buffer {
    return this.#seal(Buffer.from(JSON.stringify(value)), `record\0${label}`);
  }

  openRecord<T>(label: string, ct: Buffer): T {
    return JSON.parse(this.#open(ct, `record\0${label}`).toString()) as T;
  }

  destroy(): void {
    this.#macKey = undefined;
    this.#encKey = undefined;
  }

  #keys(): { mac: KeyObject; enc: KeyObject } {
    if (!this.#macKey || !this.#encKey) throw new Error("metadata keys destroyed");
    return { mac: this.#macKey, enc: this.#encKey };
  }

  #seal(plain: Buffer, aad: string): Buffer {
    return seal(this.#keys().enc, randomBytes(NONCE_LENGTH), plain, Buffer.from(aad));
  }

  #open(ct: Buffer, aad: string): Buffer {
    return open(this.#keys().enc, ct, Buffer.from(aad));
  }
}
