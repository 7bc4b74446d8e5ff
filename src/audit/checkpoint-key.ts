// The Ed25519 key that signs audit checkpoints, kept like the other service keys: the private key (PKCS#8) is sealed
// under a service key that the key manager wraps (settings CHECKPOINT_WRAP_SETTING), the sealed form and the public
// key live in the metadata settings. The public key is not secret: `audit verify` reads it without the key manager.
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { aeadKey, NONCE_LENGTH, open, seal } from "../crypto/aead.ts";
import { zero } from "../crypto/bytes.ts";
import { randomBytes } from "../crypto/random.ts";
import type { KeyProvider } from "../kms/api/types.ts";
import { serviceKey } from "../store/service-keys.ts";
import type { MetaStore } from "../store/types.ts";
import { ed25519PublicKey, keyFingerprint, type Signer } from "./chain.ts";

export const CHECKPOINT_WRAP_SETTING = "audit.checkpoint.wrap";
export const CHECKPOINT_PRIVATE_SETTING = "audit.checkpoint.private";
export const CHECKPOINT_PUBLIC_SETTING = "audit.checkpoint.public";
const CONTEXT = { purpose: "audit-checkpoint" };
const AAD = Buffer.from("atrest audit checkpoint key v1");

/** Loads the checkpoint signer, creating the key pair on first use. */
export async function checkpointSigner(store: MetaStore, keys: KeyProvider): Promise<Signer> {
  const raw = await serviceKey(store, keys, CHECKPOINT_WRAP_SETTING, "default", CONTEXT);
  const kek = aeadKey(raw);
  zero(raw);
  const sealed = await store.getSetting(CHECKPOINT_PRIVATE_SETTING);
  if (sealed) {
    const der = open(kek, sealed, AAD);
    const privateKey = createPrivateKey({ key: der, format: "der", type: "pkcs8" });
    zero(der);
    return { privateKey, fingerprint: keyFingerprint(createPublicKey(privateKey)) };
  }
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const der = privateKey.export({ format: "der", type: "pkcs8" });
  const sealedNew = seal(kek, randomBytes(NONCE_LENGTH), der, AAD);
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

/** Trusted checkpoint public keys by fingerprint (no key manager needed). */
export async function checkpointPublicKeys(store: MetaStore): Promise<Map<string, KeyObject>> {
  const out = new Map<string, KeyObject>();
  const stored = await store.getSetting(CHECKPOINT_PUBLIC_SETTING);
  for (const b64 of (stored?.toString() ?? "").split(/\s+/).filter(Boolean)) {
    const key = ed25519PublicKey(b64);
    out.set(keyFingerprint(key), key);
  }
  return out;
}
