// A share link of an E2EE sync region, opened in the browser (docs/sync-protocol.md §6a): the link key comes from the
// URL fragment (never sent to the server), opens the link's sealed payload (AES-256-GCM, bound to the link id), whose
// file key then opens the blob, an atrest container (docs/format.md), segment by segment with WebCrypto.
// Everything here is checked before a byte is handed out: the key commitment (wrong key, file id or header), every
// segment's tag (index and final flag in its AAD: reordering, truncation, extension), the canonical padding, and the
// blob and plaintext lengths the payload names. Runs in the browser and in Node (globalThis.crypto), so the format's
// test vectors check it too (test/web/sync-link-format.test.ts).

type Bytes = Uint8Array<ArrayBuffer>;

const enc = new TextEncoder();
const subtle = (): SubtleCrypto => globalThis.crypto.subtle;

export class LinkError extends Error {}

export interface LinkPayload {
  v: number;
  type: "link";
  regionId: string;
  entryId: string;
  fver: number;
  name: string;
  size: number;
  sha: string;
  blobHash: string;
  blobSize: number;
  dek: string;
}

/** Strict base64url without padding → bytes (exactly `length` of them when given). */
export function fromB64url(s: string, length?: number): Bytes {
  if (!/^[A-Za-z0-9_-]*$/.test(s) || s.length % 4 === 1) throw new LinkError("not base64url");
  const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (s.length % 4)) % 4));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  if (length !== undefined && out.length !== length) throw new LinkError("a key of the wrong length");
  return out;
}

function concat(parts: Uint8Array[]): Bytes {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

async function gcmOpen(key: CryptoKey, sealed: Uint8Array, aad: Bytes, what: string): Promise<Bytes> {
  if (sealed.length < 28) throw new LinkError(`${what}: too short`);
  try {
    const plain = await subtle().decrypt(
      { name: "AES-GCM", iv: sealed.slice(0, 12), additionalData: aad, tagLength: 128 },
      key,
      sealed.slice(12),
    );
    return new Uint8Array(plain);
  } catch {
    throw new LinkError(`${what}: authentication failed (tampered, or the wrong key)`);
  }
}

const aesKey = (raw: Bytes) => subtle().importKey("raw", raw, "AES-GCM", false, ["decrypt"]);

/** Opens the payload the server keeps for link `id` with the fragment's key; checks its shape. */
export async function openPayload(linkKey: Bytes, id: string, sealedB64: string): Promise<LinkPayload> {
  const plain = await gcmOpen(
    await aesKey(linkKey),
    fromB64url(sealedB64),
    enc.encode(`atrest-sync v1 link ${id}`),
    "the link",
  );
  const p = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(plain)) as LinkPayload;
  const name = typeof p.name === "string" ? p.name : "";
  if (
    p.type !== "link" ||
    p.v !== 1 ||
    !name ||
    name === "." ||
    name === ".." ||
    /[/\0]/.test(name) ||
    enc.encode(name).length > 255 ||
    !Number.isSafeInteger(p.size) ||
    p.size < 0 ||
    !Number.isSafeInteger(p.blobSize) ||
    typeof p.regionId !== "string" ||
    typeof p.entryId !== "string" ||
    !Number.isSafeInteger(p.fver)
  ) {
    throw new LinkError("the link's payload is not a v1 link");
  }
  return p;
}

// docs/format.md §2-§4
const MAGIC = [0x41, 0x54, 0x52, 0x53];
const FIXED = 78;
const PROBE = 4096;
const OVERHEAD = 28;

function bitLength(n: number): number {
  return n.toString(2).length;
}
function padme(n: number): number {
  if (n < 2) return n;
  const e = bitLength(n) - 1;
  const step = 2 ** (e - bitLength(e));
  return Math.ceil(n / step) * step;
}
function paddedFinal(segment: number, index: number, data: number): number {
  const before = index * segment;
  return Math.min(Math.max(256, padme(before + data + 1)), before + segment) - before;
}

async function hkdf(ikm: Bytes, salt: Bytes, info: Bytes): Promise<Bytes> {
  const k = await subtle().importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  return new Uint8Array(await subtle().deriveBits({ name: "HKDF", hash: "SHA-256", salt, info }, k, 256));
}

/**
 * Streaming opener of one container whose total length is known (the payload's blobSize): `push` ciphertext in any
 * chunking, get back the plaintext of every segment that authenticated; `finish` throws unless the final segment
 * was seen. The caller keeps the plaintext until `finish` succeeds (all or nothing).
 */
export class ContainerReader {
  readonly #total: number;
  readonly #fileId: Bytes;
  #dek: Bytes | undefined;
  #key: CryptoKey | undefined;
  #aad: Bytes | undefined;
  #segment = 0;
  #sealed = 0;
  #count = 0;
  #index = 0;
  #seen = 0;
  #pending: Uint8Array[] = [];
  #pendingLength = 0;
  #done = false;

  constructor(total: number, fileId: string, dek: Bytes) {
    this.#total = total;
    this.#fileId = enc.encode(fileId);
    if (this.#fileId.length < 1 || this.#fileId.length > 512) throw new LinkError("bad file id");
    if (dek.length !== 32) throw new LinkError("a file key of the wrong length");
    this.#dek = dek.slice();
  }

  #take(n: number): Bytes {
    const all = concat(this.#pending);
    this.#pending = all.length > n ? [all.subarray(n)] : [];
    this.#pendingLength = all.length - n;
    return all.slice(0, n);
  }

  async #open(head: Bytes): Promise<void> {
    const dek = this.#dek as Bytes;
    try {
      await this.#commit(head, dek);
    } finally {
      dek.fill(0);
      this.#dek = undefined;
    }
  }

  async #commit(head: Bytes, dek: Bytes): Promise<void> {
    if (head.length < FIXED || MAGIC.some((b, i) => head[i] !== b)) throw new LinkError("not an atrest container");
    if (head[4] !== 1 || head[5] !== 1) throw new LinkError(`unsupported container version ${head[4]}/${head[5]}`);
    const log2 = head[6] as number;
    if (log2 < 10 || log2 > 24 || head[7] !== 0) throw new LinkError("invalid container header");
    const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
    const headerLength = view.getUint32(8);
    if (headerLength === 0 || headerLength % 256 !== 0 || headerLength > PROBE || headerLength > head.length)
      throw new LinkError("invalid container header length");
    const wrapped = view.getUint16(FIXED - 2);
    if (wrapped === 0 || FIXED + wrapped > headerLength) throw new LinkError("invalid container header");
    for (let i = FIXED + wrapped; i < headerLength; i++)
      if (head[i] !== 0) throw new LinkError("invalid container header padding");
    const salt = head.slice(12, 44);
    const idField = concat([new Uint8Array([this.#fileId.length >> 8, this.#fileId.length & 0xff]), this.#fileId]);
    const commitKey = await hkdf(dek, salt, enc.encode("atrest v1 commit"));
    const hmac = await subtle().importKey("raw", commitKey, { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
    commitKey.fill(0);
    // HMAC verify compares in constant time
    if (!(await subtle().verify("HMAC", hmac, head.slice(44, 76), concat([head.subarray(0, 44), idField])))) {
      throw new LinkError("the file's key commitment does not match (wrong key, or the server sent another file)");
    }
    const raw = await hkdf(dek, salt, concat([enc.encode("atrest v1 segment"), this.#fileId]));
    this.#key = await aesKey(raw);
    raw.fill(0);
    this.#aad = concat([enc.encode("atrest v1 segment"), idField, new Uint8Array(9)]);
    this.#segment = 2 ** log2;
    this.#sealed = this.#segment + OVERHEAD;
    const body = this.#total - headerLength;
    const count = Math.ceil(body / this.#sealed);
    if (body <= OVERHEAD || body - (count - 1) * this.#sealed <= OVERHEAD)
      throw new LinkError("the blob's length is not a valid container layout");
    this.#count = count;
    this.#take(headerLength);
  }

  async push(chunk: Uint8Array): Promise<Bytes[]> {
    if (this.#done || this.#seen + chunk.length > this.#total)
      throw new LinkError("the blob is longer than it should be");
    this.#seen += chunk.length;
    this.#pending.push(chunk);
    this.#pendingLength += chunk.length;
    if (!this.#key) {
      if (this.#pendingLength < Math.min(PROBE, this.#total)) return [];
      await this.#open(concat(this.#pending));
    }
    const out: Bytes[] = [];
    const aad = this.#aad as Bytes;
    const tail = new DataView(aad.buffer, aad.length - 9, 9);
    while (this.#index < this.#count) {
      const last = this.#index === this.#count - 1;
      const need = last ? this.#total - (this.#seen - this.#pendingLength) : this.#sealed;
      if (this.#pendingLength < need) break;
      tail.setUint32(0, Math.floor(this.#index / 2 ** 32));
      tail.setUint32(4, this.#index % 2 ** 32);
      tail.setUint8(8, last ? 1 : 0);
      const plain = await gcmOpen(this.#key as CryptoKey, this.#take(need), aad, `segment ${this.#index}`);
      if (last) {
        let end = plain.length - 1;
        while (end >= 0 && plain[end] === 0) end--;
        if (end < 0 || plain[end] !== 0x80 || paddedFinal(this.#segment, this.#index, end) !== plain.length)
          throw new LinkError(`segment ${this.#index} has invalid padding`);
        out.push(plain.subarray(0, end));
        this.#done = true;
        this.#key = undefined;
      } else {
        out.push(plain);
      }
      this.#index++;
    }
    return out;
  }

  finish(): void {
    if (!this.#done) throw new LinkError("the blob is shorter than it should be");
  }
}

/** The container file id of a sync file version (src/sync/core/files.ts). */
export const syncFileId = (p: LinkPayload): string => `${p.regionId}/${p.entryId}/${p.fver}`;
