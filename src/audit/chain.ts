// The hash chain and signed checkpoints of the local audit log (issue 5, DESIGN §7 "Auditor").
//
// File layout: UTF-8 text, one entry per line, append-only. Two kinds of entry, both chained:
//
//   record      v2:r:<seq>:<base64(sealed)> <hex(hash_seq)>
//   checkpoint  v2:c:<seq>:<hex(fingerprint)>:<base64(signature)> <hex(hash_seq)>
//
//   body_n = the line up to (not including) the last space
//   hash_n = SHA-256(hash_{n-1} ‖ body_n)            (one SHA-256 per line, over the ASCII bytes as stored)
//   hash_0 = SHA-256("atrest audit chain v2\n" ‖ every byte before the first v2 line)
//
// `seq` counts entries (records and checkpoints) from 1, so a deleted or reordered line shows as a gap even before
// the hash is checked. `sealed` = AES-256-GCM(audit key, JSON record, AAD = "atrest audit v2" ‖ u64be(seq)): a disk
// thief reads nothing, and a record decrypts only at its own position. The chain is over the ciphertext, so checking
// it needs no key; `--decrypt` additionally opens every record with the audit key.
//
// A checkpoint signs, with the Ed25519 checkpoint key, the message
//   "atrest audit checkpoint v2\0" ‖ u64be(seq) ‖ hash_{seq-1}
// i.e. "the seq-1 entries before me hash to this": it commits to the count and the chain head. The checkpoint carries
// SHA-256(raw public key) so the verifier picks the right trusted key; the keys themselves are trusted from the
// metadata store (or given on the command line), never from the log. The writer adds one every N records and on
// close. Someone who can write the file can recompute the chain after an edit, but cannot sign: the next checkpoint
// then fails. Records after the last checkpoint are reported as an unsigned tail (writer crashed, still running, or
// the file was cut). Cutting the file back to an earlier checkpoint leaves a valid-looking log; only an external
// anchor (the SIEM copy, or a head remembered from an earlier `audit verify`, `--anchor seq:hash`) shows that.
//
// Legacy `v1:` lines (sealed records without a chain, from before this format) are accepted only as a prefix: they are
// folded into hash_0, so the first checkpoint covers them too. A v1 line after a v2 line is reported as tampering.
import { createHash, createPublicKey, type KeyObject, sign, verify } from "node:crypto";
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { IntegrityError } from "../errors.ts";

export const GENESIS_LABEL = Buffer.from("atrest audit chain v2\n");
export const CHECKPOINT_LABEL = Buffer.from("atrest audit checkpoint v2\0");
export const RECORD_AAD_LABEL = "atrest audit v2";
export const HASH_HEX = 64;

export function recordAad(seq: number): Buffer {
  const aad = Buffer.alloc(RECORD_AAD_LABEL.length + 8);
  aad.write(RECORD_AAD_LABEL, 0, "latin1");
  aad.writeBigUInt64BE(BigInt(seq), RECORD_AAD_LABEL.length);
  return aad;
}

/** hash_0 of a file with no legacy prefix. */
export function emptyGenesis(): Buffer {
  return createHash("sha256").update(GENESIS_LABEL).digest();
}

export function chainHash(prev: Buffer, body: Buffer | string): Buffer {
  return createHash("sha256").update(prev).update(body).digest();
}

export function checkpointMessage(seq: number, prevHash: Buffer): Buffer {
  const m = Buffer.alloc(CHECKPOINT_LABEL.length + 8 + prevHash.length);
  CHECKPOINT_LABEL.copy(m, 0);
  m.writeBigUInt64BE(BigInt(seq), CHECKPOINT_LABEL.length);
  prevHash.copy(m, CHECKPOINT_LABEL.length + 8);
  return m;
}

/** Hex SHA-256 of the raw 32-byte Ed25519 public key. */
export function keyFingerprint(publicKey: KeyObject): string {
  const jwk = publicKey.export({ format: "jwk" });
  if (jwk.crv !== "Ed25519" || typeof jwk.x !== "string") throw new TypeError("not an Ed25519 public key");
  return createHash("sha256").update(Buffer.from(jwk.x, "base64url")).digest("hex");
}

export interface Signer {
  privateKey: KeyObject;
  fingerprint: string;
}

export function recordBody(seq: number, sealed: Buffer): string {
  return `v2:r:${seq}:${sealed.toString("base64")}`;
}

export function checkpointBody(seq: number, prevHash: Buffer, signer: Signer): string {
  const sig = sign(null, checkpointMessage(seq, prevHash), signer.privateKey);
  return `v2:c:${seq}:${signer.fingerprint}:${sig.toString("base64")}`;
}

export type BreakKind =
  | "edited" // a line's content does not match its chain hash
  | "deleted-or-reordered" // sequence gap or out of order
  | "truncated" // the file ends inside a line, or before an anchor
  | "bad-signature" // a checkpoint's signature does not verify (forged, or the chain before it was re-computed)
  | "unknown-key" // a checkpoint names a key that is not trusted
  | "malformed"; // not a line this format can produce

export interface ChainBreak {
  line: number;
  seq?: number;
  kind: BreakKind;
  message: string;
}

export interface ChainState {
  /** Last entry's sequence number (0: none). */
  seq: number;
  /** hash_seq (hash_0 when empty). */
  hash: Buffer;
  /** Lines read, including legacy ones. */
  lines: number;
  legacy: number;
  records: number;
  checkpoints: number;
  lastCheckpoint?: { line: number; seq: number; hash: string };
  /** Records after the last checkpoint (or all of them when there is none). */
  unsigned: number;
  /** Bytes of complete lines (the offset a writer appends at). */
  bytes: number;
}

export interface VerifyOptions {
  /** Trusted checkpoint keys by fingerprint. Absent: checkpoint signatures are not checked (writer's tail scan). */
  publicKeys?: Map<string, KeyObject>;
  /** Called with each record's seq and sealed bytes (for `--decrypt`); return an error message to stop. */
  onRecord?: (seq: number, sealed: Buffer, line: number) => string | undefined;
  /** An earlier head that must still be in the file: its entry at `seq` must have hash `hash`. */
  anchor?: { seq: number; hash: string };
}

export interface VerifyResult extends ChainState {
  error?: ChainBreak;
}

const NL = 0x0a;
const R_PREFIX = Buffer.from("v2:r:");
const C_PREFIX = Buffer.from("v2:c:");
const V1_PREFIX = Buffer.from("v1:");
const CHUNK = 16 * 1024 * 1024;

function startsWith(buf: Buffer, start: number, end: number, prefix: Buffer): boolean {
  return end - start >= prefix.length && buf.compare(prefix, 0, prefix.length, start, start + prefix.length) === 0;
}

/** Parses the decimal seq at buf[start..] up to ':' → [seq, index of ':'] or undefined. */
function parseSeq(buf: Buffer, start: number, end: number): [number, number] | undefined {
  let n = 0;
  let i = start;
  for (; i < end; i++) {
    const c = buf[i] as number;
    if (c === 0x3a) break;
    if (c < 0x30 || c > 0x39 || i - start > 15) return undefined;
    n = n * 10 + (c - 0x30);
  }
  if (i === start || i === end || (buf[start] === 0x30 && i - start > 1)) return undefined;
  return [n, i];
}

/**
 * Streams an audit log once and checks it: sequence, chain, checkpoint signatures, the anchor. Stops at the first
 * broken entry and reports it. Per line: one SHA-256 and a few byte compares (no decode, no decrypt unless asked).
 */
export function verifyChain(path: string, opts: VerifyOptions = {}): VerifyResult {
  const st: VerifyResult = {
    seq: 0,
    hash: Buffer.alloc(0),
    lines: 0,
    legacy: 0,
    records: 0,
    checkpoints: 0,
    unsigned: 0,
    bytes: 0,
  };
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      st.hash = emptyGenesis();
      return st;
    }
    throw err;
  }
  const genesis = createHash("sha256").update(GENESIS_LABEL);
  let inLegacy = true;
  let prev: Buffer = Buffer.alloc(0);
  let anchorSeen = false;
  const fail = (kind: BreakKind, message: string, seq?: number): VerifyResult => {
    st.error = { line: st.lines, kind, message, ...(seq !== undefined ? { seq } : {}) };
    return st;
  };
  const line = (buf: Buffer, s: number, e: number): VerifyResult | undefined => {
    st.lines++;
    if (inLegacy) {
      if (startsWith(buf, s, e, V1_PREFIX)) {
        genesis.update(buf.subarray(s, e + 1)); // the line and its newline
        st.legacy++;
        return undefined;
      }
      inLegacy = false;
      prev = genesis.digest();
    }
    const isRecord = startsWith(buf, s, e, R_PREFIX);
    if (!isRecord && !startsWith(buf, s, e, C_PREFIX)) {
      if (startsWith(buf, s, e, V1_PREFIX)) return fail("malformed", "legacy v1 record after the chain started");
      return fail("malformed", "not an audit log entry");
    }
    const sp = e - HASH_HEX - 1;
    if (sp <= s + R_PREFIX.length || buf[sp] !== 0x20) return fail("malformed", "no chain hash at the end of the line");
    const parsed = parseSeq(buf, s + R_PREFIX.length, sp);
    if (!parsed) return fail("malformed", "unreadable sequence number");
    const [seq, colon] = parsed;
    if (seq !== st.seq + 1) {
      return fail(
        "deleted-or-reordered",
        seq > st.seq + 1
          ? `expected entry ${st.seq + 1}, found ${seq}: ${seq - st.seq - 1} entr${seq - st.seq - 1 === 1 ? "y" : "ies"} deleted`
          : `expected entry ${st.seq + 1}, found ${seq}: entries reordered or duplicated`,
        seq,
      );
    }
    const body = buf.subarray(s, sp);
    const h = chainHash(prev, body);
    if (h.toString("hex") !== buf.toString("latin1", sp + 1, e)) {
      return fail("edited", `entry ${seq} does not match its chain hash: the line was edited`, seq);
    }
    if (isRecord) {
      st.records++;
      st.unsigned++;
      if (opts.onRecord) {
        const msg = opts.onRecord(seq, Buffer.from(buf.toString("latin1", colon + 1, sp), "base64"), st.lines);
        if (msg) return fail("edited", msg, seq);
      }
    } else {
      const rest = buf.toString("latin1", colon + 1, sp);
      const m = /^([0-9a-f]{64}):([A-Za-z0-9+/]{86}==)$/.exec(rest);
      if (!m) return fail("malformed", `checkpoint ${seq} is unreadable`, seq);
      if (opts.publicKeys) {
        const key = opts.publicKeys.get(m[1] as string);
        if (!key) return fail("unknown-key", `checkpoint ${seq} is signed by an untrusted key ${m[1]}`, seq);
        if (!verify(null, checkpointMessage(seq, prev), key, Buffer.from(m[2] as string, "base64"))) {
          return fail(
            "bad-signature",
            `checkpoint ${seq} has a bad signature: it was forged, or entries before it were altered and re-chained`,
            seq,
          );
        }
      }
      st.checkpoints++;
      st.unsigned = 0;
      st.lastCheckpoint = { line: st.lines, seq, hash: h.toString("hex") };
    }
    if (opts.anchor && seq === opts.anchor.seq) {
      if (h.toString("hex") !== opts.anchor.hash) return fail("edited", `entry ${seq} differs from the anchor`, seq);
      anchorSeen = true;
    }
    prev = h;
    st.seq = seq;
    return undefined;
  };
  try {
    const buf = Buffer.allocUnsafe(CHUNK);
    let have = 0;
    let pos = 0;
    for (;;) {
      const n = readSync(fd, buf, have, buf.length - have, pos);
      pos += n;
      have += n;
      let s = 0;
      for (;;) {
        const e = buf.indexOf(NL, s);
        if (e < 0 || e >= have) break;
        const bad = line(buf, s, e);
        if (bad) return bad;
        st.bytes += e + 1 - s;
        s = e + 1;
      }
      if (n === 0) {
        if (have > s) {
          st.lines++;
          return fail("truncated", "the file ends inside a line: the last entry was cut off");
        }
        break;
      }
      if (s === 0 && have === buf.length) {
        st.lines++;
        return fail("malformed", "line longer than 16 MiB");
      }
      buf.copy(buf, 0, s, have);
      have -= s;
    }
  } finally {
    closeSync(fd);
  }
  if (inLegacy) prev = genesis.digest();
  st.hash = prev;
  if (opts.anchor && !anchorSeen) {
    st.lines++;
    return fail(
      "truncated",
      `the log ends at entry ${st.seq}, before the anchor entry ${opts.anchor.seq}: its tail was cut`,
    );
  }
  return st;
}

/** A trusted public key from its base64 (raw 32 bytes, or SPKI DER) form. */
export function ed25519PublicKey(b64: string): KeyObject {
  const raw = Buffer.from(b64, "base64");
  if (raw.length === 32)
    return createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: raw.toString("base64url") }, format: "jwk" });
  return createPublicKey({ key: raw, format: "der", type: "spki" });
}

/**
 * The writer's view of an existing file: the last complete entry's seq and hash, read from the last 64 KiB; falls
 * back to a full (keyless) scan when the tail holds no v2 entry (a legacy or empty file). Throws on a partial line.
 */
export function readChainHead(path: string): { seq: number; hash: Buffer; bytes: number } {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { seq: 0, hash: emptyGenesis(), bytes: 0 };
    throw err;
  }
  try {
    const { size } = fstatSync(fd);
    // Zero length: a new file (or a character device such as /dev/full, which reads as endless zeros).
    if (size === 0) return { seq: 0, hash: emptyGenesis(), bytes: 0 };
    const window = Math.min(size, 64 * 1024);
    const buf = Buffer.allocUnsafe(window);
    readSync(fd, buf, 0, window, size - window);
    if (window > 0 && buf[window - 1] !== NL) {
      throw new IntegrityError(
        "the audit log ends with a partial entry (a crash or a cut file); run `atrest audit verify` and move it aside",
      );
    }
    const end = window - 1;
    const start = buf.lastIndexOf(NL, end - 1) + 1;
    if (start > 0 || window === size) {
      const last = buf.toString("latin1", start, end);
      const m = /^v2:[rc]:(\d+):\S+ ([0-9a-f]{64})$/.exec(last);
      if (m) return { seq: Number(m[1]), hash: Buffer.from(m[2] as string, "hex"), bytes: size };
    }
  } finally {
    closeSync(fd);
  }
  const scanned = verifyChain(path);
  if (scanned.error)
    throw new IntegrityError(`audit log is damaged at line ${scanned.error.line}: ${scanned.error.message}`);
  return { seq: scanned.seq, hash: scanned.hash, bytes: scanned.bytes };
}
