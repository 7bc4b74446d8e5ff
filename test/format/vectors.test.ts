import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { openContainer, parseHeader, segmentCount, segmentRange } from "../../src/format/index.ts";
import { buildContainer, sha256Hex, type Vector } from "./vector-build.ts";

const vectors: Vector[] = JSON.parse(readFileSync(new URL("./vectors.json", import.meta.url), "utf8"));

describe("test vectors (docs/format.md)", () => {
  assert.ok(vectors.length >= 4);
  for (const v of vectors) {
    it(`${v.name}: encodes byte for byte`, () => {
      const container = buildContainer(v);
      assert.equal(container.toString("hex"), v.container);
      assert.equal(sha256Hex(container), v.containerSha256);
    });

    it(`${v.name}: decrypts`, () => {
      const container = Buffer.from(v.container, "hex");
      const header = parseHeader(container);
      assert.equal(header.wrappedDek.toString("hex"), v.wrappedDek);
      assert.equal(header.salt.toString("hex"), v.salt);
      const keys = openContainer(header, Buffer.from(v.dek, "hex"), v.fileId);
      const count = segmentCount(header.layout, container.length);
      const parts: Buffer[] = [];
      for (let i = 0; i < count; i++) {
        const { start, end, last } = segmentRange(header.layout, container.length, i);
        assert.equal(container.subarray(start, start + 12).toString("hex"), v.nonces[i]);
        parts.push(keys.open(i, container.subarray(start, end), last));
      }
      keys.destroy();
      assert.equal(Buffer.concat(parts).toString("hex"), v.plaintext);
    });
  }
});
