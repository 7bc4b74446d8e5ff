import { createSecretKey, type KeyObject } from "node:crypto";
import { aeadKey, NONCE_LENGTH, open, seal } from "../crypto/aead.ts";
import { zero } from "../crypto/bytes.ts";
import { hkdfSha256 } from "../crypto/hkdf.ts";
import { hmacSha256 } from "../crypto/hmac.ts";
import { randomBytes } from "../crypto/random.ts";
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
}

type SealedObject = { e?: string; h?: Record<string, string> };

/**
 * Encrypts what the metadata database would otherwise reveal: names (AES-256-GCM, AAD = node id, with an HMAC
 * index for lookups) and sizes/times (AAD binds node, blob and content ids, so a row cannot be re-pointed).
 * Both keys derive from one metadata key that exists only wrapped by the KMS at rest.
 */
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
    return this.#seal(Buffer.from(name), `name\0${nodeId}`);
  }

  openName(nodeId: string, ct: Buffer): string {
    return this.#open(ct, `name\0${nodeId}`).toString();
  }

  sealAttrs(nodeId: string, blobId: string | null, contentId: string | null, attrs: FileAttrs): Buffer {
    const fields: unknown[] = [attrs.size, attrs.mtime, attrs.mode];
    if (attrs.ssec || attrs.object) fields.push(attrs.ssec ? { s: attrs.ssec.salt, m: attrs.ssec.mac } : null);
    if (attrs.object) {
      const o: SealedObject = {};
      if (attrs.object.etag !== undefined) o.e = attrs.object.etag;
      if (attrs.object.headers !== undefined) o.h = attrs.object.headers;
      fields.push(o);
    }
    const json = JSON.stringify(fields);
    return this.#seal(Buffer.from(json), `attrs\0${nodeId}\0${blobId ?? ""}\0${contentId ?? ""}`);
  }

  openAttrs(nodeId: string, blobId: string | null, contentId: string | null, ct: Buffer): FileAttrs {
    const [size, mtime, mode, ssec, object] = JSON.parse(
      this.#open(ct, `attrs\0${nodeId}\0${blobId ?? ""}\0${contentId ?? ""}`).toString(),
    ) as [number, number, number, { s: string; m: string } | null | undefined, SealedObject | undefined];
    const out: FileAttrs = { size, mtime, mode };
    if (ssec) out.ssec = { salt: ssec.s, mac: ssec.m };
    if (object) {
      out.object = {};
      if (object.e !== undefined) out.object.etag = object.e;
      if (object.h !== undefined) out.object.headers = object.h;
    }
    return out;
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
