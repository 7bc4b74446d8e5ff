// The backup key pair of a Shamir-sealed KMS (see backup.ts): X25519, public half in kms.db in the clear, private
// half sealed under a key derived from the unseal key, so only a quorum of shares can read a backup.

import { createPrivateKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { open as aeadOpen, seal as aeadSeal } from "../crypto/aead.ts";
import { hkdfSha256 } from "../crypto/hkdf.ts";
import { randomBytes } from "../crypto/random.ts";
import { KeyUnavailableError } from "../errors.ts";

export const BACKUP_PUBLIC = "backup_public";
export const BACKUP_PRIVATE_SEALED = "backup_private_sealed";
const PRIVATE_INFO = Buffer.from("atrest-kms-backup-key-v1");
const PRIVATE_AAD = Buffer.from("atrest-backup-private-v1\0", "latin1");

function wrapKeyOf(unsealKey: Buffer, sealId: Buffer): Buffer {
  return hkdfSha256(unsealKey, sealId, PRIVATE_INFO);
}

/** Meta rows (name, value) of a new backup key pair, to store with the rest of `kms init`. */
export function newBackupKeyRows(unsealKey: Buffer, sealId: Buffer): [string, Buffer][] {
  const { publicKey, privateKey } = generateKeyPairSync("x25519");
  const der = privateKey.export({ format: "der", type: "pkcs8" });
  const wrapKey = wrapKeyOf(unsealKey, sealId);
  try {
    return [
      [BACKUP_PUBLIC, publicKey.export({ format: "der", type: "spki" })],
      [BACKUP_PRIVATE_SEALED, aeadSeal(wrapKey, randomBytes(12), der, Buffer.concat([PRIVATE_AAD, sealId]))],
    ];
  } finally {
    der.fill(0);
    wrapKey.fill(0);
  }
}

/** Opens the sealed backup private key with the unseal key; a wrong key is a clear KeyUnavailableError. */
export function openBackupPrivateKey(sealed: Buffer, unsealKey: Buffer, sealId: Buffer): KeyObject {
  const wrapKey = wrapKeyOf(unsealKey, sealId);
  let der: Buffer;
  try {
    der = aeadOpen(wrapKey, sealed, Buffer.concat([PRIVATE_AAD, sealId]));
  } catch {
    throw new KeyUnavailableError(
      "the shares do not open this backup (one of them is wrong, or they belong to another KMS)",
    );
  } finally {
    wrapKey.fill(0);
  }
  try {
    return createPrivateKey({ key: der, format: "der", type: "pkcs8" });
  } finally {
    der.fill(0);
  }
}
