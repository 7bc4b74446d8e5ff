// SSE-C (customer-provided keys, S3): the customer's AES-256 key takes part in every read and write of one object
// version and is never stored. The container's DEK is derived from both the key manager's data key D (wrapped in the
// container header as for every file) and the customer key K:
//   DEK = HKDF-SHA256(ikm = D || K, salt = "", info = "atrest v1 sse-c dek" 0x00 contentId)
// so neither the key manager alone (D) nor a stolen customer key alone (K) opens the object: both are needed, and the
// container format does not change (its key commitment checks the derived DEK). What the server keeps is a randomly
// salted HMAC of K in the version's sealed attributes (meta-crypto.ts), to refuse a wrong key before touching data:
//   check = HMAC-SHA256(key = salt (16 random bytes), "atrest v1 sse-c check" 0x00 || K)
// Lose the customer key, lose the object: there is no recovery path, by design.
import { constantTimeEqual, zero } from "../crypto/bytes.ts";
import { hkdfSha256 } from "../crypto/hkdf.ts";
import { hmacSha256 } from "../crypto/hmac.ts";
import { randomBytes } from "../crypto/random.ts";
import { AtrestError } from "../errors.ts";

/** What a version's sealed attributes keep of its customer key. */
export interface CustomerKeyCheck {
  /** base64 of the 16-byte random salt. */
  salt: string;
  /** base64 of the HMAC. */
  mac: string;
}

export const CUSTOMER_KEY_LENGTH = 32;
const CHECK_LABEL = Buffer.from("atrest v1 sse-c check\0");

function assertKey(key: Buffer): void {
  if (key.length !== CUSTOMER_KEY_LENGTH) throw new AtrestError("INVALID_INPUT", "a customer key has 256 bits");
}

/** The DEK of an SSE-C version; the caller owns it and zeroes it (D and K stay the caller's too). */
export function customerDek(dataKey: Buffer, customerKey: Buffer, contentId: string): Buffer {
  assertKey(customerKey);
  const ikm = Buffer.concat([dataKey, customerKey]);
  try {
    return hkdfSha256(ikm, Buffer.alloc(0), Buffer.from(`atrest v1 sse-c dek\0${contentId}`));
  } finally {
    zero(ikm);
  }
}

/** A fresh salted check of `customerKey`, for a new version. */
export function customerKeyCheck(customerKey: Buffer): CustomerKeyCheck {
  assertKey(customerKey);
  const salt = randomBytes(16);
  return { salt: salt.toString("base64"), mac: hmacSha256(salt, CHECK_LABEL, customerKey).toString("base64") };
}

/**
 * Refuses a read of an SSE-C version without its key or with another key (KEY_REQUIRED: S3 answers 400 for both, as
 * Ceph RGW and the s3-tests suite expect), and a
 * customer key given for a version that has none (INVALID_INPUT).
 */
export function verifyCustomerKey(check: CustomerKeyCheck | undefined, customerKey: Buffer | undefined): void {
  if (!check) {
    if (customerKey) throw new AtrestError("INVALID_INPUT", "the object is not encrypted with a customer key");
    return;
  }
  if (!customerKey) {
    throw new AtrestError("KEY_REQUIRED", "the object is encrypted with a customer-provided key (S3 SSE-C)");
  }
  if (customerKey.length !== CUSTOMER_KEY_LENGTH) throw new AtrestError("KEY_REQUIRED", "wrong customer key");
  const mac = hmacSha256(Buffer.from(check.salt, "base64"), CHECK_LABEL, customerKey);
  if (!constantTimeEqual(mac, Buffer.from(check.mac, "base64"))) {
    throw new AtrestError("KEY_REQUIRED", "wrong customer key");
  }
}
