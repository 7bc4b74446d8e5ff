// Which key manager a data directory uses: the embedded one (dev mode, `data/kms/`) or a remote `atrest kms serve`
// over mTLS. The server records its remote key manager in `data/kms-remote.json` (URL and client-certificate
// directory; no secrets), so admin commands on the same data directory reach the same key manager without flags.
// Opening one is the wiring's job (src/wiring/key-manager.ts): this layer only ever sees the KeyManager interface.
import { X509Certificate } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { AtrestError } from "../errors.ts";
import { writeFileDurable } from "../fsutil/durable.ts";

export const REMOTE_KMS_FILE = "kms-remote.json";

export interface RemoteKmsSettings {
  url: string;
  certDir: string;
}

export async function readRemoteKms(root: string): Promise<RemoteKmsSettings | undefined> {
  let text: string;
  try {
    text = await readFile(join(root, REMOTE_KMS_FILE), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  const parsed = JSON.parse(text) as Partial<RemoteKmsSettings>;
  if (typeof parsed.url !== "string" || typeof parsed.certDir !== "string") {
    throw new AtrestError("INVALID_INPUT", `${join(root, REMOTE_KMS_FILE)} must hold {"url": …, "certDir": …}`);
  }
  return { url: parsed.url, certDir: parsed.certDir };
}

export async function writeRemoteKms(root: string, settings: RemoteKmsSettings): Promise<void> {
  const path = join(root, REMOTE_KMS_FILE);
  const ca = await caFingerprint(settings.certDir);
  await writeFileDurable(path, `${JSON.stringify({ ...settings, caSha256: ca }, null, 2)}\n`);
}

/** The remote key manager's identity: the SHA-256 fingerprint of the CA in its client-certificate directory. */
async function caFingerprint(certDir: string): Promise<string> {
  const file = join(certDir, "ca.crt");
  const pem = await readFile(file, "utf8").catch((err: NodeJS.ErrnoException) => {
    throw new AtrestError(
      "INVALID_INPUT",
      `--kms-cert ${certDir}: cannot read ca.crt (${err.code}); use the directory from atrest kms client issue --out`,
    );
  });
  return new X509Certificate(pem).fingerprint256;
}

async function recordedCa(root: string): Promise<string | undefined> {
  try {
    const ca = JSON.parse(await readFile(join(root, REMOTE_KMS_FILE), "utf8")).caSha256;
    return typeof ca === "string" ? ca : undefined;
  } catch {
    return undefined;
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** The remote settings from flags/env, else from the data directory; undefined means embedded. */
export async function remoteKmsFor(
  root: string,
  explicit?: Partial<RemoteKmsSettings>,
): Promise<RemoteKmsSettings | undefined> {
  if (explicit?.url) {
    if (!explicit.certDir) {
      throw new AtrestError("INVALID_INPUT", "--kms needs --kms-cert DIR (the directory from atrest kms client issue)");
    }
    return { url: explicit.url, certDir: explicit.certDir };
  }
  return readRemoteKms(root);
}

/**
 * Refuses to open a data directory with a key manager other than the one it is bound to (its keys are wrapped by
 * that one; another fails only later, on the first unwrap, as "wrapped key failed authentication"). The binding is
 * kms-remote.json (with the CA fingerprint) for a remote key manager, else the embedded one in `kmsDir`.
 */
export async function checkKeyManagerBinding(
  root: string,
  kmsDir: string,
  remote: RemoteKmsSettings | undefined,
): Promise<void> {
  if (!remote) return; // no remote named: the recorded one (remoteKmsFor) or the embedded one is used
  const bound = await readRemoteKms(root);
  const fix = `; to use ${remote.url}, make a new data directory: atrest init --data DIR --kms ${remote.url} --kms-cert ${remote.certDir}`;
  if (!bound) {
    if (await exists(kmsDir)) {
      throw new AtrestError(
        "REFUSED",
        `data directory ${root} is bound to its embedded (dev-mode) key manager ${kmsDir}, not to ${remote.url}: ` +
          `its keys are wrapped there. Drop --kms/ATREST_KMS to use it${fix}`,
      );
    }
    return;
  }
  const want = await recordedCa(root);
  if (want === undefined) return; // recorded before fingerprints were: the first open records it
  const got = await caFingerprint(remote.certDir);
  if (got !== want) {
    throw new AtrestError(
      "REFUSED",
      `data directory ${root} is bound to the key manager at ${bound.url} (CA sha256 ${want}), but ${remote.url} ` +
        `with --kms-cert ${remote.certDir} is another one (CA sha256 ${got}): its keys are wrapped by the first. ` +
        `Drop --kms/ATREST_KMS to use the recorded one${fix}`,
    );
  }
}
