// Test helpers: a stand-in key manager (context-bound wrap, as the real one does) and whole-container codecs
// built only from the public API, the way the vfs will use it.
import { randomBytes } from "node:crypto";
import { open, seal } from "../../src/crypto/aead.ts";
import { IntegrityError } from "../../src/errors.ts";
import {
  type ContainerKeys,
  createHeader,
  openContainer,
  parseHeader,
  SegmentWriter,
  segmentCount,
  segmentIndexAt,
  segmentRange,
} from "../../src/format/index.ts";

const KEK = randomBytes(32);
const KEY_REF = Buffer.from("kek:test:v1:");

export function wrap(dek: Buffer, fileId: string): Buffer {
  return Buffer.concat([KEY_REF, seal(KEK, randomBytes(12), dek, Buffer.from(fileId))]);
}

/** Fails like the real key manager: IntegrityError on tampering or a different file's context. */
export function unwrap(wrapped: Buffer, fileId: string): Buffer {
  if (!wrapped.subarray(0, KEY_REF.length).equals(KEY_REF)) throw new IntegrityError("bad wrapped key");
  return open(KEK, wrapped.subarray(KEY_REF.length), Buffer.from(fileId));
}

export interface TestFile {
  fileId: string;
  dek: Buffer;
  container: Buffer;
}

export function encode(plaintext: Buffer, fileId = "file-1", segmentLog2?: number, dek = randomBytes(32)): TestFile {
  const { header, keys } = createHeader({ dek, fileId, wrappedDek: wrap(dek, fileId), segmentLog2 });
  const writer = new SegmentWriter(keys);
  const parts = [header];
  // Uneven pushes exercise both the copying and the zero-copy path.
  for (let at = 0; at < plaintext.length; ) {
    const n = Math.min(plaintext.length - at, 1 + ((at * 7919) % 5000));
    parts.push(...writer.push(plaintext.subarray(at, at + n)));
    at += n;
  }
  parts.push(writer.finish());
  keys.destroy();
  return { fileId, dek, container: Buffer.concat(parts) };
}

/** What a reader does: parse, unwrap through the key manager, verify the commitment. */
export function openKeys(container: Buffer, fileId: string): ContainerKeys {
  const header = parseHeader(container);
  const dek = unwrap(header.wrappedDek, fileId);
  try {
    return openContainer(header, dek, fileId);
  } finally {
    dek.fill(0);
  }
}

export function decode(container: Buffer, fileId: string): Buffer {
  const keys = openKeys(container, fileId);
  try {
    const count = segmentCount(keys.layout, container.length);
    const out: Buffer[] = [];
    for (let i = 0; i < count; i++) {
      const { start, end, last } = segmentRange(keys.layout, container.length, i);
      out.push(keys.open(i, container.subarray(start, end), last));
    }
    return Buffer.concat(out);
  } finally {
    keys.destroy();
  }
}

/** Random-access read of [offset, offset + length) that opens only the segments it needs. */
export function readRange(keys: ContainerKeys, container: Buffer, offset: number, length: number): Buffer {
  const count = segmentCount(keys.layout, container.length);
  const out: Buffer[] = [];
  const first = segmentIndexAt(keys.layout, offset);
  let remaining = length;
  for (let i = first; i < count && remaining > 0; i++) {
    const { start, end, last } = segmentRange(keys.layout, container.length, i);
    const plain = keys.open(i, container.subarray(start, end), last);
    const from = i === first ? offset - i * keys.layout.segmentSize : 0;
    const piece = plain.subarray(from, from + remaining);
    out.push(piece);
    remaining -= piece.length;
  }
  return Buffer.concat(out);
}
