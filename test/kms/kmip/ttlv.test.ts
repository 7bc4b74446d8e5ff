// The TTLV codec (src/kms/kmip/ttlv.ts), by properties over generated messages (fast-check): what it encodes it
// decodes to the same tree; any byte string — random, a valid message cut short, or one with a byte changed — either
// decodes or is refused with a TtlvError, never another exception; and the limits (depth, size, items) hold.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { TAG_NAMES } from "../../../src/kms/kmip/tag-names.ts";
import { T } from "../../../src/kms/kmip/tags.ts";
import {
  DEFAULT_LIMITS,
  decodeTtlv,
  encodeTtlv,
  frameLength,
  struct,
  type Ttlv,
  TtlvError,
} from "../../../src/kms/kmip/ttlv.ts";

const tags = [...TAG_NAMES.keys()];
const tag = fc.constantFrom(...tags);

const leaf: fc.Arbitrary<Ttlv> = fc.oneof(
  fc.record({ tag, type: fc.constant("integer" as const), value: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }) }),
  fc.record({ tag, type: fc.constant("enumeration" as const), value: fc.integer({ min: 0, max: 2 ** 32 - 1 }) }),
  fc.record({ tag, type: fc.constant("interval" as const), value: fc.integer({ min: 0, max: 2 ** 32 - 1 }) }),
  fc.record({ tag, type: fc.constant("long" as const), value: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }) }),
  fc.record({
    tag,
    type: fc.constant("datetime" as const),
    value: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
  }),
  fc.record({ tag, type: fc.constant("boolean" as const), value: fc.boolean() }),
  fc.record({ tag, type: fc.constant("text" as const), value: fc.string({ unit: "grapheme", maxLength: 40 }) }),
  fc.record({
    tag,
    type: fc.constant("bytes" as const),
    value: fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a)),
  }),
  fc.record({
    tag,
    type: fc.constant("biginteger" as const),
    value: fc
      .integer({ min: 1, max: 4 })
      .chain((n) => fc.uint8Array({ minLength: 8 * n, maxLength: 8 * n }).map((a) => Buffer.from(a))),
  }),
);

const tree: fc.Arbitrary<Ttlv> = fc.letrec<{ node: Ttlv }>((rec) => ({
  node: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    leaf,
    fc.record({ tag, type: fc.constant("structure" as const), value: fc.array(rec("node"), { maxLength: 5 }) }),
  ),
})).node;

/** fast-check records have a null prototype: rebuild plain objects so deepStrictEqual compares values only. */
const plain = (t: Ttlv): Ttlv =>
  t.type === "structure" ? { tag: t.tag, type: t.type, value: t.value.map(plain) } : ({ ...t } as Ttlv);
const message = tree.map((t) => struct(T.RequestMessage, plain(t)));

function decodesOrRefuses(bytes: Buffer): void {
  try {
    decodeTtlv(bytes);
  } catch (e) {
    assert.ok(e instanceof TtlvError, `unexpected ${(e as Error).name}: ${(e as Error).message}`);
  }
}

const depth = (t: Ttlv): number => (t.type === "structure" ? 1 + Math.max(0, ...t.value.map(depth)) : 0);

describe("TTLV codec", () => {
  test("decode(encode(x)) = x, every length is a multiple of 8, and the frame length is the encoding's", () => {
    fc.assert(
      fc.property(message, (m) => {
        fc.pre(depth(m) < DEFAULT_LIMITS.maxDepth);
        const bytes = encodeTtlv(m);
        assert.equal(bytes.length % 8, 0);
        assert.equal(frameLength(bytes), bytes.length);
        assert.deepEqual(decodeTtlv(bytes), m);
        assert.deepEqual(encodeTtlv(decodeTtlv(bytes)), bytes);
      }),
      { numRuns: 500 },
    );
  });

  test("random bytes decode or are refused with a TtlvError", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (a) => decodesOrRefuses(Buffer.from(a))),
      { numRuns: 2000 },
    );
  });

  test("a valid message cut short is refused", () => {
    fc.assert(
      fc.property(message, fc.nat(), (m, n) => {
        const bytes = encodeTtlv(m);
        const cut = n % bytes.length;
        assert.throws(() => decodeTtlv(bytes.subarray(0, cut)), TtlvError);
      }),
      { numRuns: 500 },
    );
  });

  test("a valid message with one byte changed decodes or is refused, never anything else", () => {
    fc.assert(
      fc.property(message, fc.nat(), fc.integer({ min: 1, max: 255 }), (m, at, x) => {
        const bytes = Buffer.from(encodeTtlv(m));
        const i = at % bytes.length;
        bytes[i] = (bytes[i] as number) ^ x;
        decodesOrRefuses(bytes);
      }),
      { numRuns: 2000 },
    );
  });

  test("limits: nesting depth, item count and message size", () => {
    let deep: Ttlv = struct(T.Attribute);
    for (let i = 0; i < DEFAULT_LIMITS.maxDepth; i++) deep = struct(T.Attribute, deep);
    assert.throws(() => decodeTtlv(encodeTtlv(deep)), /nesting deeper/);
    const many = struct(T.RequestMessage, ...Array.from({ length: 5000 }, () => struct(T.Attribute)));
    assert.throws(() => decodeTtlv(encodeTtlv(many)), /more than 4096 items/);
    const big = encodeTtlv(struct(T.RequestMessage, { tag: T.Data, type: "bytes", value: Buffer.alloc(2 << 20) }));
    assert.throws(() => frameLength(big), /exceeds the limit/);
    assert.throws(() => decodeTtlv(big), /exceeds the limit/);
    // Unknown tags are refused on both sides.
    assert.throws(() => encodeTtlv(struct(0x42ffee)), /unknown tag/);
    const b = encodeTtlv(struct(T.RequestMessage));
    b.writeUIntBE(0x540000, 0, 3);
    assert.throws(
      () => decodeTtlv(b),
      (e: unknown) => e instanceof TtlvError && e.unknownTag,
    );
  });
});
