// S3's additional checksums (x-amz-checksum-crc32 | crc32c | crc64nvme | sha1 | sha256): streaming digests, the CRC
// combination a FULL_OBJECT multipart checksum needs (the CRC of the whole object from the parts' CRCs and lengths,
// without reading the parts again), and the COMPOSITE form (the checksum of the parts' checksums, "-N").
// Integrity checks of what a client sent, not cryptography: CRC32 is zlib's (native); CRC32C and CRC64/NVME are
// table-driven here, as node:zlib has neither.
import { createHash, type Hash } from "node:crypto";
import { crc32 } from "node:zlib";
import { S3Error } from "./errors.ts";

export type ChecksumAlgorithm = "crc32" | "crc32c" | "crc64nvme" | "sha1" | "sha256";
export type ChecksumType = "FULL_OBJECT" | "COMPOSITE";

export const CHECKSUM_ALGORITHMS: readonly ChecksumAlgorithm[] = ["crc32", "crc32c", "crc64nvme", "sha1", "sha256"];

/** The algorithm a header or XML name gives (CRC32, crc32c, …); 400 InvalidRequest for any other. */
export function checksumAlgorithm(name: string): ChecksumAlgorithm {
  const a = name.toLowerCase();
  if ((CHECKSUM_ALGORITHMS as readonly string[]).includes(a)) return a as ChecksumAlgorithm;
  throw new S3Error(
    "InvalidRequest",
    400,
    `Value for x-amz-checksum-algorithm header is invalid: ${name.slice(0, 20)}`,
  );
}

/** The S3 API's spelling: CRC32, CRC32C, CRC64NVME, SHA1, SHA256 (ChecksumCRC32 in XML, x-amz-checksum-crc32 headers). */
export const apiName = (a: ChecksumAlgorithm) => a.toUpperCase();

const isCrc = (a: ChecksumAlgorithm) => a === "crc32" || a === "crc32c" || a === "crc64nvme";

/** The checksum type S3 gives an upload without x-amz-checksum-type: CRC64NVME is full-object only. */
export function defaultType(a: ChecksumAlgorithm): ChecksumType {
  return a === "crc64nvme" ? "FULL_OBJECT" : "COMPOSITE";
}

/** Checks an upload's algorithm and type as S3 does: SHA-1/SHA-256 cannot be full-object, CRC64NVME not composite. */
export function checkType(a: ChecksumAlgorithm, type: string | undefined): ChecksumType {
  if (type === undefined) return defaultType(a);
  if (type !== "FULL_OBJECT" && type !== "COMPOSITE") {
    throw new S3Error("InvalidRequest", 400, "Value for x-amz-checksum-type header is invalid.");
  }
  if ((type === "FULL_OBJECT" && !isCrc(a)) || (type === "COMPOSITE" && a === "crc64nvme")) {
    throw new S3Error("InvalidRequest", 400, `The ${apiName(a)} checksum does not support the ${type} checksum type.`);
  }
  return type;
}

function table32(poly: number): Uint32Array[] {
  const t = Array.from({ length: 8 }, () => new Uint32Array(256));
  const t0 = t[0] as Uint32Array;
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ poly : c >>> 1;
    t0[n] = c >>> 0;
  }
  for (let n = 0; n < 256; n++) {
    let c = t0[n] as number;
    for (let k = 1; k < 8; k++) {
      c = (t0[c & 0xff] as number) ^ (c >>> 8);
      (t[k] as Uint32Array)[n] = c >>> 0;
    }
  }
  return t;
}

let crc32cTables: Uint32Array[] | undefined;

/** CRC-32C (Castagnoli), reflected, slicing by 8. `crc` is the finalised CRC so far (0 to start). */
export function crc32c(b: Buffer, crc = 0): number {
  crc32cTables ??= table32(0x82f63b78);
  const [t0, t1, t2, t3, t4, t5, t6, t7] = crc32cTables as [
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
  ];
  let c = ~crc >>> 0;
  let i = 0;
  const n8 = b.length - (b.length % 8);
  for (; i < n8; i += 8) {
    const lo =
      (c ^
        ((b[i] as number) |
          ((b[i + 1] as number) << 8) |
          ((b[i + 2] as number) << 16) |
          ((b[i + 3] as number) << 24))) >>>
      0;
    c =
      (t7[lo & 0xff] as number) ^
      (t6[(lo >>> 8) & 0xff] as number) ^
      (t5[(lo >>> 16) & 0xff] as number) ^
      (t4[lo >>> 24] as number) ^
      (t3[b[i + 4] as number] as number) ^
      (t2[b[i + 5] as number] as number) ^
      (t1[b[i + 6] as number] as number) ^
      (t0[b[i + 7] as number] as number);
  }
  for (; i < b.length; i++) c = (t0[(c ^ (b[i] as number)) & 0xff] as number) ^ (c >>> 8);
  return ~c >>> 0;
}

let crc64Tables: { lo: Uint32Array; hi: Uint32Array } | undefined;
const CRC64NVME_POLY = 0x9a6c9329ac4bc9b5n;

/** CRC-64/NVME, reflected, a byte at a time on two 32-bit halves. `crc` is the finalised CRC so far. */
export function crc64nvme(b: Buffer, crc = 0n): bigint {
  if (!crc64Tables) {
    const lo = new Uint32Array(256);
    const hi = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = BigInt(n);
      for (let k = 0; k < 8; k++) c = c & 1n ? (c >> 1n) ^ CRC64NVME_POLY : c >> 1n;
      lo[n] = Number(c & 0xffffffffn);
      hi[n] = Number(c >> 32n);
    }
    crc64Tables = { lo, hi };
  }
  const { lo: tlo, hi: thi } = crc64Tables;
  const start = ~crc & 0xffffffffffffffffn;
  let lo = Number(start & 0xffffffffn);
  let hi = Number(start >> 32n);
  for (let i = 0; i < b.length; i++) {
    const x = (lo ^ (b[i] as number)) & 0xff;
    lo = (((lo >>> 8) | (hi << 24)) ^ (tlo[x] as number)) >>> 0;
    hi = ((hi >>> 8) ^ (thi[x] as number)) >>> 0;
  }
  return ~((BigInt(hi) << 32n) | BigInt(lo)) & 0xffffffffffffffffn;
}

/** A running checksum of one algorithm. */
export class Checksum {
  readonly algorithm: ChecksumAlgorithm;
  #hash: Hash | undefined;
  #crc = 0;
  #crc64 = 0n;
  constructor(algorithm: ChecksumAlgorithm) {
    this.algorithm = algorithm;
    if (algorithm === "sha1" || algorithm === "sha256") this.#hash = createHash(algorithm);
  }
  update(b: Buffer): void {
    if (this.#hash) this.#hash.update(b);
    else if (this.algorithm === "crc32") this.#crc = crc32(b, this.#crc);
    else if (this.algorithm === "crc32c") this.#crc = crc32c(b, this.#crc);
    else this.#crc64 = crc64nvme(b, this.#crc64);
  }
  /** The digest (binary); once. */
  digest(): Buffer {
    if (this.#hash) return this.#hash.digest();
    if (this.algorithm === "crc64nvme") {
      const out = Buffer.alloc(8);
      out.writeBigUInt64BE(this.#crc64);
      return out;
    }
    const out = Buffer.alloc(4);
    out.writeUInt32BE(this.#crc >>> 0);
    return out;
  }
}

const WIDTH: Record<string, bigint> = { crc32: 32n, crc32c: 32n, crc64nvme: 64n };
const POLY: Record<string, bigint> = { crc32: 0xedb88320n, crc32c: 0x82f63b78n, crc64nvme: CRC64NVME_POLY };

/** a·b modulo the CRC's polynomial, in the reflected bit order (zlib's multmodp, for any width). */
function multmodp(a: bigint, b: bigint, width: bigint, poly: bigint): bigint {
  let m = 1n << (width - 1n);
  let p = 0n;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1n)) === 0n) break;
    }
    m >>= 1n;
    b = b & 1n ? (b >> 1n) ^ poly : b >> 1n;
  }
  return p;
}

/** x^(8·bytes) modulo the polynomial: what appending `bytes` zero bytes multiplies a CRC by. */
function xPowBytes(bytes: number, width: bigint, poly: bigint): bigint {
  let p = 1n << (width - 1n); // x^0
  let sq = 1n << (width - 2n); // x^1, squared each round: x^(2^k)
  let n = BigInt(bytes) * 8n;
  while (n > 0n) {
    if (n & 1n) p = multmodp(sq, p, width, poly);
    sq = multmodp(sq, sq, width, poly);
    n >>= 1n;
  }
  return p;
}

/** The CRC of A‖B from CRC(A), CRC(B) and the length of B (finalised CRCs, big-endian as S3 sends them). */
export function combineCrc(algorithm: ChecksumAlgorithm, a: Buffer, b: Buffer, lengthB: number): Buffer {
  const width = WIDTH[algorithm];
  const poly = POLY[algorithm];
  if (width === undefined || poly === undefined) throw new Error(`${algorithm} is not a CRC`);
  const read = (x: Buffer) => (width === 64n ? x.readBigUInt64BE() : BigInt(x.readUInt32BE()));
  const out = Buffer.alloc(Number(width / 8n));
  const v = multmodp(xPowBytes(lengthB, width, poly), read(a), width, poly) ^ read(b);
  if (width === 64n) out.writeBigUInt64BE(v);
  else out.writeUInt32BE(Number(v));
  return out;
}

/** A multipart object's checksum (base64) from its parts' checksums (binary) and sizes. */
export function multipartChecksum(
  algorithm: ChecksumAlgorithm,
  type: ChecksumType,
  parts: { digest: Buffer; size: number }[],
): string {
  if (type === "COMPOSITE") {
    const h = new Checksum(algorithm);
    for (const p of parts) h.update(p.digest);
    return `${h.digest().toString("base64")}-${parts.length}`;
  }
  let acc: Buffer | undefined;
  for (const p of parts) acc = acc ? combineCrc(algorithm, acc, p.digest, p.size) : p.digest;
  return (acc as Buffer).toString("base64");
}
