// The web app's container reader (web/src/sync-link.ts, WebCrypto) against the format's test vectors and against
// containers the server-side writer makes: it returns exactly the plaintext, in any chunking, and refuses every
// tampering docs/format.md §5 lists, a wrong key and a wrong file id, before it returns the affected bytes.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { createHeader, SegmentWriter } from "../../src/format/index.ts";
import { sealLink } from "../../src/sync/core/links.ts";
import { ContainerReader, LinkError, openPayload } from "../../web/src/sync-link.ts";

interface Vector {
  name: string;
  fileId: string;
  dek: string;
  plaintext: string;
  container: string;
}
const vectors = JSON.parse(readFileSync(new URL("../format/vectors.json", import.meta.url), "utf8")) as Vector[];

async function read(container: Uint8Array, fileId: string, dek: Uint8Array, chunk = 1 << 20): Promise<Buffer> {
  const r = new ContainerReader(container.length, fileId, new Uint8Array(dek));
  const out: Uint8Array[] = [];
  for (let at = 0; at < container.length; at += chunk) out.push(...(await r.push(container.subarray(at, at + chunk))));
  r.finish();
  return Buffer.concat(out);
}

function make(size: number, segmentLog2 = 10): { dek: Buffer; fileId: string; plain: Buffer; container: Buffer } {
  const dek = randomBytes(32);
  const fileId = "r1/e1/3";
  const plain = randomBytes(size);
  const { header, keys } = createHeader({ dek, fileId, wrappedDek: Buffer.from("opaque wrap"), segmentLog2 });
  const w = new SegmentWriter(keys);
  const container = Buffer.concat([header, ...w.push(plain), w.finish()]);
  return { dek, fileId, plain, container };
}

describe("web container reader", () => {
  test("every test vector opens to its plaintext", async () => {
    for (const v of vectors) {
      const got = await read(Buffer.from(v.container, "hex"), v.fileId, Buffer.from(v.dek, "hex"));
      assert.equal(got.toString("hex"), v.plaintext, v.name);
    }
  });

  test("containers of the server's writer, in any chunking", async () => {
    for (const size of [0, 1, 1023, 1024, 1025, 5000, 70_000]) {
      const c = make(size);
      for (const chunk of [1, 7, 1052, 4096, 1 << 20]) {
        if (chunk === 1 && size > 5000) continue;
        assert.ok((await read(c.container, c.fileId, c.dek, chunk)).equals(c.plain), `${size}/${chunk}`);
      }
    }
  });

  test("tampering, truncation, extension, a wrong key or file id: refused", async () => {
    const c = make(5000);
    const refuse = (bytes: Uint8Array, fileId = c.fileId, dek: Uint8Array = c.dek) =>
      assert.rejects(read(bytes, fileId, dek), LinkError);
    const flip = (at: number) => {
      const b = Buffer.from(c.container);
      b[at] = (b[at] as number) ^ 1;
      return b;
    };
    await refuse(flip(20)); // salt (committed)
    await refuse(flip(50)); // commitment
    await refuse(flip(6)); // segment size
    await refuse(flip(c.container.length - 1)); // final tag
    await refuse(flip(1024 + 40)); // a full segment's ciphertext
    await refuse(c.container.subarray(0, c.container.length - 1));
    await refuse(Buffer.concat([c.container, Buffer.alloc(1)]));
    // swap segments 0 and 1 (reorder) and drop segment 1 (cut at a boundary)
    const full = 1024 + 28;
    const H = c.container.readUInt32BE(8);
    const seg = (i: number) => c.container.subarray(H + i * full, H + (i + 1) * full);
    const tailFrom = (i: number) => c.container.subarray(H + i * full);
    await refuse(Buffer.concat([c.container.subarray(0, H), seg(1), seg(0), tailFrom(2)]));
    await refuse(Buffer.concat([c.container.subarray(0, H), seg(0), tailFrom(2)]));
    await refuse(c.container, "r1/e1/4");
    await refuse(c.container, c.fileId, randomBytes(32));
    await assert.rejects(read(c.container, c.fileId, randomBytes(31)), LinkError);
  });

  test("the link payload opens with the fragment's key only, bound to its link id", async () => {
    const key = randomBytes(32);
    const id = "ab".repeat(16);
    const p = {
      v: 1,
      type: "link" as const,
      regionId: "r",
      entryId: "e",
      fver: 1,
      name: "report.pdf",
      size: 3,
      sha: "0".repeat(64),
      blobHash: "1".repeat(64),
      blobSize: 800,
      dek: "A".repeat(43),
    };
    const sealed = sealLink(key, id, p);
    assert.deepEqual(await openPayload(new Uint8Array(key), id, sealed), p);
    await assert.rejects(openPayload(new Uint8Array(key), "cd".repeat(16), sealed), LinkError);
    await assert.rejects(openPayload(new Uint8Array(randomBytes(32)), id, sealed), LinkError);
    const bad = sealLink(key, id, { ...p, name: "../etc" });
    await assert.rejects(openPayload(new Uint8Array(key), id, bad), /not a v1 link/);
  });
});
