// Node stream adapters over the pure codec. No file I/O: the caller supplies and consumes the streams.
import { Transform } from "node:stream";
import { IntegrityError } from "../errors.ts";
import type { ContainerKeys } from "../format/container.ts";
import { HEADER_PROBE_BYTES, type ParsedHeader, parseHeader } from "../format/header.ts";
import { SegmentWriter } from "../format/writer.ts";

/**
 * Transform: plaintext in, a whole container out (`header` first, then segments). Backpressure is the Transform's.
 * The caller keeps ownership of `keys` and destroys them after the stream ends.
 */
export function encryptStream(header: Buffer, keys: ContainerKeys): Transform {
  const writer = new SegmentWriter(keys);
  let headerSent = false;
  const sendHeader = (stream: Transform) => {
    if (!headerSent) stream.push(header);
    headerSent = true;
  };
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      try {
        sendHeader(this);
        for (const segment of writer.push(chunk)) this.push(segment);
        callback();
      } catch (error) {
        callback(error as Error);
      }
    },
    flush(callback) {
      try {
        sendHeader(this);
        callback(null, writer.finish());
      } catch (error) {
        callback(error as Error);
      }
    },
  });
}

/** FIFO of chunks that hands out exact-length pieces, copying only when a piece spans chunks. */
class ByteQueue {
  #chunks: Buffer[] = [];
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.length += chunk.length;
  }

  unshift(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.unshift(chunk);
    this.length += chunk.length;
  }

  /** Removes and returns the first `n` bytes; a view into a chunk when possible, else copied into `scratch`. */
  take(n: number, scratch: Buffer): Buffer {
    const first = this.#chunks[0];
    this.length -= n;
    if (first.length >= n) {
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = scratch.subarray(0, n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.#chunks[0];
      const used = chunk.copy(out, filled, 0, Math.min(chunk.length, n - filled));
      filled += used;
      if (used === chunk.length) this.#chunks.shift();
      else this.#chunks[0] = chunk.subarray(used);
    }
    return out;
  }
}

/**
 * Decrypts a whole container read from `source`, yielding plaintext in order. `keysFor` gets the parsed header
 * (e.g. to unwrap its DEK with the key manager) and returns openContainer's result; those keys are destroyed when
 * the generator ends. Stops with IntegrityError at the first bad byte, before yielding anything from that segment.
 */
export async function* decryptStream(
  source: AsyncIterable<Buffer>,
  keysFor: (header: ParsedHeader) => ContainerKeys | Promise<ContainerKeys>,
): AsyncGenerator<Buffer> {
  const queue = new ByteQueue();
  const iterator = source[Symbol.asyncIterator]();
  let ended = false;
  const fill = async (want: number) => {
    while (!ended && queue.length < want) {
      const next = await iterator.next();
      if (next.done) ended = true;
      else queue.push(next.value);
    }
  };

  let keys: ContainerKeys | undefined;
  try {
    await fill(HEADER_PROBE_BYTES);
    const probe = queue.take(Math.min(queue.length, HEADER_PROBE_BYTES), Buffer.alloc(HEADER_PROBE_BYTES));
    const header = parseHeader(probe);
    queue.unshift(probe.subarray(header.headerLength));
    keys = await keysFor(header);
    const { sealedSegmentSize } = keys.layout;
    const scratch = Buffer.alloc(sealedSegmentSize);
    for (let index = 0; ; index++) {
      // A full-size segment is the final one only if nothing follows it, so look one byte past it first.
      await fill(sealedSegmentSize + 1);
      if (queue.length > sealedSegmentSize) {
        yield keys.open(index, queue.take(sealedSegmentSize, scratch), false);
        continue;
      }
      if (queue.length === 0) throw new IntegrityError("container truncated: final segment missing");
      yield keys.open(index, queue.take(queue.length, scratch), true);
      return;
    }
  } finally {
    keys?.destroy();
    await iterator.return?.();
  }
}
