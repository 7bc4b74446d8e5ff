// Opens the key manager a data directory uses: a remote `atrest kms serve` (the client of src/kms/api) or the
// embedded one in the data directory (dev mode). Wiring, not src/keys: choosing the embedded key manager means
// loading the key manager service into this process.
import { AtrestError } from "../errors.ts";
import type { RemoteKmsSettings } from "../keys/key-manager.ts";
import type { KeyManager } from "../keys/provider.ts";
import { type EmbeddedKms, openEmbeddedKms } from "../kms/embedded.ts";

export interface OpenedKeyManager {
  keys: KeyManager;
  /** Set when the embedded key manager is in use (key administration on the data directory). */
  embedded?: EmbeddedKms;
  /** For messages and reports: where the keys live. */
  location: string;
}

export async function openKeyManager(
  root: string,
  kmsDir: string,
  remote?: RemoteKmsSettings,
): Promise<OpenedKeyManager> {
  if (remote) {
    const { RemoteKms } = await import("../kms/api/client.ts");
    const keys = await RemoteKms.connect({ url: remote.url, certDir: remote.certDir });
    return { keys, location: `remote ${keys.url}` };
  }
  const embedded = await openEmbeddedKms(kmsDir).catch((err: Error) => {
    throw new AtrestError("KEY_UNAVAILABLE", `${err.message} (data dir ${root})`);
  });
  return { keys: embedded, embedded, location: `embedded (${kmsDir}, dev mode)` };
}
