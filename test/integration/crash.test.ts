// Kill -9 the server in the middle of a 200 MB upload, restart it: no torn file, no orphan blob, earlier files intact.
import assert from "node:assert/strict";
import { createWriteStream } from "node:fs";
import { readdir, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { after, before, describe, it } from "node:test";
import { cli, startServer, tempDir } from "../helpers/atrest.ts";
import { randomStream } from "../helpers/random-file.ts";
import { makeClientKey, runSftpBatch, sha256File } from "../helpers/sftp-clients.ts";

async function countFiles(dir: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) n++;
  return n;
}

describe("crash during upload", () => {
  let dir: string;
  let data: string;
  let key: string;

  before(async () => {
    dir = await tempDir();
    data = join(dir, "data");
    key = await makeClientKey(dir);
    await cli(["init", "--data", data]);
    await cli(["user", "add", "alice", "--public-key", `${key}.pub`, "--data", data]);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("leaves either the old state or the new one, never a torn file or an orphan", async () => {
    const small = join(dir, "small.txt");
    await writeFile(small, "written before the crash\n");
    const big = join(dir, "big.bin");
    // Larger than what is in flight at the kill, several container segments; the 200 MB uploads are bench/sftp.ts.
    await pipeline(randomStream(32 * 1024 * 1024), createWriteStream(big));

    let server = await startServer(data);
    const sftp = (commands: string[]) =>
      runSftpBatch({ port: server.port, user: "alice", keyFile: key, commands, timeoutMs: 120_000 });
    assert.equal((await sftp([`put ${small} small.txt`])).code, 0);

    // Start the big upload at a limited pace (sftp -l, Kbit/s), then kill the server once a good part is in tmp/.
    const upload = runSftpBatch({
      port: server.port,
      user: "alice",
      keyFile: key,
      commands: [`put ${big} big.bin`],
      args: ["-l", "80000"],
      timeoutMs: 120_000,
    });
    const tmp = join(data, "tmp");
    const deadline = Date.now() + 60_000;
    for (;;) {
      const files = await readdir(tmp).catch(() => []);
      const sizes = await Promise.all(
        files.map((f) =>
          stat(join(tmp, f)).then(
            (s) => s.size,
            () => 0,
          ),
        ),
      );
      if (sizes.some((s) => s > 4 * 1024 * 1024)) break;
      assert.ok(Date.now() < deadline, "upload never reached 4 MiB");
      await new Promise((r) => setTimeout(r, 50));
    }
    await server.kill();
    assert.notEqual((await upload).code, 0, "the client saw the upload fail");
    assert.ok((await countFiles(tmp)) > 0, "the crash left a temp file behind, as it should before the sweep");

    server = await startServer(data);
    try {
      assert.equal(await countFiles(tmp), 0, "startup sweep removed unfinished uploads");
      const ls = await sftp(["ls -1"]);
      assert.equal(ls.code, 0, ls.stderr);
      assert.doesNotMatch(ls.stdout, /big\.bin/, "no torn file is visible");
      assert.equal(await countFiles(join(data, "blobs")), 1, "exactly one blob: small.txt's");
      const back = join(dir, "small.back");
      assert.equal((await sftp([`get small.txt ${back}`])).code, 0);
      assert.equal(await sha256File(back), await sha256File(small));
      // And the server still takes the whole upload after the restart.
      const again = await sftp([`put ${big} big.bin`, `get big.bin ${big}.back`]);
      assert.equal(again.code, 0, again.stderr);
      assert.equal(await sha256File(`${big}.back`), await sha256File(big));
    } finally {
      await server.stop();
    }
  });
});
