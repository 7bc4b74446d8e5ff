// SFTP endpoint: SSH transport from ssh2, login through the service (src/service/login.ts), SFTP parsed by
// ./session.ts.
// OpenSSH's sshd as the transport was rejected: a non-root sshd can only log in as its own system account, and
// atrest has virtual users and must run from `npm start` without root.
import { randomUUID } from "node:crypto";
import { createServer, type Socket } from "node:net";
import type { CipherAlgorithm, Connection, ServerChannel } from "ssh2";
import ssh2 from "ssh2";
import type { Logger } from "../../logger.ts";
import type { LoginService } from "../../service/login.ts";
import { authenticate, MAX_AUTH_FAILURES } from "./auth.ts";
import { speedUpSsh2Crypto, type TransportCrypto, transportCrypto } from "./fastcrypto.ts";
import {
  ByteGauge,
  ConnectionBudget,
  DEFAULT_LIMITS,
  dropStartup,
  FdGuard,
  type SftpLimits,
  UserFiles,
} from "./limits.ts";
import { patchPacketAlloc, recyclePackets } from "./packet-pool.ts";
import { SftpSession } from "./session.ts";

export interface SftpServerOptions {
  /** Login, the brute-force defender, login audit and the user's file sessions. */
  login: LoginService;
  hostKeys: Buffer[];
  host: string;
  /** 0 = any free port. */
  port: number;
  logger: Logger;
  /** Disconnect after this long without an SFTP request (and nothing in progress). Default 10 minutes. */
  idleTimeoutMs?: number;
  /** Concurrent connections; more are refused before the SSH handshake. Default 256. */
  maxSessions?: number;
  banner?: string;
  /** How long close() lets running transfers finish before ending them. Default 10 s. */
  closeTimeoutMs?: number;
  /** SSH channel receive window for the sftp channel; larger windows keep uploads streaming. Default 8 MiB. */
  channelWindow?: number;
  /** Pre-authentication and resource limits (limits.ts); defaults in DEFAULT_LIMITS. */
  limits?: Partial<SftpLimits>;
  /** Random numbers for MaxStartups' early drop (tests). */
  random?: () => number;
}

export interface SftpServer {
  port: number;
  /** The SSH transport crypto in use (native binding or pure JS) and the ciphers offered. */
  transport: TransportCrypto;
  close(): Promise<void>;
}

interface Conn {
  socket: Socket;
  client?: Connection;
  sessions: Set<SftpSession>;
  id: string;
  ip: string;
  /** Authentication finished (ssh2 'ready'). */
  authed: boolean;
  /** The user this connection counts against (set when its login is admitted). */
  user?: string;
  /** Open session channels. */
  channels: number;
  budget: ConnectionBudget;
}

/** Per-source-IP connection counts. */
interface SourceCount {
  total: number;
  unauthenticated: number;
}

/** ssh2's own receive window per channel (it tops it up to this once it drops below half). */
const SSH2_WINDOW = 2 * 1024 * 1024;
/**
 * Receive window shared by all SFTP channels of the server: a channel gets `channelWindow` (8 MiB) while few are
 * open, down to ssh2's 2 MiB when many are. What a client sent within its window is decrypted and held by ssh2 even
 * while the door does not read (uploads waiting for the disk): 100 channels at 8 MiB could hold 800 MiB.
 */
const WINDOW_TOTAL = 64 * 1024 * 1024;

/**
 * ssh2 keeps a fixed 2 MiB receive window and tops it up only once it drops below 1 MiB. We raise it so the client
 * never stalls on window adjusts while the event loop is busy decrypting (uses ssh2 channel internals; a no-op if
 * they are absent). `targetOf()` is read at each top-up (it shrinks as channels open).
 */
function growWindow(conn: Connection, ch: ServerChannel, targetOf: () => number, budget: ConnectionBudget): void {
  const c = ch as unknown as { incoming?: { window: number }; outgoing?: { id: number } };
  const proto = (conn as unknown as { _protocol?: { channelWindowAdjust(id: number, n: number): void } })._protocol;
  if (!c.incoming || !c.outgoing || !proto || typeof proto.channelWindowAdjust !== "function") return;
  const { incoming, outgoing } = c;
  const top = () => {
    // Uploads waiting for the encryptor are at their bound: let the client run out of window instead.
    if (budget.queued.full) return;
    const w = incoming.window;
    const target = targetOf();
    if (w < target / 2) {
      incoming.window = target;
      proto.channelWindowAdjust(outgoing.id, target - w);
    }
  };
  top();
  ch.on("data", top);
}

export async function startSftpServer(options: SftpServerOptions): Promise<SftpServer> {
  speedUpSsh2Crypto();
  const transport = await transportCrypto();
  patchPacketAlloc();
  const { login, logger } = options;
  const idleMs = options.idleTimeoutMs ?? 10 * 60_000;
  const maxSessions = options.maxSessions ?? 256;
  const window = options.channelWindow ?? 8 * 1024 * 1024;
  let sftpChannels = 0;
  const windowTarget = () =>
    Math.max(SSH2_WINDOW, Math.min(window, Math.floor(WINDOW_TOTAL / Math.max(1, sftpChannels))));
  const limits: SftpLimits = { ...DEFAULT_LIMITS, ...options.limits };
  const random = options.random ?? Math.random;
  const conns = new Set<Conn>();
  let closing = false;
  let unauthenticated = 0;
  const sources = new Map<string, SourceCount>();
  const userConns = new Map<string, number>();
  const fds = new FdGuard(limits.fdReserve);
  const files = new UserFiles(limits.maxFilesPerUser, fds);
  const totals = {
    reorder: new ByteGauge(limits.reorderBytesTotal),
    queued: new ByteGauge(limits.queuedBytesTotal),
  };
  // Refusals come in floods (that is the point of them): one log line per reason and second, with the count.
  const refusals = new Map<string, { n: number; at: number }>();
  const refuse = (socket: Socket, reason: string, text?: string) => {
    const now = Date.now();
    const r = refusals.get(reason) ?? { n: 0, at: 0 };
    r.n++;
    if (now - r.at >= 1000) {
      logger.warn({ ip: socket.remoteAddress, refused: r.n, unauthenticated, sessions: conns.size }, `sftp: ${reason}`);
      r.n = 0;
      r.at = now;
    }
    refusals.set(reason, r);
    // Before the SSH identification string a server may send text lines; clients show them on failure.
    if (text) socket.end(`atrest: ${text}\r\n`);
    else socket.destroy();
  };
  const authenticated = (conn: Conn) => {
    if (conn.authed) return;
    conn.authed = true;
    unauthenticated--;
    const src = sources.get(conn.ip);
    if (src) src.unauthenticated--;
  };

  const ssh = new ssh2.Server({
    hostKeys: options.hostKeys,
    banner: options.banner,
    ident: "atrest",
    // ssh2's defaults minus any cipher its native binding gets wrong (checked at start, see fastcrypto.ts).
    algorithms: { cipher: transport.ciphers as CipherAlgorithm[] },
  });
  ssh.on("error", (err: Error) => logger.warn({ err }, "sftp: ssh server error"));

  const onClient = (conn: Conn, client: Connection, sourceIp: string | undefined) => {
    conn.client = client;
    let user: string | undefined;
    let failures = 0;
    let idle: NodeJS.Timeout | undefined;
    const touch = () => {
      if (idle) idle.refresh();
    };
    idle = setTimeout(function check() {
      for (const s of conn.sessions) {
        if (s.busy) {
          idle = setTimeout(check, idleMs);
          return;
        }
      }
      logger.info({ sessionId: conn.id, user }, "sftp: idle timeout");
      client.end();
    }, idleMs);
    idle.unref();
    client.on("close", () => clearTimeout(idle));
    // Before login an error is a failed handshake (no common algorithm, a bad packet): like sshd's "Unable to
    // negotiate", worth an operator's eye; after it, mostly clients going away.
    client.on("error", (err: Error) => {
      if (conn.authed) logger.debug({ err, sessionId: conn.id }, "sftp: connection error");
      else logger.info({ err, ip: conn.ip, sessionId: conn.id }, "sftp: handshake failed");
    });

    client.on("authentication", (ctx) => {
      touch();
      if (closing) return ctx.reject([]);
      if (ctx.method !== "password" && ctx.method !== "publickey") return ctx.reject(["publickey", "password"]);
      const admit = (name: string): string | undefined => {
        const n = userConns.get(name) ?? 0;
        if (limits.maxConnectionsPerUser > 0 && n >= limits.maxConnectionsPerUser) {
          return `too many connections for this user (${limits.maxConnectionsPerUser})`;
        }
        if (conn.user === undefined) {
          conn.user = name;
          userConns.set(name, n + 1);
        }
        return undefined;
      };
      void authenticate(ctx, { login, sessionId: conn.id, sourceIp, admit }).then((outcome) => {
        // A slow login (argon2 under load) is not idleness: the timer counts from its answer.
        touch();
        if (outcome.user) {
          user = outcome.user;
          // `user rm` (and the service's sweep) ends the connection, whatever it is doing.
          login.onEnd(conn.id, () => {
            for (const s of conn.sessions) void s.shutdown();
            client.end();
          });
        }
        // Like OpenSSH's MaxAuthTries, every refused attempt counts, key probes included.
        else if (outcome.refused && ++failures >= MAX_AUTH_FAILURES) client.end();
      });
    });

    client.on("ready", () => {
      touch();
      authenticated(conn);
      client.on("session", (accept, reject) => {
        touch();
        if (conn.channels >= limits.maxChannelsPerConnection) {
          logger.info({ sessionId: conn.id, user }, "sftp: channel refused (per-connection limit)");
          return reject();
        }
        conn.channels++;
        const session = accept();
        session.once("close", () => conn.channels--);
        session.on("subsystem", (acceptSub, rejectSub, info) => {
          touch();
          if (info.name !== "sftp" || !user || closing) return rejectSub();
          const ch = acceptSub();
          ch.on("error", () => {});
          // Until the vfs session exists the channel is not read (no 'data' listener), so nothing is lost.
          login
            .openSession(conn.id)
            .then((vfs) => {
              const s = new SftpSession(ch, {
                vfs,
                logger,
                user: vfs.username,
                sessionId: conn.id,
                sourceIp,
                onActivity: touch,
                socket: conn.socket,
                budget: conn.budget,
                files: files.slotsFor(vfs.username),
                maxHandles: limits.maxHandlesPerSession,
              });
              // Only now: a 'data' listener before the session's own would drop the client's INIT.
              sftpChannels++;
              ch.once("close", () => sftpChannels--);
              growWindow(client, ch, windowTarget, conn.budget);
              conn.sessions.add(s);
              void s.finished().then(() => conn.sessions.delete(s));
              if (closing) ch.end();
            })
            .catch((err) => {
              logger.error({ err, sessionId: conn.id }, "sftp: opening vfs session failed");
              ch.end();
            });
        });
        for (const ev of ["exec", "shell", "pty", "env", "x11", "auth-agent", "signal", "window-change"] as const) {
          session.on(ev, (_accept: unknown, reject?: () => void) => reject?.());
        }
      });
      client.on("request", (_accept, reject) => reject?.());
      client.on("tcpip", (_accept, reject) => reject());
      client.on("openssh.streamlocal", (_accept, reject) => reject());
    });

    client.on("close", () => {
      for (const s of conn.sessions) void s.shutdown();
      login.logout(conn.id);
    });
  };

  // injectSocket returns nothing, and 'connection' fires only after the SSH identification exchange: find our
  // record of the socket by its remote address and port.
  const byPeer = new Map<string, Conn>();
  ssh.on("connection", (client: Connection, info: { ip: string; port: number }) => {
    const conn = byPeer.get(`${info.ip}|${info.port}`);
    if (!conn) {
      // its socket closed between accept and the identification exchange, or a peer we cannot match: say so
      logger.warn({ ip: info.ip, port: info.port }, "sftp: connection not matched to an accepted socket, closed");
      return client.end();
    }
    onClient(conn, client, info.ip);
  });

  const tcp = createServer({ noDelay: true }, (socket) => {
    socket.on("error", (err) => logger.debug({ err }, "sftp: socket error"));
    const ip = socket.remoteAddress ?? "";
    const src = sources.get(ip) ?? { total: 0, unauthenticated: 0 };
    if (closing || conns.size >= maxSessions) {
      return refuse(socket, "connection refused (session limit)", "too many sessions, try again later");
    }
    if (!fds.connectionAllowed()) {
      return refuse(socket, "connection refused (file descriptors near the limit)", "server busy, try again later");
    }
    if (limits.maxConnectionsPerSource > 0 && src.total >= limits.maxConnectionsPerSource) {
      return refuse(socket, "connection refused (per-source limit)", "too many connections from your address");
    }
    // Like OpenSSH: connections over MaxStartups are dropped without a word.
    if (limits.maxStartupsPerSource > 0 && src.unauthenticated >= limits.maxStartupsPerSource) {
      return refuse(socket, "connection dropped (per-source unauthenticated limit)");
    }
    if (dropStartup(limits.maxStartups, unauthenticated, random)) {
      return refuse(socket, "connection dropped (MaxStartups)");
    }
    const conn: Conn = {
      socket,
      sessions: new Set(),
      id: randomUUID(),
      ip,
      authed: false,
      channels: 0,
      budget: new ConnectionBudget(limits, totals),
    };
    conns.add(conn);
    unauthenticated++;
    src.total++;
    src.unauthenticated++;
    sources.set(ip, src);
    fds.opened(1);
    // LoginGraceTime: a connection that has not authenticated by then is cut, whatever it is doing (or not).
    const grace =
      limits.loginGraceSeconds > 0
        ? setTimeout(() => {
            if (conn.authed) return;
            logger.info({ ip, sessionId: conn.id }, "sftp: login grace time over, disconnecting");
            socket.destroy();
          }, limits.loginGraceSeconds * 1000)
        : undefined;
    grace?.unref();
    const peer = `${socket.remoteAddress}|${socket.remotePort}`;
    byPeer.set(peer, conn);
    socket.on("close", () => {
      clearTimeout(grace);
      conns.delete(conn);
      byPeer.delete(peer);
      if (!conn.authed) {
        unauthenticated--;
        src.unauthenticated--;
      }
      if (--src.total <= 0) sources.delete(ip);
      if (conn.user !== undefined) {
        const n = (userConns.get(conn.user) ?? 1) - 1;
        if (n > 0) userConns.set(conn.user, n);
        else userConns.delete(conn.user);
      }
    });
    recyclePackets(socket);
    ssh.injectSocket(socket);
  });

  await new Promise<void>((resolve, reject) => {
    tcp.once("error", reject);
    tcp.listen(options.port, options.host, () => {
      tcp.off("error", reject);
      resolve();
    });
  });
  tcp.on("error", (err) => logger.error({ err }, "sftp: listener error"));
  const address = tcp.address();
  const port = typeof address === "object" && address ? address.port : options.port;
  logger.info({ host: options.host, port, transportCrypto: transport.describe }, "sftp listening");

  const close = async (): Promise<void> => {
    if (closing) return;
    closing = true;
    // Stops accepting at once. Its callback waits for every socket the listener ever counted (refused ones too),
    // which we do not need: `conns` is what we wait for below.
    tcp.close();
    const deadline = Date.now() + (options.closeTimeoutMs ?? 10_000);
    // Connections without a transfer in progress end now; the rest get until the deadline.
    while (conns.size > 0) {
      for (const c of conns) {
        const active = [...c.sessions].some((s) => s.active);
        if (!active || Date.now() >= deadline) {
          await Promise.all([...c.sessions].map((s) => s.shutdown()));
          c.client?.end();
          if (Date.now() >= deadline + 1000) c.socket.destroy();
        }
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  return { port, transport, close };
}
