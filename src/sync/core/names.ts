// Encrypted names (docs/sync-protocol.md §5): AES-256-GCM under the epoch's name key, the AAD binding region, entry,
// parent, kind and epoch, so a name cannot be moved to another entry or folder. The mtime travels inside too.
import type { KeyObject } from "node:crypto";
import { aeadKey, open as aeadOpen, seal as aeadSeal, NONCE_LENGTH } from "../../crypto/aead.ts";
import { zero } from "../../crypto/bytes.ts";
import { randomBytes } from "../../crypto/random.ts";
import { AtrestError, IntegrityError } from "../../errors.ts";
import { b64, canonical, parseCanonical, unb64 } from "./canonical.ts";
import { nameKeyOf } from "./region.ts";

export interface NameBinding {
  regionId: string;
  entryId: string;
  /** "" for the region's root. */
  parent: string;
  kind: "file" | "dir";
  epoch: number;
}

export interface PlainName {
  name: string;
  mtimeMs: number;
  /** hex SHA-256 of the file's plaintext ("" for a directory): lets devices compare content without downloading. */
  sha: string;
}

/** One path segment: not empty, not . or .., no / or NUL, at most 255 UTF-8 bytes. */
export function isValidName(name: string): boolean {
  return (
    typeof name === "string" &&
    name.length > 0 &&
    name !== "." &&
    name !== ".." &&
    !/[/\0]/.test(name) &&
    name.isWellFormed() &&
    Buffer.byteLength(name, "utf8") <= 255
  );
}

/**
 * The name key of a region key, derived and imported once per region key (a manifest has thousands of names; an HKDF
 * and a raw-key import per name cost more than the AES-GCM). Held weakly: gone with the region key's buffer.
 */
const nameKeys = new WeakMap<Buffer, Map<string, KeyObject>>();

function nameKey(regionKey: Buffer, regionId: string): KeyObject {
  let byRegion = nameKeys.get(regionKey);
  if (!byRegion) {
    byRegion = new Map();
    nameKeys.set(regionKey, byRegion);
  }
  let k = byRegion.get(regionId);
  if (!k) {
    const raw = nameKeyOf(regionKey, regionId);
    k = aeadKey(raw);
    zero(raw);
    byRegion.set(regionId, k);
  }
  return k;
}

function aad(b: NameBinding): Buffer {
  const e = Buffer.alloc(5);
  e.writeUInt32BE(b.epoch, 1);
  return Buffer.concat([
    Buffer.from(`atrest-sync v1 name\0${b.regionId}\0${b.entryId}\0${b.parent}\0`, "utf8"),
    Buffer.from(b.kind, "ascii"),
    e,
  ]);
}

/**
 * Names this process already opened under a region key, by binding and ciphertext: a sync step looks at every name
 * of the manifest twice (plan, then the tree after publishing), and only the entries it changed have new ciphertexts.
 * Held weakly with the key's buffer (one per step), like the name keys.
 */
const opened = new WeakMap<Buffer, Map<string, PlainName>>();
const OPENED_MAX = 200_000;
export function encryptName(regionKey: Buffer, b: NameBinding, plain: PlainName): string {
  if (!isValidName(plain.name)) throw new AtrestError("INVALID_INPUT", "a name is one path segment of 1..255 bytes");
  const key = nameKeyOf(regionKey, b.regionId);
  if (!/^([0-9a-f]{64})?$/.test(plain.sha)) throw new AtrestError("INVALID_INPUT", "bad content hash");
  const body = canonical({ m: Math.trunc(plain.mtimeMs), n: plain.name, s: plain.sha });
  try {
    return b64(aeadSeal(key, randomBytes(NONCE_LENGTH), body, aad(b)));
  } finally {
    zero(key, body);
  }
}

export function decryptName(regionKey: Buffer, b: NameBinding, ct: string): PlainName {
  let cache = opened.get(regionKey);
  if (!cache) {
    cache = new Map();
    opened.set(regionKey, cache);
  }
  const id = `${b.regionId}\0${b.entryId}\0${b.parent}\0${b.kind}\0${b.epoch}\0${ct}`;
  const hit = cache.get(id);
  if (hit) return { ...hit };
  const body = aeadOpen(nameKey(regionKey, b.regionId), unb64(ct), aad(b));
  const v = parseCanonical(body) as { m?: unknown; n?: unknown; s?: unknown };
  if (
    typeof v.n !== "string" ||
    !isValidName(v.n) ||
    typeof v.m !== "number" ||
    typeof v.s !== "string" ||
    !/^([0-9a-f]{64})?$/.test(v.s) ||
    Object.keys(v).length !== 3
  ) {
    throw new IntegrityError("encrypted name holds no valid name");
  }
  const plain = { name: v.n, mtimeMs: v.m, sha: v.s };
  if (cache.size >= OPENED_MAX) cache.clear();
  cache.set(id, plain);
  return { ...plain };
}
