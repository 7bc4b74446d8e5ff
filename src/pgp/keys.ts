// Reading and describing OpenPGP public keys, and the checks every use of a recipient key goes through.
import type * as openpgp from "openpgp";
import { AtrestError } from "../errors.ts";
import { openpgpLib } from "./lib.ts";

/** Parses one armored or binary OpenPGP key. Private keys are refused: atrest stores public keys only. */
export async function readPublicKeys(input: string | Uint8Array): Promise<openpgp.PublicKey[]> {
  let keys: openpgp.Key[];
  try {
    const text = typeof input === "string" ? input : Buffer.from(input).toString("latin1");
    keys = text.includes("-----BEGIN PGP")
      ? await (await openpgpLib()).readKeys({ armoredKeys: text })
      : await (await openpgpLib()).readKeys({
          binaryKeys: typeof input === "string" ? Buffer.from(input, "latin1") : input,
        });
  } catch (err) {
    throw new AtrestError("INVALID_INPUT", `not an OpenPGP public key: ${(err as Error).message}`);
  }
  if (keys.length === 0) throw new AtrestError("INVALID_INPUT", "no OpenPGP key found");
  for (const key of keys) {
    if (key.isPrivate()) {
      throw new AtrestError(
        "INVALID_INPUT",
        `${key.getFingerprint()} is a private key: import only the public key (gpg --export, not --export-secret-keys)`,
      );
    }
  }
  return keys as openpgp.PublicKey[];
}

export async function readPublicKey(input: string | Uint8Array): Promise<openpgp.PublicKey> {
  const keys = await readPublicKeys(input);
  if (keys.length !== 1) throw new AtrestError("INVALID_INPUT", `expected one key, found ${keys.length}`);
  return keys[0];
}

function algorithmName(info: ReturnType<openpgp.Key["getAlgorithmInfo"]>): string {
  const base = info.algorithm.replace(/(Encrypt)?(Sign)?$/, "").replace("eddsaLegacy", "eddsa");
  if (info.curve) return String(info.curve).replace(/Legacy$/, "");
  return info.bits ? `${base}${info.bits}` : base;
}

/** `rsa3072`, `ed25519+cv25519`: primary key algorithm, then each subkey's if different. */
export function describeAlgorithm(key: openpgp.Key): string {
  const names = [algorithmName(key.getAlgorithmInfo())];
  for (const sub of key.subkeys) {
    const name = algorithmName(sub.getAlgorithmInfo()).replace(/^curve25519$/, "cv25519");
    if (!names.includes(name)) names.push(name);
  }
  return names.join("+");
}

export interface KeyFacts {
  fingerprint: string;
  userIds: string[];
  algorithm: string;
  createdAt: string;
  expiresAt: string | null;
  revoked: boolean;
}

export async function keyFacts(key: openpgp.Key): Promise<KeyFacts> {
  const expiry = await key.getExpirationTime().catch(() => null);
  return {
    fingerprint: key.getFingerprint(),
    userIds: key.getUserIDs(),
    algorithm: describeAlgorithm(key),
    createdAt: key.getCreationTime().toISOString(),
    expiresAt: expiry instanceof Date ? expiry.toISOString() : null,
    revoked: await key.isRevoked(),
  };
}

/** Normalises a fingerprint as users type it (`0x`, spaces, upper case); undefined if it is not one. */
export function parseFingerprint(spec: string): string | undefined {
  const hex = spec.replace(/^0x/i, "").replace(/[\s:]/g, "").toLowerCase();
  return /^([0-9a-f]{40}|[0-9a-f]{64})$/.test(hex) ? hex : undefined;
}

/**
 * Why `key` cannot be used to encrypt at `date`, or undefined when it can: revoked, expired, or no valid
 * encryption subkey (each subkey expired, revoked or sign-only).
 */
export async function unusableReason(key: openpgp.PublicKey, date = new Date()): Promise<string | undefined> {
  if (await key.isRevoked(undefined, undefined, date)) return "revoked";
  const expiry = await key.getExpirationTime().catch(() => null);
  if (expiry instanceof Date && expiry.getTime() <= date.getTime()) return `expired on ${expiry.toISOString()}`;
  try {
    await key.getEncryptionKey(undefined, date);
  } catch {
    return "no valid encryption subkey (expired, revoked or missing)";
  }
  return undefined;
}

/**
 * Fingerprints of the `trusted` keys that made a valid certification of one of `key`'s valid user ids.
 * A certification only counts on a user id that is itself valid (self-signed, not revoked).
 */
export async function certifiers(
  key: openpgp.PublicKey,
  trusted: openpgp.PublicKey[],
  date = new Date(),
): Promise<string[]> {
  if (trusted.length === 0) return [];
  const found = new Set<string>();
  for (const user of key.users) {
    if (!user.userID) continue;
    const selfValid = await user.verify(date).then(
      () => true,
      () => false,
    );
    if (!selfValid) continue;
    const results = await user.verifyAllCertifications(trusted, date).catch(() => []);
    for (const r of results) {
      if (r.valid !== true) continue;
      const signer = trusted.find((t) => t.getKeyIDs().some((id) => id.equals(r.keyID)));
      if (signer) found.add(signer.getFingerprint());
    }
  }
  return [...found].sort();
}
