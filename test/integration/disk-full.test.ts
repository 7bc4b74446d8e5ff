// Disk full, for real: the data directory (or only its blobs) on a small tmpfs. Uploads and metadata operations fail
// at once with "no space left on device" (not "internal error", no 10-20 s stalls), and everything stored stays
// intact. Needs root for mount(8); skipped with the reason otherwise.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import type { SFTPWrapper } from "ssh2";
import { runSftpBatch } from "../helpers/sftp-clients.ts";
import { connect, type Fixture, startFixture } from "../protocols/sftp/fixture.ts";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

function call<T = unknown>(fn: (cb: (err: Error | null | undefined, v?: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v as T))));
}

/** A tmpfs of `size` mounted for `fn`, or the reason it cannot be. */
async function withTmpfs(size: string, fn: (dir: string) => Promise<void>): Promise<string | undefined> {
  const dir = await mkdtemp(join(tmpdir(), "atrest-full-"));
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${size},mode=0700`, "tmpfs", dir], { stdio: "pipe" });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    return `cannot mount a tmpfs here: ${String((err as Error).message).split("\n")[0]}`;
  }
  try {
    await fn(dir);
  } finally {
    execFileSync("umount", ["-l", dir]);
    await rm(dir, { recursive: true, force: true });
  }
  return undefined;
}

/** Fills the file system holding `dir` to the last block. */
function fill(dir: string): void {
  try {
    execFileSync("dd", ["if=/dev/zero", `of=${join(dir, "filler")}`, "bs=64k"], { stdio: "ignore" });
  } catch {
    // dd stops with ENOSPC: that is the point
  }
}

async function put(sftp: SFTPWrapper, path: string, data: Buffer): Promise<void> {
  const h = await call<Buffer>((cb) => sftp.open(path, "w", cb));
  try {
    for (let o = 0; o < data.length; o += 32_768) {
      const part = data.subarray(o, o + 32_768);
      await call((cb) => sftp.write(h, part, 0, part.length, o, cb));
    }
  } finally {
    await call((cb) => sftp.close(h, cb));
  }
}

async function timed<T>(p: Promise<T>): Promise<{ ms: number; result?: T; error?: Error }> {
  const t = Date.now();
  try {
    const result = await p;
    return { ms: Date.now() - t, result };
  } catch (error) {
    return { ms: Date.now() - t, error: error as Error };
  }
}

test("blobs on a full disk: the overwrite fails with 'no space left on device', the old version stays", async (t) => {
  const skipped = await withTmpfs("4m", async (mnt) => {
    let f: Fixture | undefined;
    try {
      f = await startFixture({
        prepareData: async (data) => {
          await mkdir(data, { recursive: true });
          for (const d of ["blobs", "tmp"]) {
            await mkdir(join(mnt, d));
            await symlink(join(mnt, d), join(data, d));
          }
        },
      });
      const fx = f;
      const old = randomBytes(2_500_000);
      const { client, sftp } = await connect(fx);
      try {
        await put(sftp, "/doc.bin", old);
        const before = await fx.quota();
        // 2.5 MB more does not fit in the 4 MB file system next to the first version.
        const r = await timed(put(sftp, "/doc.bin", randomBytes(2_500_000)));
        assert.match(String(r.error?.message), /no space left on device/);
        const r2 = await timed(put(sftp, "/new.bin", randomBytes(2_500_000)));
        assert.match(String(r2.error?.message), /no space left on device/);
        assert.equal(sha(await fx.readFile("/doc.bin")), sha(old));
        await assert.rejects(fx.stat("/new.bin"), { code: "NOT_FOUND" });
        assert.deepEqual(await fx.quota(), before);
        // Metadata lives elsewhere here: it keeps working, at once.
        for (const op of [
          () => call((cb) => sftp.mkdir("/d", cb)),
          () => call((cb) => sftp.rename("/doc.bin", "/d/doc.bin", cb)),
          () => call((cb) => sftp.readdir("/d", cb)),
        ]) {
          const o = await timed(op());
          assert.equal(o.error, undefined);
          assert.ok(o.ms < 3000, `took ${o.ms} ms`);
        }
        assert.equal(sha(await fx.readFile("/d/doc.bin")), sha(old));
      } finally {
        client.end();
      }
      const failed = fx.audit.filter((e) => e.action === "upload" && e.outcome === "failure");
      assert.deepEqual(
        failed.map((e) => [e.path, e.reason]),
        [
          ["/doc.bin", "NO_SPACE"],
          ["/new.bin", "NO_SPACE"],
        ],
      );
      assert.deepEqual(fx.errors, [], "a full disk is not an internal error");
    } finally {
      await f?.close();
    }
  });
  if (skipped) t.skip(skipped);
});

test("the whole data dir on a full disk: metadata operations fail fast and clearly; what is stored stays readable", async (t) => {
  const skipped = await withTmpfs("8m", async (mnt) => {
    let f: Fixture | undefined;
    try {
      f = await startFixture({ prepareData: (data) => symlink(mnt, data) });
      const fx = f;
      const stored = randomBytes(1_000_000);
      await writeFile(join(fx.dir, "stored.bin"), stored);
      const r = await runSftpBatch({
        port: fx.port,
        user: "alice",
        keyFile: fx.keyFile,
        commands: [`put ${join(fx.dir, "stored.bin")} stored.bin`],
      });
      assert.equal(r.code, 0, r.stderr);
      fill(mnt);
      const { client, sftp } = await connect(fx);
      try {
        for (const [what, op] of [
          ["mkdir", () => call((cb) => sftp.mkdir("/d", cb))],
          ["rename", () => call((cb) => sftp.rename("/stored.bin", "/moved.bin", cb))],
          ["upload", () => put(sftp, "/new.bin", randomBytes(100_000))],
        ] as const) {
          const o = await timed(op());
          assert.match(String(o.error?.message), /no space left on device/, what);
          assert.ok(o.ms < 3000, `${what} took ${o.ms} ms`);
        }
        const list = await timed(call<unknown[]>((cb) => sftp.readdir("/", cb)));
        assert.equal(list.error, undefined);
        assert.ok(list.ms < 3000, `readdir took ${list.ms} ms`);
      } finally {
        client.end();
      }
      assert.equal(sha(await fx.readFile("/stored.bin")), sha(stored));
      assert.deepEqual(
        (await fx.list("/")).map((e) => e.name),
        ["stored.bin"],
      );
      assert.deepEqual(fx.errors, [], "a full disk is not an internal error");
      await rm(join(mnt, "filler"), { force: true });
    } finally {
      await f?.close();
    }
  });
  if (skipped) t.skip(skipped);
});
