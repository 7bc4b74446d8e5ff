import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ParallelSegmentWriter } from "../../src/container-io/parallel-writer.ts";
import { SealPool, SealWorkerError } from "../../src/container-io/seal-pool.ts";
import { containerCrypto } from "../../src/crypto/gcm-native.ts";
import { AtrestError } from "../../src/errors.ts";
import {
  type ContainerKeys,
  containerLength,
  createHeader,
  segmentCount,
  segmentRange,
} from "../../src/format/index.ts";
import { decode, encode, openKeys, wrap } from "../format/helpers.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

function newContainer(fileId: string, segmentLog2?: number): { header: Buffer; keys: ContainerKeys } {
  const dek = randomBytes(32);
  try {
    return createHeader({ dek, fileId, wrappedDek: wrap(dek, fileId), segmentLog2 });
  } finally {
    dek.fill(0);
  }
}

/** Pushes `plaintext` in `chunk`-byte pieces the way an upload would: collect output once enough is in flight. */
async function writeAll(
  writer: ParallelSegmentWriter,
  plaintext: Buffer,
  chunk: number,
  maxInflight = 4 * MiB,
): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for (let at = 0; at < plaintext.length; at += chunk) {
    writer.push(plaintext.subarray(at, at + chunk));
    while (writer.inflightBytes > maxInflight) {
      const sealed = await writer.next();
      assert.ok(sealed);
      out.push(sealed);
    }
  }
  out.push(...(await writer.finish()));
  return out;
}

/** Every segment of a container (nonce ‖ ciphertext ‖ tag), split by the layout alone. */
function splitSegments(container: Buffer, keys: ContainerKeys): Buffer[] {
  const count = segmentCount(keys.layout, container.length);
  const out: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const { start, end } = segmentRange(keys.layout, container.length, i);
    out.push(container.subarray(start, end));
  }
  return out;
}

function nonceSet(segments: Buffer[]): Set<string> {
  return new Set(segments.map((s) => s.subarray(0, 12).toString("hex")));
}

describe("ParallelSegmentWriter", () => {
  const pool = new SealPool({ threads: 2 });
  after(() => pool.close());

  for (const log2 of [16, 10]) {
    const S = 2 ** log2;
    const lengths = [0, 1, S - 1, S, S + 1, 16 * S, 16 * S + 1, 3 * MiB + 12345];
    for (const chunk of [KiB, 32 * KiB, MiB]) {
      it(`segment 2^${log2}, chunks of ${chunk / KiB} KiB: same layout as SegmentWriter, decodes`, async () => {
        for (const length of lengths) {
          const plaintext = randomBytes(length);
          const { header, keys } = newContainer("par", log2);
          const writer = new ParallelSegmentWriter(pool, keys);
          const parts = await writeAll(writer, plaintext, chunk, 2 * MiB);
          const container = Buffer.concat([header, ...parts]);
          assert.equal(writer.plaintextLength, length);
          assert.equal(writer.bytesWritten, container.length - header.length);
          assert.equal(writer.inflightBytes, 0);
          // Same boundaries, sizes and padding as the single-threaded writer.
          const reference = encode(plaintext, "par", log2).container;
          assert.equal(container.length, reference.length, `length ${length}`);
          assert.equal(container.length, containerLength(keys.layout, length));
          assert.deepEqual(decode(container, "par"), plaintext, `length ${length}`);
          // Whole segments only, in order: every batch but the last part is a multiple of the sealed segment size.
          for (const part of parts.slice(0, -1)) assert.equal(part.length % keys.layout.sealedSegmentSize, 0);
          keys.destroy();
        }
      });
    }
  }

  it("batches hold batchSegments segments; inflightBytes counts dispatched plaintext until next()", async () => {
    const log2 = 10;
    const S = 2 ** log2;
    const { header, keys } = newContainer("batch", log2);
    const writer = new ParallelSegmentWriter(pool, keys, { batchSegments: 3 });
    const plaintext = randomBytes(7 * S + 5);
    writer.push(plaintext.subarray(0, 3 * S - 1));
    assert.equal(writer.inflightBytes, 0);
    writer.push(plaintext.subarray(3 * S - 1, 7 * S + 5));
    assert.equal(writer.inflightBytes, 6 * S);
    const first = await writer.next();
    assert.equal(first?.length, 3 * (S + 28));
    assert.equal(writer.inflightBytes, 3 * S);
    const rest = await writer.finish();
    assert.equal(rest.length, 3); // batch 2, segment 6 (the partial batch's whole segment), final
    assert.equal(writer.inflightBytes, 0);
    assert.equal(await writer.next(), undefined);
    const container = Buffer.concat([header, first as Buffer, ...rest]);
    assert.deepEqual(decode(container, "batch"), plaintext);
    assert.throws(() => writer.push(Buffer.alloc(1)), /already finished/);
    await assert.rejects(writer.finish(), /already finished/);
    keys.destroy();
  });

  it("the default batch shrinks in powers of two while many containers are open; the output decodes", async () => {
    const own = new SealPool();
    const S = 64 * KiB;
    assert.equal(own.batchSegments(16, S, 1), 16);
    assert.equal(own.batchSegments(16, S, 32), 16);
    assert.equal(own.batchSegments(16, S, 33), 8);
    assert.equal(own.batchSegments(16, S, 100), 4);
    assert.equal(own.batchSegments(16, S, 100_000), 1);
    // 99 other containers open: this writer's batches are 4 segments, and its sealed output waiting to be taken
    // counts in the pool's backlog until next() hands it out.
    const others = Array.from({ length: 99 }, (_, i) => newContainer(`other-${i}`));
    const ids = others.map(({ keys }) => own.register(keys.sealWorkerParams()));
    assert.equal(own.crowded, true);
    const { header, keys } = newContainer("crowded");
    const writer = new ParallelSegmentWriter(own, keys);
    const plaintext = randomBytes(9 * S + 100);
    writer.push(plaintext);
    assert.equal(writer.inflightBytes, 8 * S);
    assert.equal(own.sealBacklog, 8 * S);
    while (own.sealingBytes > 0) await sleep(5);
    assert.equal(own.sealBacklog, 8 * S, "sealed but not taken");
    const first = await writer.next();
    assert.equal(first?.length, 4 * (S + 28));
    assert.equal(own.sealBacklog, 4 * S);
    const rest = await writer.finish();
    assert.equal(own.sealBacklog, 0);
    assert.deepEqual(decode(Buffer.concat([header, first as Buffer, ...rest]), "crowded"), plaintext);
    for (const id of ids) own.release(id);
    for (const o of others) o.keys.destroy();
    keys.destroy();
    await own.close();
  });

  it("resume: startIndex and pending continue an existing container", async () => {
    const log2 = 10;
    const S = 2 ** log2;
    const total = randomBytes(40 * S + 77);
    for (const split of [0, 1, S - 1, S, S + 1, 16 * S, 16 * S + 3, 33 * S - 1, 40 * S + 77]) {
      const { container: first } = encode(total.subarray(0, split), "resume", log2);
      const keys = openKeys(first, "resume");
      const count = segmentCount(keys.layout, first.length);
      const { start, end } = segmentRange(keys.layout, first.length, count - 1);
      const pending = keys.open(count - 1, first.subarray(start, end), true);
      const writer = new ParallelSegmentWriter(pool, keys, { startIndex: count - 1, pending, batchSegments: 4 });
      assert.equal(writer.plaintextLength, split);
      const parts = await writeAll(writer, total.subarray(split), 5000);
      const container = Buffer.concat([first.subarray(0, start), ...parts]);
      assert.deepEqual(decode(container, "resume"), total, `split ${split}`);
      // Earlier segments are untouched.
      assert.deepEqual(container.subarray(0, start), first.subarray(0, start));
      keys.destroy();
    }
  });

  it("rejects bad options like SegmentWriter", () => {
    const { keys } = newContainer("opts", 10);
    assert.throws(() => new ParallelSegmentWriter(pool, keys, { startIndex: -1 }), AtrestError);
    assert.throws(() => new ParallelSegmentWriter(pool, keys, { pending: Buffer.alloc(1024) }), AtrestError);
    assert.throws(() => new ParallelSegmentWriter(pool, keys, { batchSegments: 0 }), AtrestError);
    keys.destroy();
    assert.throws(() => new ParallelSegmentWriter(pool, keys), /destroyed/);
  });

  it("writers sharing one pool, interleaving pushes, each get their own output; all nonces unique", async () => {
    const log2 = 10;
    const files = Array.from({ length: 5 }, (_, i) => {
      const fileId = `shared-${i}`;
      const { header, keys } = newContainer(fileId, log2);
      const writer = new ParallelSegmentWriter(pool, keys, { batchSegments: 1 + i * 3 });
      return { fileId, header, keys, writer, plaintext: randomBytes(300 * KiB + i * 777), out: [] as Buffer[] };
    });
    const chunk = 3000;
    for (let at = 0; files.some((f) => at < f.plaintext.length); at += chunk) {
      for (const f of files) {
        if (at < f.plaintext.length) f.writer.push(f.plaintext.subarray(at, at + chunk));
        if (f.writer.inflightBytes > 64 * KiB) f.out.push((await f.writer.next()) as Buffer);
      }
    }
    const all: Buffer[] = [];
    for (const f of await Promise.all(files.map(async (f) => ({ ...f, rest: await f.writer.finish() })))) {
      const container = Buffer.concat([f.header, ...f.out, ...f.rest]);
      assert.deepEqual(decode(container, f.fileId), f.plaintext);
      all.push(...splitSegments(container, f.keys));
      f.keys.destroy();
    }
    assert.ok(all.length > 1500);
    assert.equal(nonceSet(all).size, all.length);
  });

  it("nonces are unique across a long file and across two writers of the same key", async () => {
    const log2 = 10;
    const { header, keys } = newContainer("nonces", log2);
    const plaintext = randomBytes(4 * MiB);
    const a = Buffer.concat([header, ...(await writeAll(new ParallelSegmentWriter(pool, keys), plaintext, 64 * KiB))]);
    const b = Buffer.concat([header, ...(await writeAll(new ParallelSegmentWriter(pool, keys), plaintext, 64 * KiB))]);
    const segments = [...splitSegments(a, keys), ...splitSegments(b, keys)];
    assert.equal(segments.length, 2 * (4 * 1024 + 1));
    assert.equal(nonceSet(segments).size, segments.length);
    assert.deepEqual(decode(a, "nonces"), plaintext);
    assert.deepEqual(decode(b, "nonces"), plaintext);
    keys.destroy();
  });

  it("destroy drops in-flight work: waiting calls reject, the pool drains, nothing hangs", async () => {
    const { keys } = newContainer("destroy", 10);
    const writer = new ParallelSegmentWriter(pool, keys, { batchSegments: 2 });
    writer.push(randomBytes(64 * KiB + 100));
    assert.equal(writer.inflightBytes, 64 * KiB);
    const waiting = writer.next();
    writer.destroy();
    await assert.rejects(waiting, /destroyed/);
    assert.equal(writer.inflightBytes, 0);
    assert.equal(await writer.next(), undefined);
    assert.throws(() => writer.push(Buffer.alloc(1)), /destroyed/);
    await assert.rejects(writer.finish(), /destroyed/);
    writer.destroy(); // idempotent
    for (let i = 0; i < 200 && pool.pendingJobs > 0; i++) await sleep(5);
    assert.equal(pool.pendingJobs, 0);
    keys.destroy();
  });

  it("a worker error rejects the job with a clear error", async () => {
    const { keys } = newContainer("bad-job", 10);
    const id = pool.register(keys.sealWorkerParams());
    await assert.rejects(
      pool.seal({ keys: id, startIndex: 0, plaintext: new ArrayBuffer(1000) }),
      (err: Error) =>
        err instanceof SealWorkerError && /seal worker failed: .*whole number of segments/.test(err.message),
    );
    pool.release(id);
    await assert.rejects(pool.seal({ keys: id, startIndex: 0, plaintext: new ArrayBuffer(1024) }), /released/);
    keys.destroy();
  });
});

describe("ParallelSegmentWriter on an inline pool", () => {
  it("seals on this thread with the binding (no worker starts), same layout, unique nonces; node:crypto keeps the worker", async (t) => {
    const pool = new SealPool({ threads: 1, inline: true });
    t.after(() => pool.close());
    if (!containerCrypto().native) {
      assert.equal(pool.inline, false);
      return t.skip("atrest's GCM binding is not loaded: sealing stays on the worker");
    }
    assert.equal(pool.inline, true);
    const log2 = 12;
    const { header, keys } = newContainer("inline", log2);
    const plaintext = randomBytes(3 * MiB + 12_345);
    const writer = new ParallelSegmentWriter(pool, keys);
    // a sealed batch is ready at once: next() hands it out without a round trip
    writer.push(plaintext.subarray(0, 64 * KiB));
    assert.equal(writer.inflightBytes, 64 * KiB);
    const first = await writer.next();
    assert.equal(first?.length, 16 * (4096 + 28));
    const rest = await writeAll(writer, plaintext.subarray(64 * KiB), 3000);
    const container = Buffer.concat([header, first as Buffer, ...rest]);
    assert.equal(container.length, containerLength(keys.layout, plaintext.length));
    assert.deepEqual(decode(container, "inline"), plaintext);
    const segments = splitSegments(container, keys);
    assert.equal(nonceSet(segments).size, segments.length);
    assert.equal(pool.workers, 0);
    assert.equal(pool.sealBacklog, 0);
    keys.destroy();
  });
});

describe("SealPool", () => {
  it("starts workers lazily, up to `threads`, and close() ends them and fails pending writers", async () => {
    const pool = new SealPool({ threads: 2 });
    assert.equal(pool.workers, 0);
    const { header, keys } = newContainer("close", 10);
    const writer = new ParallelSegmentWriter(pool, keys, { batchSegments: 1 });
    assert.equal(pool.workers, 0);
    const plaintext = randomBytes(8 * KiB);
    writer.push(plaintext);
    assert.equal(pool.workers, 2);
    const parts: Buffer[] = [];
    for (let b = await writer.next(); b; b = await writer.next()) parts.push(b);
    parts.push(...(await writer.finish()));
    assert.deepEqual(decode(Buffer.concat([header, ...parts]), "close"), plaintext);

    const pending = new ParallelSegmentWriter(pool, keys, { batchSegments: 1 });
    pending.push(randomBytes(64 * KiB));
    await pool.close();
    assert.equal(pool.workers, 0);
    await assert.rejects(pending.finish(), SealWorkerError);
    const late = new ParallelSegmentWriter(pool, keys, { batchSegments: 1 });
    late.push(randomBytes(2 * KiB));
    await assert.rejects(late.next(), /seal pool is closed/);
    assert.throws(() => late.push(Buffer.alloc(1)), SealWorkerError);
    keys.destroy();
  });

  it("rejects a bad thread count", () => {
    assert.throws(() => new SealPool({ threads: 0 }), AtrestError);
    assert.throws(() => new SealPool({ threads: 1.5 }), AtrestError);
  });

  it("an idle pool that is never closed does not keep the process alive", async () => {
    const { spawnSync } = await import("node:child_process");
    const { mkdtempSync, rmSync, writeFileSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const { join } = await import("node:path");
    const script = `
      import { createHeader } from ${JSON.stringify(new URL("../../src/format/index.ts", import.meta.url).href)};
      import { ParallelSegmentWriter } from ${JSON.stringify(new URL("../../src/container-io/parallel-writer.ts", import.meta.url).href)};
      import { SealPool } from ${JSON.stringify(new URL("../../src/container-io/seal-pool.ts", import.meta.url).href)};
      const pool = new SealPool({ threads: 2 });
      const { keys } = createHeader({ dek: Buffer.alloc(32, 1), fileId: "f", wrappedDek: Buffer.alloc(8, 1) });
      const w = new ParallelSegmentWriter(pool, keys);
      w.push(Buffer.alloc(3 << 20));
      const out = await w.finish();
      console.log(out.length, pool.workers);
    `;
    const dir = mkdtempSync(join(tmpdir(), "atrest-seal-pool-"));
    const file = join(dir, "idle.mjs");
    writeFileSync(file, script);
    // A worker kept referenced would make the child run into the timeout (status null) instead of exiting.
    const result = spawnSync(process.execPath, [file], { encoding: "utf8", timeout: 20_000 });
    rmSync(dir, { recursive: true, force: true });
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stdout.trim(), "4 2");
  });
});
