// Server-side encryption headers: SSE-S3 / SSE-KMS requests and bucket defaults, SSE-C customer keys, and the
// response headers AWS echoes.
import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { zero } from "../../crypto/bytes.ts";
import { isValidKeyName } from "../../kms/api/key-ref.ts";
import { testHooks } from "../../test-hooks.ts";
import type { FileKey } from "../../vfs/types.ts";
import { type Ctx, type CustomerKey, notImplemented } from "./context.ts";
import { S3Error } from "./errors.ts";

/**
 * The server-side encryption a PUT asks for (docs/s3.md "Server-side encryption"): every object is encrypted at rest
 * anyway, the headers only choose the key. AES256 (SSE-S3) = the key the folder > user > group > default rule gives;
 * aws:kms (SSE-KMS) with x-amz-server-side-encryption-aws-kms-key-id = that atrest KMS key (the vfs checks it is
 * allowed), without a key id = the rule's key.
 */
export function requestedSse(req: Pick<IncomingMessage, "headers">): { mode?: "AES256" | "aws:kms"; key?: string } {
  const mode = req.headers["x-amz-server-side-encryption"];
  const keyId = req.headers["x-amz-server-side-encryption-aws-kms-key-id"];
  if (req.headers["x-amz-server-side-encryption-context"] !== undefined) notImplemented();
  if (mode === undefined) {
    if (keyId !== undefined) {
      throw new S3Error(
        "InvalidArgument",
        400,
        "Server Side Encryption with KMS managed key requires HTTP header x-amz-server-side-encryption : aws:kms",
      );
    }
    return {};
  }
  if (mode === "AES256") {
    if (keyId !== undefined) {
      throw new S3Error(
        "InvalidArgument",
        400,
        "x-amz-server-side-encryption-aws-kms-key-id is only valid with x-amz-server-side-encryption aws:kms",
      );
    }
    return { mode };
  }
  if (mode === "aws:kms") {
    if (keyId === undefined || keyId === "") return { mode };
    return { mode, key: kmsKeyName(String(keyId)) };
  }
  throw new S3Error("InvalidArgument", 400, "The encryption method specified is not supported");
}

export async function bucketDefault(c: Ctx): Promise<{ mode?: "AES256" | "aws:kms"; key?: string }> {
  const d = await c.session.getEncryption?.(`/${c.bucket}`);
  return d ? { mode: d.algorithm, key: d.key } : {};
}

/** An atrest KEK name from an SSE-KMS key id; an ARN or alias form names it after its last ':' or '/'. */
export function kmsKeyName(keyId: string): string {
  const name = keyId.slice(Math.max(keyId.lastIndexOf("/"), keyId.lastIndexOf(":")) + 1);
  if (!isValidKeyName(name))
    throw new S3Error("KMS.NotFoundException", 400, "Invalid keyId: not an atrest KMS key name");
  return name;
}

export const SSE_C = "x-amz-server-side-encryption-customer-";
export const COPY_SOURCE_SSE_C = "x-amz-copy-source-server-side-encryption-customer-";

/**
 * The SSE-C key of a request (x-amz-server-side-encryption-customer-algorithm / -key / -key-MD5), checked as AWS
 * checks it; undefined when the request has none. Refused over plain HTTP, as AWS does (tests on loopback: the
 * sseCOverHttp test hook). The decoded key lives in a Buffer the request handler zeroes; the header strings node:http
 * parsed cannot be zeroed (JavaScript strings are immutable) and are dropped with the request.
 */
export function customerKeyOf(
  req: Pick<IncomingMessage, "headers" | "socket">,
  secure: boolean,
  prefix = SSE_C,
): CustomerKey | undefined {
  const h = req.headers;
  const alg = h[`${prefix}algorithm`];
  const key = h[`${prefix}key`];
  const md5 = h[`${prefix}key-md5`];
  if (alg === undefined && key === undefined && md5 === undefined) return undefined;
  const loopback = /^(127\.|::1$|::ffff:127\.)/.test(req.socket.remoteAddress ?? "");
  if (!secure && !(loopback && testHooks().sseCOverHttp?.())) {
    throw new S3Error(
      "InvalidRequest",
      400,
      "Requests specifying Server Side Encryption with Customer provided keys must be made over a secure connection.",
    );
  }
  const bad = (m: string) => new S3Error("InvalidArgument", 400, m);
  if (alg === undefined) {
    throw bad(
      "Requests specifying Server Side Encryption with Customer provided keys must provide a valid encryption algorithm.",
    );
  }
  if (alg !== "AES256") {
    throw new S3Error(
      "InvalidEncryptionAlgorithmError",
      400,
      "The encryption request you specified is not valid. The valid value is AES256.",
    );
  }
  if (typeof key !== "string" || key === "") {
    throw bad(
      "Requests specifying Server Side Encryption with Customer provided keys must provide an appropriate secret key.",
    );
  }
  if (typeof md5 !== "string" || md5 === "") {
    throw bad(
      "Requests specifying Server Side Encryption with Customer provided keys must provide the client calculated MD5 of the secret key.",
    );
  }
  if (!/^[A-Za-z0-9+/]{43}=$/.test(key)) throw bad("The secret key was invalid for the specified algorithm.");
  const raw = Buffer.from(key, "base64");
  const digest = createHash("md5").update(raw).digest();
  const given = /^[A-Za-z0-9+/]{22}==$/.test(md5) ? Buffer.from(md5, "base64") : Buffer.alloc(16);
  if (raw.length !== 32 || !timingSafeEqual(digest, given)) {
    zero(raw);
    throw bad("The calculated MD5 hash of the key did not match the hash that was provided.");
  }
  return { key: raw, md5 };
}

/** x-amz-server-side-encryption (and the KMS key id, or the SSE-C algorithm and key MD5) as AWS echoes them. */
export function sseHeaders(key: FileKey | undefined, customer?: CustomerKey): Record<string, string> {
  if (!key) return {};
  if (key.customerKey && customer) {
    return { [`${SSE_C}algorithm`]: "AES256", [`${SSE_C}key-MD5`]: customer.md5 };
  }
  if (key.requested) {
    return { "x-amz-server-side-encryption": "aws:kms", "x-amz-server-side-encryption-aws-kms-key-id": key.kek };
  }
  return { "x-amz-server-side-encryption": "AES256" };
}
