// The KMIP port of `kms serve` (--kmip-port): TTLV messages over TLS with client certificates from the KMS CA, the
// same certificates, client rows, roles and policies as the HTTPS API. Each connection reads one framed message at a
// time (the 8-byte header gives the length, checked against the limit before anything is buffered), answers it, and
// only then reads the next; a socket that does not drain stops being read. A message whose header cannot be framed
// is answered with Invalid Message and the connection closed (the stream has lost its framing); any other malformed
// message is answered and the connection kept.

import type { AddressInfo } from "node:net";
import { createServer, type Server, type TLSSocket } from "node:tls";
import type { Logger } from "../../logger.ts";
import type { KmsCaller } from "../api/caller.ts";
import type { Identity } from "../clients.ts";
import type { KmsService } from "../service.ts";
import { handleMessage } from "./operations.ts";
import { ResultReason, ResultStatus, T } from "./tags.ts";
import {
  DEFAULT_LIMITS,
  datetime,
  encodeTtlv,
  enumv,
  frameLength,
  int,
  struct,
  type TtlvLimits,
  text,
} from "./ttlv.ts";

export const DEFAULT_KMIP_PORT = 5696;

export interface KmipServerOptions {
  host: string;
  /** 0 = any free port. */
  port: number;
  tls: { key: Buffer | string; cert: Buffer | string; ca: Buffer | string };
  identify: (fingerprint: string, sourceIp: string | undefined) => Identity;
  service: () => KmsService;
  logger: Logger;
  limits?: TtlvLimits;
  /** Idle connections are closed after this long, ms (default 5 min). */
  idleMs?: number;
  maxConnections?: number;
  /** Per answered message: outcome "success" or "failure", for the KMS metrics. */
  observe?: (outcome: string, seconds: number, items: number) => void;
}

const HEADER = 8;

export class KmipServer {
  readonly #server: Server;
  readonly #options: KmipServerOptions;
  readonly #limits: TtlvLimits;
  readonly #sockets = new Set<TLSSocket>();

  private constructor(options: KmipServerOptions) {
    this.#options = options;
    this.#limits = options.limits ?? DEFAULT_LIMITS;
    this.#server = createServer(
      {
        key: options.tls.key,
        cert: options.tls.cert,
        ca: options.tls.ca,
        requestCert: true,
        rejectUnauthorized: true,
        minVersion: "TLSv1.2",
        handshakeTimeout: 10_000,
      },
      (socket) => this.#connection(socket),
    );
    this.#server.maxConnections = options.maxConnections ?? 512;
    this.#server.on("tlsClientError", (err, socket) => {
      options.logger.warn({ err: err.message, remote: socket.remoteAddress }, "kmip: TLS handshake refused");
    });
  }

  static async start(options: KmipServerOptions): Promise<KmipServer> {
    const s = new KmipServer(options);
    await new Promise<void>((resolve, reject) => {
      s.#server.once("error", reject);
      s.#server.listen(options.port, options.host, () => {
        s.#server.off("error", reject);
        resolve();
      });
    });
    return s;
  }

  get port(): number {
    return (this.#server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      for (const s of this.#sockets) s.destroy();
    });
  }

  #connection(socket: TLSSocket): void {
    this.#sockets.add(socket);
    socket.setNoDelay(true);
    socket.setTimeout(this.#options.idleMs ?? 300_000, () => socket.destroy());
    socket.on("close", () => this.#sockets.delete(socket));
    socket.on("error", () => socket.destroy());
    const cert = socket.getPeerCertificate();
    const fingerprint =
      socket.authorized && cert?.fingerprint256 ? cert.fingerprint256.replace(/:/g, "").toLowerCase() : "";
    let chunks: Buffer[] = [];
    let buffered = 0;
    let need = HEADER;
    let framed = false; // need is the whole message's length (else: the header's)
    let busy = false;

    const pump = (): void => {
      if (busy) return;
      while (buffered >= need && !socket.destroyed) {
        const all = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, buffered);
        if (!framed) {
          try {
            need = frameLength(all, this.#limits);
          } catch (e) {
            this.#refuse(socket, ResultReason.InvalidMessage, `invalid message header: ${(e as Error).message}`);
            return;
          }
          framed = true;
          chunks = [all];
          continue;
        }
        const message = all.subarray(0, need);
        const rest = all.subarray(need);
        chunks = rest.length ? [Buffer.from(rest)] : [];
        buffered = rest.length;
        need = HEADER;
        framed = false;
        const response = this.#answer(message, fingerprint, socket.remoteAddress);
        if (!socket.write(response)) {
          busy = true;
          socket.pause();
          socket.once("drain", () => {
            busy = false;
            socket.resume();
            pump();
          });
          return;
        }
      }
    };

    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      buffered += chunk.length;
      // Never hold more than one message (bounded by the limit) plus what one read brought.
      if (buffered > this.#limits.maxMessageBytes + HEADER + chunk.length) {
        socket.destroy();
        return;
      }
      pump();
    });
  }

  #answer(message: Buffer, fingerprint: string, remote: string | undefined): Buffer {
    const t0 = performance.now();
    const id = fingerprint
      ? this.#options.identify(fingerprint, remote)
      : { refused: "a client certificate issued by this KMS is required" };
    if ("refused" in id) {
      this.#options.observe?.("auth_failed", (performance.now() - t0) / 1000, 1);
      return failure(ResultReason.AuthenticationNotSuccessful, id.refused);
    }
    const caller: KmsCaller = id.caller;
    const r = handleMessage(
      message,
      {
        caller,
        service: this.#options.service,
        onInternalError: (err) => this.#options.logger.error({ err, client: caller.name }, "kmip: internal error"),
      },
      this.#limits,
    );
    this.#options.observe?.(r.failures ? "failure" : "success", (performance.now() - t0) / 1000, r.operations.length);
    return r.response;
  }

  /** Answers a message that cannot be framed, then closes: what follows on the stream cannot be trusted. */
  #refuse(socket: TLSSocket, reason: number, message: string): void {
    socket.end(failure(reason, message));
    socket.pause();
  }
}

function failure(reason: number, message: string): Buffer {
  return encodeTtlv(
    struct(
      T.ResponseMessage,
      struct(
        T.ResponseHeader,
        struct(T.ProtocolVersion, int(T.ProtocolVersionMajor, 1), int(T.ProtocolVersionMinor, 2)),
        datetime(T.TimeStamp, new Date()),
        int(T.BatchCount, 1),
      ),
      struct(
        T.BatchItem,
        enumv(T.ResultStatus, ResultStatus.OperationFailed),
        enumv(T.ResultReason, reason),
        text(T.ResultMessage, message.slice(0, 500)),
      ),
    ),
  );
}
