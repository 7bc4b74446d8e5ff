// SSH host keys: ed25519 (preferred by modern clients) and RSA 3072 (for older ones), kept across restarts so
// clients' known_hosts stay valid.
import { createHash } from "node:crypto";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import ssh2 from "ssh2";

const KINDS = [
  { file: "ssh_host_ed25519_key", label: "ED25519", gen: () => ssh2.utils.generateKeyPairSync("ed25519") },
  { file: "ssh_host_rsa_key", label: "RSA", gen: () => ssh2.utils.generateKeyPairSync("rsa", { bits: 3072 }) },
] as const;

// ssh2 1.17's generator drops a leading zero byte of an ed25519 public key (about 1 key in 256), producing a file
// neither ssh2 nor OpenSSH can read. Regenerate until the key parses and its blob has the full length.
const ED25519_BLOB = 4 + 11 + 4 + 32;
function generate(kind: (typeof KINDS)[number]): { private: string; public: string } {
  for (let i = 0; i < 16; i++) {
    const pair = kind.gen();
    const parsed = ssh2.utils.parseKey(pair.private);
    if (parsed instanceof Error) continue;
    const key = Array.isArray(parsed) ? parsed[0] : parsed;
    if (kind.label === "ED25519" && key.getPublicSSH().length !== ED25519_BLOB) continue;
    return pair;
  }
  throw new Error(`could not generate a valid ${kind.label} host key`);
}

/** OpenSSH form: SHA-256 of the public key blob, base64 without padding, as `ssh-keygen -lf` prints it. */
export function fingerprint(publicBlob: Buffer): string {
  return `SHA256:${createHash("sha256").update(publicBlob).digest("base64").replace(/=+$/, "")}`;
}

export async function loadOrCreateHostKeys(dir: string): Promise<{ keys: Buffer[]; fingerprints: string[] }> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const keys: Buffer[] = [];
  const fingerprints: string[] = [];
  for (const kind of KINDS) {
    const path = join(dir, kind.file);
    let pem: Buffer;
    try {
      pem = await readFile(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      const pair = generate(kind);
      pem = Buffer.from(pair.private);
      // wx: never overwrite a key another process created meanwhile; the re-read below picks that one up.
      await writeFile(path, pem, { mode: 0o600, flag: "wx" }).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== "EEXIST") throw e;
      });
      await writeFile(`${path}.pub`, `${pair.public}\n`, { mode: 0o644 }).catch(() => {});
      pem = await readFile(path);
    }
    await chmod(path, 0o600);
    const parsed = ssh2.utils.parseKey(pem);
    if (parsed instanceof Error) throw new Error(`host key ${path} is unreadable: ${parsed.message}`);
    const key = Array.isArray(parsed) ? parsed[0] : parsed;
    keys.push(pem);
    fingerprints.push(`${kind.label} ${fingerprint(key.getPublicSSH())}`);
  }
  return { keys, fingerprints };
}
