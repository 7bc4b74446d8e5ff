// openpgp (1.2 MB of source; 7-16 MB of a process's RSS once loaded) is imported at its first use, not with the
// modules that name its types: a server without PGP folders or PGP actions, and every command that never encrypts,
// never loads it. One promise, so every caller gets the same module instance (instanceof checks hold).
import type * as OpenPgp from "openpgp";

let lib: Promise<typeof OpenPgp> | undefined;

export function openpgpLib(): Promise<typeof OpenPgp> {
  lib ??= import("openpgp");
  return lib;
}

/** RFC 9580 §9.4 compression algorithm 0 (openpgp.enums.compression.uncompressed). */
export const COMPRESSION_UNCOMPRESSED = 0 satisfies OpenPgp.enums.compression;
/** RFC 9580 §9.3 symmetric algorithm 9 (openpgp.enums.symmetric.aes256). */
export const SYMMETRIC_AES256 = 9 satisfies OpenPgp.enums.symmetric;
