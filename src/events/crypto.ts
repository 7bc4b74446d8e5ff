// The events key: a server-wide data key wrapped by the key manager (like the metadata and audit keys), unwrapped
// on first use. Seals rule secrets and execution records; the AAD binds each blob to its row.
import type { KeyObject } from "node:crypto";
import { aeadKey, NONCE_LENGTH, open, seal } from "../crypto/aead.ts";
import { zero } from "../crypto/bytes.ts";
import { randomBytes } from "../crypto/random.ts";
import { serviceKey } from "../keys/service-keys.ts";
import type { KeyProvider } from "../kms/api/types.ts";
import type { MetaStore } from "../store/types.ts";

const SETTING = "events.key";
const CONTEXT = { purpose: "events" };

export class EventsCrypto {
  readonly #store: MetaStore;
  readonly #keys: KeyProvider;
  #key: Promise<KeyObject> | undefined;

  constructor(store: MetaStore, keys: KeyProvider) {
    this.#store = store;
    this.#keys = keys;
  }

  #get(): Promise<KeyObject> {
    this.#key ??= serviceKey(this.#store, this.#keys, SETTING, "default", CONTEXT).then((raw) => {
      try {
        return aeadKey(raw);
      } finally {
        zero(raw);
      }
    });
    // a failed unwrap (key manager down) is retried on the next call
    this.#key.catch(() => {
      this.#key = undefined;
    });
    return this.#key;
  }

  async seal(value: unknown, aad: string): Promise<Buffer> {
    const key = await this.#get();
    return seal(
      key,
      randomBytes(NONCE_LENGTH),
      Buffer.from(JSON.stringify(value)),
      Buffer.from(`atrest events ${aad}`),
    );
  }

  async open<T>(sealed: Buffer, aad: string): Promise<T> {
    const key = await this.#get();
    const plain = open(key, sealed, Buffer.from(`atrest events ${aad}`));
    try {
      return JSON.parse(plain.toString("utf8")) as T;
    } finally {
      zero(plain);
    }
  }
}
