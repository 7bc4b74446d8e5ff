// Messages between the KMS store's synchronous facade (pg-sync.ts) and its PostgreSQL worker (pg-worker.ts).
import type { MessagePort } from "node:worker_threads";

export type PgValue = string | number | null | Uint8Array;

export type PgRequest =
  | { id: number; op: "query"; sql: string; params: PgValue[] }
  | { id: number; op: "begin" | "commit" | "rollback" | "close" }
  | { id: number; op: "migrate"; migrations: string[] };

export type PgReply =
  | { id: number; rows: Record<string, unknown>[]; changes: number; version?: number }
  | { id: number; error: { message: string; code?: string } };

export interface PgWorkerData {
  connectionString: string;
  schema: string;
  /** Int32Array over it: [0] reply ready (the facade waits on it), [1] changes seen on the store's channel. */
  shared: SharedArrayBuffer;
  port: MessagePort;
  /** statement_timeout and lock_timeout for every query, in ms. */
  timeoutMs: number;
}

/** Slot indexes in the shared Int32Array. */
export const REPLY_READY = 0;
export const CHANGES = 1;
