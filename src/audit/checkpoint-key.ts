// Where the Ed25519 key that signs audit checkpoints is kept: the private key (PKCS#8) is sealed under a service key
// that the key manager wraps (settings CHECKPOINT_WRAP_SETTING), the sealed form and the public key live in the
// metadata settings. The keys layer loads the signer (keys/checkpoint-signer.ts) and the wiring hands it to the audit
// log; the public key is not secret: `audit verify` reads it here without the key manager.
import type { KeyObject } from "node:crypto";
import type { MetaStore } from "../store/types.ts";
import { ed25519PublicKey, keyFingerprint } from "./chain.ts";

export const CHECKPOINT_WRAP_SETTING = "audit.checkpoint.wrap";
export const CHECKPOINT_PRIVATE_SETTING = "audit.checkpoint.private";
export const CHECKPOINT_PUBLIC_SETTING = "audit.checkpoint.public";
export const CHECKPOINT_CONTEXT = { purpose: "audit-checkpoint" };
export const CHECKPOINT_AAD = Buffer.from("atrest audit checkpoint key v1");

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
