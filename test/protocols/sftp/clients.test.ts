// lftp and rclone: trees of many files both ways, byte for byte.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { hashTree, lftp, makeTree, rclone, rcloneRemote } from "../../helpers/sftp-clients.ts";
import { type Fixture, startFixture } from "./fixture.ts";

let f: Fixture;
before(async () => {
  f = await startFixture();
});
after(() => f.close());

test("lftp: mirror -R of 200 files, mirror back, identical", async () => {
  const src = join(f.dir, "lftp-src");
  const back = join(f.dir, "lftp-back");
  await makeTree(src, 200);
  const opts = { port: f.port, user: "alice", keyFile: f.keyFile, timeoutMs: 180_000 };
  let r = await lftp({ ...opts, commands: [`mirror -R --parallel=4 ${src} /tree`] });
  assert.equal(r.code, 0, r.stderr);
  r = await lftp({ ...opts, commands: [`mirror --parallel=4 /tree ${back}`] });
  assert.equal(r.code, 0, r.stderr);
  const [a, b] = [await hashTree(src), await hashTree(back)];
  assert.equal(a.size, 200);
  assert.deepEqual(b, a);
});

test("lftp: put -c resumes a partial upload", async () => {
  const dir = join(f.dir, "lftp-resume");
  await mkdir(dir, { recursive: true });
  const data = randomBytes(2 * 1024 * 1024 + 99);
  await writeFile(join(dir, "part.bin"), data.subarray(0, 700_000));
  const opts = { port: f.port, user: "alice", keyFile: f.keyFile };
  let r = await lftp({ ...opts, commands: [`put ${join(dir, "part.bin")} -o /resume.bin`] });
  assert.equal(r.code, 0, r.stderr);
  await writeFile(join(dir, "full.bin"), data);
  r = await lftp({ ...opts, commands: [`put -c ${join(dir, "full.bin")} -o /resume.bin`] });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(await f.readFile("/resume.bin"), data);
});

test("rclone: copy a tree, check it (content compared by download), copy it back", async () => {
  const src = join(f.dir, "rclone-src");
  const back = join(f.dir, "rclone-back");
  await makeTree(src, 60);
  const remote = `${rcloneRemote({ port: f.port, user: "alice", keyFile: f.keyFile })}rc`;
  let r = await rclone(["copy", src, remote]);
  assert.equal(r.code, 0, r.stderr);
  r = await rclone(["check", "--download", src, remote]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /0 differences found/);
  r = await rclone(["copy", remote, back]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(await hashTree(back), await hashTree(src));
});
