// SSH helpers: key generation, a throwaway OpenSSH sshd, and the sftp batch client used against every server.
import { mkdirSync, writeFileSync } from "node:fs";
import { userInfo } from "node:os";
import { join } from "node:path";
import { SSH_OPTS } from "../../test/helpers/sftp-clients.ts";
import { captureTail, freePort, run, spawnTracked, stop, waitForLine } from "./proc.ts";

export interface SftpServer {
  /** Label used in tables. */
  label: string;
  user: string;
  port: number;
  /** Server process (RSS is sampled from it and its descendants). */
  pid: number;
  /** Remote directory the batch `cd`s into first ("" = login directory). */
  remoteBase: string;
  stop(): Promise<void>;
  /** Tail of what the server printed (for error messages). */
  output(): string;
}

export interface KeyPair {
  privateKey: string;
  publicKey: string;
}

export async function generateKey(dir: string, name = "id_ed25519"): Promise<KeyPair> {
  mkdirSync(dir, { recursive: true });
  const privateKey = join(dir, name);
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "atrest-bench", "-f", privateKey]);
  return { privateKey, publicKey: `${privateKey}.pub` };
}

/** OpenSSH `sshd` with internal-sftp on a free loopback port, its own config, host key and authorized_keys. */
export async function startOpenSsh(
  dir: string,
  client: KeyPair,
  label = "OpenSSH",
  extraConfig: readonly string[] = [],
): Promise<SftpServer> {
  mkdirSync(dir, { recursive: true });
  const hostKey = await generateKey(dir, "ssh_host_ed25519_key");
  const authorized = join(dir, "authorized_keys");
  await run("cp", [client.publicKey, authorized]);
  const files = join(dir, "files");
  mkdirSync(files, { recursive: true });
  // sshd refuses to start without its privilege separation directory.
  mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
  const port = await freePort();
  const config = join(dir, "sshd_config");
  writeFileSync(
    config,
    [
      `ListenAddress 127.0.0.1:${port}`,
      `HostKey ${hostKey.privateKey}`,
      `PidFile ${join(dir, "sshd.pid")}`,
      `AuthorizedKeysFile ${authorized}`,
      "Subsystem sftp internal-sftp",
      "UsePAM no",
      // The concurrent-sessions workload opens 100 connections at once; sshd's default (10:30:100) drops most.
      "MaxStartups 200",
      "StrictModes no",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PubkeyAuthentication yes",
      "PermitRootLogin yes",
      "LogLevel INFO",
      ...extraConfig,
      "",
    ].join("\n"),
  );
  const child = spawnTracked("/usr/sbin/sshd", ["-D", "-e", "-f", config]);
  const ready = waitForLine(child, /Server listening on 127\.0\.0\.1 port (\d+)/);
  const tail = captureTail(child);
  await ready;
  return {
    label,
    user: userInfo().username,
    port,
    pid: child.pid as number,
    remoteBase: files,
    stop: () => stop(child),
    output: tail,
  };
}

let batchCounter = 0;

/** Runs `sftp -b` with the given commands (after a `cd` to the server's base dir); timed, rejects on failure. */
export async function sftpBatch(
  server: SftpServer,
  key: KeyPair,
  scratch: string,
  commands: readonly string[],
  timeoutMs = 10 * 60_000,
) {
  const batch = join(scratch, `batch-${++batchCounter}.txt`);
  const lines = server.remoteBase ? [`cd ${quote(server.remoteBase)}`, ...commands] : [...commands];
  writeFileSync(batch, `${lines.join("\n")}\n`);
  return run(
    "sftp",
    [
      "-b",
      batch,
      "-P",
      String(server.port),
      "-i",
      key.privateKey,
      "-o",
      "BatchMode=yes",
      "-o",
      "IdentitiesOnly=yes",
      ...SSH_OPTS,
      `${server.user}@127.0.0.1`,
    ],
    { timeoutMs },
  );
}

/** Quotes a path for an sftp batch line. */
export function quote(path: string): string {
  return `"${path.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`;
}
