// OpenSSH scp (9.x speaks SFTP by default) against atrest: new files, overwrites longer and shorter (scp opens
// WRITE|CREAT without TRUNC, writes from 0 and then sets the size), empty files, downloads; and the same overwrite
// with sftp, lftp and rclone beside it, every result checked by sha256 of what the vfs decrypts.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { lftp, rclone, rcloneRemote, run, runSftpBatch, SSH_OPTS } from "../../helpers/sftp-clients.ts";
import { type Fixture, startFixture } from "./fixture.ts";

let f: Fixture;
before(async () => {
  f = await startFixture();
});
after(() => f.close());

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

function scp(args: string[]) {
  const opts = [...SSH_OPTS, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", f.keyFile, "-P", String(f.port)];
  return run("scp", ["-q", ...opts, ...args], { timeoutMs: 60_000 });
}

const remote = (path: string) => `alice@127.0.0.1:${path}`;

async function local(name: string, data: Buffer): Promise<string> {
  const p = join(f.dir, name);
  await writeFile(p, data);
  return p;
}

test("scp: upload a new file, overwrite it with a longer, a shorter and an empty one, download each", async () => {
  for (const [i, size] of [300_000, 2_500_000, 70_001, 0, 5].entries()) {
    const data = randomBytes(size);
    let r = await scp([await local(`scp-${i}.bin`, data), remote("scp.bin")]);
    assert.equal(r.code, 0, `upload of ${size} B: ${r.stderr}`);
    assert.equal(sha(await f.readFile("/scp.bin")), sha(data), `after the upload of ${size} B`);
    assert.equal((await f.stat("/scp.bin")).size, size);
    const back = join(f.dir, `scp-${i}.back`);
    r = await scp([remote("scp.bin"), back]);
    assert.equal(r.code, 0, `download of ${size} B: ${r.stderr}`);
    assert.equal(sha(await readFile(back)), sha(data));
  }
  const q = await f.quota();
  assert.deepEqual([q.usedFiles, q.usedBytes], [1, 5]);
  const ups = f.audit.filter((e) => e.action === "upload" && e.path === "/scp.bin");
  assert.deepEqual(
    ups.map((e) => [e.outcome, e.size]),
    [300_000, 2_500_000, 70_001, 0, 5].map((s) => ["success", s]),
  );
});

test("scp -p keeps the mtime; overwrite by sftp, lftp and rclone of the same file, each read back", async () => {
  const first = randomBytes(100_000);
  const path = await local("mt.bin", first);
  let r = await scp(["-p", path, remote("multi.bin")]);
  assert.equal(r.code, 0, r.stderr);
  const st = await f.stat("/multi.bin");
  const { mtimeMs } = await import("node:fs/promises").then((m) => m.stat(path));
  assert.equal(Math.floor(st.mtime / 1000), Math.floor(mtimeMs / 1000));

  const viaSftp = randomBytes(40_000);
  r = await runSftpBatch({
    port: f.port,
    user: "alice",
    keyFile: f.keyFile,
    commands: [`put ${await local("m-sftp.bin", viaSftp)} multi.bin`],
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(sha(await f.readFile("/multi.bin")), sha(viaSftp));

  const viaLftp = randomBytes(150_000);
  r = await lftp({
    port: f.port,
    user: "alice",
    keyFile: f.keyFile,
    commands: [`put ${await local("m-lftp.bin", viaLftp)} -o /multi.bin`],
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(sha(await f.readFile("/multi.bin")), sha(viaLftp));

  const viaRclone = randomBytes(20_000);
  r = await rclone([
    "copyto",
    await local("m-rclone.bin", viaRclone),
    `${rcloneRemote({ port: f.port, user: "alice", keyFile: f.keyFile })}multi.bin`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(sha(await f.readFile("/multi.bin")), sha(viaRclone));

  // And scp once more over what rclone wrote; the download by scp matches.
  const last = randomBytes(123_457);
  r = await scp([await local("m-last.bin", last), remote("multi.bin")]);
  assert.equal(r.code, 0, r.stderr);
  const back = join(f.dir, "m-last.back");
  r = await scp([remote("multi.bin"), back]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(sha(await readFile(back)), sha(last));
  // Usage is exactly what is listed: every replaced version was credited back.
  const listed = await f.list("/");
  const q = await f.quota();
  assert.deepEqual([q.usedFiles, q.usedBytes], [listed.length, listed.reduce((n, e) => n + e.stat.size, 0)]);
  assert.equal((await f.stat("/multi.bin")).size, 123_457);
});
