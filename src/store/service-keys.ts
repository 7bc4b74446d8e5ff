import type { EncryptionContext, KeyProvider } from "../kms/types.ts";
import type { MetaStore } from "./types.ts";

/**
 * A server-wide data key (metadata names, audit records): kept only wrapped by the key manager in the settings
 * table, unwrapped at startup, created on first use. The caller owns the returned buffer and zeroes it.
 */
export async function serviceKey(
  store: MetaStore,
  keys: KeyProvider,
  setting: string,
  kek: string,
  context: EncryptionContext,
): Promise<Buffer> {
  const wrapped = await store.getSetting(setting);
  if (wrapped) return keys.unwrap(wrapped, context);
  const dk = await keys.generateDataKey(kek, context);
  await store.transaction(() => store.setSetting(setting, dk.wrapped));
  return dk.plaintext;
}
