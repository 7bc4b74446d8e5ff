// KmsAppClient: what an application (a web app, a field-encryption exit, a batch job) uses to call `atrest kms serve`:
// the encryption API (encrypt/decrypt with an encryption context, rewrap, data keys, HMAC, signatures) and
// versioned secrets. HTTPS with mutual TLS through RemoteKms (keep-alive pool, problem+json mapped to
// AtrestError: PermissionDenied, KeyUnavailableError, IntegrityError for a wrong context …). Documented with
// examples in docs/kms-clients.md.
//
//   const kms = await KmsAppClient.connect({ url: "https://kms.example:8443", certDir: "/etc/myapp/kms" });
//   const { ciphertext } = await kms.encrypt("customers", Buffer.from("4111…"), { table: "cards", row: "42" });
//   const plain = await kms.decrypt("customers", ciphertext, { table: "cards", row: "42" });

import type { AtrestError } from "../../errors.ts";
import { RemoteKms, type RemoteKmsOptions } from "./client.ts";
import { errorFromCode } from "./errors.ts";
import type { DataKey, EncryptionContext } from "./types.ts";

export type KmsAppClientOptions = Omit<RemoteKmsOptions, "coalesce">;

/** What the KMS says about a secret (never its value). */
export interface SecretMeta {
  name: string;
  currentVersion: number;
  createdAt: string;
  updatedAt: string;
  rotateAfterDays?: number;
  rotateAt?: string;
  rotationDue: boolean;
}

/** A batch item: its result, or the error that item alone failed with. */
export type BatchItem<T> = T | { error: AtrestError };

type ItemJson<T> = T | { error: { code: string; message: string } };

const seg = (name: string) => encodeURIComponent(name);

function b64(data: Buffer | string): string {
  return (typeof data === "string" ? Buffer.from(data, "utf8") : data).toString("base64");
}

function items<J extends object, T>(raw: ItemJson<J>[], map: (j: J) => T): BatchItem<T>[] {
  return raw.map((r) => ("error" in r ? { error: errorFromCode(r.error.code, r.error.message) } : map(r as J)));
}

export class KmsAppClient {
  readonly #kms: RemoteKms;

  private constructor(kms: RemoteKms) {
    this.#kms = kms;
  }

  /** Reads the client certificate (client.key, client.crt, ca.crt in certDir, or PEM strings); no request yet. */
  static async connect(options: KmsAppClientOptions): Promise<KmsAppClient> {
    return new KmsAppClient(await RemoteKms.connect({ ...options, coalesce: false }));
  }

  get url(): string {
    return this.#kms.url;
  }

  // ---- encryption ----

  /** Encrypts up to 64 KiB; the ciphertext (`atrest:<key>:v<N>:…`) names the key version, the context is not in it. */
  encrypt(
    key: string,
    plaintext: Buffer | string,
    context: EncryptionContext = {},
  ): Promise<{ ciphertext: string; keyRef: string }> {
    return this.#kms.call("POST", `/v1/keys/${seg(key)}/encrypt`, { plaintext: b64(plaintext), context });
  }

  /** The plaintext, in a buffer the caller should zero when done. A wrong context is an IntegrityError. */
  async decrypt(key: string, ciphertext: string, context: EncryptionContext = {}): Promise<Buffer> {
    const r = await this.#kms.call<{ plaintext: string }>("POST", `/v1/keys/${seg(key)}/decrypt`, {
      ciphertext,
      context,
    });
    return Buffer.from(r.plaintext, "base64");
  }

  /** Re-encrypts under the key's current version (after a rotation) without the plaintext leaving the KMS. */
  rewrap(
    key: string,
    ciphertext: string,
    context: EncryptionContext = {},
  ): Promise<{ ciphertext: string; keyRef: string }> {
    return this.#kms.call("POST", `/v1/keys/${seg(key)}/rewrap`, { ciphertext, context });
  }

  async encryptBatch(
    key: string,
    list: readonly { plaintext: Buffer | string; context?: EncryptionContext }[],
  ): Promise<BatchItem<{ ciphertext: string; keyRef: string }>[]> {
    const r = await this.#kms.call<{ items: ItemJson<{ ciphertext: string; keyRef: string }>[] }>(
      "POST",
      `/v1/keys/${seg(key)}/batch/encrypt`,
      { items: list.map((i) => ({ plaintext: b64(i.plaintext), context: i.context ?? {} })) },
    );
    return items(r.items, (j) => j);
  }

  async decryptBatch(
    key: string,
    list: readonly { ciphertext: string; context?: EncryptionContext }[],
  ): Promise<BatchItem<Buffer>[]> {
    const r = await this.#kms.call<{ items: ItemJson<{ plaintext: string }>[] }>(
      "POST",
      `/v1/keys/${seg(key)}/batch/decrypt`,
      { items: list.map((i) => ({ ciphertext: i.ciphertext, context: i.context ?? {} })) },
    );
    return items(r.items, (j) => Buffer.from(j.plaintext, "base64"));
  }

  /** Envelope encryption for large data: a fresh 32-byte key (zero it when done) and its wrapped form to store. */
  async generateDataKey(key: string, context: EncryptionContext = {}): Promise<DataKey> {
    const r = await this.#kms.call<{ plaintext: string; wrapped: string; keyRef: string }>(
      "POST",
      `/v1/keys/${seg(key)}/generate-data-key`,
      { context },
    );
    return {
      plaintext: Buffer.from(r.plaintext, "base64"),
      wrapped: Buffer.from(r.wrapped, "base64"),
      keyRef: r.keyRef,
    };
  }

  /** Unwraps a data key from generateDataKey (the caller zeroes the result). */
  async unwrapDataKey(wrapped: Buffer, context: EncryptionContext = {}): Promise<Buffer> {
    const r = await this.#kms.call<{ plaintext: string }>("POST", "/v1/unwrap", {
      wrapped: wrapped.toString("base64"),
      context,
    });
    return Buffer.from(r.plaintext, "base64");
  }

  // ---- HMAC and signatures ----

  async hmac(key: string, input: Buffer | string): Promise<string> {
    return (await this.#kms.call<{ hmac: string }>("POST", `/v1/keys/${seg(key)}/hmac`, { input: b64(input) })).hmac;
  }

  /** True when `hmac` is the key's MAC of `input` (compared in constant time by the KMS). */
  async verifyHmac(key: string, input: Buffer | string, hmac: string): Promise<boolean> {
    return (
      await this.#kms.call<{ valid: boolean }>("POST", `/v1/keys/${seg(key)}/verify-hmac`, { input: b64(input), hmac })
    ).valid;
  }

  async sign(key: string, input: Buffer | string): Promise<string> {
    return (await this.#kms.call<{ signature: string }>("POST", `/v1/keys/${seg(key)}/sign`, { input: b64(input) }))
      .signature;
  }

  async verify(key: string, input: Buffer | string, signature: string): Promise<boolean> {
    return (
      await this.#kms.call<{ valid: boolean }>("POST", `/v1/keys/${seg(key)}/verify`, { input: b64(input), signature })
    ).valid;
  }

  /** SPKI PEM of a signing key (current version unless `version`), to verify signatures without the KMS. */
  async publicKey(key: string, version?: number): Promise<{ keyRef: string; type: string; publicKeyPem: string }> {
    const q = version === undefined ? "" : `?version=${version}`;
    return this.#kms.call("GET", `/v1/keys/${seg(key)}/public-key${q}`);
  }

  // ---- secrets ----

  /** Writes a new version of a secret (operator certificate); `rotateAfterDays` sets, null clears, the reminder. */
  putSecret(name: string, value: Buffer | string, rotateAfterDays?: number | null): Promise<SecretMeta> {
    return this.#kms.call("PUT", `/v1/secrets/${seg(name)}`, {
      value: b64(value),
      ...(rotateAfterDays !== undefined ? { rotateAfterDays } : {}),
    });
  }

  /** A secret's value (current version, or `version`) in a buffer the caller should zero when done. */
  async getSecret(
    name: string,
    version?: number,
  ): Promise<{ name: string; version: number; createdAt: string; value: Buffer; rotationDue: boolean }> {
    const q = version === undefined ? "" : `?version=${version}`;
    const r = await this.#kms.call<{
      name: string;
      version: number;
      createdAt: string;
      value: string;
      rotationDue: boolean;
    }>("GET", `/v1/secrets/${seg(name)}${q}`);
    return { ...r, value: Buffer.from(r.value, "base64") };
  }

  /** Secrets this client may list (metadata only); `dueOnly` keeps those due for rotation. */
  async listSecrets(dueOnly = false): Promise<SecretMeta[]> {
    return (await this.#kms.call<{ secrets: SecretMeta[] }>("GET", `/v1/secrets${dueOnly ? "?due=true" : ""}`)).secrets;
  }

  secretVersions(name: string): Promise<{
    secret: SecretMeta;
    versions: { version: number; createdAt: string; createdBy: string; destroyed: boolean }[];
  }> {
    return this.#kms.call("GET", `/v1/secrets/${seg(name)}/versions`);
  }

  /** Removes a secret and shreds every version (operator certificate). */
  removeSecret(name: string): Promise<{ name: string; destroyedVersions: number }> {
    return this.#kms.call("DELETE", `/v1/secrets/${seg(name)}`);
  }

  /** Closes the connection pool. */
  close(): Promise<void> {
    return this.#kms.close();
  }
}
