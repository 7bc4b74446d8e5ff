// Incremental encoder. A full segment is never the final one (the final segment always holds at least one padding
// byte), so a segment can be sealed as soon as it fills: nothing is held back waiting to learn whether it is last.
import { zero } from "../crypto/bytes.ts";
import { AtrestError, HandleClosedError } from "../errors.ts";
import type { ContainerKeys } from "./container.ts";
import { segmentOffset } from "./layout.ts";

export interface SegmentWriterOptions {
  /** Index of the first segment this writer seals (resume). Default 0. */
  startIndex?: number;
  /** Data already belonging to segment `startIndex` (fewer than segmentSize bytes; resume). */
  pending?: Buffer;
}

export class SegmentWriter {
  readonly #keys: ContainerKeys;
  readonly #buffer: Buffer;
  #fill = 0;
  #index: number;
  #finished = false;
  #plaintextLength: number;
  #bytesWritten = 0;

  constructor(keys: ContainerKeys, options: SegmentWriterOptions = {}) {
    const { startIndex = 0, pending } = options;
    const size = keys.layout.segmentSize;
    if (!Number.isSafeInteger(startIndex) || startIndex < 0) throw new AtrestError("INVALID_INPUT", "bad startIndex");
    if (pending && pending.length >= size) throw new AtrestError("INVALID_INPUT", "pending data must be < segmentSize");
    this.#keys = keys;
    this.#buffer = Buffer.alloc(size);
    this.#index = startIndex;
    if (pending) this.#fill = pending.copy(this.#buffer);
    this.#plaintextLength = startIndex * size + this.#fill;
  }

  /** Plaintext bytes of the whole file so far (including what preceded a resume). */
  get plaintextLength(): number {
    return this.#plaintextLength;
  }

  /** Sealed bytes this writer has returned so far (segments only, not the header). */
  get bytesWritten(): number {
    return this.#bytesWritten;
  }

  /** Index of the segment the next sealed output will carry. */
  get nextIndex(): number {
    return this.#index;
  }

  #emit(out: Buffer[], data: Buffer): void {
    const sealed = this.#keys.seal(this.#index++, data, false);
    this.#bytesWritten += sealed.length;
    out.push(sealed);
  }

  /** Accepts more plaintext; returns the segments it completed, in order (possibly none). */
  push(chunk: Buffer): Buffer[] {
    if (this.#finished) throw new HandleClosedError("SegmentWriter already finished");
    const size = this.#buffer.length;
    const out: Buffer[] = [];
    let at = 0;
    while (at < chunk.length) {
      if (this.#fill === 0 && chunk.length - at >= size) {
        // Whole segment inside the caller's chunk: seal straight from it, no copy.
        this.#emit(out, chunk.subarray(at, at + size));
        at += size;
        continue;
      }
      const n = chunk.copy(this.#buffer, this.#fill, at, Math.min(chunk.length, at + size - this.#fill));
      this.#fill += n;
      at += n;
      if (this.#fill === size) {
        this.#emit(out, this.#buffer);
        this.#fill = 0;
      }
    }
    this.#plaintextLength += chunk.length;
    return out;
  }

  /** Seals and returns the final (padded) segment. The writer cannot be used afterwards. */
  finish(): Buffer {
    if (this.#finished) throw new HandleClosedError("SegmentWriter already finished");
    this.#finished = true;
    const sealed = this.#keys.seal(this.#index, this.#buffer.subarray(0, this.#fill), true);
    this.#bytesWritten += sealed.length;
    zero(this.#buffer);
    return sealed;
  }
}

/**
 * Prepares an append to an existing container: opens its final segment (IntegrityError if invalid) and returns a
 * writer primed with that segment's data. Write the writer's output from `truncateAt` on, replacing the old final
 * segment; every earlier segment stays as it is.
 */
export function resumeFrom(
  keys: ContainerKeys,
  existing: { segmentCount: number; lastSegmentBytes: Buffer },
): { truncateAt: number; writer: SegmentWriter; plaintextLength: number } {
  const { segmentCount, lastSegmentBytes } = existing;
  if (!Number.isSafeInteger(segmentCount) || segmentCount < 1) {
    throw new AtrestError("INVALID_INPUT", "segmentCount must be >= 1");
  }
  const lastIndex = segmentCount - 1;
  const pending = keys.open(lastIndex, lastSegmentBytes, true);
  try {
    const writer = new SegmentWriter(keys, { startIndex: lastIndex, pending });
    return { truncateAt: segmentOffset(keys.layout, lastIndex), writer, plaintextLength: writer.plaintextLength };
  } finally {
    zero(pending);
  }
}
