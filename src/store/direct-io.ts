// O_DIRECT writes for the body of a large blob. A buffered write copies every byte into freshly allocated page-cache
// pages, and on the VMs this is benchmarked on that first touch of a page is the largest single cost of an upload:
// 28-37% of the server's CPU samples in a 512 MiB HTTPS PUT (`perf`: copy_folio_from_iter_atomic on the thread pool),
// 1.3 s of system CPU per 512 MiB for `dd conv=fdatasync` against 0.07-0.09 with oflag=direct. A blob is fsynced before
// its upload is acknowledged anyway; what the page cache gave was a warm first read right after the upload, which now
// reads from the disk (buffered: later reads are warm again). MinIO writes objects with O_DIRECT for the same reasons.
// Small blobs (under DIRECT_FROM_BYTES) stay buffered, as do blobs on a file system that refuses O_DIRECT and
// processes without atrest's native binding (it tells where a buffer's memory starts).
//
// Reading around the page cache as well was measured and not kept: the first read of a fresh upload cost 1.5-1.9
// instead of 3.0-3.4 CPU s/GiB, but every later one 1.5-1.8 instead of 0.9-1.4, and took 2-3x the wall time.
//
// O_DIRECT wants block-aligned memory, file offsets and lengths: the sealed batches are neither (16 segments of
// 64 KiB + 28 bytes), so they are copied into an aligned stage that is written once full; the last partial block goes
// through the ordinary descriptor at finish().
import { close, closeSync, constants, openSync, readSync, write } from "node:fs";
import { pageOffset } from "../crypto/gcm-native.ts";

/** A blob switches to direct writes once it reaches this size. */
export const DIRECT_FROM_BYTES = 4 << 20;
const BLOCK = 4096;
const STAGE_BYTES = 1 << 20;
/** Stages in use at once over all writers; more large uploads than this write through the page cache. */
const MAX_STAGES = 32;
const MAX_FREE_STAGES = 4;

let stagesInUse = 0;
const freeStages: Buffer[] = [];

function takeStage(): Buffer | undefined {
  if (stagesInUse >= MAX_STAGES) return undefined;
  let stage = freeStages.pop();
  if (stage === undefined) {
    // its own ArrayBuffer (not Node's shared pool), a block longer so that an aligned 1 MiB fits in it
    const whole = Buffer.allocUnsafeSlow(STAGE_BYTES + BLOCK);
    const at = pageOffset(whole);
    if (at === undefined) return undefined;
    const skip = (BLOCK - at) % BLOCK;
    stage = whole.subarray(skip, skip + STAGE_BYTES);
  }
  stagesInUse++;
  return stage;
}

function giveStage(stage: Buffer): void {
  stagesInUse--;
  // ciphertext and headers only (what is on disk anyway): nothing to zero
  if (freeStages.length < MAX_FREE_STAGES) freeStages.push(stage);
}

function writeAt(fd: number, buffer: Buffer, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) =>
    write(fd, buffer, 0, length, position, (err, n) => (err ? reject(err) : resolve(n))),
  );
}

async function writeFully(fd: number, buffer: Buffer, position: number): Promise<void> {
  for (let done = 0; done < buffer.length; ) {
    done += await writeAt(fd, buffer.subarray(done), buffer.length - done, position + done);
  }
}

/** The file system or the kernel refused a direct write for its alignment or the flag itself. */
const refused = (err: unknown) =>
  ["EINVAL", "EOPNOTSUPP", "ENOTSUP"].includes((err as NodeJS.ErrnoException).code ?? "");

/**
 * The tail of a blob from a block boundary on, written with O_DIRECT through a stage. The caller's descriptor (opened
 * read-write) holds everything before `base` and writes the unaligned end; both name the same file.
 */
export class DirectTail {
  readonly #fd: number;
  readonly #buffered: number;
  #stage: Buffer | undefined;
  /** File offset of stage[0] (block-aligned). */
  #base: number;
  #fill: number;
  /** The direct write in flight, if any: the descriptor is closed only after it (a number closed early is reused). */
  #busy: Promise<unknown> = Promise.resolve();
  /** The kernel refused a direct write: everything went through `buffered` instead, and the caller should too. */
  refused = false;

  private constructor(fd: number, buffered: number, stage: Buffer, base: number, fill: number) {
    this.#fd = fd;
    this.#buffered = buffered;
    this.#stage = stage;
    this.#base = base;
    this.#fill = fill;
  }

  /**
   * Starts direct writes at `length` bytes into the file at `path` (`buffered` is its read-write descriptor), or
   * undefined when they are not possible here (no aligned memory, too many at once, O_DIRECT refused).
   */
  static start(path: string, buffered: number, length: number): DirectTail | undefined {
    const stage = takeStage();
    if (stage === undefined) return undefined;
    let fd: number;
    try {
      // a metadata operation in the page cache: not worth a trip through the thread pool
      fd = openSync(path, constants.O_WRONLY | constants.O_DIRECT);
    } catch {
      giveStage(stage);
      return undefined;
    }
    // the partial block before `length` is rewritten whole by the first direct write: read it back (page cache)
    const base = length - (length % BLOCK);
    const fill = length - base;
    try {
      if (fill > 0 && readSync(buffered, stage, 0, fill, base) !== fill) throw new Error("short read");
    } catch {
      closeSync(fd);
      giveStage(stage);
      return undefined;
    }
    return new DirectTail(fd, buffered, stage, base, fill);
  }

  /** Appends `chunks`; resolves once they are in the stage or on their way to the disk. */
  async write(chunks: readonly Buffer[]): Promise<void> {
    for (const chunk of chunks) {
      for (let at = 0; at < chunk.length; ) {
        const stage = this.#stage;
        if (stage === undefined || this.refused) {
          await writeFully(this.#buffered, chunk.subarray(at), this.#base + this.#fill);
          this.#fill += chunk.length - at;
          break;
        }
        const n = chunk.copy(stage, this.#fill, at);
        this.#fill += n;
        at += n;
        if (this.#fill === STAGE_BYTES) await this.#flush(STAGE_BYTES);
      }
    }
  }

  /** Writes what is staged: whole blocks directly, the last partial block through the buffered descriptor. */
  async finish(): Promise<void> {
    const stage = this.#stage;
    if (stage === undefined || this.refused) return;
    const whole = this.#fill - (this.#fill % BLOCK);
    if (whole > 0) await this.#flush(whole);
    if (this.#fill > 0 && this.#stage !== undefined) {
      await writeFully(this.#buffered, this.#stage.subarray(0, this.#fill), this.#base);
      this.#base += this.#fill;
      this.#fill = 0;
    }
  }

  /** Closes the direct descriptor and gives the stage back. Idempotent. */
  close(): void {
    const stage = this.#stage;
    if (stage === undefined) return;
    this.#stage = undefined;
    const fd = this.#fd;
    void this.#busy.finally(() => {
      giveStage(stage);
      close(fd, () => undefined);
    });
  }

  /** Writes stage[0, bytes) (whole blocks) at #base and moves what follows to the stage's start. */
  async #flush(bytes: number): Promise<void> {
    const stage = this.#stage as Buffer;
    try {
      const written = writeFully(this.#fd, stage.subarray(0, bytes), this.#base);
      this.#busy = written.catch(() => undefined);
      await written;
    } catch (err) {
      if (!refused(err)) throw err;
      // Refused (a file system without O_DIRECT, another alignment than 4096): the same bytes, buffered, from now on.
      this.refused = true;
      await writeFully(this.#buffered, stage.subarray(0, this.#fill), this.#base);
      this.#base += this.#fill;
      this.#fill = 0;
      return;
    }
    stage.copy(stage, 0, bytes, this.#fill);
    this.#base += bytes;
    this.#fill -= bytes;
  }
}
