// Blob store contract: opaque ciphertext objects under random ids. Local disk today, S3 later.

export interface BlobWriter {
  readonly id: string;
  /** Bytes written so far (including any copied prefix). */
  readonly length: number;
  /** Appends buffers in order (one vectored write). */
  write(chunks: Buffer[]): Promise<void>;
  /** fsync, then move into place durably. After this the blob exists under `id`. */
  commit(): Promise<void>;
  /** Removes the temporary file. Safe to call after a failed commit. */
  abort(): Promise<void>;
}

export interface BlobReader {
  readonly size: number;
  /** Reads exactly `length` bytes at `position` (fewer only at the end of the blob). */
  read(position: number, length: number): Promise<Buffer>;
  /** Reads up to `buffer.length` bytes at `position` into `buffer`; returns how many (fewer only at the end). */
  readInto(position: number, buffer: Buffer): Promise<number>;
  close(): Promise<void>;
}

/**
 * In-place access to the first bytes (the container header) of committed blobs, for `keys rewrap`. Synchronous on
 * purpose: rewrap touches one small header per file, and a synchronous open/pread/pwrite/close costs ~10 µs where the
 * promise API costs ~50 µs (measured, 10k files); only the key jobs (CLI) use it, never the server's event loop.
 * Crash safety is the caller's (a redo journal): a write here is not durable until `flush`.
 */
export interface HeadAccess {
  /** The first `length` bytes (fewer if the blob is shorter); undefined if the blob does not exist. */
  read(id: string, length: number): Buffer | undefined;
  /** Overwrites `bytes` at `position` (inside the header); false if the blob does not exist. */
  write(id: string, bytes: Buffer, position: number): boolean;
  /** Returns once every write made so far is on stable storage. */
  flush(): Promise<void>;
}

export interface BlobStore {
  /** Header access for rewrap; absent where blobs cannot be patched in place (object stores: reencrypt instead). */
  heads?(): HeadAccess;
  /** A new blob; when `copyFrom` is given, starts with the first `copyLength` bytes of that blob (resume). */
  create(copyFrom?: { id: string; length: number }): Promise<BlobWriter>;
  open(id: string): Promise<BlobReader>;
  remove(id: string): Promise<void>;
  /** Deletes unfinished temporary blobs and every committed blob not in `keep`; returns how many went. */
  sweep(keep: Set<string>): Promise<{ temp: number; orphans: number }>;
  /** Releases handles the store keeps open. */
  close(): Promise<void>;
  /** Whether the backend answers (readiness); absent: always ready (local disk). */
  ping?(): Promise<void>;
}
