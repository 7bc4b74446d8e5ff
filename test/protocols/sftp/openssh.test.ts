// The stock OpenSSH `sftp` client against the adapter over the real, encrypting vfs.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { runSftpBatch, sha256File } from "../../helpers/sftp-clients.ts";
import { type Fixture, startFixture } from "./fixture.ts";

let f: Fixture;
before(async () => {
  f = await startFixture();
});
after(() => f.close());

const batch = (commands: string[], extra: Partial<Parameters<typeof runSftpBatch>[0]> = {}) =>
  runSftpBatch({ port: f.port, user: "alice", keyFile: f.keyFile, commands, ...extra });

test("key auth: mkdir, put, ls -l, get, rename, rm, rmdir round trip", async () => {
  const local = join(f.dir, "small.bin");
  await writeFile(local, randomBytes(100_000));
  const back = join(f.dir, "small.back");
  const r = await batch([
    "mkdir d",
    `put ${local} d/a.bin`,
    "ls -l d",
    `get d/a.bin ${back}`,
    "rename d/a.bin d/b.bin",
    "ls d",
    "rm d/b.bin",
    "rmdir d",
    "pwd",
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /-rw-r--r-- +1 alice +alice +100000 \w{3} [ \d]\d \d\d:\d\d a\.bin/);
  assert.match(r.stdout, /d\/b\.bin/);
  assert.match(r.stdout, /Remote working directory: \//);
  assert.deepEqual(await readFile(back), await readFile(local));
  // Nothing left behind: the home is empty and the quota accounting is back to zero.
  assert.deepEqual(await f.list("/"), []);
  const q = await f.quota();
  assert.deepEqual([q.usedFiles, q.usedBytes], [0, 0]);
  const login = f.audit.filter((e) => e.action === "login");
  assert.equal(login.at(-1)?.outcome, "success");
  assert.equal(login.at(-1)?.method, "publickey");
  assert.equal(login.at(-1)?.sourceIp, "127.0.0.1");
  assert.ok(login.at(-1)?.sessionId);
});

test("large file (24 MiB) put/get keeps every byte; put -p sets mtime", async () => {
  const local = join(f.dir, "big.bin");
  await writeFile(local, randomBytes(24 * 1024 * 1024 + 12345));
  const back = join(f.dir, "big.back");
  const r = await batch([`put -p ${local} big.bin`, `get big.bin ${back}`, "ls -l big.bin"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await sha256File(back), await sha256File(local));
  const st = await f.stat("/big.bin");
  assert.equal(st.size, 24 * 1024 * 1024 + 12345);
  const { mtimeMs } = await stat(local);
  assert.equal(Math.floor(st.mtime / 1000), Math.floor(mtimeMs / 1000));
});

test("reput resumes a partial upload (no TRUNC on the existing file)", async () => {
  const data = randomBytes(3 * 1024 * 1024 + 7);
  const full = join(f.dir, "resume.bin");
  const half = join(f.dir, "resume.half");
  await writeFile(full, data);
  await writeFile(half, data.subarray(0, 1024 * 1024 + 3));
  let r = await batch([`put ${half} resume.bin`]);
  assert.equal(r.code, 0, r.stderr);
  r = await batch([`reput ${full} resume.bin`]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(await f.readFile("/resume.bin"), data);
});

test("password auth works; wrong password and unknown user are rejected alike and audited", async () => {
  let r = await runSftpBatch({ port: f.port, user: "alice", password: "correct horse", commands: ["pwd"] });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(f.audit.findLast((e) => e.action === "login")?.method, "password");
  const before = f.audit.length;
  r = await runSftpBatch({ port: f.port, user: "alice", password: "wrong", commands: ["pwd"] });
  assert.notEqual(r.code, 0);
  const wrong = r.stderr.replace(/alice/g, "USER");
  r = await runSftpBatch({ port: f.port, user: "mallory", password: "wrong", commands: ["pwd"] });
  assert.notEqual(r.code, 0);
  assert.equal(r.stderr.replace(/mallory/g, "USER"), wrong);
  const failures = f.audit.slice(before).filter((e) => e.action === "login" && e.outcome === "failure");
  assert.equal(failures.length, 2);
  for (const e of failures) {
    assert.equal(e.method, "password");
    assert.equal(e.sourceIp, "127.0.0.1");
    assert.ok(e.sessionId && e.reason);
  }
  // A key that is not authorised for the user.
  r = await runSftpBatch({ port: f.port, user: "bob", keyFile: f.keyFile, commands: ["pwd"] });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /Permission denied/);
});

test("errors come back as sftp messages and the session goes on", async () => {
  const r = await batch([
    "-get nope.bin /dev/null",
    "-rmdir nope",
    "-mkdir x",
    "-mkdir x",
    "-ln -s x y",
    "-chown 12 x",
    "pwd",
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /not found|No such file/i);
  assert.match(r.stderr, /file exists|Failure/i);
  assert.match(r.stderr, /not supported|Operation unsupported/i);
  assert.match(r.stdout, /Remote working directory: \//);
  assert.deepEqual(f.errors, []);
});

test("df reports the quota through statvfs@openssh.com", async () => {
  const r = await batch(["df"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /Size\s+Used\s+Avail/);
});
