// KMIP's TTLV encoding (KMIP 1.2 spec §9.1): every item is a 3-byte tag, a 1-byte type, a 4-byte big-endian length
// and a value padded with zeros to a multiple of 8 bytes. Pure: bytes in, a tree out, and back. The decoder is
// strict, because its input comes from the network before anything else has looked at it: the message size and the
// nesting depth are bounded, every length must match its type exactly, padding must be zero, booleans 0 or 1, text
// valid UTF-8, a structure's children must fill it exactly, and a tag KMIP does not define is refused.

import { TAG_NAMES } from "./tag-names.ts";

export type Ttlv =
  | { tag: number; type: "structure"; value: Ttlv[] }
  | { tag: number; type: "integer"; value: number }
  | { tag: number; type: "long"; value: bigint }
  | { tag: number; type: "biginteger"; value: Buffer }
  | { tag: number; type: "enumeration"; value: number }
  | { tag: number; type: "boolean"; value: boolean }
  | { tag: number; type: "text"; value: string }
  | { tag: number; type: "bytes"; value: Buffer }
  | { tag: number; type: "datetime"; value: bigint }
  | { tag: number; type: "interval"; value: number };

export type TtlvType = Ttlv["type"];

const TYPE_CODES: Readonly<Record<TtlvType, number>> = {
  structure: 0x01,
  integer: 0x02,
  long: 0x03,
  biginteger: 0x04,
  enumeration: 0x05,
  boolean: 0x06,
  text: 0x07,
  bytes: 0x08,
  datetime: 0x09,
  interval: 0x0a,
};
const TYPE_BY_CODE = new Map<number, TtlvType>(Object.entries(TYPE_CODES).map(([k, v]) => [v, k as TtlvType]));

export interface TtlvLimits {
  /** Largest whole message (header included), bytes. */
  maxMessageBytes: number;
  /** Deepest nesting of structures (the message itself is depth 1). */
  maxDepth: number;
  /** Most items in one message. */
  maxItems: number;
}

export const DEFAULT_LIMITS: TtlvLimits = { maxMessageBytes: 1 << 20, maxDepth: 16, maxItems: 4096 };

/** Why a message could not be decoded; the server answers it with Result Reason Invalid Message. */
export class TtlvError extends Error {
  readonly unknownTag: boolean;
  constructor(message: string, unknownTag = false) {
    super(message);
    this.name = "TtlvError";
    this.unknownTag = unknownTag;
  }
}

const HEADER = 8;
const pad8 = (n: number): number => (n + 7) & ~7;
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

export function tagName(tag: number): string {
  return TAG_NAMES.get(tag) ?? `0x${tag.toString(16).padStart(6, "0")}`;
}

/**
 * The length of the message that starts `buf` (its first 8 bytes: header), for framing a stream; throws if the
 * header names an unknown tag, a non-structure, or a length beyond the limit, so a reader never waits for (or
 * allocates) a huge body.
 */
export function frameLength(header: Buffer, limits: TtlvLimits = DEFAULT_LIMITS): number {
  if (header.length < HEADER) throw new TtlvError("short TTLV header");
  const tag = header.readUIntBE(0, 3);
  if (!TAG_NAMES.has(tag)) throw new TtlvError(`unknown tag 0x${tag.toString(16)}`, true);
  if (header[3] !== TYPE_CODES.structure) throw new TtlvError("a KMIP message must be a structure");
  const len = header.readUInt32BE(4);
  if (len % 8 !== 0) throw new TtlvError("a structure's length must be a multiple of 8");
  if (HEADER + len > limits.maxMessageBytes) {
    throw new TtlvError(`message of ${HEADER + len} bytes exceeds the limit of ${limits.maxMessageBytes}`);
  }
  return HEADER + len;
}

/** Decodes exactly one item that fills `buf`. */
export function decodeTtlv(buf: Buffer, limits: TtlvLimits = DEFAULT_LIMITS): Ttlv {
  if (buf.length > limits.maxMessageBytes) {
    throw new TtlvError(`message of ${buf.length} bytes exceeds the limit of ${limits.maxMessageBytes}`);
  }
  const state = { items: 0 };
  const [item, end] = decodeAt(buf, 0, buf.length, 1, limits, state);
  if (end !== buf.length) throw new TtlvError(`${buf.length - end} bytes after the message`);
  return item;
}

function decodeAt(
  buf: Buffer,
  off: number,
  limit: number,
  depth: number,
  limits: TtlvLimits,
  state: { items: number },
): [Ttlv, number] {
  if (++state.items > limits.maxItems) throw new TtlvError(`more than ${limits.maxItems} items`);
  if (limit - off < HEADER) throw new TtlvError(`truncated item header at offset ${off}`);
  const tag = buf.readUIntBE(off, 3);
  if (!TAG_NAMES.has(tag)) throw new TtlvError(`unknown tag 0x${tag.toString(16)} at offset ${off}`, true);
  const code = buf[off + 3] as number;
  const type = TYPE_BY_CODE.get(code);
  if (type === undefined) throw new TtlvError(`unknown item type 0x${code.toString(16)} at offset ${off}`);
  const len = buf.readUInt32BE(off + 4);
  const start = off + HEADER;
  const padded = pad8(len);
  if (len > limit - start || padded > limit - start) {
    throw new TtlvError(`${tagName(tag)}: length ${len} runs past its container at offset ${off}`);
  }
  const end = start + padded;
  for (let i = start + len; i < end; i++) {
    if (buf[i] !== 0) throw new TtlvError(`${tagName(tag)}: non-zero padding at offset ${i}`);
  }
  const fixed = (n: number): void => {
    if (len !== n) throw new TtlvError(`${tagName(tag)}: ${type} must be ${n} bytes long, not ${len}`);
  };
  switch (type) {
    case "structure": {
      if (depth >= limits.maxDepth) throw new TtlvError(`nesting deeper than ${limits.maxDepth}`);
      const children: Ttlv[] = [];
      let p = start;
      while (p < start + len) {
        const [child, next] = decodeAt(buf, p, start + len, depth + 1, limits, state);
        children.push(child);
        p = next;
      }
      if (p !== start + len) throw new TtlvError(`${tagName(tag)}: children do not fill the structure`);
      return [{ tag, type, value: children }, end];
    }
    case "integer":
    case "enumeration":
    case "interval": {
      fixed(4);
      const value = type === "integer" ? buf.readInt32BE(start) : buf.readUInt32BE(start);
      return [{ tag, type, value } as Ttlv, end];
    }
    case "long":
    case "datetime":
      fixed(8);
      return [{ tag, type, value: buf.readBigInt64BE(start) }, end];
    case "boolean": {
      fixed(8);
      const v = buf.readBigUInt64BE(start);
      if (v > 1n) throw new TtlvError(`${tagName(tag)}: a boolean must be 0 or 1`);
      return [{ tag, type, value: v === 1n }, end];
    }
    case "biginteger":
      if (len === 0 || len % 8 !== 0) throw new TtlvError(`${tagName(tag)}: a big integer's length must be 8·n`);
      return [{ tag, type, value: Buffer.from(buf.subarray(start, start + len)) }, end];
    case "text": {
      let value: string;
      try {
        value = utf8.decode(buf.subarray(start, start + len));
      } catch {
        throw new TtlvError(`${tagName(tag)}: text is not valid UTF-8`);
      }
      return [{ tag, type, value }, end];
    }
    case "bytes":
      return [{ tag, type, value: Buffer.from(buf.subarray(start, start + len)) }, end];
  }
}

/** Encodes one item (and its children). */
export function encodeTtlv(item: Ttlv): Buffer {
  const out = Buffer.alloc(sizeOf(item));
  writeAt(out, 0, item);
  return out;
}

function valueLength(item: Ttlv): number {
  switch (item.type) {
    case "structure":
      return item.value.reduce((n, c) => n + sizeOf(c), 0);
    case "integer":
    case "enumeration":
    case "interval":
      return 4;
    case "long":
    case "datetime":
    case "boolean":
      return 8;
    case "biginteger":
      if (item.value.length === 0 || item.value.length % 8 !== 0) {
        throw new TtlvError(`${tagName(item.tag)}: a big integer's length must be 8·n`);
      }
      return item.value.length;
    case "text":
      return Buffer.byteLength(item.value, "utf8");
    case "bytes":
      return item.value.length;
  }
}

function sizeOf(item: Ttlv): number {
  return HEADER + pad8(valueLength(item));
}

function writeAt(out: Buffer, off: number, item: Ttlv): number {
  if (!TAG_NAMES.has(item.tag)) throw new TtlvError(`unknown tag 0x${item.tag.toString(16)}`, true);
  const len = valueLength(item);
  out.writeUIntBE(item.tag, off, 3);
  out[off + 3] = TYPE_CODES[item.type];
  out.writeUInt32BE(len, off + 4);
  const start = off + HEADER;
  switch (item.type) {
    case "structure": {
      let p = start;
      for (const c of item.value) p = writeAt(out, p, c);
      break;
    }
    case "integer":
      out.writeInt32BE(item.value, start);
      break;
    case "enumeration":
    case "interval":
      out.writeUInt32BE(item.value, start);
      break;
    case "long":
    case "datetime":
      out.writeBigInt64BE(item.value, start);
      break;
    case "boolean":
      out.writeBigUInt64BE(item.value ? 1n : 0n, start);
      break;
    case "text":
      out.write(item.value, start, "utf8");
      break;
    case "biginteger":
    case "bytes":
      item.value.copy(out, start);
      break;
  }
  return start + pad8(len);
}

// ---- building items ----

export const struct = (tag: number, ...value: (Ttlv | undefined)[]): Ttlv => ({
  tag,
  type: "structure",
  value: value.filter((v): v is Ttlv => v !== undefined),
});
export const int = (tag: number, value: number): Ttlv => ({ tag, type: "integer", value });
export const enumv = (tag: number, value: number): Ttlv => ({ tag, type: "enumeration", value });
export const bool = (tag: number, value: boolean): Ttlv => ({ tag, type: "boolean", value });
export const text = (tag: number, value: string): Ttlv => ({ tag, type: "text", value });
export const bytes = (tag: number, value: Buffer): Ttlv => ({ tag, type: "bytes", value });
export const datetime = (tag: number, at: Date): Ttlv => ({
  tag,
  type: "datetime",
  value: BigInt(Math.floor(at.getTime() / 1000)),
});

// ---- reading structures ----

/** A missing or mistyped field of a well-formed message (answered with Invalid Field / Missing Data). */
export class FieldError extends Error {
  readonly missing: boolean;
  constructor(message: string, missing: boolean) {
    super(message);
    this.name = "FieldError";
    this.missing = missing;
  }
}

interface ValueTypes {
  structure: Ttlv[];
  integer: number;
  long: bigint;
  biginteger: Buffer;
  enumeration: number;
  boolean: boolean;
  text: string;
  bytes: Buffer;
  datetime: bigint;
  interval: number;
}
type ValueOf<K extends TtlvType> = ValueTypes[K];

/** Typed access to a structure's children. */
export class Fields {
  readonly item: Ttlv;
  readonly #children: Ttlv[];

  constructor(item: Ttlv, expectTag?: number) {
    if (item.type !== "structure") throw new FieldError(`${tagName(item.tag)} must be a structure`, false);
    if (expectTag !== undefined && item.tag !== expectTag) {
      throw new FieldError(`expected ${tagName(expectTag)}, got ${tagName(item.tag)}`, false);
    }
    this.item = item;
    this.#children = item.value;
  }

  all<K extends TtlvType>(tag: number, type: K): ValueOf<K>[] {
    const out: ValueOf<K>[] = [];
    for (const c of this.#children) {
      if (c.tag !== tag) continue;
      if (c.type !== type) throw new FieldError(`${tagName(tag)} must be of type ${type}, not ${c.type}`, false);
      out.push(c.value as ValueOf<K>);
    }
    return out;
  }

  opt<K extends TtlvType>(tag: number, type: K): ValueOf<K> | undefined {
    const all = this.all(tag, type);
    if (all.length > 1) throw new FieldError(`${tagName(tag)} may appear only once`, false);
    return all.length === 0 ? undefined : (all[0] as ValueOf<K>);
  }

  one<K extends TtlvType>(tag: number, type: K): ValueOf<K> {
    const v = this.opt(tag, type);
    if (v === undefined) throw new FieldError(`${tagName(tag)} is missing in ${tagName(this.item.tag)}`, true);
    return v;
  }

  structs(tag: number): Fields[] {
    return this.#children.filter((c) => c.tag === tag).map((c) => new Fields(c));
  }

  struct(tag: number): Fields | undefined {
    const s = this.structs(tag);
    if (s.length > 1) throw new FieldError(`${tagName(tag)} may appear only once`, false);
    return s[0];
  }

  /** The raw child items with `tag` (an Attribute Value's type depends on its name). */
  raw(tag: number): Ttlv[] {
    return this.#children.filter((c) => c.tag === tag);
  }
}
