// File versions as atrest containers (docs/sync-protocol.md §4): a random DEK per version, wrapped under the epoch's
// region key into the header's wrapped-DEK slot; container file id = regionId/entryId/fver. A streaming encoder and a
// streaming decoder that takes the blob's signed size, so truncation, extension, reordering, duplication and
// tampering of any segment fail before any plaintext of that segment is returned.
import { KEY_LENGTH } from "../../crypto/aead.ts";
import { zero } from "../../crypto/bytes.ts";
import { randomBytes } from "../../crypto/random.ts";
import { IntegrityError } from "../../errors.ts";
import {
  type ContainerKeys,
  createHeader,
  HEADER_PROBE_BYTES,
  openContainer,
  parseHeader,
  SegmentWriter,
  segmentCount,
} from "../../format/index.ts";
import { unwrapDek, wrapDek, wrappedEpoch } from "./region.ts";

export const fileIdOf = (regionId: string, entryId: string, fver: number): string => `${regionId}/${entryId}/${fver}`;

/** Encoder of one file version: `header`, then `push` chunks, then `finish`. */
export class FileEncoder {
  readonly header: Buffer;
  readonly #writer: SegmentWriter;
  readonly #keys: ContainerKeys;

  constructor(regionKey: Buffer, regionId: string, epoch: number, fileId: string) {
    const dek = randomBytes(KEY_LENGTH);
    try {
      const wrappedDek = wrapDek(regionKey, regionId, epoch, fileId, dek);
      const { header, keys } = createHeader({ dek, fileId, wrappedDek });
      this.header = header;
      this.#keys = keys;
      this.#writer = new SegmentWriter(keys);
    } finally {
      zero(dek);
    }
  }

  push(chunk: Buffer): Buffer[] {
    return this.#writer.push(chunk);
  }

  finish(): Buffer {
    try {
      return this.#writer.finish();
    } finally {
      this.#keys.destroy();
    }
  }
}

/**
 * Decoder of one blob whose total length is known (the manifest's signed blobSize). Feed ciphertext in any chunking;
 * it returns plaintext only of segments that authenticated. `finish` throws unless the final segment was seen.
 */
export class FileDecoder {
  readonly #total: number;
  readonly #keyOf: ((epoch: number) => Buffer) | { dek: Buffer };
  readonly #regionId: string;
  readonly #fileId: string;
  #keys: ContainerKeys | undefined;
  #pending: Buffer[] = [];
  #pendingLength = 0;
  #consumed = 0;
  #index = 0;
  #count = 0;
  #done = false;

  /** `keyOf` gives the region key of an epoch, or `{ dek }` is the file's own key (a share link's holder). */
  constructor(total: number, regionId: string, fileId: string, keyOf: ((epoch: number) => Buffer) | { dek: Buffer }) {
    this.#total = total;
    this.#regionId = regionId;
    this.#fileId = fileId;
    this.#keyOf = keyOf;
  }

  #take(n: number): Buffer {
    const all = this.#pending.length === 1 ? this.#pending[0] : Buffer.concat(this.#pending);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.#pending = rest.length ? [rest] : [];
    this.#pendingLength = rest.length;
    this.#consumed += n;
    return out;
  }

  push(chunk: Buffer): Buffer[] {
    if (this.#done) throw new IntegrityError("sync blob is longer than its signed size");
    if (this.#consumed + this.#pendingLength + chunk.length > this.#total) {
      throw new IntegrityError("sync blob is longer than its signed size");
    }
    this.#pending.push(chunk);
    this.#pendingLength += chunk.length;
    const out: Buffer[] = [];
    if (!this.#keys) {
      const probe = Math.min(HEADER_PROBE_BYTES, this.#total);
      if (this.#pendingLength < probe) return out;
      const head = Buffer.concat(this.#pending);
      const parsed = parseHeader(head.subarray(0, probe));
      const k = this.#keyOf;
      const dek =
        typeof k === "function"
          ? unwrapDek(k(wrappedEpoch(parsed.wrappedDek)), this.#regionId, this.#fileId, parsed.wrappedDek)
          : Buffer.from(k.dek);
      try {
        this.#keys = openContainer(parsed, dek, this.#fileId);
      } finally {
        zero(dek);
      }
      this.#count = segmentCount(parsed.layout, this.#total);
      this.#pending = [head];
      this.#take(parsed.headerLength);
    }
    const keys = this.#keys;
    const sealed = keys.layout.sealedSegmentSize;
    while (this.#index < this.#count) {
      const last = this.#index === this.#count - 1;
      const need = last ? this.#total - this.#consumed : sealed;
      if (this.#pendingLength < need) break;
      out.push(keys.open(this.#index, this.#take(need), last));
      this.#index++;
      if (last) {
        this.#done = true;
        keys.destroy();
      }
    }
    return out;
  }

  finish(): void {
    if (!this.#done) throw new IntegrityError("sync blob is shorter than its signed size");
  }
}

/** Whole-buffer helpers (tests, small files). */
export function encodeFile(regionKey: Buffer, regionId: string, epoch: number, fileId: string, data: Buffer): Buffer {
  const enc = new FileEncoder(regionKey, regionId, epoch, fileId);
  return Buffer.concat([enc.header, ...enc.push(data), enc.finish()]);
}

export function decodeFile(blob: Buffer, regionId: string, fileId: string, keyOf: (epoch: number) => Buffer): Buffer {
  const dec = new FileDecoder(blob.length, regionId, fileId, keyOf);
  const out = dec.push(blob);
  dec.finish();
  return Buffer.concat(out);
}

/** The file key of a blob (its header, at least the first 4096 bytes or the whole blob): for a share link. */
export function fileKeyOf(head: Buffer, regionId: string, fileId: string, keyOf: (epoch: number) => Buffer): Buffer {
  const parsed = parseHeader(head.subarray(0, HEADER_PROBE_BYTES));
  const dek = unwrapDek(keyOf(wrappedEpoch(parsed.wrappedDek)), regionId, fileId, parsed.wrappedDek);
  openContainer(parsed, dek, fileId).destroy();
  return dek;
}
