// Runs the real atrest CLI for integration tests: commands in-process (runCli) or as a process, and the server.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { runCli, stdinOf } from "../../src/cli/run.ts";
import { installEnvTestHooks } from "./test-hooks.ts";

const execFileP = promisify(execFile);
export const ROOT = join(import.meta.dirname, "..", "..");
/** The production entry (installs no test hook). */
export const PRODUCTION_CLI = join(ROOT, "src", "cli", "main.ts");
/** What tests start as a process: the production entry behind the environment-driven test hooks (test-entry.ts). */
export const CLI = join(ROOT, "test", "helpers", "test-entry.ts");

// cli() runs in this process: the same hooks, read from process.env at each use.
installEnvTestHooks();
/** The `npx atrest` launcher (re-execs CLI on the pinned Node). */
export const LAUNCHER = join(ROOT, "bin", "atrest.js");

export async function tempDir(prefix = "atrest-test-"): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

export interface CliResult {
  stdout: string;
  stderr: string;
}

/**
 * `atrest <args>` run in this process (runCli): resolves with stdout/stderr, rejects on a non-zero exit with an error
 * carrying `code` (the exit code), stdout and stderr, as cliProcess does. `env` replaces the environment for the run.
 */
export async function cli(args: string[], input?: string, env?: NodeJS.ProcessEnv): Promise<CliResult> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const writer = (into: Buffer[]) => ({
    write(chunk: string | Uint8Array) {
      into.push(Buffer.from(chunk));
      return true;
    },
  });
  const code = await runCli(args, {
    stdout: writer(out),
    stderr: writer(err),
    stdin: stdinOf(input),
    env: env ?? process.env,
  });
  const stdout = Buffer.concat(out).toString("utf8");
  const stderr = Buffer.concat(err).toString("utf8");
  if (code === 0) return { stdout, stderr };
  throw Object.assign(new Error(`Command failed: atrest ${args.join(" ")}\n${stderr}`), { code, stdout, stderr });
}

/**
 * `atrest <args>` as a child process, for what crosses the process boundary (exit codes from the entry, signals,
 * umask, a crash): resolves with stdout/stderr, rejects on a non-zero exit (error carries code, stderr).
 */
export async function cliProcess(args: string[], input?: string, env?: NodeJS.ProcessEnv): Promise<CliResult> {
  if (input === undefined) return execFileP(process.execPath, [CLI, ...args], { cwd: ROOT, env });
  return new Promise((resolve, reject) => {
    const child = execFile(process.execPath, [CLI, ...args], { cwd: ROOT, env }, (err, stdout, stderr) =>
      err ? reject(Object.assign(err, { stdout, stderr })) : resolve({ stdout, stderr }),
    );
    child.stdin?.end(input);
  });
}

export interface RunningServer {
  port: number;
  /** The HTTPS API's port (0 when started with --http-port 0). */
  httpPort: number;
  proc: ChildProcess;
  output: () => string;
  /** SIGTERM and wait for exit. */
  stop(): Promise<void>;
  /** SIGKILL (crash) and wait for exit. */
  kill(): Promise<void>;
}

/**
 * Starts `atrest server --data <data> --sftp-port auto` (through `entry`) and waits for its listening line. `wrap` runs
 * it under a command that execs it (e.g. `["prlimit", "--nofile=300"]`), so the pid is still the server's.
 */
export async function startServer(
  data: string,
  extra: string[] = [],
  env?: NodeJS.ProcessEnv,
  entry = CLI,
  wrap: string[] = [],
): Promise<RunningServer> {
  const proc = spawn(
    wrap[0] ?? process.execPath,
    [
      ...wrap.slice(1),
      ...(wrap.length > 0 ? [process.execPath] : []),
      entry,
      "server",
      "--data",
      data,
      "--sftp-port",
      "auto",
      // every test server picks a free HTTPS port too (unless the test names one): 8080 would clash between tests
      ...(extra.includes("--http-port") ? [] : ["--http-port", "auto"]),
      // the S3 door is on by default (9000): off unless the test asks for it
      ...(extra.includes("--s3-port") ? [] : ["--s3-port", "0"]),
      "--host",
      "127.0.0.1",
      "--log-level",
      "warn",
      ...extra,
    ],
    { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } },
  );
  let out = "";
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  const [port, httpPort] = await new Promise<[number, number]>((resolve, reject) => {
    // two doors start now (SFTP, then HTTPS): on a loaded 2-core machine (load 30) that took over a minute
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${out}`)), 120_000);
    const onData = (chunk: Buffer) => {
      out += chunk.toString();
      const m = /atrest: sftp listening on [^\s]+:(\d+)/.exec(out);
      // the HTTPS door starts after SFTP; wait for it too unless it is off
      const h = /atrest: https listening on [^\s]+:(\d+)/.exec(out);
      if (m && (h || /atrest: https disabled/.test(out))) {
        clearTimeout(timer);
        resolve([Number(m[1]), h ? Number(h[1]) : 0]);
      }
    };
    proc.stdout?.on("data", onData);
    proc.stderr?.on("data", onData);
    proc.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${out}`));
    });
  });
  const end = async (signal: NodeJS.Signals) => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    await exited;
  };
  return { port, httpPort, proc, output: () => out, stop: () => end("SIGTERM"), kill: () => end("SIGKILL") };
}
