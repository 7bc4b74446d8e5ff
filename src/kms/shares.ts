// Unseal-key shares as custodians see them: Shamir shares (shamir-secret-sharing, audited) of the 32-byte unseal key,
// printed as text with a checksum prefix so a mistyped or foreign share is refused at once, before it can spoil
// the combination.
//
// Text form: `<checksum: 8 hex>-<share: 66 hex>`, e.g. `1f3a9c0e-7c…`; the share is the library's 33 bytes
// (32 bytes of y values ‖ 1 byte x coordinate). checksum = SHA-256("atrest-share-v1\0" ‖ sealId ‖ share)[0..4],
// where sealId is the random id of this initialisation (kms.db), so a share of another KMS, or of an earlier
// `kms init`, fails the checksum too. The checksum is printed with the share it protects and reveals nothing the
// share's holder does not already have.

import { createHash } from "node:crypto";
import { combine, split } from "shamir-secret-sharing";
import { AtrestError } from "../errors.ts";

export const UNSEAL_KEY_BYTES = 32;
const SHARE_BYTES = UNSEAL_KEY_BYTES + 1;
const LABEL = Buffer.from("atrest-share-v1\0", "latin1");
const TEXT = /^([0-9a-f]{8})-([0-9a-f]{66})$/;

export const MAX_SHARES = 255;

function checksum(sealId: Buffer, share: Uint8Array): string {
  return createHash("sha256").update(LABEL).update(sealId).update(share).digest("hex").slice(0, 8);
}

export function validateShareCounts(shares: number, threshold: number): void {
  if (!Number.isInteger(shares) || shares < 2 || shares > MAX_SHARES) {
    throw new AtrestError("INVALID_INPUT", `--shares must be an integer from 2 to ${MAX_SHARES}`);
  }
  if (!Number.isInteger(threshold) || threshold < 2 || threshold > shares) {
    throw new AtrestError("INVALID_INPUT", `--threshold must be an integer from 2 to the number of shares (${shares})`);
  }
}

/** Splits `unsealKey` into `shares` text shares, any `threshold` of which rebuild it. */
export async function splitUnsealKey(
  unsealKey: Buffer,
  sealId: Buffer,
  shares: number,
  threshold: number,
): Promise<string[]> {
  validateShareCounts(shares, threshold);
  // The library insists on a plain Uint8Array (constructor check), so pass a view, not the Buffer.
  const parts = await split(
    new Uint8Array(unsealKey.buffer, unsealKey.byteOffset, unsealKey.byteLength),
    shares,
    threshold,
  );
  try {
    return parts.map((p) => `${checksum(sealId, p)}-${Buffer.from(p).toString("hex")}`);
  } finally {
    for (const p of parts) p.fill(0);
  }
}

export interface ParsedShare {
  /** The raw 33 bytes; the caller owns them and zeroes them when done. */
  bytes: Buffer;
  /** The share's x coordinate: tells two shares apart without revealing anything. */
  x: number;
}

/** Parses and checks one share's text. Whitespace and case are forgiven; anything else is a clear error. */
export function parseShare(text: string, sealId: Buffer): ParsedShare {
  const clean = text.replace(/\s+/g, "").toLowerCase();
  const m = TEXT.exec(clean);
  if (!m) {
    throw new AtrestError(
      "INVALID_INPUT",
      "malformed share: expected 8 hex digits, a dash and 66 hex digits, as printed by atrest kms init",
    );
  }
  const bytes = Buffer.from(m[2], "hex");
  if (checksum(sealId, bytes) !== m[1]) {
    bytes.fill(0);
    throw new AtrestError(
      "INVALID_INPUT",
      "share checksum does not match: the share is mistyped, or belongs to another KMS or an earlier kms init",
    );
  }
  const x = bytes[SHARE_BYTES - 1];
  if (x === 0) {
    bytes.fill(0);
    throw new AtrestError("INVALID_INPUT", "malformed share: x coordinate 0");
  }
  return { bytes, x };
}

/** Rebuilds the unseal key from distinct shares (at least the threshold; the result is only as good as they are). */
export async function combineShares(shares: readonly Buffer[]): Promise<Buffer> {
  const secret = await combine(shares.map((s) => new Uint8Array(s.buffer, s.byteOffset, s.byteLength)));
  try {
    return Buffer.from(secret);
  } finally {
    secret.fill(0);
  }
}
