// The audit log's cross-process lock (`<file>.lock`): taken by hard-linking a per-log pid file, so group commits
// allocate no inode; stale locks and dead processes' pid files are cleaned up; two processes appending share one chain.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { verifyChain } from "../../src/audit/chain.ts";
import { AuditLog, readAuditLog } from "../../src/audit/log.ts";
import { removeDir, tempDir } from "../helpers/atrest.ts";

const event = (i: number) => ({ action: "upload" as const, outcome: "success" as const, user: "u", path: `/f${i}` });

/** A pid no process has (the highest pids are not handed out on a machine this young). */
const DEAD_PID = 4_194_000;

describe("audit log lock", () => {
  let dir: string;
  const key = randomBytes(32);
  before(async () => {
    dir = await tempDir("atrest-audit-lock-");
  });
  after(() => removeDir(dir));

  it("takes the lock without creating a file per write: one pid file for the log's life, gone at close", async () => {
    const path = join(dir, "a.log");
    const log = new AuditLog(path, Buffer.from(key), { groupCommit: true });
    log.record(event(0));
    log.flush();
    const pidFiles = () => readdirSync(dir).filter((n) => n.startsWith("a.log.lock."));
    assert.equal(pidFiles().length, 1);
    const [pidFile] = pidFiles();
    const ino = statSync(join(dir, pidFile as string)).ino;
    for (let i = 1; i < 50; i++) {
      log.record(event(i));
      log.flush();
    }
    assert.deepEqual(pidFiles(), [pidFile], "the same pid file serves every write");
    assert.equal(statSync(join(dir, pidFile as string)).ino, ino);
    assert.equal(statSync(join(dir, pidFile as string)).nlink, 1, "the lock link is dropped after each write");
    assert.ok(!existsSync(`${path}.lock`));
    await log.close();
    assert.deepEqual(pidFiles(), [], "removed at close");
    assert.equal((await readAuditLog(path, key)).length, 50);
  });

  it("breaks a lock whose holder is gone, and removes dead processes' pid files at open", async () => {
    const path = join(dir, "b.log");
    writeFileSync(`${path}.lock`, String(DEAD_PID));
    writeFileSync(`${path}.lock.${DEAD_PID}-00aa11bb22cc`, String(DEAD_PID));
    const log = new AuditLog(path, Buffer.from(key), { groupCommit: true });
    assert.ok(!existsSync(`${path}.lock.${DEAD_PID}-00aa11bb22cc`), "a dead process's pid file goes at open");
    log.record(event(1));
    log.flush();
    assert.equal(log.failure, undefined);
    assert.ok(!existsSync(`${path}.lock`));
    await log.close();
    assert.equal((await readAuditLog(path, key)).length, 1);
  });

  it("two processes appending at once keep one chain", async () => {
    const path = join(dir, "c.log");
    const n = 300;
    const child = `
      import { AuditLog } from ${JSON.stringify(new URL("../../src/audit/log.ts", import.meta.url).href)};
      const log = new AuditLog(${JSON.stringify(path)}, Buffer.from(${JSON.stringify(key.toString("hex"))}, "hex"), { groupCommit: true });
      for (let i = 0; i < ${n}; i++) { log.record({ action: "upload", outcome: "success", user: "child", path: "/c" + i }); log.flush(); }
      await log.close();`;
    const proc = spawn(process.execPath, ["--input-type=module", "-e", child], { stdio: "inherit" });
    const exited = new Promise<number | null>((resolve) => proc.on("exit", resolve));
    const log = new AuditLog(path, Buffer.from(key), { groupCommit: true });
    for (let i = 0; i < n; i++) {
      log.record(event(i));
      log.flush();
      if (i % 50 === 0) await new Promise((r) => setImmediate(r));
    }
    await log.close();
    assert.equal(await exited, 0);
    const v = verifyChain(path);
    assert.equal(v.error, undefined);
    assert.equal(v.records, 2 * n);
    assert.deepEqual(
      readdirSync(dir).filter((x) => x.startsWith("c.log.lock")),
      [],
    );
  });
});
