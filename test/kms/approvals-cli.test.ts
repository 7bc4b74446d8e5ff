// Dual control and BYOK through the real CLI (separate processes on one data dir), with the test clock file moving
// time forward for every process at once.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { dataPaths } from "../../src/app.ts";
import { type EmbeddedKms, openEmbeddedKms } from "../../src/kms/embedded.ts";
import { cli, removeDir, tempDir } from "../helpers/atrest.ts";

const run = promisify(execFile);
const ctx = { fileId: "f-cli" };

async function fails(args: string[]): Promise<string> {
  try {
    await cli(args);
  } catch (e) {
    return String((e as { stderr?: string }).stderr);
  }
  throw new Error(`expected atrest ${args.join(" ")} to fail`);
}

describe("kms governance CLI (embedded KMS, several processes)", () => {
  let dir: string;
  let data: string;
  let clock: string;
  const saved = { mode: process.env.ATREST_TEST_MODE, file: process.env.ATREST_TEST_CLOCK_FILE };
  before(async () => {
    dir = await tempDir("atrest-kmscli-");
    data = join(dir, "data");
    clock = join(dir, "clock");
    await writeFile(clock, "2030-01-01T00:00:00Z");
    // inherited by every CLI child process: all of them share the test clock
    process.env.ATREST_TEST_MODE = "1";
    process.env.ATREST_TEST_CLOCK_FILE = clock;
    await cli(["init", "--data", data]);
  });
  after(async () => {
    process.env.ATREST_TEST_MODE = saved.mode;
    process.env.ATREST_TEST_CLOCK_FILE = saved.file;
    if (saved.mode === undefined) delete process.env.ATREST_TEST_MODE;
    if (saved.file === undefined) delete process.env.ATREST_TEST_CLOCK_FILE;
    await removeDir(dir);
  });

  it("destroy needs two distinct custodians, then the waiting period; the key is then gone", async () => {
    await cli(["kms", "key", "create", "hr", "--data", data]);
    const kms: EmbeddedKms = await openEmbeddedKms(dataPaths(data).kms, { refreshMs: 0, schedulerIntervalMs: 0 });
    try {
      const dk = await kms.generateDataKey("hr", ctx);
      const keep = await kms.generateDataKey("default", ctx);
      const asked = await cli([
        "kms",
        "key",
        "destroy",
        "hr",
        "--waiting-days",
        "7",
        "--reason",
        "done",
        "--as",
        "olga",
        "--data",
        data,
      ]);
      const id = /request (req-[0-9a-f]+)/.exec(asked.stdout)?.[1];
      assert.ok(id, asked.stdout);
      assert.match(asked.stdout, /needs 2 more approval\(s\)/);
      assert.match(
        await fails(["kms", "approve", id, "--as", "olga", "--data", data]),
        /olga requested .* cannot also approve/,
      );
      const one = await cli(["kms", "approve", id, "--as", "alice", "--reason", "ticket 7", "--data", data]);
      assert.match(one.stdout, /needs 1 more approval/);
      assert.match(await fails(["kms", "approve", id, "--as", "alice", "--data", data]), /already decided/);
      const two = await cli(["kms", "approve", id, "--as", "bob", "--data", data]);
      assert.match(two.stdout, /executed: destruction scheduled for 2030-01-08T00:00:00.000Z/);
      const shown = JSON.parse((await cli(["kms", "request", "show", id, "--json", "--data", data])).stdout);
      assert.deepEqual(
        shown.approvals.map((a: { custodian: string }) => a.custodian),
        ["local:alice", "local:bob"],
      );
      assert.deepEqual(await kms.unwrap(dk.wrapped, ctx), dk.plaintext); // waiting period: still readable
      await writeFile(clock, "2030-01-08T00:00:01Z");
      // any KMS process runs the due destruction when it opens
      const after = JSON.parse((await cli(["kms", "key", "show", "hr", "--json", "--data", data])).stdout);
      assert.equal(after.versions[0].state, "destroyed");
      await assert.rejects(kms.unwrap(dk.wrapped, ctx), /kek:hr:v1 is destroyed/);
      assert.deepEqual(await kms.unwrap(keep.wrapped, ctx), keep.plaintext);
      const audit = (await cli(["kms", "audit", "tail", "-n", "50", "--data", data])).stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l));
      const destroyed = audit.find((e) => e.action === "key.destroy" && e.user === "kms-scheduler");
      assert.equal(destroyed?.keyRef, "kek:hr:v1");
      assert.equal(destroyed?.time.slice(0, 4), new Date().toISOString().slice(0, 4)); // audit time is real time
    } finally {
      await kms.close();
    }
  });

  it("an expired request cannot be approved", async () => {
    await cli(["kms", "key", "create", "exp", "--data", data]);
    const asked = await cli(["kms", "key", "destroy", "exp", "--as", "olga", "--data", data]);
    const id = /request (req-[0-9a-f]+)/.exec(asked.stdout)?.[1] as string;
    const t = Date.parse((await readFile(clock, "utf8")).trim());
    await writeFile(clock, new Date(t + 25 * 3_600_000).toISOString());
    assert.match(await fails(["kms", "approve", id, "--as", "alice", "--data", data]), /expired at/);
    const list = JSON.parse(
      (await cli(["kms", "request", "list", "--status", "expired", "--json", "--data", data])).stdout,
    );
    assert.deepEqual(
      list.map((r: { id: string }) => r.id),
      [id],
    );
  });

  it("BYOK: import-params → openssl wraps → import; the key works", async () => {
    const pem = join(dir, "wrapping.pem");
    const out = (await cli(["kms", "key", "import-params", "ext", "--out", pem, "--data", data])).stdout;
    const token = /import token: (\S+)/.exec(out)?.[1] as string;
    assert.ok(token);
    const mat = join(dir, "mat.bin");
    await writeFile(mat, randomBytes(32));
    const eph = (await run("openssl", ["rand", "-hex", "32"])).stdout.trim();
    await writeFile(join(dir, "eph.bin"), Buffer.from(eph, "hex"));
    await run("openssl", [
      "pkeyutl",
      "-encrypt",
      "-pubin",
      "-inkey",
      pem,
      "-in",
      join(dir, "eph.bin"),
      "-out",
      join(dir, "eph.rsa"),
      "-pkeyopt",
      "rsa_padding_mode:oaep",
      "-pkeyopt",
      "rsa_oaep_md:sha256",
      "-pkeyopt",
      "rsa_mgf1_md:sha256",
    ]);
    await run("openssl", [
      "enc",
      "-id-aes256-wrap-pad",
      "-K",
      eph,
      "-iv",
      "A65959A6",
      "-in",
      mat,
      "-out",
      join(dir, "mat.kwp"),
    ]);
    const blob = join(dir, "import.bin");
    await writeFile(blob, Buffer.concat([await readFile(join(dir, "eph.rsa")), await readFile(join(dir, "mat.kwp"))]));
    assert.match(
      (await cli(["kms", "key", "import", "ext", "--token", token, "--in", blob, "--data", data])).stdout,
      /imported kek:ext:v1/,
    );
    const kms = await openEmbeddedKms(dataPaths(data).kms, { schedulerIntervalMs: 0 });
    try {
      const dk = await kms.generateDataKey("ext", ctx);
      assert.deepEqual(await kms.unwrap(dk.wrapped, ctx), dk.plaintext);
      assert.deepEqual(kms.service.keyring.exportMaterial("ext", 1), await readFile(mat));
    } finally {
      await kms.close();
    }
    const tampered = await readFile(blob);
    tampered[tampered.length - 3] ^= 1;
    await writeFile(blob, tampered);
    const p2 = /import token: (\S+)/.exec(
      (await cli(["kms", "key", "import-params", "ext", "--out", pem, "--data", data])).stdout,
    )?.[1] as string;
    assert.match(
      await fails(["kms", "key", "import", "ext", "--token", p2, "--in", blob, "--data", data]),
      /import of kek:ext refused/,
    );
  });
});
