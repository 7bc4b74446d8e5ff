// The real server, the stock OpenSSH client: reget, an unknown key, a user without permission next to a working one.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { makeClientKey, runSftpBatch, sha256File } from "../helpers/sftp-clients.ts";

describe("OpenSSH sftp against the real server: resume, refusals", () => {
  let dir: string;
  let key: string;
  let readerKey: string;
  let server: RunningServer;

  before(async () => {
    dir = await tempDir();
    const data = join(dir, "data");
    key = await makeClientKey(dir);
    readerKey = await makeClientKey(dir);
    await cli(["init", "--data", data]);
    await cli(["user", "add", "alice", "--public-key", `${key}.pub`, "--data", data]);
    await cli([
      "user",
      "add",
      "reader",
      "--public-key",
      `${readerKey}.pub`,
      "--home",
      "/alice",
      "--perm",
      "/:list,download",
      "--data",
      data,
    ]);
    server = await startServer(data);
  });
  after(async () => {
    await server.stop();
    await removeDir(dir);
  });

  const as = (user: string, keyFile: string, commands: string[]) =>
    runSftpBatch({ port: server.port, user, keyFile, commands, timeoutMs: 60_000 });

  it("reget resumes a partial download into the same bytes", async () => {
    const src = join(dir, "src.bin");
    const data = randomBytes(3 * 1024 * 1024 + 123);
    await writeFile(src, data);
    assert.equal((await as("alice", key, [`put ${src} r.bin`])).code, 0);
    const local = join(dir, "partial.bin");
    await writeFile(local, data.subarray(0, 1_000_003));
    const r = await as("alice", key, [`reget r.bin ${local}`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await sha256File(local), await sha256File(src));
  });

  it("a key nobody registered is refused", async () => {
    const stranger = await makeClientKey(join(dir, "stranger"));
    const r = await as("alice", stranger, ["ls"]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /Permission denied/);
  });

  it("a user without upload permission gets a clear error while another session keeps working", async () => {
    const f = join(dir, "note.txt");
    await writeFile(f, "hello");
    const [denied, ok] = await Promise.all([
      as("reader", readerKey, [`put ${f} note.txt`]),
      as("alice", key, [`put ${f} note.txt`, "ls -1"]),
    ]);
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /open .*: Permission denied/, "an SFTP-level refusal, not a failed login");
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /note\.txt/);
    // The reader can still read what alice wrote.
    const back = join(dir, "note.back");
    const got = await as("reader", readerKey, [`get note.txt ${back}`]);
    assert.equal(got.code, 0, got.stderr);
    assert.equal(await sha256File(back), await sha256File(f));
  });
});
