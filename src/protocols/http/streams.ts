// Streams between the vfs's handles and HTTP bodies: a Readable over a ReadHandle's byte range (reads one chunk ahead
// of what the socket has taken: backpressure), and writing a request body into a WriteHandle, awaiting each write.
import { Readable } from "node:stream";
import type { ReadHandle, VfsSession, WriteHandle } from "../../vfs/types.ts";
import { WriteBatcher } from "../../vfs/write-batch.ts";

const CHUNK = 256 * 1024;

/**
 * A file's bytes [start, end) as a response body without a copy or a fresh buffer per chunk: when piped into an HTTP
 * response (which is how Fastify sends a stream) it writes views of the reader's decrypted windows (readView) and
 * gives each back once the response's write callback says the socket took it, so the same few window buffers carry
 * the whole file. A 1 GiB GET used to allocate 1 GiB of 256 KiB copies, garbage that grew the RSS by ~70 MiB and
 * sometimes set off major GCs. Read any other way (a zip entry, a copy) it is readableOf.
 */
export function bodyOf(open: () => Promise<ReadHandle>, start: number, end: number): Readable {
  return outlived(new BodyStream(open, start, end));
}

// A read still in flight when the client left fails once the request's handles are closed ("container keys were
// destroyed"), after the reply stopped listening to its body: that late 'error' had no listener and ended the whole
// server. Whoever consumes the stream still gets its errors; an error nobody waits for any more is dropped.
function outlived<T extends Readable>(stream: T): T {
  stream.on("error", () => {});
  return stream;
}

type Sink = NodeJS.WritableStream & {
  write(chunk: Buffer, cb: (err?: Error | null) => void): boolean;
  destroyed?: boolean;
  /** An HTTP/2 compatibility response has no `destroyed` of its own: its stream's says it. */
  stream?: { destroyed: boolean };
};

const gone = (dest: Sink) => dest.destroyed === true || dest.stream?.destroyed === true;

class BodyStream extends Readable {
  readonly #open: () => Promise<ReadHandle>;
  readonly #start: number;
  readonly #end: number;
  #fallback: Readable | undefined;
  #handle: ReadHandle | undefined;
  #piped = false;

  constructor(open: () => Promise<ReadHandle>, start: number, end: number) {
    super({ highWaterMark: CHUNK });
    this.#open = open;
    this.#start = start;
    this.#end = end;
  }

  override pipe<T extends NodeJS.WritableStream>(dest: T, options?: { end?: boolean }): T {
    if (this.#piped || this.#fallback || options?.end === false) return super.pipe(dest, options);
    this.#piped = true;
    this.#pump(dest as unknown as Sink).catch((err: unknown) => this.destroy(err as Error));
    return dest;
  }

  override _read(): void {
    // not piped: the copying stream, forwarded
    if (this.#piped) return;
    if (!this.#fallback) {
      const f = readableOf(this.#open, this.#start, this.#end);
      this.#fallback = f;
      f.on("data", (c: Buffer) => {
        if (!this.push(c)) f.pause();
      });
      f.once("end", () => this.push(null));
      f.once("error", (e) => this.destroy(e));
    } else this.#fallback.resume();
  }

  async #pump(dest: Sink): Promise<void> {
    const handle = await this.#open();
    this.#handle = handle;
    try {
      const stop = Math.min(this.#end, handle.size);
      let pos = this.#start;
      const view =
        handle.readView?.bind(handle) ??
        (async (o: number, n: number) => ({ data: await handle.read(o, n), release: () => {} }));
      while (pos < stop) {
        if (this.destroyed || gone(dest)) return;
        const { data, release } = await view(pos, Math.min(CHUNK, stop - pos));
        if (data.length === 0) {
          release();
          break;
        }
        pos += data.length;
        if (this.destroyed || gone(dest)) {
          release();
          return;
        }
        // the callback runs once the chunk left the response (or the response was destroyed): only then is the
        // window's buffer free to be reused
        if (!dest.write(data, () => release())) await drained(dest);
      }
    } finally {
      await this.#closeHandle();
    }
    if (this.destroyed || gone(dest)) return;
    dest.end();
    // the source's own end, for whoever watches it (Fastify waits for it to finish the reply)
    this.resume();
    this.push(null);
  }

  async #closeHandle(): Promise<void> {
    const h = this.#handle;
    this.#handle = undefined;
    await h?.close().catch(() => {});
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.#fallback?.destroy();
    this.#closeHandle().then(
      () => cb(err),
      () => cb(err),
    );
  }
}

/** Resolves when `dest` can take more, or is gone (the pump then stops). */
function drained(dest: Sink): Promise<void> {
  return new Promise((resolve) => {
    // gone already (its 'close' was before this wait began): waiting for an event that came would never end
    if (gone(dest)) return resolve();
    const stream = dest.stream as unknown as NodeJS.EventEmitter | undefined;
    const done = () => {
      dest.removeListener("drain", done);
      dest.removeListener("close", done);
      dest.removeListener("error", done);
      stream?.removeListener("close", done);
      resolve();
    };
    dest.on("drain", done);
    dest.on("close", done);
    dest.on("error", done);
    // an HTTP/2 response's stream can close without the compatibility response saying so
    stream?.on("close", done);
  });
}

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
  return outlived(
    new Readable({
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
    }),
  );
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
