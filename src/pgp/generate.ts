// On-demand keys (LuxSci style): a key pair for a user who has none. The private key is returned once, armored and
// protected by the user's passphrase; only the public key is stored. The server never keeps the private half.
import { AtrestError } from "../errors.ts";
import type { PgpKeyStore } from "./keystore.ts";
import { openpgpLib } from "./lib.ts";
import type { PgpKeyRow } from "./types.ts";

export const MIN_PASSPHRASE = 8;

export interface GenerateOptions {
  /** `ecc` (Ed25519 + Cv25519, v4) or `rsa` (RSA 3072 + RSA 3072 subkey, v4). Both decrypt in GnuPG 2.2. */
  type?: "ecc" | "rsa";
  email?: string;
  /** Key lifetime in days; 0 or absent = no expiry. */
  expireDays?: number;
}

export async function generateUserKey(
  keys: PgpKeyStore,
  user: string,
  passphrase: string,
  opts: GenerateOptions = {},
): Promise<{ row: PgpKeyRow; privateKey: string }> {
  if (passphrase.length < MIN_PASSPHRASE) {
    throw new AtrestError("INVALID_INPUT", `the passphrase must have at least ${MIN_PASSPHRASE} characters`);
  }
  const existing = await keys.keysOf({ kind: "user", name: user });
  if (existing.length > 0) {
    throw new AtrestError(
      "EXISTS",
      `user ${user} already has OpenPGP key(s) ${existing.map((k) => k.fingerprint).join(", ")}: remove them first`,
    );
  }
  const userId = opts.email ? { name: user, email: opts.email } : { name: user };
  const common = {
    userIDs: [userId],
    passphrase,
    keyExpirationTime: opts.expireDays ? opts.expireDays * 86_400 : 0,
    format: "armored" as const,
    config: { aeadProtect: false },
  };
  let generated: { privateKey: string; publicKey: string };
  try {
    generated =
      opts.type === "rsa"
        ? await (await openpgpLib()).generateKey({ ...common, type: "rsa", rsaBits: 3072 })
        : await (await openpgpLib()).generateKey({ ...common, type: "ecc", curve: "curve25519Legacy" });
  } catch (err) {
    throw new AtrestError("INVALID_INPUT", `cannot generate the key: ${(err as Error).message}`);
  }
  const row = await keys.import(user, generated.publicKey, "generated");
  return { row, privateKey: generated.privateKey };
}
