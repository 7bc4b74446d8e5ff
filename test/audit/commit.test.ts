// Group commit and write failures of the audit log: batches keep the chain and the cross-writer safety; a full disk
// (/dev/full) makes write-through throw, and group commit keep the records and refuse operations when fail-closed.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { statSync } from "node:fs";
import { mkdir, symlink } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { verifyChain } from "../../src/audit/chain.ts";
import { AuditLog, AuditUnavailableError, readAuditLog } from "../../src/audit/log.ts";
import type { AuditEvent } from "../../src/audit/types.ts";
import { removeDir, tempDir } from "../helpers/atrest.ts";

const ev = (i: number, user = "alice"): AuditEvent => ({ action: "upload", outcome: "success", user, path: `/f${i}` });

let dir: string;
before(async () => {
  dir = await tempDir("atrest-commit-");
});
after(() => removeDir(dir));

describe("audit log group commit", () => {
  test("one turn of the event loop is one write; two writers on one file keep one chain", async () => {
    const path = join(dir, "gc", "audit.log");
    const key = randomBytes(32);
    const a = new AuditLog(path, Buffer.from(key), { groupCommit: true });
    const b = new AuditLog(path, Buffer.from(key), { groupCommit: true });
    const seen: number[] = [];
    a.onRecord((_r, seq) => seen.push(seq));
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 100; i++) a.record(ev(round * 100 + i, "a"));
      for (let i = 0; i < 100; i++) b.record(ev(round * 100 + i, "b"));
      assert.equal(statSync(path).size > 0, round > 0, "nothing is written before the turn ends");
      await new Promise((r) => setImmediate(r));
    }
    await a.close();
    await b.close();
    const v = verifyChain(path);
    assert.equal(v.error, undefined);
    assert.equal(v.records, 1000);
    const records = await readAuditLog(path, key);
    assert.equal(records.filter((r) => "user" in r && r.user === "a").length, 500);
    // batches interleave whole: a's 100 records are contiguous in the file
    const users = records.map((r) => ("user" in r ? r.user : "?")).join("");
    assert.match(users, /^(a{100}b{100}|b{100}a{100})+$/);
    assert.equal(seen.length, 500);
    assert.deepEqual(
      seen,
      [...seen].sort((x, y) => x - y),
    );
  });

  test("write-through (default) throws on a full disk and keeps nothing half-written", async () => {
    await mkdir(join(dir, "full"), { recursive: true });
    const path = join(dir, "full", "audit.log");
    await symlink("/dev/full", path);
    const log = new AuditLog(path, randomBytes(32));
    assert.throws(
      () => log.record(ev(1)),
      (err: unknown) => err instanceof AuditUnavailableError && /ENOSPC/.test((err as Error).message),
    );
    assert.equal(log.failure, "ENOSPC");
    await log.close();
  });

  test("group commit on a full disk: records stay queued, fail-closed refuses, the failure is reported once", async () => {
    await mkdir(join(dir, "full2"), { recursive: true });
    const path = join(dir, "full2", "audit.log");
    await symlink("/dev/full", path);
    const log = new AuditLog(path, randomBytes(32), { groupCommit: true });
    const changes: (string | undefined)[] = [];
    log.onFailure((f) => changes.push(f));
    log.record(ev(1));
    log.record(ev(2));
    assert.equal(log.admit(), undefined, "fail-open by default");
    log.flush();
    log.record(ev(3));
    log.flush();
    assert.deepEqual(changes, ["ENOSPC"]);
    log.setFailClosed(true);
    assert.throws(() => log.admit(), /audit log cannot be written \(ENOSPC\): operation refused \(audit\.failClosed\)/);
    await log.close();
  });
});

test("a throwing subscriber neither breaks the flush nor the other subscribers", async () => {
  const path = join(dir, "listeners", "audit.log");
  const log = new AuditLog(path, randomBytes(32), { groupCommit: true });
  const got: number[] = [];
  log.onRecord(() => {
    throw new Error("subscriber bug");
  });
  log.onRecord((_r, seq) => got.push(seq));
  const warned = new Promise((resolve) => process.once("warning", resolve));
  log.record(ev(1));
  log.record(ev(2));
  log.flush();
  assert.deepEqual(got, [1, 2]);
  assert.match(String(await warned), /audit log subscriber failed: subscriber bug/);
  await log.close();
  assert.equal(verifyChain(path).records, 2);
});

describe("fail-closed group commit (commit: durable before the producer goes on)", () => {
  test("concurrent commits share one write; each resolves only once its record is in the file", async () => {
    const path = join(dir, "durable", "audit.log");
    const key = randomBytes(32);
    const log = new AuditLog(path, Buffer.from(key), { groupCommit: true, failClosed: true });
    let writes = 0;
    let lastSize = 0;
    log.onRecord(() => {
      const size = statSync(path).size;
      if (size !== lastSize) writes++;
      lastSize = size;
    });
    const done: number[] = [];
    const all = Array.from({ length: 200 }, (_, i) =>
      (log.commit(ev(i)) as Promise<void>).then(() => {
        done.push(i);
        // what resolved is in the file (and was fdatasynced before this ran)
        assert.ok(statSync(path).size >= lastSize);
      }),
    );
    assert.equal(statSync(path).size, 0, "nothing written before the turn ends");
    assert.equal(done.length, 0);
    await Promise.all(all);
    assert.equal(writes, 1, "200 producers, one write");
    assert.equal(done.length, 200);
    await log.close();
    assert.equal(verifyChain(path).records, 200);
  });

  test("without fail-closed, commit is record (nothing to wait for)", async () => {
    const path = join(dir, "open", "audit.log");
    const log = new AuditLog(path, randomBytes(32), { groupCommit: true });
    assert.equal(log.commit(ev(1)), undefined);
    await log.close();
    assert.equal(verifyChain(path).records, 1);
  });

  test("a failed write rejects the waiting producers; retracted records are dropped, the others retried", async () => {
    await mkdir(join(dir, "full3"), { recursive: true });
    const path = join(dir, "full3", "audit.log");
    await symlink("/dev/full", path);
    const log = new AuditLog(path, randomBytes(32), { groupCommit: true, failClosed: true });
    const kept = log.commit(ev(1)) as Promise<void>;
    const retracted = log.commit(ev(2), { retract: true }) as Promise<void>;
    log.record(ev(3));
    await assert.rejects(kept, (e: unknown) => e instanceof AuditUnavailableError && /ENOSPC.*refused/.test(String(e)));
    await assert.rejects(retracted, AuditUnavailableError);
    assert.throws(() => log.admit(), /ENOSPC/);
    await log.close();
  });

  test("admit refuses when the log's file system is full, before anything is written", {
    skip: process.getuid?.() !== 0 && "needs root (tmpfs)",
  }, async () => {
    const { execFileSync } = await import("node:child_process");
    const mnt = join(dir, "tmpfs");
    await mkdir(mnt, { recursive: true });
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt]);
    try {
      const path = join(mnt, "audit.log");
      const key = randomBytes(32);
      const log = new AuditLog(path, Buffer.from(key), { groupCommit: true, failClosed: true });
      await log.commit(ev(1));
      assert.equal(log.admit(), undefined);
      try {
        execFileSync("dd", ["if=/dev/zero", `of=${join(mnt, "filler")}`, "bs=64k"], { stdio: "ignore" });
      } catch {}
      // a record might still fit in the file's last page: admit does not rely on that
      assert.throws(() => log.admit(), /ENOSPC.*refused/);
      // a batch larger than what is left of the page: the write fails, the file is cut back to whole lines
      const kept = Array.from({ length: 40 }, (_, i) => log.commit(ev(100 + i)) as Promise<void>);
      const retracted = log.commit(ev(999), { retract: true }) as Promise<void>;
      for (const p of [...kept, retracted]) await assert.rejects(p, AuditUnavailableError);
      assert.equal(verifyChain(path).records, 1, "nothing half-written");
      execFileSync("rm", [join(mnt, "filler")]);
      assert.equal(log.admit(), undefined);
      await log.commit(ev(2));
      await log.close();
      // the refused producers' records were kept and written on the retry, the retracted one never
      const paths = (await readAuditLog(path, key)).map((r) => ("path" in r ? r.path : "?"));
      assert.equal(verifyChain(path).records, 42);
      assert.deepEqual(paths.sort(), ["/f1", "/f2", ...Array.from({ length: 40 }, (_, i) => `/f${100 + i}`)].sort());
    } finally {
      execFileSync("umount", ["-l", mnt]);
    }
  });
});
