// Streams between the vfs's handles and HTTP bodies: a Readable over a ReadHandle's byte range (reads one chunk ahead
// of what the socket has taken: backpressure), and writing a request body into a WriteHandle, awaiting each write.
import { Readable } from "node:stream";
import type { ReadHandle, VfsSession, WriteHandle } from "../../vfs/types.ts";
import { WriteBatcher } from "../../vfs/write-batch.ts";

const CHUNK = 256 * 1024;

/** Bytes [start, end) of a handle; closes it when done, destroyed or failed. `open` defers opening to the first read. */
export function readableOf(open: () => Promise<ReadHandle>, start = 0, end?: number): Readable {
  let handle: ReadHandle | undefined;
  let pos = start;
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await handle?.close().catch(() => {});
  };
  return new Readable({
    highWaterMark: CHUNK,
    async read() {
      try {
        handle ??= await open();
        const stop = Math.min(end ?? handle.size, handle.size);
        if (pos >= stop) {
          await close();
          this.push(null);
          return;
        }
        const buf = await handle.read(pos, Math.min(CHUNK, stop - pos));
        if (buf.length === 0) {
          await close();
          this.push(null);
          return;
        }
        pos += buf.length;
        this.push(buf);
      } catch (err) {
        this.destroy(err as Error);
      }
    },
    destroy(err, cb) {
      close().then(
        () => cb(err),
        () => cb(err),
      );
    },
  });
}

/**
 * Writes `body` into a handle opened by `open` and commits it; on any failure (client gone, short body, quota) the
 * new version is discarded, so nothing half-written is ever visible. `expected` is the declared length, if any.
 */
export async function writeBody(
  body: AsyncIterable<Buffer | Uint8Array>,
  handle: WriteHandle,
  options: { expected?: number; aborted?: () => boolean } = {},
): Promise<{ written: number; stat: Awaited<ReturnType<WriteHandle["close"]>> }> {
  const start = handle.size;
  // 16–64 KiB pieces gathered into ~1 MiB writes, handed over as parts (vfs/write-batch.ts)
  const out = new WriteBatcher(handle);
  try {
    for await (const chunk of body) {
      const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      if (options.expected !== undefined && out.size - start + buf.length > options.expected) {
        throw new BodyLengthError("body longer than Content-Length");
      }
      await out.push(buf);
    }
    await out.flush();
    // an HTTP/2 stream reset (or a cut HTTP/1.1 chunked body) may end the body without an error: never commit that
    if (options.aborted?.()) throw new BodyLengthError("the client went away before the body was complete");
    if (options.expected !== undefined && handle.size - start !== options.expected) {
      throw new BodyLengthError(
        `body shorter than Content-Length (${handle.size - start} of ${options.expected} bytes)`,
      );
    }
  } catch (err) {
    await handle.abort(false).catch(() => {});
    throw err;
  }
  const written = handle.size - start;
  const stat = await handle.close();
  return { written, stat };
}

export class BodyLengthError extends Error {}

/** Copies a file within one session: read → write → commit, or nothing at all. */
export async function copyFile(vfs: VfsSession, from: string, to: string, overwrite: boolean): Promise<void> {
  const src = await vfs.openRead(from);
  try {
    const dst = await vfs.openWrite(to, { truncate: true, exclusive: !overwrite });
    await writeBody(
      readableOf(async () => src),
      dst,
    );
  } finally {
    await src.close().catch(() => {});
  }
}
