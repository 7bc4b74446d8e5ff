// Rows of the metadata store that need not be queryable in the clear are sealed (users, groups, folders): what the
// store keeps is a blind index (a keyed HMAC of the name or path, so lookups still work) and an AEAD record padded
// to a size bucket. Both keys derive from the metadata service key (wrapped by the key manager, settings table), the
// same key the vfs derives its name keys from, under other HKDF labels. Format: docs/format.md "Metadata at rest".
import { createSecretKey, type KeyObject } from "node:crypto";
import { aeadKey, NONCE_LENGTH, open, seal } from "../crypto/aead.ts";
import { zero } from "../crypto/bytes.ts";
import { hkdfSha256 } from "../crypto/hkdf.ts";
import { hmacSha256 } from "../crypto/hmac.ts";
import { padToBucket, unpad } from "../crypto/padding.ts";
import { randomBytes } from "../crypto/random.ts";
import { AtrestError } from "../errors.ts";

/** What a sealed record or index belongs to: part of every index input and every AAD (no cross-domain reuse). */
export type RowDomain =
  | "user"
  | "user.usage"
  | "group"
  | "folder"
  | "token"
  | "s3key"
  | "bucket"
  | "ban"
  | "pgp"
  | "rule"
  | "share"
  | "sync";

/**
 * Seals and indexes store rows. A store is opened locked (settings, nodes and the other aggregates work; users,
 * groups and folders throw) and unlocked with one of these once the metadata key is unwrapped.
 */
export class RowSealer {
  #index: KeyObject | undefined;
  #enc: KeyObject | undefined;
  /** Records opened under these keys, kept by sealed-rows.ts to skip opening the same bytes again; goes with the keys. */
  readonly memo = new Map<string, unknown>();

  /** Derives the row keys from the metadata key; the caller keeps (and zeroes) `metaKey`. */
  constructor(metaKey: Buffer) {
    const index = hkdfSha256(metaKey, Buffer.alloc(0), Buffer.from("atrest v1 row index"));
    const enc = hkdfSha256(metaKey, Buffer.alloc(0), Buffer.from("atrest v1 row aead"));
    this.#index = createSecretKey(index);
    this.#enc = aeadKey(enc);
    zero(index, enc);
  }

  /** Blind index: HMAC-SHA256(indexKey, domain ‖ 0x00 ‖ value). Equal values give equal indexes (lookups). */
  index(domain: RowDomain, value: string): Buffer {
    return hmacSha256(this.#keys().index, Buffer.from(`${domain}\0`), Buffer.from(value, "utf8"));
  }

  /** AES-256-GCM(pad(data)), AAD = "atrest v1 row" ‖ 0 ‖ domain ‖ 0 ‖ rowId: a record cannot move to another row. */
  seal(domain: RowDomain, rowId: string, data: Buffer): Buffer {
    const padded = padToBucket(data);
    try {
      return seal(this.#keys().enc, randomBytes(NONCE_LENGTH), padded, aad(domain, rowId));
    } finally {
      zero(padded);
    }
  }

  open(domain: RowDomain, rowId: string, sealed: Buffer): Buffer {
    return Buffer.from(unpad(open(this.#keys().enc, sealed, aad(domain, rowId))));
  }

  destroy(): void {
    this.memo.clear();
    this.#index = undefined;
    this.#enc = undefined;
  }

  #keys(): { index: KeyObject; enc: KeyObject } {
    if (!this.#index || !this.#enc) throw new Error("metadata row keys destroyed");
    return { index: this.#index, enc: this.#enc };
  }
}

function aad(domain: RowDomain, rowId: string): Buffer {
  return Buffer.from(`atrest v1 row\0${domain}\0${rowId}`, "utf8");
}

/** The sealer of an unlocked store; throws (UNAVAILABLE to the caller) while the store is locked. */
export function requireSealer(sealer: RowSealer | undefined): RowSealer {
  if (!sealer) {
    throw new AtrestError(
      "KEY_UNAVAILABLE",
      "metadata store is locked: users, groups and folders need the metadata key",
    );
  }
  return sealer;
}
