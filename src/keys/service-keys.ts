import type { EncryptionContext, KeyProvider } from "../kms/api/types.ts";
import type { MetaStore } from "../store/types.ts";

/**
 * Settings that hold a wrapped service key, with the encryption context each was wrapped under, so `keys rewrap`
 * can move them to a key's current version with the files (raising a key's minimum decryption version must not
 * leave the server unable to open its own metadata or audit keys). Filled in by serviceKey() on first use.
 */
export const SERVICE_KEY_REGISTRY = "service-keys";

export async function serviceKeyContexts(
  store: Pick<MetaStore, "getSetting">,
): Promise<Record<string, EncryptionContext>> {
  const raw = await store.getSetting(SERVICE_KEY_REGISTRY);
  return raw ? (JSON.parse(raw.toString("utf8")) as Record<string, EncryptionContext>) : {};
}

async function register(store: MetaStore, setting: string, context: EncryptionContext): Promise<void> {
  const known = await serviceKeyContexts(store);
  if (JSON.stringify(known[setting]) === JSON.stringify(context)) return;
  await store.transaction(async (tx) => {
    const now = await serviceKeyContexts(store);
    now[setting] = context;
    await tx.setSetting(SERVICE_KEY_REGISTRY, Buffer.from(JSON.stringify(now)));
  });
}

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
  let key: Buffer;
  if (wrapped) {
    key = await keys.unwrap(wrapped, context);
  } else {
    const dk = await keys.generateDataKey(kek, context);
    // another node (or process) starting on the same fresh store may have stored one meanwhile: everyone keeps that one
    const theirs = await store.transaction(async (tx) => {
      const now = await tx.getSetting(setting);
      if (!now) await tx.setSetting(setting, dk.wrapped);
      return now;
    });
    if (theirs) {
      dk.plaintext.fill(0);
      key = await keys.unwrap(theirs, context);
    } else key = dk.plaintext;
  }
  try {
    await register(store, setting, context);
  } catch (err) {
    key.fill(0);
    throw err;
  }
  return key;
}
