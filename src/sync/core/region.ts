// Region keys, epochs and key envelopes (docs/sync-protocol.md §2, §6): a region key per epoch, keys derived from it
// for names and file keys, a commitment to it that the signed manifest carries, and envelopes carrying it to one
// device (X25519 + HKDF + AES-256-GCM, signed by the sending device).
import type { KeyObject } from "node:crypto";
import { open as aeadOpen, seal as aeadSeal, KEY_LENGTH, NONCE_LENGTH } from "../../crypto/aead.ts";
import { constantTimeEqual, zero } from "../../crypto/bytes.ts";
import { hkdfSha256 } from "../../crypto/hkdf.ts";
import { hmacSha256 } from "../../crypto/hmac.ts";
import { randomBytes } from "../../crypto/random.ts";
import { IntegrityError } from "../../errors.ts";
import { b64, canonical, unb64 } from "./canonical.ts";
import type { DeviceCert } from "./chain.ts";
import { ephemeralX25519, PROTOCOL_VERSION, signObject, verifyObject, x25519 } from "./keys.ts";

export const REGION_ID = /^[0-9a-f]{32}$/;

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};

export function newRegionId(): string {
  return randomBytes(16).toString("hex");
}

export function newRegionKey(): Buffer {
  return randomBytes(KEY_LENGTH);
}

function derive(key: Buffer, regionId: string, what: string): Buffer {
  if (key.length !== KEY_LENGTH) throw new IntegrityError("a region key is 32 bytes");
  return hkdfSha256(key, Buffer.from(regionId, "utf8"), Buffer.from(`atrest-sync v1 ${what}`, "ascii"));
}

export const nameKeyOf = (key: Buffer, regionId: string): Buffer => derive(key, regionId, "name");
export const wrapKeyOf = (key: Buffer, regionId: string): Buffer => derive(key, regionId, "file");

/** hex HMAC commitment to the epoch key, carried in the signed manifest's `keys`. */
export function keyCommitment(key: Buffer, regionId: string, epoch: number): string {
  const ck = derive(key, regionId, "commit");
  try {
    return hmacSha256(
      ck,
      Buffer.from("atrest-sync v1 key commit", "ascii"),
      Buffer.from(regionId, "utf8"),
      u32(epoch),
    ).toString("hex");
  } finally {
    zero(ck);
  }
}

export function checkKeyCommitment(key: Buffer, regionId: string, epoch: number, commit: string): void {
  const got = Buffer.from(keyCommitment(key, regionId, epoch), "hex");
  if (!constantTimeEqual(got, Buffer.from(commit, "hex"))) {
    throw new IntegrityError(`region key for epoch ${epoch} does not match the signed manifest's commitment`);
  }
}

export interface Envelope {
  v: number;
  type: "envelope";
  regionId: string;
  epoch: number;
  recipient: string;
  sender: string;
  eph: string;
  ct: string;
  sig: string;
}

function envelopeKey(ss: Buffer, eph: string, recipient: DeviceCert, regionId: string, epoch: number): Buffer {
  const salt = Buffer.concat([unb64(eph, 32), unb64(recipient.encPub, 32)]);
  const info = Buffer.concat([
    Buffer.from("atrest-sync v1 envelope", "ascii"),
    Buffer.from(regionId, "utf8"),
    u32(epoch),
    Buffer.from(recipient.id, "ascii"),
  ]);
  return hkdfSha256(ss, salt, info);
}

const envelopeAad = (e: { regionId: string; epoch: number; recipient: string; sender: string }): Buffer =>
  canonical({ regionId: e.regionId, epoch: e.epoch, recipient: e.recipient, sender: e.sender });

/** Wraps `key` (epoch `epoch` of `regionId`) to `recipient`, signed by the sending device. */
export function sealEnvelope(
  key: Buffer,
  regionId: string,
  epoch: number,
  recipient: DeviceCert,
  sender: { id: string; signKey: Buffer },
): Envelope {
  const eph = ephemeralX25519();
  const ss = x25519(eph.priv, recipient.encPub);
  const k = envelopeKey(ss, eph.pub, recipient, regionId, epoch);
  const head = { regionId, epoch, recipient: recipient.id, sender: sender.id };
  try {
    const ct = aeadSeal(k, randomBytes(NONCE_LENGTH), key, envelopeAad(head));
    return signObject(
      "envelope",
      { v: PROTOCOL_VERSION, type: "envelope" as const, ...head, eph: eph.pub, ct: b64(ct) },
      sender.signKey,
    );
  } finally {
    zero(ss, k);
  }
}

/**
 * Opens an envelope addressed to `me` (with its X25519 private key). `senderCert` must come from the sender's
 * verified chain; `commit` from the verified manifest. Any mismatch → IntegrityError, no key.
 */
export function openEnvelope(
  env: Envelope,
  me: { cert: DeviceCert; encKey: KeyObject },
  expect: { regionId: string; senderCert: DeviceCert; commit: string },
): Buffer {
  if (env.type !== "envelope" || env.v !== PROTOCOL_VERSION) throw new IntegrityError("not a v1 key envelope");
  if (env.regionId !== expect.regionId) throw new IntegrityError("key envelope of another region");
  if (env.recipient !== me.cert.id) throw new IntegrityError("key envelope for another device");
  if (env.sender !== expect.senderCert.id || !verifyObject("envelope", env, expect.senderCert.signPub)) {
    throw new IntegrityError("key envelope signature invalid");
  }
  if (!Number.isSafeInteger(env.epoch) || env.epoch < 1) throw new IntegrityError("bad epoch");
  const ss = x25519(me.encKey, env.eph);
  const k = envelopeKey(ss, env.eph, me.cert, env.regionId, env.epoch);
  try {
    const key = aeadOpen(k, unb64(env.ct), envelopeAad(env));
    if (key.length !== KEY_LENGTH) throw new IntegrityError("key envelope holds no 32-byte key");
    try {
      checkKeyCommitment(key, env.regionId, env.epoch, expect.commit);
    } catch (err) {
      zero(key);
      throw err;
    }
    return key;
  } finally {
    zero(ss, k);
  }
}

const dekAad = (fileId: string): Buffer =>
  Buffer.concat([Buffer.from("atrest-sync v1 dek", "ascii"), Buffer.from(fileId, "utf8")]);

/** u32 epoch ‖ AES-256-GCM(wrapKey_e, DEK, aad = "atrest-sync v1 dek" ‖ fileId): the container's wrapped-DEK slot. */
export function wrapDek(regionKey: Buffer, regionId: string, epoch: number, fileId: string, dek: Buffer): Buffer {
  const wk = wrapKeyOf(regionKey, regionId);
  try {
    return Buffer.concat([u32(epoch), aeadSeal(wk, randomBytes(NONCE_LENGTH), dek, dekAad(fileId))]);
  } finally {
    zero(wk);
  }
}

export function wrappedEpoch(wrapped: Buffer): number {
  if (wrapped.length < 4 + 28 + KEY_LENGTH) throw new IntegrityError("wrapped file key too short");
  return wrapped.readUInt32BE(0);
}

export function unwrapDek(regionKey: Buffer, regionId: string, fileId: string, wrapped: Buffer): Buffer {
  const wk = wrapKeyOf(regionKey, regionId);
  try {
    const dek = aeadOpen(wk, wrapped.subarray(4), dekAad(fileId));
    if (dek.length !== KEY_LENGTH) throw new IntegrityError("wrapped file key holds no 32-byte key");
    return dek;
  } finally {
    zero(wk);
  }
}
