// Gathers the small pieces a door receives (TLS records and HTTP/2 frames of 16 KiB, socket reads of up to 64 KiB)
// into writes of about 1 MiB to a WriteHandle. Every write is a trip through the upload's quota check and the
// container writer (a promise chain and a sealing-queue check), which per 16 KiB piece cost more than copying the
// bytes; the pieces are handed over as they are (writeParts), so each byte is still copied once, into the container's
// sealing batch, and never joined first (docs/http-performance.md).
import type { WriteHandle } from "./types.ts";

/** Bytes gathered before one write. */
export const WRITE_BATCH_BYTES = 1024 * 1024;

export class WriteBatcher {
  readonly #handle: WriteHandle;
  readonly #limit: number;
  #parts: Buffer[] = [];
  #bytes = 0;

  constructor(handle: WriteHandle, limit = WRITE_BATCH_BYTES) {
    this.#handle = handle;
    this.#limit = limit;
  }

  /** The handle's length once everything gathered so far is written. */
  get size(): number {
    return this.#handle.size + this.#bytes;
  }

  /** Keeps `piece` (not copied: the caller must not reuse it) and writes the batch once it holds the limit. */
  async push(piece: Buffer): Promise<void> {
    if (piece.length === 0) return;
    this.#parts.push(piece);
    this.#bytes += piece.length;
    if (this.#bytes >= this.#limit) await this.flush();
  }

  /** Writes what is gathered, appended at the handle's current length. */
  async flush(): Promise<void> {
    if (this.#bytes === 0) return;
    const parts = this.#parts;
    const bytes = this.#bytes;
    this.#parts = [];
    this.#bytes = 0;
    const h = this.#handle;
    if (parts.length === 1) await h.write(h.size, parts[0]);
    else if (h.writeParts) await h.writeParts(h.size, parts);
    else await h.write(h.size, Buffer.concat(parts, bytes));
  }
}
