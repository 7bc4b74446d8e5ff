// A synchronous PostgreSQL connection for the KMS store: the KMS's code is synchronous over SQLite (node:sqlite), so
// over PostgreSQL each call posts the statement to a worker thread (pg-worker.ts) and blocks on Atomics.wait until
// the reply is there. The hot paths (data-key wrap/unwrap) never get here: they run on the in-memory key cache, which
// learns of other nodes' commits from a counter the worker bumps on LISTEN/NOTIFY, read without a round trip.
import { MessageChannel, type MessagePort, receiveMessageOnPort, Worker } from "node:worker_threads";
import { parsePostgresUrl } from "../../store/postgres/index.ts";
import { NodeUnavailableError } from "../unavailable.ts";
import { CHANGES, type PgReply, type PgRequest, type PgValue, type PgWorkerData, REPLY_READY } from "./pg-protocol.ts";

const WORKER_URL = new URL("./pg-worker.ts", import.meta.url);
/** A query waits at most this long (statement and lock timeouts inside PostgreSQL are the same). */
const TIMEOUT_MS = 10_000;

type Distribute<T> = T extends unknown ? Omit<T, "id"> : never;

/** The store cannot be reached (or did not answer in time): another node may still reach it. */
export class StoreUnavailableError extends NodeUnavailableError {}

// SQLSTATE classes and codes that say "not now" rather than "wrong": connection exceptions, shutdowns, too many
// connections, statement/lock timeouts; and Node's socket errors (ECONNREFUSED…) from the driver.
const UNAVAILABLE_CODE = /^(08...|57P0[1-3]|53300|57014|55P03|E[A-Z]+)$/;
const UNAVAILABLE_MESSAGE = /connection terminated|connection to the key store lost|timeout|not queryable/i;

export class PgSync {
  readonly schema: string;
  readonly #connectionString: string;
  readonly #shared = new SharedArrayBuffer(8);
  readonly #flags = new Int32Array(this.#shared);
  #worker: Worker | undefined;
  #port: MessagePort | undefined;
  /** The worker a transaction began in: statements after it died must fail, not run in autocommit elsewhere. */
  #txWorker: Worker | undefined;
  #next = 1;
  #open = true;

  constructor(url: string) {
    const { connectionString, schema } = parsePostgresUrl(url);
    this.schema = schema;
    this.#connectionString = connectionString;
    this.#spawn();
  }

  /** Starts the worker; one that died (it should not) is replaced at the next call, as if the connection dropped. */
  #spawn(): { worker: Worker; port: MessagePort } {
    const { port1, port2 } = new MessageChannel();
    const data: PgWorkerData = {
      connectionString: this.#connectionString,
      schema: this.schema,
      shared: this.#shared,
      port: port2,
      timeoutMs: TIMEOUT_MS,
    };
    const worker = new Worker(WORKER_URL, { name: "atrest-kms-pg", workerData: data, transferList: [port2] });
    worker.unref();
    port1.unref();
    // Without a listener an error in the worker would be thrown in the KMS's main thread.
    worker.on("error", () => undefined);
    worker.on("exit", () => {
      if (this.#worker !== worker) return;
      this.#worker = undefined;
      this.#port = undefined;
      port1.close();
      // Whatever the caches hold may have changed meanwhile.
      Atomics.add(this.#flags, CHANGES, 1);
    });
    this.#worker = worker;
    this.#port = port1;
    return { worker, port: port1 };
  }

  /** Commits seen on the store's channel (any node's); moves, never says by how much. */
  changes(): number {
    return Atomics.load(this.#flags, CHANGES);
  }

  get isOpen(): boolean {
    return this.#open;
  }

  call(req: Distribute<PgRequest>): { rows: Record<string, unknown>[]; changes: number; version?: number } {
    if (!this.#open) throw new StoreUnavailableError("the KMS store is closed");
    if (req.op === "commit" || req.op === "rollback") {
      const lost = this.#txWorker !== undefined && this.#txWorker !== this.#worker;
      this.#txWorker = undefined;
      if (lost && req.op === "rollback") return { rows: [], changes: 0 };
      if (lost) throw new StoreUnavailableError("connection to the key store lost inside a transaction");
    } else if (this.#txWorker !== undefined && this.#txWorker !== this.#worker) {
      throw new StoreUnavailableError("connection to the key store lost inside a transaction");
    }
    const reply = this.#roundTrip(req);
    if (req.op === "begin") this.#txWorker = this.#worker;
    return reply;
  }

  #roundTrip(req: Distribute<PgRequest>): { rows: Record<string, unknown>[]; changes: number; version?: number } {
    const port = this.#port ?? this.#spawn().port;
    const id = this.#next++;
    Atomics.store(this.#flags, REPLY_READY, 0);
    port.postMessage({ id, ...req } as PgRequest);
    const deadline = Date.now() + TIMEOUT_MS + 2_000;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0 || Atomics.wait(this.#flags, REPLY_READY, 0, left) === "timed-out") {
        throw new StoreUnavailableError("the KMS store (PostgreSQL) did not answer in time");
      }
      Atomics.store(this.#flags, REPLY_READY, 0);
      // A reply to an earlier call that timed out may come first: skip it.
      for (;;) {
        const got = receiveMessageOnPort(port);
        if (!got) break;
        const reply = got.message as PgReply;
        if (reply.id !== id) continue;
        if ("error" in reply) {
          const { message, code } = reply.error;
          if ((code && UNAVAILABLE_CODE.test(code)) || UNAVAILABLE_MESSAGE.test(message)) {
            throw new StoreUnavailableError(`the KMS store (PostgreSQL) is unavailable: ${message}`);
          }
          const err = new Error(`KMS store: ${message}`) as Error & { code?: string };
          if (code) err.code = code;
          throw err;
        }
        return reply;
      }
    }
  }

  query(sql: string, params: PgValue[]): { rows: Record<string, unknown>[]; changes: number } {
    return this.call({ op: "query", sql, params });
  }

  close(): void {
    if (!this.#open) return;
    try {
      this.call({ op: "close" });
    } catch {
      // closing anyway
    }
    this.#open = false;
    const worker = this.#worker;
    this.#worker = undefined;
    void worker?.terminate();
  }
}
