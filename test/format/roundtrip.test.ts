import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { describe, it } from "node:test";
import { decryptStream, encryptStream } from "../../src/container-io/streams.ts";
import {
  containerLength,
  createHeader,
  openContainer,
  parseHeader,
  plaintextLength,
  segmentCount,
  segmentRange,
} from "../../src/format/index.ts";
import { decode, encode, openKeys, readRange, unwrap, wrap } from "./helpers.ts";

const SMALL = 10;
const S = 2 ** SMALL;

describe("round trip", () => {
  for (const log2 of [SMALL, 16]) {
    const size = 2 ** log2;
    for (const length of [0, 1, 255, 256, size - 1, size, size + 1, 2 * size, 3 * size + 17]) {
      it(`segment 2^${log2}, ${length} bytes`, () => {
        const plaintext = randomBytes(length);
        const { container, fileId } = encode(plaintext, "rt", log2);
        assert.deepEqual(decode(container, fileId), plaintext);
        const header = parseHeader(container);
        assert.equal(container.length, containerLength(header.layout, length));
        assert.equal(segmentCount(header.layout, container.length), Math.floor(length / size) + 1);
      });
    }
  }

  it("several MB with default and small segments", () => {
    const plaintext = randomBytes(5 * 1024 * 1024 + 12345);
    for (const log2 of [SMALL, 16]) {
      const { container, fileId } = encode(plaintext, "big", log2);
      assert.deepEqual(decode(container, fileId), plaintext);
    }
  });

  it("random-access reads match the plaintext", () => {
    const plaintext = randomBytes(20 * S + 333);
    const { container, fileId } = encode(plaintext, "ra", SMALL);
    const keys = openKeys(container, fileId);
    const { start, end } = segmentRange(keys.layout, container.length, segmentCount(keys.layout, container.length) - 1);
    const lastData = keys.open(20, container.subarray(start, end), true);
    assert.equal(plaintextLength(keys.layout, container.length, lastData), plaintext.length);
    for (let i = 0; i < 300; i++) {
      const offset = Math.floor(Math.random() * (plaintext.length + 10));
      const length = Math.floor(Math.random() * 3 * S);
      assert.deepEqual(readRange(keys, container, offset, length), plaintext.subarray(offset, offset + length));
    }
    keys.destroy();
  });

  it("padding: tiny files look alike, sizes leak only a bucket", () => {
    const lengths = [0, 1, 100, 255].map((n) => encode(randomBytes(n), "p", SMALL).container.length);
    assert.equal(new Set(lengths).size, 1);
    const { layout } = parseHeader(encode(Buffer.alloc(0), "p").container);
    const distinct = new Set<number>();
    for (let n = 0; n < 65536; n++) {
      const padded = containerLength(layout, n) - layout.headerLength - 28;
      assert.ok(padded >= n + 1 && padded <= Math.max(256, (n + 1) * 1.125), `${n} -> ${padded}`);
      distinct.add(padded);
    }
    // Padmé: 2^bitlen(E) buckets per power of two (16 here), so ~8 octaves above the 256 floor.
    assert.ok(distinct.size <= 130, `${distinct.size} distinct sizes below one segment`);
  });

  it("streams: encryptStream then decryptStream, odd chunking, with backpressure", async () => {
    const plaintext = randomBytes(3 * 65536 + 999);
    const dek = randomBytes(32);
    const { header, keys } = createHeader({ dek, fileId: "s", wrappedDek: wrap(dek, "s") });
    const chunks: Buffer[] = [];
    const source = Readable.from(
      (function* () {
        for (let at = 0; at < plaintext.length; at += 30001) yield plaintext.subarray(at, at + 30001);
      })(),
    );
    await pipeline(source, encryptStream(header, keys), async (encrypted: AsyncIterable<Buffer>) => {
      for await (const chunk of encrypted) chunks.push(chunk);
    });
    keys.destroy();
    const container = Buffer.concat(chunks);
    assert.deepEqual(decode(container, "s"), plaintext);
    // Re-chunk the ciphertext unevenly, as a disk or socket would.
    const reChunked = (function* () {
      for (let at = 0; at < container.length; at += 7777) yield container.subarray(at, at + 7777);
    })();
    const out: Buffer[] = [];
    for await (const piece of decryptStream(Readable.from(reChunked), (h) =>
      openContainer(h, unwrap(h.wrappedDek, "s"), "s"),
    )) {
      out.push(piece);
    }
    assert.deepEqual(Buffer.concat(out), plaintext);
  });

  it("streams: a full final segment (exact multiple) and an empty file", async () => {
    for (const length of [0, 65536 * 40]) {
      const plaintext = randomBytes(length);
      const { container, fileId } = encode(plaintext, "m");
      const out: Buffer[] = [];
      for await (const piece of decryptStream(Readable.from([container]), (h) =>
        openContainer(h, unwrap(h.wrappedDek, fileId), fileId),
      )) {
        out.push(piece);
      }
      assert.deepEqual(Buffer.concat(out), plaintext);
    }
  });
});

describe("sealing a batch of segments into a given buffer", () => {
  it("gives the bytes seal gives under the same nonces, opens, and refuses a partial segment", () => {
    // one byte stream for both: sealSegmentsInto draws all nonces at once, seal one per segment
    const stream = randomBytes(4096);
    const from = () => {
      let at = 0;
      return (n: number) => {
        const out = Buffer.from(stream.subarray(at, at + n));
        at += n;
        return out;
      };
    };
    const dek = randomBytes(32);
    const wrappedDek = randomBytes(60);
    const batch = createHeader({ dek, fileId: "batch", wrappedDek, segmentLog2: SMALL, random: from() });
    const single = createHeader({ dek, fileId: "batch", wrappedDek, segmentLog2: SMALL, random: from() });
    assert.deepEqual(batch.header, single.header);
    const plaintext = randomBytes(5 * S);
    const out = Buffer.alloc(5 * batch.keys.layout.sealedSegmentSize + 7, 0xee);
    batch.keys.sealSegmentsInto(3, plaintext, out);
    const expected = Buffer.concat(
      [0, 1, 2, 3, 4].map((i) => single.keys.seal(3 + i, plaintext.subarray(i * S, (i + 1) * S), false)),
    );
    assert.deepEqual(out.subarray(0, expected.length), expected);
    assert.deepEqual(out.subarray(expected.length), Buffer.alloc(7, 0xee), "nothing past the segments written");
    const reader = openContainer(parseHeader(batch.header), dek, "batch");
    const sealed = reader.layout.sealedSegmentSize;
    for (let i = 0; i < 5; i++) {
      assert.deepEqual(
        reader.open(3 + i, out.subarray(i * sealed, (i + 1) * sealed), false),
        plaintext.subarray(i * S, (i + 1) * S),
      );
    }
    assert.throws(() => batch.keys.sealSegmentsInto(0, plaintext.subarray(1), out), { code: "INVALID_INPUT" });
    assert.throws(() => batch.keys.sealSegmentsInto(0, plaintext, Buffer.alloc(10)), { code: "INVALID_INPUT" });
  });
});
