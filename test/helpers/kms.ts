// A separate key manager for integration tests, driven through the real CLI: `atrest kms init` (Shamir shares),
// `kms client issue`, `kms serve` as a child process on a free loopback port, `kms unseal` per share.
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import type { KmsRole } from "../../src/kms/api/caller.ts";
import { CLI, cli, ROOT } from "./atrest.ts";

export interface KmsSetup {
  dir: string;
  shares: string[];
  /** name → certificate directory (client.key, client.crt, ca.crt). */
  certs: Record<string, string>;
}

/** `kms init --shares n --threshold k` in `<root>/kms` and one client certificate per entry of `clients`. */
export async function setupKms(
  root: string,
  clients: Record<string, KmsRole>,
  shares = 3,
  threshold = 2,
): Promise<KmsSetup> {
  const dir = join(root, "kms");
  const { stdout } = await cli([
    "kms",
    "init",
    "--data",
    dir,
    "--shares",
    String(shares),
    "--threshold",
    String(threshold),
  ]);
  const printed = [...stdout.matchAll(/share \d+: ([0-9a-f]{8}-[0-9a-f]{66})/g)].map((m) => m[1]);
  if (printed.length !== shares) throw new Error(`kms init printed ${printed.length} shares:\n${stdout}`);
  const certs: Record<string, string> = {};
  for (const [name, role] of Object.entries(clients)) {
    certs[name] = join(root, "certs", name);
    await cli(["kms", "client", "issue", name, "--role", role, "--out", certs[name], "--data", dir]);
  }
  return { dir, shares: printed, certs };
}

export interface RunningKms {
  port: number;
  url: string;
  proc: ChildProcess;
  output: () => string;
  stop(): Promise<void>;
  kill(): Promise<void>;
}

/** Spawns `atrest kms serve` and waits for its listening line. `port` 0 = any free port. */
export async function startKms(dir: string, port = 0, extra: string[] = []): Promise<RunningKms> {
  const proc = spawn(
    process.execPath,
    [
      CLI,
      "kms",
      "serve",
      "--data",
      dir,
      "--port",
      String(port),
      "--host",
      "127.0.0.1",
      "--log-level",
      "warn",
      ...extra,
    ],
    { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  const actual = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`kms serve did not start:\n${out}`)), 90_000);
    const onData = (chunk: Buffer) => {
      out += chunk.toString();
      const m = /atrest: kms listening on https:\/\/[^\s]+:(\d+)/.exec(out);
      if (m && /atrest: kms is (un)?sealed/.test(out)) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    proc.stdout?.on("data", onData);
    proc.stderr?.on("data", onData);
    proc.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`kms serve exited with ${code}:\n${out}`));
    });
  });
  const end = async (signal: NodeJS.Signals) => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    await exited;
  };
  return {
    port: actual,
    url: `https://127.0.0.1:${actual}`,
    proc,
    output: () => out,
    stop: () => end("SIGTERM"),
    kill: () => end("SIGKILL"),
  };
}

/** Submits shares one `atrest kms unseal` invocation each (share on stdin); returns the last line printed. */
export async function unsealKms(url: string, certDir: string, shares: readonly string[]): Promise<string> {
  let last = "";
  for (const s of shares) {
    last = (await cli(["kms", "unseal", "--kms", url, "--cert", certDir], `${s}\n`)).stdout.trim();
  }
  return last;
}
