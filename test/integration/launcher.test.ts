// The `npx atrest` launcher (bin/atrest.js) runs the server as a child: a SIGTERM sent to the launcher (what a
// service manager or a container runtime does) must stop the server cleanly, and the launcher ends with its code.
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { missingRuntimeSettings, serverRuntime } from "../../src/cli/server-runtime.ts";
import { cliProcess, LAUNCHER, ROOT, removeDir, startServer, tempDir } from "../helpers/atrest.ts";

const execFileP = promisify(execFile);

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      resolve(false);
    });
    s.once("error", () => resolve(true));
  });
}

describe("launcher (bin/atrest.js)", () => {
  let dir: string;
  before(async () => {
    dir = await tempDir("atrest-launcher-");
  });
  after(async () => {
    await removeDir(dir);
  });

  test("SIGTERM to the launcher stops the server cleanly: exit code 0, port closed, audit log verified", async () => {
    const data = join(dir, "data");
    await cliProcess(["init", "--data", data]);
    const server = await startServer(data, [], undefined, LAUNCHER);
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
      server.proc.once("exit", (code, signal) => resolve([code, signal])),
    );
    // fully started (printed last, on a data dir without users)
    while (!/no users yet/.test(server.output())) await new Promise((r) => setTimeout(r, 20));
    // bin/atrest.js applies src/cli/server-runtime.json: the server has every setting of it
    assert.doesNotMatch(server.output(), /process settings missing/);
    await server.stop();
    assert.deepEqual(await exited, [0, null], server.output());
    assert.ok(await refused(server.port), "the server (the launcher's child) still listens");
    // exit 0: intact and every record under a signed checkpoint (3 would be an unsigned tail: no clean shutdown)
    const verify = await cliProcess(["audit", "verify", "--data", data]);
    assert.match(verify.stdout, /\d+ record\(s\), [1-9]\d* checkpoint\(s\) verified/);
  });

  test("a SIGTERM while the server is still starting stops it cleanly once started (exit 0, audit verified)", async () => {
    const data = join(dir, "starting");
    await cliProcess(["init", "--data", data]);
    const proc = spawn(
      process.execPath,
      [
        join(ROOT, "src", "cli", "main.ts"),
        "server",
        "--data",
        data,
        "--sftp-port",
        "auto",
        "--http-port",
        "auto",
        "--s3-port",
        "0",
        "--log-level",
        "warn",
      ],
      { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
      proc.once("exit", (code, signal) => resolve([code, signal])),
    );
    const onData = (chunk: Buffer) => {
      out += chunk.toString();
      // printed once the key manager is open, before the audit pipeline, host keys (generated on this first start)
      // and the SFTP listener exist
      if (/atrest: key manager: /.test(out) && proc.signalCode === null && !proc.killed) proc.kill("SIGTERM");
    };
    proc.stdout.on("data", onData);
    proc.stderr.on("data", onData);
    assert.deepEqual(await exited, [0, null], out);
    const verify = await cliProcess(["audit", "verify", "--data", data]);
    assert.match(verify.stdout, /\d+ record\(s\), [1-9]\d* checkpoint\(s\) verified/);
  });

  test("the launcher ends with the child's exit code", async () => {
    const launch = (args: string[]) => execFileP(process.execPath, [LAUNCHER, ...args]);
    await launch(["--help"]);
    await assert.rejects(launch(["bogus"]), { code: 1 });
    await assert.rejects(launch(["user", "add", "x", "--role", "root", "--data", join(dir, "data")]), { code: 2 });
    // `sync` runs in the launcher's own process (no child): its exit codes and error lines are the sync CLI's
    const help = await launch(["sync", "--help"]);
    assert.match(help.stdout, /end-to-end encrypted sync/);
    await assert.rejects(launch(["sync", "bogus"]), { code: 1 });
    const noState = execFileP(process.execPath, [LAUNCHER, "sync", "regions", "--state", join(dir, "no-such-state")], {
      env: { ...process.env, ATREST_SYNC_PASSPHRASE: "x" },
    });
    await assert.rejects(noState, { code: 1, stderr: /^atrest: .*no-such-state/m });
  });
});

describe("server process settings (src/cli/server-runtime.json)", () => {
  const runtime = { nodeFlags: ["--max-semi-space-size=2"], env: { MALLOC_ARENA_MAX: "2" } };

  test("a setting counts as present with any value, from the command line, NODE_OPTIONS or the environment", () => {
    assert.deepEqual(missingRuntimeSettings(runtime, [], {}), ["--max-semi-space-size=2", "MALLOC_ARENA_MAX=2"]);
    assert.deepEqual(missingRuntimeSettings(runtime, ["--max-semi-space-size=8"], { MALLOC_ARENA_MAX: "4" }), []);
    assert.deepEqual(missingRuntimeSettings(runtime, [], { NODE_OPTIONS: "--max_semi_space_size=1" }), [
      "MALLOC_ARENA_MAX=2",
    ]);
  });

  test("npm start runs the server through the launcher, which applies server-runtime.json", async () => {
    const pkg = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> };
    assert.equal(pkg.scripts.start, "node bin/atrest.js server");
    assert.ok(serverRuntime().nodeFlags.length > 0);
  });
});
