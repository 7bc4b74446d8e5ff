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
