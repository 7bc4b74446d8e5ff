import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import { AtrestError } from "../../src/errors.ts";
import {
  openContainer,
  parseHeader,
  replaceWrappedDek,
  resumeFrom,
  SegmentWriter,
  segmentCount,
  segmentRange,
} from "../../src/format/index.ts";
import { decode, encode, openKeys, wrap } from "./helpers.ts";

const LOG2 = 10;
const S = 2 ** LOG2;

/** Appends `more` to `container` the way an upload resume does; returns the new container and every segment sealed. */
function append(container: Buffer, fileId: string, more: Buffer): { container: Buffer; sealed: Buffer[] } {
  const keys = openKeys(container, fileId);
  const count = segmentCount(keys.layout, container.length);
  const { start } = segmentRange(keys.layout, container.length, count - 1);
  const { truncateAt, writer, plaintextLength } = resumeFrom(keys, {
    segmentCount: count,
    lastSegmentBytes: container.subarray(start),
  });
  assert.equal(truncateAt, start);
  assert.equal(writer.plaintextLength, plaintextLength);
  const sealed = [...writer.push(more), writer.finish()];
  assert.equal(writer.plaintextLength, plaintextLength + more.length);
  assert.equal(
    writer.bytesWritten,
    sealed.reduce((n, s) => n + s.length, 0),
  );
  keys.destroy();
  return { container: Buffer.concat([container.subarray(0, truncateAt), ...sealed]), sealed };
}

function nonces(segments: Buffer[]): string[] {
  return segments.map((s) => s.subarray(0, 12).toString("hex"));
}

describe("append / resume", () => {
  const total = randomBytes(4 * S + 100);
  const splits = [0, 1, 2, S - 1, S, S + 1, 2 * S - 1, 2 * S, 2 * S + 1, 3 * S + 7, 4 * S, 4 * S + 99, 4 * S + 100];
  for (let i = 0; i < 20; i++) splits.push(Math.floor(Math.random() * total.length));

  it("appending at any split point gives the one-shot plaintext", () => {
    for (const split of splits) {
      const first = encode(total.subarray(0, split), "resume", LOG2);
      const { container } = append(first.container, "resume", total.subarray(split));
      assert.deepEqual(decode(container, "resume"), total, `split at ${split}`);
      assert.equal(container.length, encode(total, "resume", LOG2).container.length);
    }
  });

  it("a chain of many small appends never reuses a nonce under the file's key", () => {
    let { container } = encode(Buffer.alloc(0), "chain", LOG2);
    const { headerLength } = parseHeader(container);
    const everSealed: Buffer[] = [];
    for (let at = headerLength; at < container.length; at += S + 28)
      everSealed.push(container.subarray(at, at + S + 28));
    let at = 0;
    while (at < total.length) {
      const n = Math.min(total.length - at, 1 + Math.floor(Math.random() * 700));
      const step = append(container, "chain", total.subarray(at, at + n));
      container = step.container;
      everSealed.push(...step.sealed);
      at += n;
    }
    assert.deepEqual(decode(container, "chain"), total);
    const all = nonces(everSealed);
    assert.ok(all.length > 10);
    assert.equal(new Set(all).size, all.length);
  });

  it("a writer started with pending data matches a one-shot writer's plaintext", () => {
    const { container, fileId } = encode(Buffer.alloc(0), "w", LOG2);
    const keys = openKeys(container, fileId);
    const writer = new SegmentWriter(keys, { startIndex: 0, pending: total.subarray(0, 10) });
    const out = [container.subarray(0, keys.layout.headerLength), ...writer.push(total.subarray(10)), writer.finish()];
    assert.deepEqual(decode(Buffer.concat(out), fileId), total);
    assert.throws(() => writer.push(Buffer.alloc(1)), AtrestError);
    keys.destroy();
  });
});

describe("rewrap in place", () => {
  it("replaceWrappedDek keeps the slot length and every segment valid", () => {
    const plaintext = randomBytes(3 * S);
    const { container, fileId, dek } = encode(plaintext, "rewrap", LOG2);
    const header = parseHeader(container);
    const headerBytes = container.subarray(0, header.headerLength);
    // A rewrap (fresh wrap under the same stand-in KEK) in place: readers go through the key manager as usual.
    const rewrapped = replaceWrappedDek(headerBytes, wrap(dek, fileId));
    assert.equal(rewrapped.length, headerBytes.length);
    const moved = Buffer.concat([rewrapped, container.subarray(header.headerLength)]);
    assert.notDeepEqual(parseHeader(moved).wrappedDek, header.wrappedDek);
    assert.deepEqual(decode(moved, fileId), plaintext);
    // Longer and shorter opaque blobs fit too and leave the commitment and segments valid.
    for (const length of [header.wrappedDek.length + 40, 1]) {
      const blob = randomBytes(length);
      const slot = replaceWrappedDek(headerBytes, blob);
      const parsed = parseHeader(Buffer.concat([slot, container.subarray(header.headerLength)]));
      assert.deepEqual(parsed.wrappedDek, blob);
      openContainer(parsed, dek, fileId).destroy();
    }
    // Room left for a longer key name after a rotation.
    const roomFor = header.headerLength - 78;
    assert.ok(roomFor - header.wrappedDek.length >= 128);
    replaceWrappedDek(headerBytes, randomBytes(roomFor));
    assert.throws(() => replaceWrappedDek(headerBytes, randomBytes(roomFor + 1)), {
      name: "AtrestError",
      code: "INVALID_INPUT",
      message: /does not fit/,
    });
    assert.throws(() => replaceWrappedDek(headerBytes, Buffer.alloc(0)), AtrestError);
  });
});
