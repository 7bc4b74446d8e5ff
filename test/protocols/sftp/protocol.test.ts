// Protocol-level behaviour driven by ssh2's own SFTP client: exact status codes, messages and edge cases that the
// interactive clients do not expose.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type ssh2 from "ssh2";
import type { SFTPWrapper } from "ssh2";
import { IntegrityError, KeyUnavailableError, QuotaExceededError } from "../../../src/errors.ts";
import { connect, type Fixture, startFixture } from "./fixture.ts";

let f: Fixture;
let client: ssh2.Client;
let sftp: SFTPWrapper;

/** Promisified ssh2 SFTP call; rejects with the status error (err.code = SFTP status, err.message). */
function call<T = unknown>(fn: (cb: (err: Error | null | undefined, v?: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v as T))));
}

async function status(p: Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await p;
  } catch (err) {
    const e = err as { code: number; message: string };
    return { code: e.code, message: e.message };
  }
  assert.fail("expected an SFTP error");
}

before(async () => {
  f = await startFixture();
  ({ client, sftp } = await connect(f));
  await call((cb) => sftp.writeFile("/a.txt", "hello", cb));
  await call((cb) => sftp.writeFile("/b.txt", "world", cb));
});
after(async () => {
  client.end();
  await f.close();
});

test("v3 RENAME refuses an existing target; posix-rename@openssh.com overwrites", async () => {
  assert.deepEqual(await status(call((cb) => sftp.rename("/a.txt", "/b.txt", cb))), {
    code: 4,
    message: "file exists",
  });
  await call((cb) => sftp.ext_openssh_rename("/a.txt", "/b.txt", cb));
  assert.equal(String(await call((cb) => sftp.readFile("/b.txt", cb))), "hello");
});

test("REALPATH normalises and never escapes the root", async () => {
  assert.equal(await call((cb) => sftp.realpath("../../x/./y/..", cb)), "/x");
  assert.equal(await call((cb) => sftp.realpath(".", cb)), "/");
  assert.equal(await call((cb) => sftp.realpath("/..", cb)), "/");
});

test("bad paths: NUL, 64 KiB name, .. escape", async () => {
  assert.equal((await status(call((cb) => sftp.stat("/a\0b", cb)))).code, 5);
  const long = "n".repeat(64 * 1024);
  assert.equal((await status(call((cb) => sftp.stat(`/${long}`, cb)))).code, 5);
  assert.equal((await status(call((cb) => sftp.mkdir(long, cb)))).code, 5);
  // `..` is clamped at the root: writing ../../c.txt lands in /c.txt.
  await call((cb) => sftp.writeFile("../../c.txt", "c", cb));
  assert.equal(String(f.accounts.fs("alice").get("/c.txt").data), "c");
  // The session still serves.
  assert.equal(String(await call((cb) => sftp.readFile("/c.txt", cb))), "c");
});

test("SETSTAT: mtime applied, mode accepted, truncation unsupported unless same size", async () => {
  await call((cb) => sftp.setstat("/c.txt", { mtime: 1_000_000, atime: 1_000_000 }, cb));
  assert.equal(f.accounts.fs("alice").get("/c.txt").mtime, 1_000_000_000);
  await call((cb) => sftp.setstat("/c.txt", { mode: 0o600 }, cb));
  await call((cb) => sftp.setstat("/c.txt", { size: 1 }, cb));
  assert.equal((await status(call((cb) => sftp.setstat("/c.txt", { size: 0 }, cb)))).code, 8);
});

test("symlinks are unsupported; unknown extension too", async () => {
  assert.equal((await status(call((cb) => sftp.readlink("/c.txt", cb)))).code, 8);
  assert.equal((await status(call((cb) => sftp.symlink("/c.txt", "/d", cb)))).code, 8);
});

test("OPEN with EXCL fails on an existing file; WRITE without CREAT on a missing file is NO_SUCH_FILE", async () => {
  assert.deepEqual(await status(call((cb) => sftp.open("/c.txt", "wx", cb))), { code: 4, message: "file exists" });
  assert.equal((await status(call((cb) => sftp.open("/missing", "r+", cb)))).code, 2);
});

test("READDIR pages large directories with ls -l style longnames", async () => {
  await call((cb) => sftp.mkdir("/many", cb));
  for (let i = 0; i < 300; i++) await call((cb) => sftp.writeFile(`/many/f${i}`, String(i), cb));
  const list = await call<{ filename: string; longname: string }[]>((cb) => sftp.readdir("/many", cb));
  assert.equal(list.length, 300);
  assert.match(list[0].longname, /^-rw-r--r-- +1 alice +alice +\d+ \w{3} [ \d]\d \d\d:\d\d f\d+$/);
});

test("statvfs@openssh.com reports the quota", async () => {
  const st = await call<{ f_bsize: number; f_blocks: number; f_bfree: number }>((cb) =>
    sftp.ext_openssh_statvfs("/", cb),
  );
  assert.equal(Number(st.f_bsize), 4096);
  assert.ok(Number(st.f_blocks) >= Number(st.f_bfree));
});

test("vfs errors map to SFTP status once; unknown errors say 'internal error' and are logged", async () => {
  const fs = f.accounts.fs("alice");
  const cases: [() => Error, number, string][] = [
    [() => new QuotaExceededError("user alice over quota"), 4, "quota exceeded"],
    [() => new IntegrityError(), 4, "integrity check failed"],
    [() => new KeyUnavailableError("kek-1 sealed"), 4, "key manager unavailable"],
    [() => new Error("secret detail"), 4, "internal error"],
  ];
  for (const [make, code, message] of cases) {
    fs.failWith = make;
    try {
      assert.deepEqual(await status(call((cb) => sftp.readFile("/c.txt", cb))), { code, message });
      assert.deepEqual(await status(call((cb) => sftp.writeFile("/w.txt", Buffer.alloc(2 * 1024 * 1024), cb))), {
        code,
        message,
      });
    } finally {
      fs.failWith = undefined;
    }
  }
  // The detail reaches the log only.
  assert.ok(f.errors.some((e) => (e as { err?: Error }).err?.message === "secret detail"));
});
