import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { describe, it } from "node:test";
import { DekCache, withDekCache } from "../../src/keys/dek-cache.ts";
import type { KeyProvider } from "../../src/kms/api/types.ts";
import { initEmbeddedKms, openEmbeddedKms } from "../../src/kms/embedded.ts";
import { removeDir, tempDir } from "../helpers/atrest.ts";

const ctx = (id: string) => ({ purpose: "file", content: id });

function counting(dek: Buffer) {
  let calls = 0;
  let fail = false;
  const load = async () => {
    calls++;
    await new Promise((r) => setImmediate(r));
    if (fail) throw new Error("key manager unavailable");
    return Buffer.from(dek);
  };
  return {
    load,
    calls: () => calls,
    failNext: (v: boolean) => {
      fail = v;
    },
  };
}

describe("DEK cache", () => {
  it("serves hits from memory, each caller gets its own copy", async () => {
    const cache = new DekCache({ maxAgeMs: 60_000, maxEntries: 10 });
    const dek = randomBytes(32);
    const src = counting(dek);
    const w = randomBytes(76);
    const a = await cache.unwrap(w, ctx("a"), src.load);
    const b = await cache.unwrap(w, ctx("a"), src.load);
    assert.deepEqual(a, dek);
    assert.deepEqual(b, dek);
    assert.equal(src.calls(), 1);
    a.fill(0); // the caller zeroing its copy must not touch the cache
    assert.deepEqual(await cache.unwrap(w, ctx("a"), src.load), dek);
    assert.deepEqual(cache.stats(), { entries: 1, hits: 2, misses: 1, evictions: 0 });
    cache.close();
  });

  it("keys by wrapped bytes and context: another context goes to the key manager", async () => {
    const cache = new DekCache({ maxAgeMs: 60_000, maxEntries: 10 });
    const src = counting(randomBytes(32));
    const w = randomBytes(76);
    await cache.unwrap(w, ctx("a"), src.load);
    await cache.unwrap(w, ctx("b"), src.load);
    await cache.unwrap(Buffer.concat([w.subarray(0, 75), Buffer.from([w[75] ^ 1])]), ctx("a"), src.load);
    assert.equal(src.calls(), 3);
    cache.close();
  });

  it("shares one load between concurrent misses and never caches a failure", async () => {
    const cache = new DekCache({ maxAgeMs: 60_000, maxEntries: 10 });
    const dek = randomBytes(32);
    const src = counting(dek);
    const w = randomBytes(76);
    const got = await Promise.all(Array.from({ length: 8 }, () => cache.unwrap(w, ctx("a"), src.load)));
    assert.equal(src.calls(), 1);
    for (const g of got) assert.deepEqual(g, dek);
    const w2 = randomBytes(76);
    src.failNext(true);
    await assert.rejects(cache.unwrap(w2, ctx("a"), src.load), /unavailable/);
    assert.equal(cache.size, 1);
    src.failNext(false);
    assert.deepEqual(await cache.unwrap(w2, ctx("a"), src.load), dek);
    assert.equal(src.calls(), 3);
    cache.close();
  });

  it("expires by age from the unwrap and zeroes what it drops", async () => {
    let now = 1000;
    const cache = new DekCache({ maxAgeMs: 5000, maxEntries: 10, now: () => now });
    const src = counting(randomBytes(32));
    const w = randomBytes(76);
    await cache.unwrap(w, ctx("a"), src.load);
    now += 4000;
    await cache.unwrap(w, ctx("a"), src.load); // a hit does not extend the age
    assert.equal(src.calls(), 1);
    now += 1000;
    await cache.unwrap(w, ctx("a"), src.load);
    assert.equal(src.calls(), 2);
    cache.remember(randomBytes(76), ctx("x"), randomBytes(32));
    now += 6000;
    cache.sweep();
    assert.equal(cache.size, 0);
    cache.close();
  });

  it("evicts the least recently used beyond the count bound, zeroing it", async () => {
    const cache = new DekCache({ maxAgeMs: 60_000, maxEntries: 2 });
    const deks = [randomBytes(32), randomBytes(32), randomBytes(32)];
    const ws = [randomBytes(76), randomBytes(76), randomBytes(76)];
    const loads = deks.map((d) => counting(d));
    // Keep references to what the cache stores by loading through buffers we can inspect afterwards.
    const stored: Buffer[] = [];
    for (let i = 0; i < 2; i++) {
      await cache.unwrap(ws[i] as Buffer, ctx("a"), async () => {
        const b = Buffer.from(deks[i] as Buffer);
        stored.push(b);
        return b;
      });
    }
    await cache.unwrap(ws[0] as Buffer, ctx("a"), (loads[0] as ReturnType<typeof counting>).load); // 0 is now recent
    await cache.unwrap(ws[2] as Buffer, ctx("a"), (loads[2] as ReturnType<typeof counting>).load); // evicts 1
    assert.equal(cache.size, 2);
    assert.equal(cache.stats().evictions, 1);
    await cache.unwrap(ws[1] as Buffer, ctx("a"), (loads[1] as ReturnType<typeof counting>).load);
    assert.equal((loads[1] as ReturnType<typeof counting>).calls(), 1, "entry 1 was evicted");
    assert.equal((loads[0] as ReturnType<typeof counting>).calls(), 0, "entry 0 stayed");
    // The buffers a load handed over are zeroed once every waiter has its copy.
    for (const b of stored) assert.ok(b.every((x) => x === 0));
    cache.close();
  });

  it("is off with 0 and passes through; close zeroes everything", async () => {
    const off = new DekCache({ maxAgeMs: 0, maxEntries: 10 });
    const src = counting(randomBytes(32));
    const w = randomBytes(76);
    await off.unwrap(w, ctx("a"), src.load);
    await off.unwrap(w, ctx("a"), src.load);
    assert.equal(src.calls(), 2);
    assert.equal(off.size, 0);

    const cache = new DekCache({ maxAgeMs: 60_000, maxEntries: 10 });
    const dek = randomBytes(32);
    const inner: KeyProvider = {
      generateDataKey: async () => ({ plaintext: Buffer.from(dek), wrapped: w, keyRef: "kek:default:v1" }),
      unwrap: async () => {
        throw new Error("should be cached");
      },
      keyRefOf: () => "kek:default:v1",
      listKeys: async () => [],
      createKey: async () => ({ name: "x", currentVersion: 1, versions: [] }),
      rotateKey: async () => ({ name: "x", currentVersion: 1, versions: [] }),
      close: async () => undefined,
    };
    const keys = withDekCache(inner, cache);
    const dk = await keys.generateDataKey("default", ctx("n"));
    dk.plaintext.fill(0);
    assert.deepEqual(await keys.unwrap(w, ctx("n")), dek, "a fresh DEK is remembered");
    await keys.close();
    assert.equal(cache.size, 0);
  });

  it("evictKey drops that key's entries only, and a load in flight across the eviction is not cached", async () => {
    const dir = await tempDir("atrest-dek-evict-");
    try {
      await initEmbeddedKms(join(dir, "kms"));
      const kms = await openEmbeddedKms(join(dir, "kms"), { schedulerIntervalMs: 0 });
      // Another process (here: a second instance on the same kms.db, as the CLI would be) changes key states.
      const other = await openEmbeddedKms(join(dir, "kms"), { schedulerIntervalMs: 0 });
      try {
        await kms.createKey("tenant");
        const a = await kms.generateDataKey("default", ctx("a"));
        const b = await kms.generateDataKey("tenant", ctx("b"));
        const cache = new DekCache({ maxAgeMs: 60_000, maxEntries: 10 });
        cache.remember(a.wrapped, ctx("a"), a.plaintext);
        cache.remember(b.wrapped, ctx("b"), b.plaintext);
        assert.equal(cache.evictKey("tenant"), 1);
        assert.equal(cache.size, 1);
        // A load that started before an eviction lands after it: served to its caller, not cached.
        let release: () => void = () => {};
        const gate = new Promise<void>((r) => {
          release = r;
        });
        const pending = cache.unwrap(b.wrapped, ctx("b"), async () => {
          await gate;
          return Buffer.from(b.plaintext);
        });
        cache.evictKey("tenant");
        release();
        assert.deepEqual(await pending, b.plaintext);
        assert.equal(cache.size, 1, "the stale load was not cached");

        // follow(): the embedded key manager reports another process's change within its 250 ms poll.
        cache.remember(b.wrapped, ctx("b"), b.plaintext);
        const seen: string[] = [];
        const t0 = performance.now();
        cache.follow(kms, (key) => seen.push(key));
        await other.service.setVersionState({ name: "op", role: "operator" }, "tenant", 1, "deactivated");
        while (seen.length === 0 && performance.now() - t0 < 3000) await new Promise((r) => setTimeout(r, 20));
        assert.deepEqual(seen, ["tenant"]);
        assert.ok(performance.now() - t0 < 1000, `seen after ${(performance.now() - t0).toFixed(0)} ms`);
        assert.equal(cache.size, 1, "only the default key's entry is left");
        cache.close();
      } finally {
        await other.close();
        await kms.close();
      }
    } finally {
      await removeDir(dir);
    }
  });
});
