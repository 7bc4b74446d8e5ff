// Dev-mode master key file. The key sits in plaintext beside the data, which is exactly why it is dev-only:
// production (`atrest kms serve`) unseals with Shamir shares (unseal.ts; an HSM would be another master source) and
// never writes the master key to disk.
//
// File format (44 bytes): "AKM1" ‖ u8 seal kind (1 = dev, unprotected) ‖ 32-byte master key ‖
//                         first 7 bytes of SHA-256(preceding 37 bytes) to catch truncation or corruption.

import { createHash, randomFillSync } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import { AtrestError, KeyUnavailableError } from "../errors.ts";
import { writeFileDurable } from "../fsutil/durable.ts";
import { MASTER_KEY_BYTES } from "./seal.ts";

const MAGIC = Buffer.from("AKM1", "ascii");
const KIND_DEV = 1;
const BODY = 4 + 1 + MASTER_KEY_BYTES;
const FILE_BYTES = BODY + 7;

function checksum(body: Buffer): Buffer {
  return createHash("sha256").update(body).digest().subarray(0, 7);
}

/**
 * Writes a new random master key to `path` (mode 0600) unless one exists. Exclusive via link(2), so two concurrent
 * inits cannot both win and leave data sealed under a key that was then overwritten.
 * Returns true if this call created it.
 */
export async function createMasterKeyFile(path: string): Promise<boolean> {
  const file = Buffer.alloc(FILE_BYTES);
  MAGIC.copy(file, 0);
  file.writeUInt8(KIND_DEV, 4);
  randomFillSync(file, 5, MASTER_KEY_BYTES);
  checksum(file.subarray(0, BODY)).copy(file, BODY);
  try {
    return await writeFileDurable(path, file, { exclusive: true });
  } finally {
    file.fill(0);
  }
}

/** Reads the master key into a fresh buffer the caller owns and must zero. */
export async function readMasterKeyFile(path: string): Promise<Buffer> {
  let st: Awaited<ReturnType<typeof stat>>;
  try {
    st = await stat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") {
      throw new KeyUnavailableError(`KMS not initialised: ${path} not found (run atrest init)`);
    }
    throw e;
  }
  if (process.platform !== "win32" && (st.mode & 0o077) !== 0) {
    throw new KeyUnavailableError(
      `master key file ${path} has mode ${(st.mode & 0o777).toString(8)}; refusing to use it (chmod 600 ${path})`,
    );
  }
  const file = await readFile(path);
  try {
    if (
      file.length !== FILE_BYTES ||
      !file.subarray(0, 4).equals(MAGIC) ||
      !checksum(file.subarray(0, BODY)).equals(file.subarray(BODY))
    ) {
      throw new AtrestError("INTEGRITY", `master key file ${path} is corrupt or not an atrest master key`);
    }
    if (file.readUInt8(4) !== KIND_DEV) {
      throw new AtrestError("UNSUPPORTED", `master key file ${path} uses an unknown seal kind`);
    }
    const key = Buffer.alloc(MASTER_KEY_BYTES);
    file.copy(key, 0, 5, BODY);
    return key;
  } finally {
    file.fill(0);
  }
}
