// Regenerates test/format/vectors.json: node test/format/make-vectors.ts > test/format/vectors.json
import { buildContainer, sha256Hex, type Vector, type VectorInput } from "./vector-build.ts";

const specs: { name: string; segmentLog2: number; plaintext: Buffer }[] = [
  { name: "empty", segmentLog2: 16, plaintext: Buffer.alloc(0) },
  { name: "one-byte", segmentLog2: 16, plaintext: Buffer.from("a") },
  { name: "two-segments", segmentLog2: 10, plaintext: Buffer.from(Array.from({ length: 1500 }, (_, i) => i % 251)) },
  { name: "exact-multiple", segmentLog2: 10, plaintext: Buffer.alloc(1024, 0x5a) },
];

const vectors: Vector[] = specs.map(({ name, segmentLog2, plaintext }) => {
  const derive = (label: string) => sha256Hex(`atrest vector ${name} ${label}`);
  const segments = Math.floor(plaintext.length / 2 ** segmentLog2) + 1;
  const input: VectorInput = {
    name,
    segmentLog2,
    fileId: `vector-${name}`,
    dek: derive("dek"),
    // Opaque to the format; a real one comes from the key manager.
    wrappedDek: Buffer.from(`kek:vectors:v1:${derive("wrapped")}`).toString("hex"),
    salt: derive("salt"),
    nonces: Array.from({ length: segments }, (_, i) => derive(`nonce ${i}`).slice(0, 24)),
    plaintext: plaintext.toString("hex"),
  };
  const container = buildContainer(input);
  return { ...input, container: container.toString("hex"), containerSha256: sha256Hex(container) };
});

process.stdout.write(`${JSON.stringify(vectors, null, 2)}\n`);
