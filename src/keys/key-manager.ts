// Which key manager a data directory uses: the embedded one (dev mode, `data/kms/`) or a remote `atrest kms serve`
// over mTLS. The server records its remote key manager in `data/kms-remote.json` (URL and client-certificate
// directory; no secrets), so admin commands on the same data directory reach the same key manager without flags.
// Opening one is the wiring's job (src/wiring/key-manager.ts): this layer only ever sees the KeyManager interface.
import { readFile } from "node:fs/promises";
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
  await writeFileDurable(path, `${JSON.stringify(settings, null, 2)}\n`);
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
