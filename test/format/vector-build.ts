// Builds the docs/format.md test vectors deterministically: salt and nonces come from a supplied list.
import { createHash } from "node:crypto";
import { createHeader, SegmentWriter } from "../../src/format/index.ts";

export interface Vector {
  name: string;
  segmentLog2: number;
  fileId: string;
  dek: string;
  wrappedDek: string;
  salt: string;
  nonces: string[];
  plaintext: string;
  container: string;
  containerSha256: string;
}

export type VectorInput = Pick<
  Vector,
  "name" | "segmentLog2" | "fileId" | "dek" | "wrappedDek" | "salt" | "nonces" | "plaintext"
>;

export function buildContainer(input: VectorInput): Buffer {
  const queue = [input.salt, ...input.nonces].map((h) => Buffer.from(h, "hex"));
  const random = (length: number) => {
    const next = queue.shift();
    if (next === undefined || next.length !== length) throw new Error(`vector ${input.name}: random source mismatch`);
    return next;
  };
  const { header, keys } = createHeader({
    dek: Buffer.from(input.dek, "hex"),
    fileId: input.fileId,
    wrappedDek: Buffer.from(input.wrappedDek, "hex"),
    segmentLog2: input.segmentLog2,
    random,
  });
  const writer = new SegmentWriter(keys);
  const parts = [header, ...writer.push(Buffer.from(input.plaintext, "hex")), writer.finish()];
  keys.destroy();
  if (queue.length > 0) throw new Error(`vector ${input.name}: ${queue.length} unused random values`);
  return Buffer.concat(parts);
}

export function sha256Hex(data: Buffer | string): string {
  return createHash("sha256").update(data).digest("hex");
}
