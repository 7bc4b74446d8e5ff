// One SIEM destination: reads the audit log from its persisted cursor, filters, encodes, frames and sends, and moves
// the cursor only over records it counts as delivered. The delivery rule (docs/audit.md "Delivery"):
//
//   - plain syslog has no acknowledgement, so a record written to a TCP/TLS connection counts as delivered once the
//     connection has stayed open `confirmMs` after the write, or when the connection then ends with a clean close
//     (the receiver's FIN, or ours answered by its FIN, without a reset: the receiver read everything before it);
//   - on any other loss of the connection (reset, error, timeout) the destination reconnects with backoff and resends
//     from the first record not yet counted as delivered: at-least-once, in order; the sequence number in every
//     message lets a SIEM drop the rare duplicate;
//   - UDP has no connection: a datagram counts as delivered once sent.
//
// The cursor (seq + byte offset of the last delivered record) is written atomically to
// <data>/audit/spool/<name>/cursor.json at most every 250 ms and at stop, so a restart resumes after the last record
// known to be delivered. The spool holds no event data: the events stay in the encrypted, hash-chained log.
import type { Socket as UdpSocket } from "node:dgram";
import { mkdirSync, readFileSync } from "node:fs";
import type { Socket } from "node:net";
import { hostname } from "node:os";
import { join } from "node:path";
import { writeFileDurable, writeFileDurableSync } from "../fsutil/durable.ts";
import type { Logger } from "../logger.ts";
import type { EventFilter } from "./filter.ts";
import { type Cursor, CursorMismatchError, type LogReader } from "./reader.ts";
import { type Format, type MessageOptions, octetFrame, syslogMessage } from "./syslog/message.ts";
import {
  connectStream,
  connectUdp,
  describeError,
  loadTlsMaterial,
  type TlsMaterial,
  type TransportOptions,
} from "./syslog/transport.ts";

export interface DestinationOptions extends TransportOptions {
  name: string;
  format: Format;
  leefDelimiter?: string;
  facility?: number;
  /** A written record counts as delivered after the connection stayed up this long (default 1000 ms). */
  confirmMs?: number;
  /** Reconnect backoff: starts at 250 ms, doubles, capped here (default 5000 ms). */
  retryMaxMs?: number;
  /** Records not yet delivered above which producers are slowed down (0 = no bound). */
  maxBacklog?: number;
  /** Where a destination without a saved cursor starts: the whole log (default) or only new records. */
  startAt?: "beginning" | "end";
}

export interface DestinationStats {
  name: string;
  transport: string;
  host: string;
  port: number;
  format: Format;
  state: "connecting" | "connected" | "down" | "stopped";
  connected: boolean;
  lastError?: string;
  /** Messages and bytes (framed) handed to the connection, resends included. */
  sent: number;
  bytes: number;
  /** Records that did not pass the filter. */
  filtered: number;
  /** Records that did not decrypt (reported by `audit verify`). */
  unreadable: number;
  resends: number;
  /** Last record counted as delivered (seq in the log). */
  deliveredSeq: number;
  /** Last record read from the log. */
  readSeq: number;
}

const BATCH = 2048;
/** Writes this close to a receiver's own close may have crossed its FIN; they are resent. */
const CROSSING_GUARD_MS = 50;
const POLL_MS = 500;

export function spoolDir(auditDir: string, name: string): string {
  return join(auditDir, "spool", name);
}

export function readCursor(dir: string): Cursor | undefined {
  try {
    const c = JSON.parse(readFileSync(join(dir, "cursor.json"), "utf8"));
    if (Number.isSafeInteger(c.seq) && Number.isSafeInteger(c.offset)) return { seq: c.seq, offset: c.offset };
  } catch {}
  return undefined;
}

interface Mark {
  cursor: Cursor;
  at: number;
}

export class Destination {
  readonly options: DestinationOptions;
  readonly #reader: LogReader;
  readonly #filter: EventFilter;
  readonly #log: Logger;
  readonly #dir: string;
  readonly #onStateChange: (() => void) | undefined;
  readonly #tls: TlsMaterial;
  readonly #message: MessageOptions;
  #delivered: Cursor;
  #savedSeq = -1;
  #readPos: Cursor;
  #marks: Mark[] = [];
  #stream: Socket | undefined;
  #udp: UdpSocket | undefined;
  #state: DestinationStats["state"] = "connecting";
  #lastError: string | undefined;
  #stopping = false;
  #wake: (() => void) | undefined;
  #loop: Promise<void> | undefined;
  #lastSave = 0;
  #saving: Promise<void> | undefined;
  readonly #stats = { sent: 0, bytes: 0, filtered: 0, unreadable: 0, resends: 0 };

  constructor(
    options: DestinationOptions,
    deps: {
      reader: LogReader;
      filter: EventFilter;
      logger: Logger;
      dir: string;
      /** Called when the state (connecting, connected, down, stopped) changes, e.g. to republish the stats file. */
      onStateChange?: () => void;
    },
  ) {
    this.options = options;
    this.#reader = deps.reader;
    this.#filter = deps.filter;
    this.#log = deps.logger;
    this.#dir = deps.dir;
    this.#onStateChange = deps.onStateChange;
    this.#tls = options.transport === "tls" ? loadTlsMaterial(options) : {};
    this.#message = {
      format: options.format,
      hostname: hostname(),
      procId: process.pid,
      facility: options.facility,
      leefDelimiter: options.leefDelimiter,
    };
    mkdirSync(this.#dir, { recursive: true, mode: 0o700 });
    let start = readCursor(this.#dir) ?? (options.startAt === "end" ? this.#reader.end() : { seq: 0, offset: 0 });
    if (!this.#reader.valid(start)) {
      // The log was replaced or cut back (moved aside after damage): find the same seq in it, else start over.
      const found = this.#reader.seek(start.seq);
      this.#log.warn(
        { destination: options.name, cursor: start, resumed: found },
        "audit destination: cursor does not match the audit log; resuming by sequence number",
      );
      start = found;
    }
    this.#delivered = start;
    this.#readPos = { ...start };
  }

  start(): void {
    this.#loop ??= this.#run().catch((err) => {
      this.#log.error({ destination: this.options.name, err }, "audit destination stopped on an internal error");
      this.#setState("down");
      this.#lastError = `internal error: ${(err as Error).message}`;
    });
  }

  /** New records may be in the log. */
  wake(): void {
    this.#wake?.();
  }

  stats(): DestinationStats {
    const o = this.options;
    return {
      name: o.name,
      transport: o.transport,
      host: o.host,
      port: o.port,
      format: o.format,
      state: this.#state,
      connected: this.#state === "connected",
      ...(this.#lastError !== undefined ? { lastError: this.#lastError } : {}),
      ...this.#stats,
      deliveredSeq: this.#delivered.seq,
      readSeq: this.#readPos.seq,
    };
  }

  get deliveredSeq(): number {
    return this.#delivered.seq;
  }

  /**
   * Graceful stop: sends what is in the log now (up to `drainMs`), closes the connection cleanly so the records
   * written last count as delivered, and saves the cursor.
   */
  async stop(drainMs = 3000): Promise<void> {
    const deadline = Date.now() + drainMs;
    while (this.#state === "connected" && this.#readPos.offset < this.#reader.size() && Date.now() < deadline) {
      this.wake();
      await sleep(20);
    }
    this.#stopping = true;
    this.wake();
    await this.#loop;
    if (this.#stream) await this.#closeGracefully(Math.max(500, deadline - Date.now()));
    if (this.#udp) {
      this.#udp.close();
      this.#udp = undefined;
    }
    this.#confirm(Date.now());
    await this.#saving;
    this.#save(true);
    this.#setState("stopped");
  }

  async #run(): Promise<void> {
    let backoff = 250;
    while (!this.#stopping) {
      if (!this.#stream && !this.#udp) {
        try {
          await this.#connect();
          backoff = 250;
        } catch (err) {
          this.#setDown(describeError(err, this.options));
          await this.#sleep(backoff);
          backoff = Math.min(backoff * 2, this.options.retryMaxMs ?? 5000);
          continue;
        }
      }
      this.#confirm(Date.now());
      this.#save(false);
      let batch: ReturnType<LogReader["read"]>;
      try {
        batch = this.#reader.read(this.#readPos, BATCH);
      } catch (err) {
        if (!(err instanceof CursorMismatchError)) throw err;
        this.#log.warn({ destination: this.options.name, err: err.message }, "audit log changed under the reader");
        this.#readPos = this.#reader.seek(this.#readPos.seq);
        continue;
      }
      if (batch.next.offset === this.#readPos.offset) {
        await this.#sleep(this.#marks.length > 0 ? Math.min(POLL_MS, this.options.confirmMs ?? 1000) : POLL_MS);
        continue;
      }
      const ok = await this.#send(batch.entries);
      if (!ok) continue; // connection lost mid-batch: #onLost rewound the read position
      this.#readPos = batch.next;
      this.#marks.push({ cursor: batch.next, at: Date.now() });
      if (this.#udp) this.#confirm(Number.POSITIVE_INFINITY);
    }
  }

  /** Encodes and writes one batch; false if the connection was lost meanwhile. */
  async #send(entries: ReturnType<LogReader["read"]>["entries"]): Promise<boolean> {
    let frames = "";
    let count = 0;
    for (const e of entries) {
      if (e.record === undefined) {
        this.#stats.unreadable++;
        continue;
      }
      if (!this.#filter(e.record)) {
        this.#stats.filtered++;
        continue;
      }
      const msg = syslogMessage(e.record, e.seq, this.#message);
      if (this.#udp) {
        const udp = this.#udp;
        const buf = Buffer.from(msg, "utf8");
        const err = await new Promise<Error | null>((resolve) => udp.send(buf, (e2) => resolve(e2)));
        if (err) {
          this.#onLost(err);
          return false;
        }
        this.#stats.sent++;
        this.#stats.bytes += buf.length;
        continue;
      }
      // RFC 6587 octet counting; one buffer per batch
      frames += octetFrame(msg);
      count++;
    }
    const stream = this.#stream;
    if (count === 0 || !stream) return this.#stream !== undefined || this.#udp !== undefined;
    const buf = Buffer.from(frames, "utf8");
    const flushed = stream.write(buf);
    this.#stats.sent += count;
    this.#stats.bytes += buf.length;
    if (!flushed) {
      await new Promise<void>((resolve) => {
        const done = () => {
          stream.off("drain", done);
          stream.off("close", done);
          resolve();
        };
        stream.on("drain", done);
        stream.on("close", done);
      });
    }
    return this.#stream === stream;
  }

  async #connect(): Promise<void> {
    this.#setState("connecting");
    const o = this.options;
    if (o.transport === "udp") {
      const udp = await connectUdp(o);
      udp.on("error", (err) => this.#onLost(err));
      this.#udp = udp;
    } else {
      const stream = await connectStream(o, this.#tls);
      stream.setKeepAlive(true, 10_000);
      stream.setNoDelay(true);
      const loopback = isLoopback(stream.remoteAddress);
      let endedAt: number | undefined;
      let failed: Error | undefined;
      stream.on("data", () => {}); // a syslog receiver sends nothing; drain anything so a FIN is seen
      stream.on("end", () => {
        endedAt = Date.now();
      });
      stream.on("error", (err) => {
        failed = err;
      });
      stream.on("close", () => {
        if (this.#stream !== stream) return;
        this.#stream = undefined;
        if (!failed && endedAt !== undefined) {
          if (this.#stopping) {
            // Our FIN answered by the receiver's: it read everything we wrote.
            this.#confirm(Number.POSITIVE_INFINITY);
          } else {
            // The receiver closed first, cleanly: it had read everything that reached it before its FIN (unread data
            // would have made its kernel answer with a reset). Over a network a write in the last moments may have
            // crossed the FIN and been reset after it, so those are resent; on loopback nothing is in flight (a write
            // after the receiver's close is reset at once and surfaces as an error, handled below).
            const guard = loopback ? 0 : CROSSING_GUARD_MS;
            this.#confirm(endedAt - guard + (this.options.confirmMs ?? 1000));
            this.#onLost(new Error(`connection closed by ${o.host}:${o.port}`), true);
          }
        } else if (!this.#stopping) {
          this.#onLost(failed ?? new Error("connection closed"));
        }
        this.wake();
      });
      this.#stream = stream;
    }
    this.#setState("connected");
    if (this.#lastError !== undefined || this.#stats.sent === 0) {
      this.#log.info(
        { destination: o.name, host: o.host, port: o.port, transport: o.transport },
        "audit destination connected",
      );
    }
    this.#lastError = undefined;
  }

  /** Connection lost without a clean close: forget unconfirmed writes and resend from the last delivered record. */
  #onLost(err: Error, closed = false): void {
    if (this.#udp) {
      this.#udp.close();
      this.#udp = undefined;
    }
    if (this.#stream) {
      this.#stream.destroy();
      this.#stream = undefined;
    }
    if (this.#marks.length > 0) this.#stats.resends += this.#readPos.seq - this.#delivered.seq;
    this.#marks = [];
    this.#readPos = { ...this.#delivered };
    this.#setDown(closed ? err.message : describeError(err, this.options));
  }

  #setState(state: DestinationStats["state"]): void {
    if (state === this.#state) return;
    this.#state = state;
    // after the caller's synchronous update (last error, stream), so the listener sees the whole new state
    if (this.#onStateChange) queueMicrotask(this.#onStateChange);
  }

  #setDown(message: string): void {
    this.#setState("down");
    if (message !== this.#lastError) {
      // once per change of state, not once per retry
      this.#log.warn(
        { destination: this.options.name, error: message },
        "audit destination unavailable; events stay in the spool",
      );
      this.#lastError = message;
    }
  }

  /** Marks written at or before `now - confirmMs` (or all, for Infinity) become delivered. */
  #confirm(now: number): void {
    const limit = now === Number.POSITIVE_INFINITY ? now : now - (this.options.confirmMs ?? 1000);
    let i = 0;
    while (i < this.#marks.length && (this.#marks[i] as Mark).at <= limit) i++;
    if (i === 0) return;
    this.#delivered = (this.#marks[i - 1] as Mark).cursor;
    this.#marks.splice(0, i);
  }

  /** Saves the cursor: at stop synchronously, while running at most every 250 ms and off the event loop. */
  #save(force: boolean): void {
    if (this.#delivered.seq === this.#savedSeq) return;
    const now = Date.now();
    const path = join(this.#dir, "cursor.json");
    const data = `${JSON.stringify(this.#delivered)}\n`;
    const seq = this.#delivered.seq;
    if (force) {
      writeFileDurableSync(path, data);
      this.#savedSeq = seq;
      return;
    }
    if (this.#saving !== undefined || now - this.#lastSave < 250) return;
    this.#lastSave = now;
    // A cursor that lags (write lost in a crash) only means a resend; it can never run ahead of delivery.
    this.#saving = writeFileDurable(path, data)
      .then(
        () => {
          this.#savedSeq = Math.max(this.#savedSeq, seq);
        },
        (err) => this.#log.warn({ destination: this.options.name, err }, "audit destination: cannot save cursor"),
      )
      .finally(() => {
        this.#saving = undefined;
      });
  }

  async #closeGracefully(timeoutMs: number): Promise<void> {
    const stream = this.#stream as Socket;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        stream.destroy();
        resolve();
      }, timeoutMs);
      stream.once("close", () => {
        clearTimeout(timer);
        resolve();
      });
      stream.end();
    });
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = () => {
        this.#wake = undefined;
        done();
      };
    });
  }
}

function isLoopback(address: string | undefined): boolean {
  return address !== undefined && (address === "::1" || /^(::ffff:)?127\./.test(address));
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
