// Opens the connection of one syslog destination: UDP (RFC 5426), TCP (RFC 6587) or TLS (RFC 5425) with CA pinning
// (the `ca` file replaces the system trust store, so a server certificate from any other CA is refused) and an
// optional client certificate. Errors become one operator-readable sentence.
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { lookup } from "node:dns/promises";
import { readFileSync } from "node:fs";
import { isIP, type Socket, connect as tcpConnect } from "node:net";
import { connect as tlsConnect } from "node:tls";

export type Transport = "udp" | "tcp" | "tls";

export interface TransportOptions {
  transport: Transport;
  host: string;
  port: number;
  /** PEM file(s) of the CA(s) that may sign the receiver's certificate (TLS). */
  ca?: string;
  /** PEM client certificate and key (TLS, when the receiver asks for one). */
  cert?: string;
  key?: string;
  /** Give up a connection attempt after this long. */
  connectTimeoutMs?: number;
}

export interface TlsMaterial {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

/** Reads the PEM files once (at start-up, so a missing file is a config error, not a delivery error). */
export function loadTlsMaterial(o: TransportOptions): TlsMaterial {
  const read = (what: string, path: string | undefined) => {
    if (path === undefined) return undefined;
    try {
      return readFileSync(path);
    } catch (err) {
      throw new Error(`cannot read ${what} file ${path}: ${(err as NodeJS.ErrnoException).code ?? err}`);
    }
  };
  return { ca: read("ca", o.ca), cert: read("cert", o.cert), key: read("key", o.key) };
}

const TLS_TRUST_CODES = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_SIGNATURE_FAILURE",
  "CERT_UNTRUSTED",
]);

/** One sentence for an operator: what failed, where, and the system's code. */
export function describeError(err: unknown, o: TransportOptions): string {
  const e = err as NodeJS.ErrnoException & { reason?: string };
  const where = `${o.host}:${o.port}`;
  switch (e.code) {
    case "ENOTFOUND":
    case "EAI_NONAME":
    case "EAI_AGAIN":
    case "EAI_FAIL":
      return `unknown host ${o.host} (${e.code})`;
    case "ECONNREFUSED":
      return `connection refused by ${where}`;
    case "ECONNRESET":
      return `connection reset by ${where}`;
    case "EPIPE":
      return `connection to ${where} closed while writing`;
    case "ETIMEDOUT":
    case "ECONNTIMEOUT":
      return `no answer from ${where} (timed out)`;
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return `${where} is unreachable (${e.code})`;
    case "ERR_TLS_CERT_ALTNAME_INVALID":
      return `TLS failure with ${where}: the server certificate is not valid for ${o.host} (${e.reason ?? e.code})`;
    case "CERT_HAS_EXPIRED":
    case "CERT_NOT_YET_VALID":
      return `TLS failure with ${where}: the server certificate is out of its validity period (${e.code})`;
  }
  if (e.code && TLS_TRUST_CODES.has(e.code)) {
    return `TLS failure with ${where}: the server certificate is not issued by the pinned CA${o.ca ? ` ${o.ca}` : ""} (${e.code})`;
  }
  if (e.code?.startsWith("ERR_SSL") || /ssl|tls/i.test(e.message ?? "")) {
    return `TLS failure with ${where}: ${e.message}${e.code ? ` (${e.code})` : ""}`;
  }
  return `${where}: ${e.message ?? String(err)}${e.code ? ` (${e.code})` : ""}`;
}

/** Opens a TCP or TLS stream; resolves once connected (TLS: handshake done and the certificate verified). */
export function connectStream(o: TransportOptions, tls: TlsMaterial): Promise<Socket> {
  const timeout = o.connectTimeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    let socket: Socket;
    const fail = (err: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    const timer = setTimeout(() => fail(Object.assign(new Error("connect timed out"), { code: "ETIMEDOUT" })), timeout);
    if (o.transport === "tls") {
      socket = tlsConnect({
        host: o.host,
        port: o.port,
        ca: tls.ca,
        cert: tls.cert,
        key: tls.key,
        servername: isIP(o.host) ? undefined : o.host,
        minVersion: "TLSv1.2",
      });
      socket.once("secureConnect", () => {
        clearTimeout(timer);
        socket.off("error", fail);
        resolve(socket);
      });
    } else {
      socket = tcpConnect({ host: o.host, port: o.port });
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.off("error", fail);
        resolve(socket);
      });
    }
    socket.once("error", fail);
  });
}

/** A UDP sender "connected" to the destination (so ICMP port-unreachable surfaces as ECONNREFUSED). */
export async function connectUdp(o: TransportOptions): Promise<UdpSocket> {
  const { address, family } = await lookup(o.host);
  const socket = createSocket(family === 6 ? "udp6" : "udp4");
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.connect(o.port, address, () => {
      socket.off("error", reject);
      resolve();
    });
  });
  return socket;
}
