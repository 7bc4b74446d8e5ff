// SSH host keys: ed25519 (preferred by modern clients) and RSA 3072 (for older ones), kept across restarts so
// clients' known_hosts stay valid. The private keys are kept only sealed under the key manager (a SecretVault,
// keys/sealed-secrets.ts); the data directory's hostkeys/ holds the public halves (for `ssh-keygen -lf` and
// known_hosts), never a private key. Keys from before sealing (clear files in hostkeys/) are sealed at the first
// start and their files removed: same keys, same fingerprints.
import { createHash } from "node:crypto";
import { mkdir, readFile, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import ssh2 from "ssh2";
import { syncDir } from "../../fsutil/durable.ts";

/** The sealed-secret store the host keys live in (keys/sealed-secrets.ts implements it over the key manager). */
export interface HostKeyVault {
  get(name: string): Promise<Buffer | undefined>;
  putIfAbsent(name: string, value: Buffer): Promise<Buffer>;
}

const KINDS = [
  { file: "ssh_host_ed25519_key", label: "ED25519", gen: () => ssh2.utils.generateKeyPairSync("ed25519") },
  { file: "ssh_host_rsa_key", label: "RSA", gen: () => ssh2.utils.generateKeyPairSync("rsa", { bits: 3072 }) },
] as const;

// ssh2 1.17's generator drops a leading zero byte of an ed25519 public key (about 1 key in 256), producing a file
// neither ssh2 nor OpenSSH can read. Regenerate until the key parses and its blob has the full length.
const ED25519_BLOB = 4 + 11 + 4 + 32;
function generate(kind: (typeof KINDS)[number]): Buffer {
  for (let i = 0; i < 16; i++) {
    const pair = kind.gen();
    const parsed = ssh2.utils.parseKey(pair.private);
    if (parsed instanceof Error) continue;
    const key = Array.isArray(parsed) ? parsed[0] : parsed;
    if (kind.label === "ED25519" && key.getPublicSSH().length !== ED25519_BLOB) continue;
    return Buffer.from(pair.private);
  }
  throw new Error(`could not generate a valid ${kind.label} host key`);
}

/** OpenSSH form: SHA-256 of the public key blob, base64 without padding, as `ssh-keygen -lf` prints it. */
export function fingerprint(publicBlob: Buffer): string {
  return `SHA256:${createHash("sha256").update(publicBlob).digest("base64").replace(/=+$/, "")}`;
}

async function readIfExists(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

/**
 * The host keys (private PEMs, for ssh2) and their fingerprints. `dir` receives the public keys and is where clear
 * private keys of older versions are picked up, sealed into `vault` and removed.
 */
export async function loadOrCreateHostKeys(
  dir: string,
  vault: HostKeyVault,
): Promise<{ keys: Buffer[]; fingerprints: string[]; migrated: string[] }> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const keys: Buffer[] = [];
  const fingerprints: string[] = [];
  const migrated: string[] = [];
  for (const kind of KINDS) {
    const name = `hostkey.${kind.file}`;
    const path = join(dir, kind.file);
    let pem = await vault.get(name);
    const clear = await readIfExists(path);
    if (!pem) {
      if (clear) {
        const parsed = ssh2.utils.parseKey(clear);
        if (parsed instanceof Error) throw new Error(`host key ${path} is unreadable: ${parsed.message}`);
        migrated.push(kind.file);
      }
      // putIfAbsent: another process that sealed one meanwhile wins, and everyone uses its key.
      pem = await vault.putIfAbsent(name, clear ?? generate(kind));
    }
    if (clear) {
      clear.fill(0);
      // Only once the sealed copy is committed: a crash before this leaves the clear file, sealed again next start.
      await unlink(path);
      await syncDir(dir);
    }
    const parsed = ssh2.utils.parseKey(pem);
    if (parsed instanceof Error) throw new Error(`sealed host key ${kind.file} is unreadable: ${parsed.message}`);
    const key = Array.isArray(parsed) ? parsed[0] : parsed;
    const blob = key.getPublicSSH();
    await writeFile(`${path}.pub`, `${key.type} ${blob.toString("base64")} atrest\n`, { mode: 0o644 });
    keys.push(pem);
    fingerprints.push(`${kind.label} ${fingerprint(blob)}`);
  }
  return { keys, fingerprints, migrated };
}
