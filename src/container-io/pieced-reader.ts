// Random-access reads of a pieced file (a sequence of containers, each opened by its own EncryptedReader). Pieces are
// opened lazily and few at a time, so a 1,000-part object costs the memory of two or three pieces' read-ahead, not of
// all of them, and a Range read of one part unwraps only that part's DEK.
import { HandleClosedError, IntegrityError } from "../errors.ts";

export interface PieceReader {
  readonly size: number;
  read(offset: number, length: number): Promise<Buffer>;
  readView?(offset: number, length: number): Promise<{ data: Buffer; release(): void }>;
  close(): Promise<void>;
}

/** Pieces kept open behind the one being read (pipelined SFTP reads arrive a little out of order). */
const KEEP_BEHIND = 1;

interface Entry {
  reader: Promise<PieceReader>;
  /** read() calls using it now: an evicted piece is closed only when the last one is done. */
  users: number;
  evicted: boolean;
}

function closeEntry(e: Entry): void {
  if (e.users === 0) void e.reader.then((x) => x.close()).catch(() => undefined);
}

export class PiecedReader {
  readonly size: number;
  /** Plaintext offset of piece i; starts[n] = size. */
  readonly #starts: number[];
  /** Opens piece i; `end` (relative to the piece) when the caller reads nothing of it at or past there. */
  readonly #open: (i: number, end: number | undefined) => Promise<PieceReader>;
  /** OpenReadOptions.end: nothing at or past it is read, so no piece starting there is opened ahead. */
  readonly #end: number;
  readonly #onClose: (bytesRead: number) => void;
  readonly #readers = new Map<number, Entry>();
  #bytesRead = 0;
  #closed = false;

  constructor(
    sizes: number[],
    open: (i: number, end: number | undefined) => Promise<PieceReader>,
    onClose: (bytesRead: number) => void,
    end?: number,
  ) {
    this.#starts = [0];
    for (const s of sizes) this.#starts.push((this.#starts[this.#starts.length - 1] as number) + s);
    this.size = this.#starts[sizes.length] as number;
    this.#end = Math.min(this.size, end ?? this.size);
    this.#open = open;
    this.#onClose = onClose;
  }

  /** The piece holding plaintext byte `offset` (< size). */
  #pieceAt(offset: number): number {
    let lo = 0;
    let hi = this.#starts.length - 2;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if ((this.#starts[mid] as number) <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  #entry(i: number): Entry {
    const had = this.#readers.get(i);
    if (had) return had;
    const start = this.#starts[i] as number;
    const stop = this.#starts[i + 1] as number;
    const reader = this.#open(i, this.#end < stop ? Math.max(0, this.#end - start) : undefined).then((r) => {
      const want = (this.#starts[i + 1] as number) - (this.#starts[i] as number);
      if (r.size !== want) {
        void r.close();
        throw new IntegrityError("a piece does not have the size the file records");
      }
      return r;
    });
    const entry: Entry = { reader, users: 0, evicted: false };
    reader.catch(() => {
      if (this.#readers.get(i) === entry) this.#readers.delete(i);
    });
    this.#readers.set(i, entry);
    for (const [k, old] of this.#readers) {
      if (k < i - 1 - KEEP_BEHIND || k > i + 1) {
        this.#readers.delete(k);
        old.evicted = true;
        closeEntry(old);
      }
    }
    return entry;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (this.#closed) throw new HandleClosedError();
    if (offset >= this.size || length <= 0) return Buffer.alloc(0);
    const end = Math.min(this.size, offset + length);
    const out: Buffer[] = [];
    for (let i = this.#pieceAt(offset); i < this.#starts.length - 1 && (this.#starts[i] as number) < end; i++) {
      const start = this.#starts[i] as number;
      const stop = this.#starts[i + 1] as number;
      const entry = this.#entry(i);
      entry.users++;
      try {
        const reader = await entry.reader;
        // the next piece is opened (its DEK unwrapped, its header read) while this one is still being read
        if (end > start + (stop - start) / 2 && i + 2 < this.#starts.length && stop < this.#end) this.#entry(i + 1);
        const from = Math.max(offset, start);
        const to = Math.min(end, stop);
        out.push(await reader.read(from - start, to - from));
      } finally {
        entry.users--;
        if (entry.evicted) closeEntry(entry);
      }
    }
    const buf = out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out);
    this.#bytesRead += buf.length;
    return buf;
  }

  /** A view of the piece's own buffer (ReadHandle.readView): no copy; it stops at the piece's end. */
  async readView(offset: number, length: number): Promise<{ data: Buffer; release(): void }> {
    if (this.#closed) throw new HandleClosedError();
    if (offset >= this.size || length <= 0) return { data: Buffer.alloc(0), release: () => {} };
    const i = this.#pieceAt(offset);
    const start = this.#starts[i] as number;
    const stop = this.#starts[i + 1] as number;
    const entry = this.#entry(i);
    entry.users++;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      entry.users--;
      if (entry.evicted) closeEntry(entry);
    };
    try {
      const reader = await entry.reader;
      if (offset + length > start + (stop - start) / 2 && i + 2 < this.#starts.length && stop < this.#end) {
        this.#entry(i + 1);
      }
      const n = Math.min(length, stop - offset);
      const view = reader.readView
        ? await reader.readView(offset - start, n)
        : { data: await reader.read(offset - start, n), release: () => {} };
      this.#bytesRead += view.data.length;
      return {
        data: view.data,
        release: () => {
          view.release();
          release();
        },
      };
    } catch (err) {
      release();
      throw err;
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const open = [...this.#readers.values()];
    this.#readers.clear();
    await Promise.allSettled(open.map((e) => e.reader.then((x) => x.close())));
    this.#onClose(this.#bytesRead);
  }
}
