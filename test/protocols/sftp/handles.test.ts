// The SFTP handles' promise-free paths (WriteHandle.writeNow, ReadHandle.readViewNow) over a real vfs: a WRITE the
// container writer takes at once is acknowledged without a promise and its bytes are copied before write() returns
// (the caller may overwrite them), writes that meet backpressure keep their order, and a READ inside a window already
// decrypted is answered from it at once. The file read back must be exactly what was written.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { App, initData } from "../../../src/app.ts";
import { ReadFile, WriteFile } from "../../../src/protocols/sftp/handles.ts";
import { ByteQueue } from "../../../src/protocols/sftp/protocol/packets.ts";
import type { VfsSession } from "../../../src/vfs/types.ts";

const KiB = 1024;
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("SFTP handles without a promise per request", () => {
  let dir: string;
  let app: App;
  let s: VfsSession;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "atrest-handles-"));
    await initData(dir);
    app = await App.open(dir);
    await app.addUser({ name: "alice", password: "correct horse" });
    s = await app.openSession("alice", { protocol: "sftp", sessionId: "h1" });
  });
  after(async () => {
    await app.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("takes WRITEs at once while the writer has room, in order under backpressure, and reads back the same bytes", async () => {
    const file = randomBytes(24 * 1024 * KiB + 4321);
    const handle = await s.openWrite("/big.bin", { truncate: true });
    assert.ok(handle.writeNow, "the vfs upload offers writeNow");
    const w = new WriteFile("/big.bin", handle, false);
    let immediate = 0;
    const waits: Promise<void>[] = [];
    for (let at = 0; at < file.length; at += 32 * KiB) {
      // Each WRITE as two slices (as when it straddles SSH channel messages), in scratch buffers reused below.
      const chunk = Buffer.from(file.subarray(at, Math.min(file.length, at + 32 * KiB)));
      const cut = Math.min(chunk.length, 1000);
      const wait = w.write(at, [chunk.subarray(0, cut), chunk.subarray(cut)]);
      if (wait === undefined) {
        immediate++;
        chunk.fill(0xee); // taken means copied: overwriting the caller's buffer must not change the file
      } else waits.push(wait);
    }
    await Promise.all(waits);
    assert.ok(immediate > 0, "some WRITEs were acknowledged without a promise");
    assert.ok(waits.length > 0, "24 MiB at once met the writer's backpressure");
    const stat = await w.close();
    assert.equal(stat?.size, file.length);

    const r = new ReadFile("/big.bin", await s.openRead("/big.bin"));
    const got = Buffer.alloc(file.length);
    assert.equal(r.readViewNow(0, 32 * KiB), undefined, "nothing is decrypted before the first READ");
    let now = 0;
    let later = 0;
    for (let at = 0; at < file.length; ) {
      let view = r.readViewNow(at, 32 * KiB);
      if (view === undefined) {
        later++;
        view = await r.readView(at, 32 * KiB);
      }
      view.data.copy(got, at);
      at += view.data.length;
      view.release();
      now++;
    }
    await r.close();
    assert.equal(sha(got), sha(file));
    assert.ok(now - later > 0 && later > 0, `READs answered at once: ${now - later}, after a wait: ${later}`);
  });

  it("a failed writer surfaces on the next WRITE or at close", async () => {
    const handle = await s.openWrite("/closed.bin", { truncate: true });
    const w = new WriteFile("/closed.bin", handle, false);
    assert.equal(w.write(0, [Buffer.alloc(100, 1)]), undefined);
    await handle.abort(false);
    assert.throws(() => w.write(100, [Buffer.alloc(100, 2)]));
    await assert.rejects(w.close());
  });
});

describe("ByteQueue framing without a view per packet", () => {
  it("reads a length across chunks and hands out a packet whole only when one chunk holds it", () => {
    const q = new ByteQueue();
    q.push(Buffer.from([0, 0]));
    q.push(Buffer.from([0, 5, 1, 2, 3, 4, 5, 0, 0, 0, 2, 9]));
    assert.equal(q.peekU32(), 5);
    assert.equal(q.takeWhole(9), undefined, "the first packet straddles two chunks");
    assert.equal(q.length, 14);
    assert.deepEqual(Buffer.concat(q.take(9)), Buffer.from([0, 0, 0, 5, 1, 2, 3, 4, 5]));
    assert.equal(q.peekU32(), 2);
    assert.equal(q.takeWhole(6), undefined, "not there yet: only 5 bytes queued");
    q.push(Buffer.from([8]));
    assert.deepEqual(q.takeWhole(5), Buffer.from([0, 0, 0, 2, 9]));
    assert.deepEqual(q.takeWhole(1), Buffer.from([8]));
    assert.equal(q.length, 0);
  });
});
