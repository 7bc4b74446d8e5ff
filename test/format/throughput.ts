// Quick throughput check (not a test): node test/format/throughput.ts [MiB]
import { randomBytes } from "node:crypto";
import { createHeader, openContainer, parseHeader, SegmentWriter } from "../../src/format/index.ts";

const mib = Number(process.argv[2] ?? 1024);
const dek = randomBytes(32);
const { header, keys } = createHeader({ dek, fileId: "bench", wrappedDek: Buffer.alloc(80, 1) });
const chunk = randomBytes(1 << 20);

let t = process.hrtime.bigint();
const writer = new SegmentWriter(keys);
const segments: Buffer[] = [];
for (let i = 0; i < mib; i++) {
  for (const s of writer.push(chunk)) {
    if (segments.length < 16) segments.push(s);
  }
}
writer.finish();
const encSeconds = Number(process.hrtime.bigint() - t) / 1e9;

// Decrypt: open the retained sample segments repeatedly to cover the same volume.
const reader = openContainer(parseHeader(header), dek, "bench");
const perMiB = (1 << 20) / keys.layout.segmentSize;
const total = mib * perMiB;
t = process.hrtime.bigint();
for (let i = 0; i < total; i++) reader.open(i % segments.length, segments[i % segments.length], false);
const decSeconds = Number(process.hrtime.bigint() - t) / 1e9;

const gb = (mib * 2 ** 20) / 1e9;
console.log(`encrypt ${mib} MiB: ${encSeconds.toFixed(2)} s, ${(gb / encSeconds).toFixed(2)} GB/s`);
console.log(`decrypt ${mib} MiB: ${decSeconds.toFixed(2)} s, ${(gb / decSeconds).toFixed(2)} GB/s`);
keys.destroy();
reader.destroy();
dek.fill(0);
