// Streaming OpenPGP packet-structure check (RFC 9580 §4, §10.3): follows packet headers and lengths (including
// partial body lengths) as bytes arrive, without buffering bodies, and decides whether the stream is an encrypted
// message: optional Marker packets, one or more PKESK/SKESK, then exactly one SEIPD/SED/AEAD packet ending exactly at
// the end of the stream. ASCII armor is decoded on the fly. Memory is bounded (a header, one armor line).
import { AtrestError } from "../errors.ts";

export const TAG = {
  PKESK: 1,
  SIGNATURE: 2,
  SKESK: 3,
  ONE_PASS_SIGNATURE: 4,
  SED: 9,
  MARKER: 10,
  LITERAL: 11,
  SEIPD: 18,
  AEAD: 20,
  COMPRESSED: 8,
} as const;

const ENCRYPTED_DATA: readonly number[] = [TAG.SEIPD, TAG.SED, TAG.AEAD];

function refuse(why: string): AtrestError {
  return new AtrestError("REFUSED", `not an OpenPGP-encrypted message: ${why}`);
}

/** What the check learned from a complete, well-formed encrypted message. */
export interface EncryptedMessageInfo {
  /** Recipient key ids (hex) of v3 PKESK packets; `0000000000000000` = anonymous recipient. */
  recipientKeyIds: string[];
  /** Number of password (SKESK) packets. */
  passwords: number;
  armored: boolean;
}

type State =
  | { kind: "header" }
  | { kind: "body"; left: number; partial: boolean }
  | { kind: "partial-length" }
  | { kind: "to-end" };

/** Walks binary packets. Call `push` for each chunk, `end` once; both throw REFUSED on the first violation. */
class PacketWalker {
  #state: State = { kind: "header" };
  #header: number[] = [];
  #tag = 0;
  #seenEsk = 0;
  #seenData = false;
  #finishedData = false;
  #bodyPrefix: number[] = [];
  readonly info: EncryptedMessageInfo = { recipientKeyIds: [], passwords: 0, armored: false };

  push(chunk: Uint8Array): void {
    let i = 0;
    while (i < chunk.length) {
      const s = this.#state;
      if (s.kind === "to-end") return;
      if (s.kind === "header" || s.kind === "partial-length") {
        this.#header.push(chunk[i++]);
        const parsed = s.kind === "header" ? this.#parseHeader() : this.#parsePartialLength();
        if (parsed) this.#header = [];
        continue;
      }
      const n = Math.min(s.left, chunk.length - i);
      if (this.#tag === TAG.PKESK && this.#bodyPrefix.length < 9) {
        for (let j = 0; j < n && this.#bodyPrefix.length < 9; j++) this.#bodyPrefix.push(chunk[i + j]);
      }
      i += n;
      s.left -= n;
      if (s.left === 0) {
        if (s.partial) this.#state = { kind: "partial-length" };
        else this.#packetDone();
      }
    }
  }

  end(): EncryptedMessageInfo {
    const s = this.#state;
    if (s.kind === "to-end") this.#packetDone();
    else if (s.kind !== "header" || this.#header.length > 0) throw refuse("truncated packet");
    if (!this.#finishedData) throw refuse(this.#seenEsk ? "no encrypted data packet" : "empty or no packets");
    return this.info;
  }

  #begin(tag: number): void {
    this.#tag = tag;
    this.#bodyPrefix = [];
    if (this.#finishedData) throw refuse(`data after the encrypted data packet (packet type ${tag})`);
    if (tag === TAG.MARKER && !this.#seenData) return;
    if (tag === TAG.PKESK || tag === TAG.SKESK) {
      this.#seenEsk++;
      if (tag === TAG.SKESK) this.info.passwords++;
      return;
    }
    if (ENCRYPTED_DATA.includes(tag)) {
      if (this.#seenEsk === 0) throw refuse("encrypted data without a session key packet");
      this.#seenData = true;
      return;
    }
    const what =
      tag === TAG.LITERAL || tag === TAG.COMPRESSED || tag === TAG.ONE_PASS_SIGNATURE || tag === TAG.SIGNATURE
        ? "a plaintext (signed or literal) OpenPGP message"
        : `unexpected packet type ${tag}`;
    throw refuse(what);
  }

  #packetDone(): void {
    if (this.#tag === TAG.PKESK && this.#bodyPrefix[0] === 3 && this.#bodyPrefix.length === 9) {
      this.info.recipientKeyIds.push(Buffer.from(this.#bodyPrefix.slice(1)).toString("hex"));
    }
    if (ENCRYPTED_DATA.includes(this.#tag)) this.#finishedData = true;
    this.#state = { kind: "header" };
  }

  /** True once a full header is in #header (and the state moved on). */
  #parseHeader(): boolean {
    const h = this.#header;
    const first = h[0];
    if ((first & 0x80) === 0) throw refuse("not an OpenPGP packet stream");
    if (first & 0x40) {
      if (h.length === 1) return false;
      this.#begin(first & 0x3f);
      return this.#newLength(h.slice(1));
    }
    const tag = (first >> 2) & 0x0f;
    const lengthType = first & 3;
    if (h.length === 1) this.#begin(tag);
    if (lengthType === 3) {
      this.#state = { kind: "to-end" };
      return true;
    }
    const size = [1, 2, 4][lengthType];
    if (h.length < 1 + size) return false;
    let len = 0;
    for (let k = 1; k <= size; k++) len = len * 256 + h[k];
    this.#body(len, false);
    return true;
  }

  /** Parses a new-format length from `l` (octets after the tag); false while incomplete. */
  #newLength(l: number[]): boolean {
    const o1 = l[0];
    if (o1 < 192) this.#body(o1, false);
    else if (o1 < 224) {
      if (l.length < 2) return false;
      this.#body(((o1 - 192) << 8) + l[1] + 192, false);
    } else if (o1 === 255) {
      if (l.length < 5) return false;
      this.#body(((l[1] << 24) >>> 0) + (l[2] << 16) + (l[3] << 8) + l[4], false);
    } else this.#body(1 << (o1 & 0x1f), true);
    return true;
  }

  #parsePartialLength(): boolean {
    return this.#newLength(this.#header);
  }

  #body(len: number, partial: boolean): void {
    if (len === 0 && !partial) this.#packetDone();
    else this.#state = { kind: "body", left: len, partial };
  }
}

const ARMOR_BEGIN = "-----BEGIN PGP MESSAGE-----";
const MAX_LINE = 4096;

/**
 * Checks a stream is an OpenPGP-encrypted message, binary or ASCII-armored. The first bytes decide which; armored
 * input is base64-decoded line by line into the packet walker.
 */
export class EncryptedMessageCheck {
  readonly #walker = new PacketWalker();
  #mode: "unknown" | "binary" | "armor-begin" | "armor-headers" | "armor-body" | "armor-tail" = "unknown";
  #sniff = Buffer.alloc(0);
  #line = "";
  #b64 = "";

  push(chunk: Uint8Array): void {
    if (this.#mode === "unknown") {
      this.#sniff = Buffer.concat([this.#sniff, chunk]);
      const text = this.#sniff.toString("latin1").trimStart();
      if (text.length < ARMOR_BEGIN.length && this.#sniff.length < 64 && (text === "" || ARMOR_BEGIN.startsWith(text)))
        return;
      const buffered = this.#sniff;
      this.#sniff = Buffer.alloc(0);
      if (text.startsWith(ARMOR_BEGIN)) {
        this.#mode = "armor-begin";
        this.#walker.info.armored = true;
        this.#text(buffered.toString("latin1").trimStart().slice(ARMOR_BEGIN.length));
      } else {
        this.#mode = "binary";
        this.#walker.push(buffered);
      }
      return;
    }
    if (this.#mode === "binary") this.#walker.push(chunk);
    else this.#text(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString("latin1"));
  }

  end(): EncryptedMessageInfo {
    if (this.#mode === "unknown") {
      if (this.#sniff.length === 0) throw refuse("empty file");
      this.#mode = "binary";
      this.#walker.push(this.#sniff);
    }
    if (this.#mode !== "binary") {
      if (this.#line) this.#onLine(this.#line);
      if (this.#mode !== "armor-tail") throw refuse("armor without its END line");
    }
    return this.#walker.end();
  }

  #text(text: string): void {
    let start = 0;
    for (;;) {
      const nl = text.indexOf("\n", start);
      if (nl < 0) break;
      this.#onLine(this.#line + text.slice(start, nl));
      this.#line = "";
      start = nl + 1;
    }
    this.#line += text.slice(start);
    if (this.#line.length > MAX_LINE) throw refuse("armor line too long");
  }

  #onLine(raw: string): void {
    const line = raw.replace(/\r$/, "").trim();
    if (this.#mode === "armor-begin") {
      if (line !== "") throw refuse("invalid armor BEGIN line");
      this.#mode = "armor-headers";
      return;
    }
    if (this.#mode === "armor-headers") {
      // "Key: value" headers until an empty line.
      if (line === "") this.#mode = "armor-body";
      else if (!/^[A-Za-z][A-Za-z0-9-]*: /.test(line) && line !== "") {
        // Some writers omit the blank line when there are no headers: treat it as body.
        this.#mode = "armor-body";
        this.#onLine(raw);
      }
      return;
    }
    if (this.#mode === "armor-tail") {
      if (line !== "") throw refuse("data after the armor END line");
      return;
    }
    if (line === "-----END PGP MESSAGE-----") {
      this.#flushBase64(true);
      this.#mode = "armor-tail";
      return;
    }
    if (line.startsWith("=") && line.length === 5) return; // CRC-24 checksum line (optional, not checked)
    if (!/^[A-Za-z0-9+/=]*$/.test(line)) throw refuse("invalid armor");
    this.#b64 += line;
    this.#flushBase64(false);
  }

  #flushBase64(final: boolean): void {
    const usable = final ? this.#b64.length : this.#b64.length - (this.#b64.length % 4);
    if (usable === 0) return;
    this.#walker.push(Buffer.from(this.#b64.slice(0, usable), "base64"));
    this.#b64 = this.#b64.slice(usable);
  }
}
