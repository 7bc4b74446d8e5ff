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

    // Start the big upload at a limited pace (sftp -l, Kbit/s), then kill the server once a good part is on disk. An
    // upload is written under its blob name from the start (local-blobs.ts): the big one is the file growing in blobs/.
    const upload = runSftpBatch({
      port: server.port,
      user: "alice",
      keyFile: key,
      commands: [`put ${big} big.bin`],
      args: ["-l", "80000"],
      timeoutMs: 120_000,
    });
    const blobs = join(data, "blobs");
    const blobSizes = async () => {
      const out: number[] = [];
      for (const e of await readdir(blobs, { withFileTypes: true, recursive: true }).catch(() => [])) {
        if (e.isFile())
          out.push(
            await stat(join(e.parentPath, e.name)).then(
              (s) => s.size,
              () => 0,
            ),
          );
      }
      return out;
    };
    const deadline = Date.now() + 60_000;
    for (;;) {
      if ((await blobSizes()).some((s) => s > 4 * 1024 * 1024)) break;
      assert.ok(Date.now() < deadline, "upload never reached 4 MiB");
      await new Promise((r) => setTimeout(r, 50));
    }
    await server.kill();
    assert.notEqual((await upload).code, 0, "the client saw the upload fail");
    assert.equal(await countFiles(blobs), 2, "the crash left the unfinished blob beside small.txt's, until the sweep");

    server = await startServer(data);
    try {
      assert.equal(await countFiles(blobs), 1, "startup sweep removed the unfinished upload: one blob, small.txt's");
      assert.equal(await countFiles(join(data, "tmp")), 0, "nothing in tmp/");
      const ls = await sftp(["ls -1"]);
      assert.equal(ls.code, 0, ls.stderr);
      assert.doesNotMatch(ls.stdout, /big\.bin/, "no torn file is visible");
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
