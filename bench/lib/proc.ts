// Spawning helpers: tracked long-running children (killed with their whole process group on exit) and timed
// one-shot commands.
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { performance } from "node:perf_hooks";
import { onCleanup } from "./cleanup.ts";

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  /** Wall-clock seconds from spawn to exit. */
  seconds: number;
}

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Fail (reject) on a non-zero exit. Default true. */
  check?: boolean;
  timeoutMs?: number;
}

/** Runs a command to completion (stdin ignored), timing it; rejects on non-zero exit unless check is false. */
export function run(cmd: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const { check = true, timeoutMs = 30 * 60_000 } = options;
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const child = spawnTracked(cmd, args, { cwd: options.cwd, env: options.env });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on("data", (b: Buffer) => out.push(b));
    child.stderr?.on("data", (b: Buffer) => err.push(b));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killTree(child, "SIGKILL");
    }, timeoutMs);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const result: RunResult = {
        code: code ?? 128,
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
        seconds: (performance.now() - start) / 1000,
      };
      if (check && (code !== 0 || signal)) {
        const detail = (result.stderr.trim() || result.stdout.trim()).split("\n").slice(-5).join("\n");
        const how = timedOut ? `timed out after ${(timeoutMs / 1000).toFixed(0)} s` : `exited ${signal ?? code}`;
        reject(new Error(`${cmd} ${args.join(" ")} ${how}: ${detail}`));
      } else resolve(result);
    });
  });
}

/**
 * Spawns a child in its own process group (so servers that fork, like sshd, die with it) and kills the group on
 * process cleanup. stdin is ignored; stdout/stderr are pipes.
 */
export function spawnTracked(
  cmd: string,
  args: readonly string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): ChildProcess {
  const child = spawn(cmd, args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  const unregister = onCleanup(() => killTree(child, "SIGKILL"));
  child.on("exit", () => {
    unregister();
    // reap anything the child left behind in its group
    killTree(child, "SIGKILL");
  });
  return child;
}

/** Signals the child's whole process group (falls back to the child alone). */
export function killTree(child: ChildProcess, signal: NodeJS.Signals = "SIGTERM"): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
}

/** Stops a tracked child: SIGTERM to its group, SIGKILL after graceMs. Resolves when it has exited. */
export async function stop(child: ChildProcess, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  killTree(child, "SIGTERM");
  const timer = setTimeout(() => killTree(child, "SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}

/**
 * Resolves with the first match of `pattern` on the child's stdout or stderr (line by line); rejects if the child
 * exits first or timeoutMs passes. The rejection carries the tail of what the child printed.
 */
export function waitForLine(child: ChildProcess, pattern: RegExp, timeoutMs = 20_000): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    let seen = "";
    const partial = { stdout: "", stderr: "" };
    const tail = () => seen.trim().split("\n").slice(-8).join("\n");
    const done = (fn: () => void) => {
      clearTimeout(timer);
      child.stdout?.off("data", onOut);
      child.stderr?.off("data", onErr);
      child.off("exit", onExit);
      fn();
    };
    const scan = (stream: "stdout" | "stderr", data: Buffer) => {
      const text = partial[stream] + data.toString();
      const lines = text.split("\n");
      partial[stream] = lines.pop() ?? "";
      for (const line of lines) {
        seen += `${line}\n`;
        const m = line.match(pattern);
        if (m) return done(() => resolve(m));
      }
    };
    const onOut = (d: Buffer) => scan("stdout", d);
    const onErr = (d: Buffer) => scan("stderr", d);
    const onExit = (code: number | null, signal: string | null) =>
      done(() => reject(new Error(`exited ${signal ?? code} before ready:\n${tail()}`)));
    const timer = setTimeout(
      () => done(() => reject(new Error(`not ready after ${timeoutMs} ms:\n${tail()}`))),
      timeoutMs,
    );
    child.stdout?.on("data", onOut);
    child.stderr?.on("data", onErr);
    child.on("exit", onExit);
  });
}

/** Keeps the last `max` characters a child prints on stdout+stderr (for error messages); also drains the pipes. */
export function captureTail(child: ChildProcess, max = 4000): () => string {
  let buf = "";
  const add = (d: Buffer) => {
    buf = (buf + d.toString()).slice(-max);
  };
  child.stdout?.on("data", add);
  child.stderr?.on("data", add);
  return () => buf;
}

/** A loopback TCP port that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
