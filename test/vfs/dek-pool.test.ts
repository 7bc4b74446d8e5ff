// The pool of new files' data keys (src/vfs/dek-pool.ts) against the real embedded key manager: one key manager call
// and one KMS audit record per batch, each key handed out once and zeroed when dropped, and no key handed out under a
// version that a fresh key would not get (rotation, a deactivated version, a state change the key manager reports).
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { AuditEvent } from "../../src/audit/types.ts";
import type { DataKey, EncryptionContext } from "../../src/kms/api/types.ts";
import { EMBEDDED_CALLER, initEmbeddedKms, localCaller, openEmbeddedKms } from "../../src/kms/embedded.ts";
import { DekPool } from "../../src/vfs/dek-pool.ts";
import { fileContext } from "../../src/vfs/file-context.ts";

let root: string;
let n = 0;
before(async () => {
  root = await mkdtemp(join(tmpdir(), "atrest-dekpool-"));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

async function withKms<T>(
  fn: (kms: Awaited<ReturnType<typeof openEmbeddedKms>>, events: AuditEvent[]) => Promise<T>,
): Promise<T> {
  const dir = join(root, `kms-${n++}`);
  await initEmbeddedKms(dir);
  const events: AuditEvent[] = [];
  const kms = await openEmbeddedKms(dir, { auditLog: { record: (e) => events.push(e) } });
  try {
    return await fn(kms, events);
  } finally {
    await kms.close();
  }
}

const op = (e: AuditEvent) => (JSON.parse(e.detail ?? "{}") as { op?: string }).op;
const versionOf = (dk: DataKey) => Number(/:v(\d+)$/.exec(dk.keyRef)?.[1]);

describe("DekPool", () => {
  it("makes a batch in one call and one audit record; each key is handed out once and unwraps under its file's id", async () => {
    await withKms(async (kms, events) => {
      let calls = 0;
      const keys = Object.assign(Object.create(kms), {
        generateDataKeys: (name: string, contexts: readonly EncryptionContext[]) => {
          calls++;
          return kms.service.generateDataKeys(EMBEDDED_CALLER, name, contexts);
        },
      });
      const pool = new DekPool(keys, { batch: 8 });
      try {
        const taken = [];
        for (let i = 0; i < 12; i++) taken.push(await pool.take("default"));
        assert.equal(calls, 2, "12 keys from batches of 8: two key manager calls");
        const made = events.filter((e) => op(e) === "generate-data-key");
        assert.equal(made.length, 2, "one KMS audit record per batch");
        const detail = JSON.parse(made[0]?.detail ?? "{}") as { count: number; contexts: EncryptionContext[] };
        assert.equal(made[0]?.keyRef, "kek:default:v1");
        assert.equal(detail.count, 8);
        // the record names every key's encryption context: the file ids the keys went to
        assert.deepEqual(
          detail.contexts.slice(0, 8),
          taken.slice(0, 8).map((t) => fileContext(t.contentId)),
        );
        // each key and each content id exactly once
        assert.equal(new Set(taken.map((t) => t.contentId)).size, 12);
        assert.equal(new Set(taken.map((t) => t.dk.plaintext.toString("hex"))).size, 12);
        assert.equal(new Set(taken.map((t) => t.dk.wrapped.toString("hex"))).size, 12);
        for (const t of taken) {
          // the wrap's AAD is the file's own context, not another file's
          assert.deepEqual(await kms.unwrap(t.dk.wrapped, fileContext(t.contentId)), t.dk.plaintext);
          await assert.rejects(
            kms.unwrap(t.dk.wrapped, fileContext(taken[0] === t ? "x" : (taken[0]?.contentId ?? ""))),
          );
        }
        assert.equal(pool.size("default"), 4);
        assert.deepEqual(pool.stats, { made: 16, used: 12, discarded: 0 });
        // concurrent takes share a batch and never get the same key
        const together = await Promise.all(Array.from({ length: 20 }, () => pool.take("default")));
        assert.equal(new Set(together.map((t) => t.contentId)).size, 20);
        assert.equal(new Set([...together, ...taken].map((t) => t.dk.plaintext.toString("hex"))).size, 32);
      } finally {
        pool.close();
      }
    });
  });

  it("zeroes what it drops: drained, expired, closed", async () => {
    await withKms(async (kms) => {
      let now = 1_000;
      const held: DataKey[] = [];
      const keys = Object.assign(Object.create(kms), {
        generateDataKeys: async (name: string, contexts: readonly EncryptionContext[]) => {
          const out = kms.service.generateDataKeys(EMBEDDED_CALLER, name, contexts);
          held.push(...out);
          return out;
        },
      });
      const pool = new DekPool(keys, { batch: 4, maxAgeMs: 1_000, now: () => now });
      const first = await pool.take("default");
      assert.equal(pool.size("default"), 3);
      assert.equal(pool.drain("default"), 3);
      const zeroed = (dk: DataKey) => dk.plaintext.every((b) => b === 0);
      assert.equal(held.filter(zeroed).length, 3, "the three drained keys are zeroed");
      assert.ok(!zeroed(first.dk), "the key handed out is the caller's");
      await pool.take("default");
      now += 1_001;
      const later = await pool.take("default");
      assert.equal(versionOf(later.dk), 1);
      assert.equal(held.filter(zeroed).length, 6, "expired keys are zeroed and never handed out");
      pool.close();
      assert.equal(held.filter(zeroed).length, 9, "close zeroes what is left");
      assert.equal(pool.size("default"), 0);
    });
  });

  it("after a rotation or a version's deactivation no new file gets a key under the old version", async () => {
    await withKms(async (kms) => {
      const pool = new DekPool(kms, { batch: 8 });
      try {
        const a = await pool.take("default");
        assert.equal(a.dk.keyRef, "kek:default:v1");
        assert.equal(pool.size("default"), 7);
        await kms.rotateKey("default");
        const b = await pool.take("default");
        assert.equal(b.dk.keyRef, "kek:default:v2", "the v1 keys made ahead are not used after the rotation");
        assert.equal(pool.stats.discarded, 7);
        // deactivating the current version: no key can be made, and none made ahead is handed out
        kms.service.setVersionState(localCaller("operator"), "default", 2, "deactivated");
        await assert.rejects(pool.take("default"), /kek:default:v2 cannot encrypt: it is deactivated/);
        assert.equal(pool.size("default"), 0);
        assert.equal(pool.stats.discarded, 14);
      } finally {
        pool.close();
      }
    });
  });

  it("a key manager without the cheap look-up: the state change it reports drains that key's pool", async () => {
    await withKms(async (kms) => {
      // as a remote key manager: no local version look-up, only its (real, here the embedded one's) state reports
      const keys = Object.assign(Object.create(kms), { encryptionVersion: undefined });
      // kept longer than the wait below: with the default 5 s age, expiry alone emptied the pool within the wait
      const pool = new DekPool(keys, { batch: 4, maxAgeMs: 60_000 });
      try {
        await pool.take("default");
        assert.equal(pool.size("default"), 3);
        await new Promise((r) => setTimeout(r, 300)); // the watcher's first look is its baseline
        await kms.rotateKey("default");
        const t0 = performance.now();
        while (pool.size("default") > 0 && performance.now() - t0 < 5_000) await new Promise((r) => setTimeout(r, 20));
        assert.equal(pool.size("default"), 0, "drained once the key manager reported the rotation");
        assert.equal((await pool.take("default")).dk.keyRef, "kek:default:v2");
      } finally {
        pool.close();
      }
    });
  });

  it("a key manager without the cheap look-up: a version scheduled for destruction drains that key's pool", async () => {
    await withKms(async (kms) => {
      // as a remote key manager: what it reports through its state watch is all the pool learns
      const keys = Object.assign(Object.create(kms), { encryptionVersion: undefined });
      // kept longer than the wait below, so that expiry cannot stand in for the drain
      const pool = new DekPool(keys, { batch: 4, maxAgeMs: 60_000 });
      try {
        await pool.take("default");
        assert.equal(pool.size("default"), 3);
        await new Promise((r) => setTimeout(r, 300)); // the watcher's first look is its baseline
        // what a destruction's quorum does (approved-requests.ts): the version stays active, with a due time
        kms.service.keyring.scheduleDestroy("default", [1], new Date(Date.now() + 7 * 86_400_000), "req-1");
        const t0 = performance.now();
        while (pool.size("default") > 0 && performance.now() - t0 < 5_000) await new Promise((r) => setTimeout(r, 20));
        assert.equal(pool.size("default"), 0, "keys made ahead under the scheduled version are not handed out");
        await assert.rejects(pool.take("default"), /kek:default:v1 cannot encrypt: it is scheduled for destruction/);
      } finally {
        pool.close();
      }
    });
  });

  it("batch 1, or a key manager without batches: one ordinary call per file", async () => {
    await withKms(async (kms, events) => {
      const off = new DekPool(kms, { batch: 1 });
      const a = await off.take("default");
      const plain = new DekPool(Object.assign(Object.create(kms), { generateDataKeys: undefined }), { batch: 8 });
      const b = await plain.take("default");
      assert.equal(off.size("default") + plain.size("default"), 0);
      const made = events.filter((e) => op(e) === "generate-data-key");
      assert.deepEqual(
        made.map((e) => (JSON.parse(e.detail ?? "{}") as { context?: EncryptionContext }).context),
        [fileContext(a.contentId), fileContext(b.contentId)],
      );
      off.close();
      plain.close();
    });
  });
});
