// Loads the audit checkpoint signer (where it is kept: audit/checkpoint-key.ts). A keys-layer job like every service
// key: the wiring passes the signer to the audit log, which never reaches the key manager itself.
import { createPrivateKey, createPublicKey, generateKeyPairSync } from "node:crypto";
import { keyFingerprint, type Signer } from "../audit/chain.ts";
import {
  CHECKPOINT_AAD,
  CHECKPOINT_CONTEXT,
  CHECKPOINT_PRIVATE_SETTING,
  CHECKPOINT_PUBLIC_SETTING,
  CHECKPOINT_WRAP_SETTING,
} from "../audit/checkpoint-key.ts";
import { aeadKey, NONCE_LENGTH, open, seal } from "../crypto/aead.ts";
import { zero } from "../crypto/bytes.ts";
import { randomBytes } from "../crypto/random.ts";
import type { KeyProvider } from "../kms/api/types.ts";
import type { MetaStore } from "../store/types.ts";
import { serviceKey } from "./service-keys.ts";

/** Loads the checkpoint signer, creating the key pair on first use. */
export async function checkpointSigner(store: MetaStore, keys: KeyProvider): Promise<Signer> {
  const raw = await serviceKey(store, keys, CHECKPOINT_WRAP_SETTING, "default", CHECKPOINT_CONTEXT);
  const kek = aeadKey(raw);
  zero(raw);
  const sealed = await store.getSetting(CHECKPOINT_PRIVATE_SETTING);
  if (sealed) {
    const der = open(kek, sealed, CHECKPOINT_AAD);
    const privateKey = createPrivateKey({ key: der, format: "der", type: "pkcs8" });
    zero(der);
    return { privateKey, fingerprint: keyFingerprint(createPublicKey(privateKey)) };
  }
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const der = privateKey.export({ format: "der", type: "pkcs8" });
  const sealedNew = seal(kek, randomBytes(NONCE_LENGTH), der, CHECKPOINT_AAD);
  zero(der);
  const spki = publicKey.export({ format: "der", type: "spki" });
  const created = await store.transaction(async (tx) => {
    if (await tx.getSetting(CHECKPOINT_PRIVATE_SETTING)) return false; // another process won the race
    await tx.setSetting(CHECKPOINT_PRIVATE_SETTING, sealedNew);
    await tx.setSetting(CHECKPOINT_PUBLIC_SETTING, Buffer.from(spki.toString("base64")));
    return true;
  });
  if (!created) return checkpointSigner(store, keys);
  return { privateKey, fingerprint: keyFingerprint(publicKey) };
}
