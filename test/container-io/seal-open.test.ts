import assert from "node:assert/strict";
import { randomBytes, randomInt } from "node:crypto";
import { after, describe, it } from "node:test";
import { EncryptedReader } from "../../src/container-io/encrypted-reader.ts";
import { ParallelSegmentWriter } from "../../src/container-io/parallel-writer.ts";
import { SealPool, SealWorkerError } from "../../src/container-io/seal-pool.ts";
import { containerCrypto } from "../../src/crypto/gcm-native.ts";
import { IntegrityError } from "../../src/errors.ts";
import { createHeader, segmentCount, segmentOffset } from "../../src/format/index.ts";
import type { BlobReader } from "../../src/store/blobs.ts";
import { decode, encode, openKeys, wrap } from "../format/helpers.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** A copy of `bytes` in an ArrayBuffer of its own (what the pool transfers). */
function own(bytes: Buffer): ArrayBuffer {
  const out = new ArrayBuffer(bytes.length);
  bytes.copy(Buffer.from(out));
  return out;
}

/** Opens segments [first, first + n) of `container` on the pool. */
async function openRange(pool: SealPool, id: number, container: Buffer, fileId: string, first: number, n: number) {
  const keys = openKeys(container, fileId);
  const count = segmentCount(keys.layout, container.length);
  const lastIndex = Math.min(count, first + n) - 1;
  const start = segmentOffset(keys.layout, first);
  const end = lastIndex === count - 1 ? container.length : segmentOffset(keys.layout, lastIndex + 1);
  keys.destroy();
  const result = await pool.open({
    keys: id,
    startIndex: first,
    sealed: own(container.subarray(start, end)),
    sealedLength: end - start,
    last: lastIndex === count - 1,
  });
  return Buffer.from(result.plaintext, 0, result.length);
}

/** A container held in memory, read the way the blob store reads (the format under test is pure). */
function memoryBlob(container: Buffer): BlobReader {
  return {
    size: container.length,
    read: async (position, length) => Buffer.from(container.subarray(position, position + length)),
    readInto: async (position, buffer) => container.copy(buffer, 0, position, position + buffer.length),
    close: async () => undefined,
  };
}

function reader(pool: SealPool, container: Buffer, fileId: string, size: number): EncryptedReader {
  const keys = openKeys(container, fileId);
  const count = segmentCount(keys.layout, container.length);
  return new EncryptedReader(memoryBlob(container), keys, keys.layout, count, size, () => undefined, pool);
}

describe("SealPool.open", () => {
  const pool = new SealPool({ threads: 1 });
  after(() => pool.close());

  for (const log2 of [10, 16]) {
    const S = 2 ** log2;
    const sizes = [0, 1, S - 1, S, S + 1, 16 * S - 1, 16 * S, 16 * S + 1, 3 * MiB + 4321];
    it(`segment 2^${log2}: ranges of 1, 3 and 16 segments give back the exact plaintext`, async () => {
      for (const size of sizes) {
        const plaintext = randomBytes(size);
        const { container } = encode(plaintext, "open", log2);
        const keys = openKeys(container, "open");
        const count = segmentCount(keys.layout, container.length);
        const id = pool.register(keys.sealWorkerParams());
        for (const n of [1, 3, 16]) {
          const parts: Buffer[] = [];
          for (let first = 0; first < count; first += n)
            parts.push(await openRange(pool, id, container, "open", first, n));
          assert.deepEqual(Buffer.concat(parts), plaintext, `size ${size}, ${n} per job`);
        }
        pool.release(id);
        keys.destroy();
      }
      assert.equal(pool.registeredKeys, 0);
    });
  }

  it("recycled output and sealed buffers are used and give the same plaintext", async () => {
    const S = 1024;
    const plaintext = randomBytes(40 * S + 7);
    const { container } = encode(plaintext, "recycle", 10);
    const keys = openKeys(container, "recycle");
    const id = pool.register(keys.sealWorkerParams());
    const count = segmentCount(keys.layout, container.length);
    let output: ArrayBuffer | undefined;
    const parts: Buffer[] = [];
    for (let first = 0; first < count; first += 4) {
      const last = Math.min(count, first + 4) - 1;
      const start = segmentOffset(keys.layout, first);
      const end = last === count - 1 ? container.length : segmentOffset(keys.layout, last + 1);
      const sealed = new ArrayBuffer(8 * keys.layout.sealedSegmentSize); // larger than needed, like a spare
      container.copy(Buffer.from(sealed), 0, start, end);
      const result = await pool.open({
        keys: id,
        startIndex: first,
        sealed,
        sealedLength: end - start,
        last: last === count - 1,
        output,
      });
      assert.equal(result.sealed.byteLength, 8 * keys.layout.sealedSegmentSize);
      if (output !== undefined) assert.equal(result.plaintext.byteLength, 4 * S);
      parts.push(Buffer.from(Buffer.from(result.plaintext, 0, result.length)));
      output = result.plaintext;
    }
    assert.deepEqual(Buffer.concat(parts), plaintext);
    pool.release(id);
    keys.destroy();
  });

  it("a flipped byte in any segment, the final one included, → IntegrityError and no plaintext", async () => {
    const S = 1024;
    const plaintext = randomBytes(5 * S + 100);
    const { container } = encode(plaintext, "tamper", 10);
    const keys = openKeys(container, "tamper");
    const id = pool.register(keys.sealWorkerParams());
    const count = segmentCount(keys.layout, container.length);
    assert.equal(count, 6);
    for (let seg = 0; seg < count; seg++) {
      const start = segmentOffset(keys.layout, seg);
      const end = seg === count - 1 ? container.length : start + keys.layout.sealedSegmentSize;
      for (const at of [start, start + 12, Math.min(start + 500, end - 20), end - 1]) {
        const bad = Buffer.from(container);
        bad[at] ^= 0x01;
        // The whole container in one job: earlier segments are fine, but nothing comes back.
        await assert.rejects(openRange(pool, id, bad, "tamper", 0, count), IntegrityError, `segment ${seg} @${at}`);
      }
    }
    // Truncation, a wrong last flag and a wrong start index are authentication failures too.
    const body = container.subarray(keys.layout.headerLength);
    const sealed = (n: number) => own(body.subarray(0, n));
    const full = keys.layout.sealedSegmentSize;
    await assert.rejects(
      pool.open({ keys: id, startIndex: 0, sealed: sealed(full), sealedLength: full, last: true }),
      IntegrityError,
    );
    await assert.rejects(
      pool.open({ keys: id, startIndex: 1, sealed: sealed(full), sealedLength: full, last: false }),
      IntegrityError,
    );
    await assert.rejects(
      pool.open({ keys: id, startIndex: 0, sealed: sealed(full + 10), sealedLength: full + 10, last: false }),
      IntegrityError,
    );
    await assert.rejects(
      pool.open({ keys: id, startIndex: 0, sealed: sealed(full + 20), sealedLength: full + 20, last: true }),
      IntegrityError,
    );
    pool.release(id);
    keys.destroy();
  });

  it("no hang when the pool closes mid-job; later jobs reject", async () => {
    const local = new SealPool();
    const plaintext = randomBytes(8 * MiB);
    const { container } = encode(plaintext, "close");
    const keys = openKeys(container, "close");
    const id = local.register(keys.sealWorkerParams());
    const count = segmentCount(keys.layout, container.length);
    const job = openRange(local, id, container, "close", 0, count);
    const failed = assert.rejects(job, SealWorkerError);
    await new Promise((resolve) => setTimeout(resolve, 5));
    await local.close();
    await failed;
    await assert.rejects(openRange(local, id, container, "close", 0, 1), SealWorkerError);
    keys.destroy();
  });
});

describe("ParallelSegmentWriter.recycle", () => {
  const pool = new SealPool({ threads: 1 });
  after(() => pool.close());

  it("two writers on one pool, interleaved, recycling every output: each container decodes", async () => {
    const newFile = (fileId: string, size: number) => {
      const dek = randomBytes(32);
      const { header, keys } = createHeader({ dek, fileId, wrappedDek: wrap(dek, fileId), segmentLog2: 10 });
      const writer = new ParallelSegmentWriter(pool, keys, { batchSegments: 4 });
      return { fileId, header, keys, writer, plaintext: randomBytes(size), out: [] as Buffer[] };
    };
    const files = [newFile("rec-a", 700 * KiB + 3), newFile("rec-b", 900 * KiB + 11)];
    const chunk = 5000;
    let recycled = 0;
    for (let at = 0; files.some((f) => at < f.plaintext.length); at += chunk) {
      for (const f of files) {
        if (at < f.plaintext.length) f.writer.push(f.plaintext.subarray(at, at + chunk));
        while (f.writer.inflightBytes > 8 * KiB) {
          const sealed = (await f.writer.next()) as Buffer;
          // "Write" it (copy), then hand it back: the next batches are sealed into it.
          f.out.push(Buffer.from(sealed));
          f.writer.recycle(sealed);
          recycled++;
          // A buffer it did not hand out is ignored.
          f.writer.recycle(Buffer.alloc(sealed.length));
        }
      }
    }
    assert.ok(recycled > 200);
    for (const f of files) {
      const rest = await f.writer.finish();
      const container = Buffer.concat([f.header, ...f.out, ...rest]);
      assert.deepEqual(decode(container, f.fileId), f.plaintext);
      for (const b of rest) f.writer.recycle(b); // after finish: to the pool's list, for the next writer or reader
      f.keys.destroy();
    }
    assert.equal(pool.registeredKeys, 0);
  });
});

// inline: opened on this thread through atrest's GCM binding (SealPool.inline, what the vfs's pool does), the same
// bytes and the same refusals as the worker's
for (const inline of [false, true]) {
  describe(`EncryptedReader on the pool${inline ? ", opening inline" : ""}`, () => {
    const pool = new SealPool({ threads: 1, inline });
    after(() => pool.close());
    if (inline) {
      it("opens without a worker when the binding is loaded", async () => {
        const plaintext = randomBytes(3 * MiB + 5);
        const { container } = encode(plaintext, "inline");
        const r = reader(pool, container, "inline", plaintext.length);
        assert.deepEqual(await r.read(0, plaintext.length), plaintext);
        await r.close();
        assert.equal(pool.workers, containerCrypto().native ? 0 : 1);
      });
    }
    it("random offsets and concurrent aligned 256 KiB reads; returned buffers stay intact", async () => {
      const S = 64 * KiB;
      for (const size of [0, 1, S - 1, S, S + 1, 16 * S - 1, 16 * S + 1, 5 * MiB + 333]) {
        const plaintext = randomBytes(size);
        const { container } = encode(plaintext, "reader");
        const r = reader(pool, container, "reader", size);
        for (let i = 0; i < 40; i++) {
          const offset = randomInt(0, size + 2);
          const length = randomInt(1, 300 * KiB);
          const got = await r.read(offset, length);
          assert.deepEqual(got, plaintext.subarray(offset, offset + length), `size ${size} @${offset}+${length}`);
        }
        // Like the SFTP adapter: aligned 256 KiB blocks, 5 in flight, results kept while later windows recycle.
        const B = 256 * KiB;
        const held: Promise<Buffer>[] = [];
        for (let o = 0; o < size; o += B) held.push(r.read(o, B));
        const blocks = await Promise.all(held);
        assert.deepEqual(Buffer.concat(blocks), plaintext, `size ${size}`);
        const again: Buffer[] = [];
        for (let o = 0; o < size; o += 32 * KiB) again.push(await r.read(o, 32 * KiB));
        assert.deepEqual(Buffer.concat(again), plaintext);
        assert.deepEqual(Buffer.concat(blocks), plaintext, "earlier results were not overwritten");
        await r.close();
        await assert.rejects(r.read(0, 1), /closed/);
      }
      assert.equal(pool.registeredKeys, 0);
    });

    it("a tampered segment fails the reads that need it with IntegrityError, others still work", async () => {
      const S = 64 * KiB;
      const size = 40 * S + 99;
      const plaintext = randomBytes(size);
      const { container } = encode(plaintext, "reader-tamper");
      const keys = openKeys(container, "reader-tamper");
      for (const seg of [0, 17, 40]) {
        const bad = Buffer.from(container);
        bad[segmentOffset(keys.layout, seg) + 100] ^= 0x80;
        const r = reader(pool, bad, "reader-tamper", size);
        await assert.rejects(r.read(seg * S, 10), IntegrityError);
        const other = seg === 0 ? 20 * S : 0;
        assert.deepEqual(await r.read(other, 1000), plaintext.subarray(other, other + 1000));
        await r.close();
      }
      keys.destroy();
    });
  });
}

describe("SealPool free lists", () => {
  for (const inline of [false, true])
    it(`a closed reader's spare windows serve the next reader; the lists are freed once the pool is idle${inline ? " (inline)" : ""}`, async () => {
      const pool = new SealPool({ threads: 1, inline });
      try {
        const size = 5 * MiB + 333;
        const plaintext = randomBytes(size);
        const { container } = encode(plaintext, "spares");
        const first = reader(pool, container, "spares", size);
        assert.deepEqual(await first.read(0, size), plaintext);
        const before = pool.freeBytes;
        await first.close();
        // its spares and windows (plaintext zeroed, ciphertext) are in the pool's lists now, not garbage
        const kept = pool.freeBytes;
        assert.ok(kept >= before + 2 * MiB, `kept ${before} -> ${kept}`);
        const second = reader(pool, container, "spares", size);
        assert.deepEqual(await second.read(0, size), plaintext);
        await second.close();
        assert.ok(pool.freeBytes <= kept + 2 * MiB, "the second reader took buffers from the lists");
        // windows read ahead are counted over every reader (one budget) and uncounted when read, evicted or closed
        assert.equal(pool.readAheadWindows, 0);
        // a second after the last job the lists are emptied (their memory freed at once, not at a later GC)
        await new Promise((r) => setTimeout(r, 1300));
        assert.equal(pool.freeBytes, 0);
        // and the pool still works
        const third = reader(pool, container, "spares", size);
        assert.deepEqual(await third.read(MiB, 100), plaintext.subarray(MiB, MiB + 100));
        await third.close();
      } finally {
        await pool.close();
      }
    });
});

describe("EncryptedReader on the pool when it closes", () => {
  const pool = new SealPool({ threads: 1 });
  after(() => pool.close());
  it("reads in flight when the pool closes reject instead of hanging", async () => {
    const local = new SealPool();
    const size = 8 * MiB;
    const { container } = encode(randomBytes(size), "reader-close");
    const r = reader(local, container, "reader-close", size);
    const reads = [r.read(0, 256 * KiB), r.read(4 * MiB, 256 * KiB)];
    await local.close();
    for (const p of reads) await assert.rejects(p);
    await r.close();
  });
});
