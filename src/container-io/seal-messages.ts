// Messages between SealPool (seal-pool.ts) and its workers (seal-worker.ts), in one place both import.
import type { KeyObject } from "node:crypto";
import type { Layout } from "../format/layout.ts";

/** Consecutive sealed segments to open under registered keys. `sealed` and `output` are transferred. */
export interface OpenJob {
  /** From SealPool.register. */
  keys: number;
  /** Index of the first segment. */
  startIndex: number;
  /** The segments as on disk, in the first `sealedLength` bytes. */
  sealed: ArrayBuffer;
  sealedLength: number;
  /** Whether the range ends with the container's final segment. */
  last: boolean;
  /** A recycled buffer to decrypt into; ignored when too small. */
  output?: ArrayBuffer;
}

/** Registers one container's segment key under `keys` (ContainerKeys.sealWorkerParams). */
export interface KeysMessage {
  type: "keys";
  keys: number;
  /** The segment key. KeyObjects survive postMessage; never log or persist it. */
  key: KeyObject;
  /** u16 len ‖ file id. */
  fileIdField: Uint8Array;
  layout: Layout;
}

/** Forgets the keys registered under `keys`; jobs sent before this message still complete. */
export interface ReleaseMessage {
  type: "release";
  keys: number;
}

export interface SealRequest {
  type: "seal";
  id: number;
  keys: number;
  /** Index of the batch's first segment. */
  startIndex: number;
  /** A whole number of full segments; transferred here, and transferred back (for reuse) with the reply. */
  plaintext: ArrayBuffer;
  /** A buffer to seal into (recycled); used when large enough, else a new one is allocated. */
  output?: ArrayBuffer;
}

/** SealPool's OpenJob, as posted to the worker. */
export type OpenRequest = OpenJob & { type: "open"; id: number };

export type WorkerRequest = KeysMessage | ReleaseMessage | SealRequest | OpenRequest;

export interface SealReply {
  type: "seal";
  id: number;
  /** The batch's segments, each segmentSize + 28 bytes, concatenated in the first `length` bytes. */
  sealed: ArrayBuffer;
  length: number;
  /** The request's plaintext buffer, handed back so the writer can refill it instead of allocating. */
  plaintext: ArrayBuffer;
}

export interface OpenReply {
  type: "open";
  id: number;
  /** Segment startIndex + i's plaintext at i * segmentSize; `length` bytes in all (the final one unpadded). */
  plaintext: ArrayBuffer;
  length: number;
  /** The request's sealed buffer, handed back for reuse. */
  sealed: ArrayBuffer;
}

export interface ErrorReply {
  type: "error";
  id: number;
  error: string;
  /** An authentication failure: rethrown as IntegrityError on the main thread. */
  integrity: boolean;
}

export type WorkerReply = SealReply | OpenReply | ErrorReply;
