// Through the real server and the stock OpenSSH client: KEK rotation between uploads, and nothing readable on disk.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { cli, type RunningServer, startServer, tempDir } from "../helpers/atrest.ts";
import { makeClientKey, runSftpBatch, sha256File } from "../helpers/sftp-clients.ts";

describe("encryption at rest through SFTP", () => {
  let dir: string;
  let data: string;
  let key: string;
  let server: RunningServer;
  const sftp = (commands: string[]) =>
    runSftpBatch({ port: server.port, user: "alice", keyFile: key, commands, timeoutMs: 60_000 });

  before(async () => {
    dir = await tempDir();
    data = join(dir, "data");
    key = await makeClientKey(dir);
    await cli(["init", "--data", data]);
    await cli(["user", "add", "alice", "--public-key", `${key}.pub`, "--data", data]);
    server = await startServer(data);
  });
  after(async () => {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("rotating the KEK between two uploads keeps both readable; new files use the new version", async () => {
    const a = join(dir, "a.bin");
    const b = join(dir, "b.bin");
    await writeFile(a, randomBytes(300_000));
    await writeFile(b, randomBytes(300_000));
    assert.equal((await sftp([`put ${a} a.bin`])).code, 0);
    const rotated = await cli(["kms", "key", "rotate", "default", "--data", data]);
    assert.match(rotated.stdout, /kek:default:v2/);
    // The running server picks up the rotation made by another process.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await sftp([`put ${b} b.bin`])).code, 0);
    const got = await sftp([`get a.bin ${a}.back`, `get b.bin ${b}.back`]);
    assert.equal(got.code, 0, got.stderr);
    assert.equal(await sha256File(`${a}.back`), await sha256File(a));
    assert.equal(await sha256File(`${b}.back`), await sha256File(b));

    const list = JSON.parse((await cli(["kms", "key", "list", "--json", "--data", data])).stdout);
    const def = list.find((k: { name: string }) => k.name === "default");
    assert.equal(def.versions.length, 2);
    assert.equal(def.currentVersion, 2);
    // Which version wrapped which file shows in the audit (key refs, never key material).
    const audit = (await cli(["audit", "tail", "-n", "50", "--data", data])).stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    const uploads = audit.filter((e) => e.action === "upload" && e.outcome === "success");
    assert.deepEqual(
      uploads.map((e) => [e.path, e.keyRef]),
      [
        ["/a.bin", "kek:default:v1"],
        ["/b.bin", "kek:default:v2"],
      ],
    );
  });

  it("a scan of the whole data dir finds neither plaintext nor file names", async () => {
    const canary = `CANARY-${randomBytes(12).toString("hex")}`;
    const name = `payroll-${randomBytes(6).toString("hex")}.csv`;
    const src = join(dir, name);
    await writeFile(src, `${canary}\n`.repeat(5000));
    const dirName = `board-minutes-${randomBytes(6).toString("hex")}`;
    const r = await sftp([
      `mkdir ${dirName}`,
      `put ${src} ${dirName}/${name}`,
      `rename ${dirName}/${name} ${dirName}/${name}.old`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    await server.stop();
    const needles = [canary, name, dirName].flatMap((s) => [Buffer.from(s), Buffer.from(s, "utf16le")]);
    let scanned = 0;
    for (const e of await readdir(data, { withFileTypes: true, recursive: true })) {
      if (!e.isFile()) continue;
      const bytes = await readFile(join(e.parentPath, e.name));
      scanned++;
      for (const n of needles) assert.equal(bytes.indexOf(n), -1, `"${n}" found in ${join(e.parentPath, e.name)}`);
    }
    assert.ok(scanned >= 5, `scanned ${scanned} files`);
    server = await startServer(data);
    const back = await sftp([`get ${dirName}/${name}.old ${src}.back`]);
    assert.equal(back.code, 0, back.stderr);
    assert.equal(await sha256File(`${src}.back`), await sha256File(src));
  });
});
