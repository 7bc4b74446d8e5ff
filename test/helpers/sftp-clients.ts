// Drives the real SFTP clients installed on the machine (OpenSSH sftp, lftp, rclone) for tests and benchmarks.
import { execFile, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { chmod, mkdir, mkdtemp, readdir, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { promisify } from "node:util";

const execFileP = promisify(execFile);

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Client options every test and benchmark uses: throwaway host keys, quiet, the cipher the benchmarks compare. */
export const SSH_OPTS = [
  "-o",
  "StrictHostKeyChecking=no",
  "-o",
  "UserKnownHostsFile=/dev/null",
  "-o",
  "LogLevel=ERROR",
  "-o",
  "Ciphers=aes128-gcm@openssh.com",
];

/** Spawns a process and collects its output; never rejects (the exit code tells). */
export function run(
  cmd: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number; cwd?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, {
      env: options.env ?? process.env,
      cwd: options.cwd,
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => {
      stderr += `\n[killed after ${options.timeoutMs} ms]`;
      child.kill("SIGKILL");
    }, options.timeoutMs ?? 120_000);
    child.on("error", (err) => {
      stderr += String(err);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    // A process may exit without reading its input (EPIPE); its exit code tells what happened.
    child.stdin.on("error", () => {});
    child.stdin.end(options.input ?? "");
  });
}

async function scratch(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/** A throwaway ed25519 client key without passphrase; returns the private key path (public at `${path}.pub`). */
export async function makeClientKey(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, `id_ed25519_${randomBytes(3).toString("hex")}`);
  await execFileP("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "atrest-test", "-f", path]);
  return path;
}

/** Environment that makes ssh read a password from a tiny askpass script instead of a terminal. */
async function askpassEnv(password: string): Promise<NodeJS.ProcessEnv> {
  const dir = await scratch("atrest-askpass-");
  const script = join(dir, "askpass.sh");
  await writeFile(script, '#!/bin/sh\nprintf "%s\\n" "$ATREST_TEST_PASSWORD"\n');
  await chmod(script, 0o700);
  return { ...process.env, SSH_ASKPASS: script, SSH_ASKPASS_REQUIRE: "force", ATREST_TEST_PASSWORD: password };
}

export interface SftpBatchOptions {
  port: number;
  user: string;
  keyFile?: string;
  password?: string;
  commands: string[];
  host?: string;
  /** Extra `sftp` arguments (e.g. ["-B", "262144"]). */
  args?: string[];
  timeoutMs?: number;
  cwd?: string;
}

/** `sftp -b` with the given commands. A leading '-' on a command makes sftp ignore its failure (sftp's syntax). */
export async function runSftpBatch(o: SftpBatchOptions): Promise<RunResult> {
  const dir = await scratch("atrest-sftp-");
  const batch = join(dir, "batch");
  await writeFile(batch, `${o.commands.join("\n")}\n`);
  const args: string[] = [];
  let env = process.env;
  if (o.password !== undefined) {
    env = await askpassEnv(o.password);
    // `-b` implies BatchMode=yes, which disables passwords; ssh keeps the first value given, so this must come first.
    args.push("-o", "BatchMode=no", "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password");
    args.push("-o", "NumberOfPasswordPrompts=1");
  }
  args.push("-b", batch, "-P", String(o.port), ...SSH_OPTS, ...(o.args ?? []));
  if (o.keyFile) args.push("-i", o.keyFile, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes");
  args.push(`${o.user}@${o.host ?? "127.0.0.1"}`);
  return run("sftp", args, { env, timeoutMs: o.timeoutMs, cwd: o.cwd });
}

export interface LftpOptions {
  port: number;
  user: string;
  keyFile: string;
  /** lftp commands run after `open`, e.g. ["mirror -R local remote"]. */
  commands: string[];
  host?: string;
  timeoutMs?: number;
  cwd?: string;
}

/** lftp over sftp:// with key authentication (lftp drives the OpenSSH client). */
export function lftp(o: LftpOptions): Promise<RunResult> {
  const ssh = ["ssh", "-a", "-x", ...SSH_OPTS, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", o.keyFile].join(
    " ",
  );
  const script = [
    `set sftp:connect-program "${ssh}"`,
    "set net:max-retries 1",
    "set net:timeout 20",
    "set cmd:fail-exit yes",
    `open -u ${o.user}, -p ${o.port} sftp://${o.host ?? "127.0.0.1"}`,
    ...o.commands,
  ].join("; ");
  return run("lftp", ["-c", script], { timeoutMs: o.timeoutMs, cwd: o.cwd });
}

export interface RcloneOptions {
  port: number;
  user: string;
  keyFile: string;
  host?: string;
  timeoutMs?: number;
}

/** The rclone remote spec for an on-the-fly sftp backend; append a path: `${rcloneRemote(o)}dir`. */
export function rcloneRemote(o: RcloneOptions): string {
  // shell_type=none: atrest has no shell, so rclone must not probe for md5sum over exec.
  return `:sftp,host=${o.host ?? "127.0.0.1"},port=${o.port},user=${o.user},key_file=${o.keyFile},shell_type=none:`;
}

/** `rclone <args>` with an empty config (no user config is read). */
export async function rclone(args: string[], timeoutMs?: number): Promise<RunResult> {
  const dir = await scratch("atrest-rclone-");
  const conf = join(dir, "rclone.conf");
  await writeFile(conf, "");
  return run("rclone", ["--config", conf, "--low-level-retries", "1", "--retries", "1", ...args], { timeoutMs });
}

export function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(path)
      .on("data", (d) => h.update(d))
      .on("error", reject)
      .on("end", () => resolve(h.digest("hex")));
  });
}

/** `nFiles` files of varied sizes (0 B to ~200 KiB) in nested directories; returns their relative paths. */
export async function makeTree(dir: string, nFiles: number): Promise<string[]> {
  const files: string[] = [];
  for (let i = 0; i < nFiles; i++) {
    const sub = join(dir, `d${i % 7}`, i % 3 === 0 ? `e${i % 4}` : "");
    await mkdir(sub, { recursive: true });
    const size = i === 0 ? 0 : (i * 7919) % (200 * 1024);
    const path = join(sub, `file-${i}.bin`);
    await writeFile(path, randomBytes(size));
    files.push(relative(dir, path));
  }
  return files.sort();
}

/** Relative path → sha256 of every file under `dir`. */
export async function hashTree(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  for (const e of entries) {
    if (!e.isFile()) continue;
    const p = join(e.parentPath, e.name);
    out.set(
      relative(dir, p),
      createHash("sha256")
        .update(await readFile(p))
        .digest("hex"),
    );
  }
  return new Map([...out].sort());
}
