// S3 access keys (issue 13): per user, any number; the secret is shown once at creation and kept only sealed
// (AES-256-GCM under the service-secrets key that the key manager wraps, the access key id as AAD, so a sealed secret
// cannot be moved under another id). The S3 door needs the secret in clear to check a SigV4 signature: `open` hands it
// out for one check, and the caller zeroes it.
import type { AuditSink } from "../audit/types.ts";
import { aeadKey, NONCE_LENGTH, open, seal } from "../crypto/aead.ts";
import { zero } from "../crypto/bytes.ts";
import { randomBytes } from "../crypto/random.ts";
import { AtrestError, NotFoundError } from "../errors.ts";
import { SECRETS_CONTEXT, SECRETS_KEY_SETTING } from "../keys/sealed-secrets.ts";
import { serviceKey } from "../keys/service-keys.ts";
import type { KeyProvider } from "../kms/api/types.ts";
import type { MetaStore } from "../store/types.ts";
import { type Actor, actorFields, requireRole } from "./actor.ts";

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/** Access key ids look like AWS's: 20 characters, A-Z and 2-7, starting with AK. */
export const ACCESS_KEY_ID = /^AK[A-Z2-7]{18}$/;

export interface S3KeyInfo {
  accessKeyId: string;
  user: string;
  createdAt: string;
}

export interface S3Secret {
  username: string;
  /** The secret access key (UTF-8); the caller zeroes it. */
  secret: Buffer;
}

const aad = (accessKeyId: string) => Buffer.from(`atrest s3-key ${accessKeyId}`);

function newAccessKeyId(): string {
  const bytes = randomBytes(18);
  let id = "AK";
  for (const b of bytes) id += ALPHABET[b & 31];
  return id;
}

export class S3Keys {
  readonly #store: MetaStore;
  readonly #keys: KeyProvider;
  readonly #audit: AuditSink;

  constructor(store: MetaStore, keys: KeyProvider, audit: AuditSink) {
    this.#store = store;
    this.#keys = keys;
    this.#audit = audit;
  }

  async #kek() {
    const raw = await serviceKey(this.#store, this.#keys, SECRETS_KEY_SETTING, "default", SECRETS_CONTEXT);
    const kek = aeadKey(raw);
    zero(raw);
    return kek;
  }

  /** A new key pair for `username`; the secret is in the answer only. */
  async add(actor: Actor, username: string): Promise<{ accessKeyId: string; secretAccessKey: string }> {
    requireRole(actor, ["admin"], "adding an S3 key");
    const user = await this.#store.getUser(username);
    if (!user) throw new NotFoundError(`user ${username}`);
    const accessKeyId = newAccessKeyId();
    const secretBytes = randomBytes(30);
    const secretAccessKey = secretBytes.toString("base64");
    zero(secretBytes);
    const plain = Buffer.from(secretAccessKey, "utf8");
    const secretCt = seal(await this.#kek(), randomBytes(NONCE_LENGTH), plain, aad(accessKeyId));
    zero(plain);
    await this.#store.transaction((tx) =>
      tx.insertS3Key({
        accessKeyId,
        userId: user.id,
        userName: user.name,
        secretCt,
        createdAt: new Date().toISOString(),
      }),
    );
    this.#audit.record({
      action: "user.change",
      outcome: "success",
      ...actorFields(actor),
      effectiveUser: user.name,
      target: username,
      detail: `s3 key ${accessKeyId} added`,
    });
    return { accessKeyId, secretAccessKey };
  }

  async list(actor: Actor, username?: string): Promise<S3KeyInfo[]> {
    requireRole(actor, ["admin", "auditor"], "listing S3 keys");
    const rows = await this.#store.listS3Keys(username);
    return rows.map((r) => ({ accessKeyId: r.accessKeyId, user: r.userName, createdAt: r.createdAt }));
  }

  async remove(actor: Actor, username: string, accessKeyId: string): Promise<void> {
    requireRole(actor, ["admin"], "removing an S3 key");
    const row = await this.#store.getS3Key(accessKeyId);
    if (!row || row.userName !== username) throw new NotFoundError(`S3 key ${accessKeyId} of ${username}`);
    await this.#store.transaction((tx) => tx.deleteS3Key(accessKeyId));
    this.#audit.record({
      action: "user.change",
      outcome: "success",
      ...actorFields(actor),
      effectiveUser: username,
      target: username,
      detail: `s3 key ${accessKeyId} removed`,
    });
  }

  /**
   * The secret of `accessKeyId` and its user, for one signature check; undefined for an unknown id or a key whose
   * user was removed (a user added again under the same name does not inherit the old user's keys).
   */
  async open(accessKeyId: string): Promise<S3Secret | undefined> {
    if (!ACCESS_KEY_ID.test(accessKeyId)) return undefined;
    const row = await this.#store.getS3Key(accessKeyId);
    if (!row) return undefined;
    const user = await this.#store.getUserById(row.userId);
    if (!user || user.name !== row.userName) return undefined;
    try {
      return { username: user.name, secret: open(await this.#kek(), row.secretCt, aad(accessKeyId)) };
    } catch (err) {
      throw new AtrestError("INTEGRITY", `S3 key ${accessKeyId}: sealed secret does not open`, { cause: err });
    }
  }
}
