// Small service secrets the server needs in clear while it runs (SSH host private keys), kept only sealed in the
// settings table: AES-256-GCM under a service key that the key manager wraps (service-keys.ts), the secret's name as
// AAD so one sealed value cannot be moved under another name. Embedded or remote key manager alike: a copy of the
// data directory without the key manager holds nothing usable.
import { aeadKey, NONCE_LENGTH, open, seal } from "../crypto/aead.ts";
import { zero } from "../crypto/bytes.ts";
import { randomBytes } from "../crypto/random.ts";
import type { KeyProvider } from "../kms/api/types.ts";
import type { MetaStore } from "../store/types.ts";
import { serviceKey } from "./service-keys.ts";

export const SECRETS_KEY_SETTING = "secrets.key";
export const SECRETS_CONTEXT = { purpose: "service-secrets" };
const PREFIX = "secret.";

/** What a door needs of the sealed secrets: read one, or store one unless another process stored it first. */
export interface SecretVault {
  /** The secret stored under `name`, opened (the caller zeroes it when done); undefined when there is none. */
  get(name: string): Promise<Buffer | undefined>;
  /** Stores `value` sealed under `name` unless a value is there already; returns the value stored under `name`. */
  putIfAbsent(name: string, value: Buffer): Promise<Buffer>;
  /** Stores `value` sealed under `name`, replacing what was there. */
  put(name: string, value: Buffer): Promise<void>;
  /** Forgets `name`; false if there was nothing. */
  remove(name: string): Promise<boolean>;
}

/** Opens the vault of a data directory (creates its service key on first use). */
export async function sealedSecrets(store: MetaStore, keys: KeyProvider): Promise<SecretVault> {
  const raw = await serviceKey(store, keys, SECRETS_KEY_SETTING, "default", SECRETS_CONTEXT);
  const kek = aeadKey(raw);
  zero(raw);
  const aad = (name: string) => Buffer.from(`atrest secret ${name}`);
  const get = async (name: string): Promise<Buffer | undefined> => {
    const sealed = await store.getSetting(PREFIX + name);
    return sealed ? open(kek, sealed, aad(name)) : undefined;
  };
  return {
    get,
    async putIfAbsent(name, value) {
      const sealed = seal(kek, randomBytes(NONCE_LENGTH), value, aad(name));
      const stored = await store.transaction(async (tx) => {
        if (await tx.getSetting(PREFIX + name)) return false;
        await tx.setSetting(PREFIX + name, sealed);
        return true;
      });
      if (stored) return Buffer.from(value);
      const existing = await get(name);
      if (!existing) throw new Error(`sealed secret ${name} vanished`);
      return existing;
    },
    async put(name, value) {
      const sealed = seal(kek, randomBytes(NONCE_LENGTH), value, aad(name));
      await store.transaction((tx) => tx.setSetting(PREFIX + name, sealed));
    },
    async remove(name) {
      return store.transaction((tx) => tx.deleteSetting(PREFIX + name));
    },
  };
}
