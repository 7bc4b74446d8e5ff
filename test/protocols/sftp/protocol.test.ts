// Protocol-level behaviour driven by ssh2's own SFTP client: exact status codes, messages and edge cases that the
// interactive clients do not expose.
import assert from "node:assert/strict";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { after, before, test } from "node:test";
import type ssh2 from "ssh2";
import type { SFTPWrapper } from "ssh2";
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
  assert.equal(String(await f.readFile("/c.txt")), "c");
  // The session still serves.
  assert.equal(String(await call((cb) => sftp.readFile("/c.txt", cb))), "c");
});

test("SETSTAT: mtime applied, mode accepted, truncation unsupported unless same size", async () => {
  await call((cb) => sftp.setstat("/c.txt", { mtime: 1_000_000, atime: 1_000_000 }, cb));
  assert.equal((await f.stat("/c.txt")).mtime, 1_000_000_000);
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

// Every condition is produced for real (a quota, a flipped ciphertext byte, a retired key version, a broken blob
// store), once through READ and once through WRITE where the real system can fail there.
test("vfs errors map to SFTP status once; unknown errors say 'internal error' and are logged", async () => {
  const read = (path: string) => status(call((cb) => sftp.readFile(path, cb)));
  // appendFile opens without TRUNC, so the vfs resumes the existing version: unwraps its key, decrypts its tail.
  const append = (path: string) => status(call((cb) => sftp.appendFile(path, Buffer.alloc(1000, 7), cb)));
  const content = (n: number) => Buffer.alloc(n, 0x61);
  for (const name of ["integrity", "key", "internal"]) {
    await call((cb) => sftp.writeFile(`/${name}.bin`, content(100_000), cb));
  }

  // QUOTA_EXCEEDED: a user with 1 MiB uploads 2 MiB. (Reads are never charged, so there is no READ case.)
  await f.app.addUser({ name: "carol", publicKeys: [f.publicKey], quotaBytes: 1024 * 1024 });
  const carol = await connect(f, "carol");
  try {
    const expected = { code: 4, message: "quota exceeded" };
    assert.deepEqual(
      await status(call((cb) => carol.sftp.writeFile("/w.txt", Buffer.alloc(2 * 1024 * 1024), cb))),
      expected,
    );
  } finally {
    carol.client.end();
  }

  // INTEGRITY: one flipped bit in the final segment's tag of the stored ciphertext.
  const blob = await f.blobPath("/integrity.bin");
  const bytes = await readFile(blob);
  bytes[bytes.length - 1] ^= 1;
  await writeFile(blob, bytes);
  const integrity = { code: 4, message: "integrity check failed" };
  assert.deepEqual(await read("/integrity.bin"), integrity);
  assert.deepEqual(await append("/integrity.bin"), integrity);

  // KEY_UNAVAILABLE: the file's KEK version is retired (rotate, then raise the minimum decryption version).
  await f.app.keys.rotateKey("default");
  await f.app.embeddedKms.setMinDecryptionVersion("default", 2);
  // Unwrapped DEKs stay cached for up to dekCacheSeconds after a key change (docs/operations.md): drop them now.
  f.app.dekCache.clear();
  try {
    const unavailable = { code: 4, message: "key manager unavailable" };
    assert.deepEqual(await read("/key.bin"), unavailable);
    assert.deepEqual(await append("/key.bin"), unavailable);
  } finally {
    await f.app.embeddedKms.setMinDecryptionVersion("default", 1);
  }
  assert.deepEqual(await call((cb) => sftp.readFile("/key.bin", cb)), content(100_000));

  // An untyped failure: the blob store holds a directory where the blob should be (read() fails with EISDIR).
  const broken = await f.blobPath("/internal.bin");
  await rm(broken);
  await mkdir(broken);
  const internal = { code: 4, message: "internal error" };
  assert.deepEqual(await read("/internal.bin"), internal);
  assert.deepEqual(await append("/internal.bin"), internal);
  // The detail reaches the log only.
  const logged = f.errors.map((e) => (e as { err?: NodeJS.ErrnoException }).err);
  assert.ok(
    logged.some((err) => err?.code === "EISDIR"),
    `EISDIR not logged: ${logged.map((e) => e?.message)}`,
  );
});
