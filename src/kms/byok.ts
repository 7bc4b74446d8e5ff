// BYOK: import and export of KEK material in the CKM_RSA_AES_KEY_WRAP format used by AWS KMS and Vault transit:
//
//   wrapped = RSA-OAEP(SHA-256, MGF1-SHA-256)(wrapping public key, ephemeral AES-256 key)
//           ‖ AES-KWP (RFC 5649, id-aes256-wrap-pad)(ephemeral key, key material)
//
// Import: `import-params` makes a fresh RSA-3072 wrapping key pair for one key name and an import token (valid 24 h,
// single use); the private half is kept sealed under the master key. Export (after dual control) wraps the material
// the same way to a public key the requester supplies, so the KMS never hands out raw key bytes.

import {
  createCipheriv,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  constants as cryptoConstants,
  generateKeyPairSync,
  type KeyObject,
  privateDecrypt,
  publicEncrypt,
  randomBytes,
} from "node:crypto";
import { AtrestError, IntegrityError } from "../errors.ts";
import type { Keyring } from "./keyring.ts";
import { KEK_BYTES } from "./wrap.ts";

export const IMPORT_ALGORITHM = "RSA_AES_KEY_WRAP_SHA_256";
export const WRAPPING_KEY_BITS = 3072;
export const IMPORT_TOKEN_TTL_MS = 24 * 3_600_000;
/** RFC 5649 alternative initial value; node's id-aes256-wrap-pad takes it as the 4-byte IV. */
const KWP_IV = Buffer.from("A65959A6", "hex");
const KWP = "id-aes256-wrap-pad";

export interface ImportParams {
  keyName: string;
  importToken: string;
  /** SPKI PEM of the RSA-3072 wrapping key. */
  publicKeyPem: string;
  algorithm: typeof IMPORT_ALGORITHM;
  expiresAt: string;
}

const label = (token: string) => `import:${token}`;

export function createImportParams(keyring: Keyring, keyName: string, now: Date): ImportParams {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: WRAPPING_KEY_BITS });
  const token = randomBytes(16).toString("base64url");
  const der = privateKey.export({ format: "der", type: "pkcs8" });
  try {
    const expiresAt = new Date(now.getTime() + IMPORT_TOKEN_TTL_MS).toISOString();
    keyring.db
      .prepare(
        "INSERT INTO import_tokens (id, key_name, private_sealed, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
      )
      .run(token, keyName, keyring.sealSecret(label(token), der), now.toISOString(), expiresAt);
    return {
      keyName,
      importToken: token,
      publicKeyPem: publicKey.export({ format: "pem", type: "spki" }).toString(),
      algorithm: IMPORT_ALGORITHM,
      expiresAt,
    };
  } finally {
    der.fill(0);
  }
}

/**
 * Checks the token (exists, for this key, unexpired, unused), unwraps the material and marks the token used. Returns
 * the 32-byte material in a fresh buffer the caller must zero. Every way the bytes can be wrong gives one message.
 */
export function unwrapImport(keyring: Keyring, keyName: string, token: string, wrapped: Buffer, now: Date): Buffer {
  const row = keyring.db
    .prepare("SELECT key_name, private_sealed, expires_at, used_at FROM import_tokens WHERE id = ?")
    .get(token) as
    | { key_name: string; private_sealed: Uint8Array; expires_at: string; used_at: string | null }
    | undefined;
  if (!row || row.key_name !== keyName) {
    throw new AtrestError(
      "INVALID_INPUT",
      `unknown import token for kek:${keyName} (run kms key import-params ${keyName})`,
    );
  }
  if (row.used_at) throw new AtrestError("CONFLICT", `import token for kek:${keyName} was already used`);
  if (Date.parse(row.expires_at) <= now.getTime()) {
    throw new AtrestError("CONFLICT", `import token for kek:${keyName} expired at ${row.expires_at}`);
  }
  const der = keyring.openSecret(label(token), row.private_sealed);
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: der, format: "der", type: "pkcs8" });
  } finally {
    der.fill(0);
  }
  const material = unwrapRsaAes(privateKey, wrapped, keyName);
  keyring.db.prepare("UPDATE import_tokens SET used_at = ? WHERE id = ?").run(now.toISOString(), token);
  return material;
}

/** Drops tokens that expired (their private keys with them). */
export function pruneImportTokens(keyring: Keyring, now: Date): void {
  keyring.db.prepare("DELETE FROM import_tokens WHERE expires_at <= ? OR used_at IS NOT NULL").run(now.toISOString());
}

/** Re-seals every stored wrapping private key (master rotation). */
export function resealImportTokens(keyring: Keyring, reseal: (label: string, sealed: Uint8Array) => Buffer): void {
  const rows = keyring.db.prepare("SELECT id, private_sealed FROM import_tokens").all() as {
    id: string;
    private_sealed: Uint8Array;
  }[];
  for (const r of rows) {
    keyring.db
      .prepare("UPDATE import_tokens SET private_sealed = ? WHERE id = ?")
      .run(reseal(label(r.id), r.private_sealed), r.id);
  }
}

function unwrapRsaAes(privateKey: KeyObject, wrapped: Buffer, keyName: string): Buffer {
  const rsaBytes = WRAPPING_KEY_BITS / 8;
  const refused = (cause?: unknown) =>
    new IntegrityError(
      `import of kek:${keyName} refused: the wrapped material does not unwrap (not ${IMPORT_ALGORITHM} to this ` +
        "import token's public key, or tampered)",
      { cause },
    );
  // KWP of 32 bytes is exactly 40 bytes
  if (!Buffer.isBuffer(wrapped) || wrapped.length !== rsaBytes + KEK_BYTES + 8) throw refused();
  let ephemeral: Buffer | undefined;
  try {
    ephemeral = privateDecrypt(
      { key: privateKey, padding: cryptoConstants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" },
      wrapped.subarray(0, rsaBytes),
    );
    if (ephemeral.length !== 32) throw refused();
    const d = createDecipheriv(KWP, ephemeral, KWP_IV);
    const a = d.update(wrapped.subarray(rsaBytes));
    const b = d.final();
    const material = Buffer.concat([a, b]);
    a.fill(0);
    b.fill(0);
    if (material.length !== KEK_BYTES) {
      material.fill(0);
      throw new AtrestError("INVALID_INPUT", `imported key material must be ${KEK_BYTES} bytes (AES-256)`);
    }
    return material;
  } catch (e) {
    if (e instanceof AtrestError) throw e;
    throw refused(e);
  } finally {
    ephemeral?.fill(0);
  }
}

/** Parses a requester's export public key: RSA, at least 2048 bits. */
export function exportPublicKey(pem: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch {
    throw new AtrestError("INVALID_INPUT", "export public key is not a PEM public key");
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (key.asymmetricKeyType !== "rsa" || bits < 2048) {
    throw new AtrestError("INVALID_INPUT", "export public key must be RSA with at least 2048 bits");
  }
  return key;
}

/** Wraps `material` to `publicKey` in the import format (so another KMS, or openssl, can unwrap it). */
export function wrapRsaAes(publicKey: KeyObject, material: Buffer): Buffer {
  const ephemeral = randomBytes(32);
  try {
    const head = publicEncrypt(
      { key: publicKey, padding: cryptoConstants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" },
      ephemeral,
    );
    const c = createCipheriv(KWP, ephemeral, KWP_IV);
    return Buffer.concat([head, c.update(material), c.final()]);
  } finally {
    ephemeral.fill(0);
  }
}
