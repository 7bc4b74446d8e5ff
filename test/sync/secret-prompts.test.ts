// `atrest sync` without ATREST_SYNC_PASSPHRASE and with a standard input that is not a terminal (a service manager's,
// a CI job's: a pipe kept open, never written) fails at once with what to do, instead of waiting for an end of input
// that never comes. The real entry (bin/atrest.js) as a child process whose stdin pipe the test keeps open.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { removeDir, tempDir } from "../helpers/atrest.ts";

const BIN = join(import.meta.dirname, "..", "..", "bin", "atrest.js");

/** Runs atrest with stdin an open pipe; resolves with its exit code, stderr and how long it took. */
function runOpenStdin(args: string[], input?: string): Promise<{ code: number | null; stderr: string; ms: number }> {
  const env = { ...process.env };
  delete env.ATREST_SYNC_PASSPHRASE;
  const t0 = performance.now();
  const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ["pipe", "pipe", "pipe"] });
  if (input !== undefined) child.stdin.write(input); // written, never ended
  let stderr = "";
  child.stderr.on("data", (d) => {
    stderr += d;
  });
  // a command that waits for the end of stdin would hang the suite: ended by the test after 60 s
  const guard = setTimeout(() => child.kill("SIGKILL"), 60_000);
  return new Promise((resolve) =>
    child.once("exit", (code) => {
      clearTimeout(guard);
      child.stdin.destroy();
      resolve({ code, stderr, ms: performance.now() - t0 });
    }),
  );
}

describe("atrest sync: secrets with no terminal to ask on", () => {
  let dir: string;
  before(async () => {
    dir = await tempDir("atrest-sync-prompts-");
  });
  after(async () => {
    await removeDir(dir);
  });

  test("a command that unlocks the device keys says to set ATREST_SYNC_PASSPHRASE", async () => {
    const r = await runOpenStdin(["sync", "devices", "list", "--state", join(dir, "state")]);
    assert.equal(r.code, 2, r.stderr); // INVALID_INPUT
    assert.match(
      r.stderr,
      /the passphrase of this device's keys is needed and standard input is not a terminal: set ATREST_SYNC_PASSPHRASE/,
    );
    assert.ok(r.ms < 50_000, `took ${r.ms} ms`);
  });

  test("enroll: the password without --password-stdin, the new passphrase without a second line", async () => {
    const server = ["--server", "https://127.0.0.1:9", "--user", "alice", "--state", join(dir, "enroll")];
    const noFlag = await runOpenStdin(["sync", "device", "enroll", ...server], "secret\n");
    assert.equal(noFlag.code, 2, noFlag.stderr);
    assert.match(noFlag.stderr, /your account password is needed .*: pipe it with --password-stdin/);
    // one line piped and ended: the password; the device passphrase has no way in
    const env = { ...process.env };
    delete env.ATREST_SYNC_PASSPHRASE;
    const oneLine = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [BIN, "sync", "device", "enroll", ...server, "--password-stdin"], { env });
      let stderr = "";
      child.stderr.on("data", (d) => {
        stderr += d;
      });
      child.stdin.end("secret\n");
      child.once("exit", (code) => resolve({ code, stderr }));
    });
    assert.equal(oneLine.code, 2, oneLine.stderr);
    assert.match(oneLine.stderr, /a passphrase for this device's keys is needed .*second line of --password-stdin/);
  });
});
