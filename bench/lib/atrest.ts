// Starts atrest through its public CLI (DESIGN.md §6) for benchmarking:
//   node src/cli/main.ts init --data <dir>
//   node src/cli/main.ts user add bench --public-key <key.pub> --data <dir>
//   node src/cli/main.ts server --data <dir> --sftp-port <port> --host 127.0.0.1 [--http-port 0 --s3-port 0]
// and waits for the stdout line `atrest: sftp listening on 127.0.0.1:<port>`.
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { serverCompileCache } from "../../src/cli/server-compile-cache.js";
import { captureTail, freePort, run, spawnTracked, stop, waitForLine } from "./proc.ts";
import type { KeyPair, SftpServer } from "./ssh.ts";

export const ATREST_USER = "bench";

/**
 * The process settings bin/atrest.js and `npm start` run the server with (src/cli/server-runtime.json: V8 flags,
 * environment such as MALLOC_ARENA_MAX) and the install's compile cache, for every bench that starts an atrest
 * server: its RSS figures are then the ones an operator sees. A setting already in the environment wins, as in
 * bin/atrest.js.
 */
export function serverRuntime(root: string): { nodeFlags: string[]; env: NodeJS.ProcessEnv } {
  const runtimeFile = join(root, "src", "cli", "server-runtime.json");
  const runtime = (
    existsSync(runtimeFile) ? JSON.parse(readFileSync(runtimeFile, "utf8")) : { nodeFlags: [], env: {} }
  ) as { nodeFlags: string[]; env: Record<string, string> };
  return {
    nodeFlags: runtime.nodeFlags,
    env: { ...runtime.env, ...serverCompileCache(root), ...process.env, NODE_ENV: "production" },
  };
}
const READY = /atrest: sftp listening on 127\.0\.0\.1:(\d+)/;

/** atrest's SFTP server, or a reason it cannot run (CLI missing, init failed, never ready). */
export async function startAtrest(
  root: string,
  dir: string,
  client: KeyPair,
  extraArgs: readonly string[] = [],
  /** Node flags for the server process (e.g. --cpu-prof). */
  nodeArgs: readonly string[] = [],
  /** Extra environment for the server (e.g. limits the peer is given too). */
  extraEnv: NodeJS.ProcessEnv = {},
): Promise<SftpServer | string> {
  const cli = join(root, "src", "cli", "main.ts");
  if (!existsSync(cli)) return "atrest CLI missing (src/cli/main.ts does not exist yet)";
  const data = join(dir, "data");
  mkdirSync(dir, { recursive: true });
  const node = process.execPath;
  // The server process as the launcher (bin/atrest.js) and `npm start` run it: the same V8 flags and environment.
  const runtime = serverRuntime(root);
  const env = { ...runtime.env, ...extraEnv };
  try {
    await run(node, [cli, "init", "--data", data], { cwd: dir, env, timeoutMs: 60_000 });
    await run(node, [cli, "user", "add", ATREST_USER, "--public-key", client.publicKey, "--data", data], {
      cwd: dir,
      env,
      timeoutMs: 60_000,
    });
  } catch (e) {
    return `atrest setup failed: ${(e as Error).message}`;
  }
  // Pick the port ourselves: whether `--sftp-port 0` means "any free port" or "disabled" is then irrelevant.
  const port = await freePort();
  const base = [
    ...runtime.nodeFlags,
    ...nodeArgs,
    cli,
    "server",
    "--data",
    data,
    "--sftp-port",
    String(port),
    "--host",
    "127.0.0.1",
    ...extraArgs,
  ];
  let lastError = "";
  // Prefer disabling the other listeners (§6: 0 = disabled); fall back if this CLI does not know those flags yet.
  for (const args of [[...base, "--http-port", "0", "--s3-port", "0"], base]) {
    const child = spawnTracked(node, args, { cwd: dir, env });
    const tail = captureTail(child);
    try {
      const m = await waitForLine(child, READY, 30_000);
      return {
        label: "atrest",
        user: ATREST_USER,
        port: Number(m[1]),
        pid: child.pid as number,
        remoteBase: "",
        stop: () => stop(child),
        output: tail,
      };
    } catch (e) {
      await stop(child);
      // The readiness error carries only the last lines; prefer the line that names the problem.
      const printed = tail().trim().split("\n");
      const reason = printed.find((l) => /error|unknown|cannot|failed/i.test(l));
      lastError = `${(e as Error).message.split("\n")[0]}${reason ? ` ${reason.trim()}` : ""}`;
      // Exited at once (e.g. a flag this CLI does not know yet): try the plain contract; a timeout is final.
      if (!lastError.startsWith("exited")) break;
    }
  }
  return `atrest server did not start: ${lastError}`;
}
