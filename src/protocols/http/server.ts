// The HTTPS door: Fastify 5 over HTTP/2 with HTTP/1.1 fallback (ALPN), TLS always. A thin adapter: authentication
// goes through the service's LoginService (argon2id, the shared defender, the login audit), file operations through
// a VfsSession opened per request, admin work through service/admin.ts with the caller as Actor. Every route comes
// from one table (routes.ts), which also yields the OpenAPI document; every error leaves as problem+json (problem.ts).
import cookie from "@fastify/cookie";
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import type { Logger } from "../../logger.ts";
import type { Role } from "../../store/types.ts";
import { accountRoutes } from "./account-routes.ts";
import { adminRoutes } from "./admin-routes.ts";
import { authRoutes } from "./auth-routes.ts";
import { custodyRoutes } from "./custody-routes.ts";
import type { HttpDeps, HttpServerOptions } from "./deps.ts";
import { fileRoutes } from "./files.ts";
import { healthRoutes } from "./health.ts";
import { keyPairRoutes } from "./keypair-routes.ts";
import { oidcRoutes } from "./oidc-routes.ts";
import { openApiDocument } from "./openapi.ts";
import { HttpProblem, PROBLEM_CONTENT_TYPE, problemOf } from "./problem.ts";
import { type Ctx, type Principal, parseBody, parsePart, type Route, type RouteSpec, type Scope } from "./routes.ts";
import { SealedCookies } from "./sealed-cookie.ts";
import { CSRF_HEADER, DEFAULT_SESSIONS, SESSION_COOKIE, SessionTable } from "./sessions.ts";
import { shareRoutes } from "./share-routes.ts";
import { syncRoutes } from "./sync-routes.ts";
import { tokenRoutes } from "./token-routes.ts";
import { TusUploads } from "./tus.ts";
import { loadWebApp, registerWebApp, WEB_ROOT } from "./web.ts";

export type { HttpDeps, HttpServerOptions };

export interface HttpServer {
  port: number;
  close(): Promise<void>;
  sessions: SessionTable;
}

const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);
const H2_STREAM_WINDOW = 2 << 20;
const H2_SESSION_WINDOW = 8 << 20;

const OPENAPI_SPEC: RouteSpec = {
  method: "GET",
  url: "/openapi.json",
  operationId: "openapi",
  summary: "This API's OpenAPI 3.1 document",
  tags: ["meta"],
  auth: "public",
  responses: { 200: { description: "the OpenAPI document", contentType: "application/json" } },
};

/** The OpenAPI document of every route, without a running server (docs/api/openapi.json is this). */
export function apiDocument(): Record<string, unknown> {
  const none = () => {
    throw new Error("not a running server");
  };
  const options = {
    accounts: { openSession: none },
    login: { logout: none },
    tokens: {},
  } as unknown as HttpServerOptions;
  const deps: HttpDeps = {
    options,
    sessions: new SessionTable(DEFAULT_SESSIONS, () => {}),
    cookies: new SealedCookies(Buffer.alloc(32)),
  };
  return openApiDocument([
    ...allRoutes(deps, new TusUploads(options, 0)),
    { spec: OPENAPI_SPEC, handler: async () => undefined },
  ]);
}

/** Every route the server serves but /openapi.json (what the OpenAPI document lists). */
export function allRoutes(deps: HttpDeps, uploads: TusUploads): Route[] {
  return [
    ...healthRoutes(deps.options),
    ...authRoutes(deps),
    ...oidcRoutes(deps),
    ...tokenRoutes(deps),
    ...adminRoutes(deps),
    ...custodyRoutes(deps),
    ...accountRoutes(deps),
    ...keyPairRoutes(deps),
    ...fileRoutes(deps),
    ...shareRoutes(deps),
    ...uploads.routes(),
    ...syncRoutes(deps),
  ];
}

function tokenOf(req: FastifyRequest): string | undefined {
  const h = req.headers.authorization;
  if (typeof h !== "string") return undefined;
  const m = /^Bearer\s+(\S+)$/i.exec(h);
  return m?.[1];
}

const unauthorized = (bearer: boolean) =>
  new HttpProblem(401, "UNAUTHORIZED", "authentication required", {
    code: "AUTH_FAILED",
    ...(bearer ? { headers: { "www-authenticate": 'Bearer realm="atrest", error="invalid_token"' } } : {}),
  });

/** A bearer token: the defender's ban first, a refused token scored and audited like a refused password. */
async function tokenPrincipal(deps: HttpDeps, req: FastifyRequest, bearer: string): Promise<Principal> {
  const { options: o } = deps;
  const sourceIp = req.ip;
  const defender = o.login.defender;
  const refuse = async (reason: string) => {
    o.audit.record({
      action: "login",
      outcome: "failure",
      user: "-",
      protocol: "http",
      method: "token",
      reason,
      sourceIp,
    });
    // a disabled account's token is a real one: not a guess to score
    if (reason !== "banned" && reason !== "account disabled") await defender?.failure({ ip: sourceIp });
    return unauthorized(true);
  };
  if (await defender?.banned({ ip: sourceIp })) throw await refuse("banned");
  const token = await o.tokens.verify(bearer);
  if (!token) throw await refuse("bad token");
  const row = await o.user(token.user);
  if (!row) throw await refuse("bad token");
  if (row.disabled) throw await refuse("account disabled");
  return {
    user: row.name,
    role: row.role,
    sessionId: `token:${token.id}`,
    via: "token",
    scopes: token.scopes as Scope[],
    paths: token.paths,
    sourceIp,
  };
}

async function principalOf(deps: HttpDeps, req: FastifyRequest): Promise<Principal> {
  const bearer = tokenOf(req);
  if (bearer !== undefined) return tokenPrincipal(deps, req, bearer);
  const session = await deps.sessions.lookup(req.cookies[SESSION_COOKIE]);
  if (!session) throw unauthorized(false);
  if (UNSAFE.has(req.method) && !SessionTable.csrfOk(session, req.headers[CSRF_HEADER])) {
    throw new HttpProblem(403, "CSRF", `missing or wrong ${CSRF_HEADER} header`, { code: "PERMISSION_DENIED" });
  }
  const row = await deps.options.user(session.user);
  // removed or disabled (by another process: this one ended the sessions already)
  if (!row || row.disabled) {
    await deps.sessions.endUser(session.user);
    throw unauthorized(false);
  }
  return {
    user: row.name,
    role: row.role,
    sessionId: session.id,
    via: "session",
    sourceIp: req.ip,
    ...(session.enrolOnly ? { enrolOnly: true } : {}),
  };
}

/** What a session limited to TOTP enrolment may do: see itself, enrol, confirm, leave. */
const ENROL_ONLY = new Set(["currentSession", "logout", "logoutEverywhere", "totpStatus", "totpEnrol", "totpConfirm"]);

function checkRole(p: Principal, roles: readonly Role[], what: string): void {
  if (!roles.includes(p.role)) {
    throw new HttpProblem(403, "FORBIDDEN", `${what} needs role ${roles.join(" or ")} (${p.user} is ${p.role})`, {
      code: "PERMISSION_DENIED",
    });
  }
}

function sendProblem(reply: FastifyReply, err: unknown, logger: Logger, req: FastifyRequest): void {
  const { problem, headers, internal } = problemOf(err);
  if (internal) logger.error({ err, method: req.method, url: req.url }, "http: request failed");
  if (reply.sent || reply.raw.headersSent) {
    // the body had started: all that is left is to cut the stream so the client sees a broken transfer
    reply.raw.destroy();
    return;
  }
  reply.code(problem.status).headers(headers).type(PROBLEM_CONTENT_TYPE).send(JSON.stringify(problem));
}

export async function startHttpServer(options: HttpServerOptions): Promise<HttpServer> {
  const { logger } = options;
  const cookies = new SealedCookies(options.cookieKey);
  const sessions = new SessionTable(
    { ...DEFAULT_SESSIONS, ...options.sessions },
    (s) => options.login.logout(s.id),
    Date.now,
    options.sessionRows ? { rows: options.sessionRows, cookies } : undefined,
  );
  const uploads = new TusUploads(options, options.uploadIdleMs ?? 3_600_000);
  const deps: HttpDeps = { options, sessions, cookies };
  const app = Fastify({
    http2: true,
    // HTTP/2 flow control: with Node's default 64 KiB windows an upload stream waits for a window update every 64 KiB
    // (curl -T of 64 MiB over h2: 14.3 s, against 2.0 s over HTTP/1.1, at load ~25); 2 MiB per stream and 8 MiB per
    // connection (set on each session below) bring it to 4.6 s. A window only bounds what a client may send ahead of
    // what the handler has read, so at most 8 MiB per connection waits in memory.
    https: {
      allowHTTP1: true,
      key: options.tls.key,
      cert: options.tls.cert,
      settings: { initialWindowSize: H2_STREAM_WINDOW },
    },
    logger: false,
    bodyLimit: options.bodyLimit ?? 1 << 20,
    // a proxy in front is not assumed: the defender scores the socket's address
    trustProxy: false,
    exposeHeadRoutes: false,
    return503OnClosing: true,
    // a request the HTTP parser cannot read gets a problem too (then the connection closes)
    clientErrorHandler: (_err, socket) => {
      const body = JSON.stringify({
        type: "urn:atrest:problem:invalid-input",
        title: "bad request",
        status: 400,
        detail: "malformed HTTP request",
        code: "INVALID_INPUT",
      });
      if (socket.writable) {
        socket.end(
          `HTTP/1.1 400 Bad Request\r\nContent-Type: ${PROBLEM_CONTENT_TYPE}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
        );
      } else socket.destroy();
    },
    // idle keep-alive connections and HTTP/2 sessions do not hold the shutdown open
    forceCloseConnections: true,
    routerOptions: { ignoreTrailingSlash: false, maxParamLength: 4096 },
  });
  await app.register(cookie);
  // Uploads and anything not JSON: the handler reads the stream itself (nothing buffered here).
  app.addContentTypeParser("*", (_req, payload, done) => done(null, payload));
  // Fastify types an HTTP/2 server's request and reply apart from HTTP/1's; what the routes use exists on both
  // (the compatibility API), so they see the one type.
  const as1 = (req: unknown, reply: unknown) => ({ req: req as FastifyRequest, reply: reply as FastifyReply });
  app.setErrorHandler((err, rq, rp) => {
    const { req, reply } = as1(rq, rp);
    sendProblem(reply, err, logger, req);
  });
  app.setNotFoundHandler((rq, rp) => {
    const { req, reply } = as1(rq, rp);
    sendProblem(
      reply,
      new HttpProblem(404, "NOT_FOUND", `no route ${req.method} ${req.url.split("?")[0]}`),
      logger,
      req,
    );
  });
  app.addHook("onSend", async (_req, reply, payload) => {
    reply.header("x-content-type-options", "nosniff");
    reply.header("cache-control", reply.getHeader("cache-control") ?? "no-store");
    reply.header("strict-transport-security", "max-age=31536000");
    return payload;
  });

  // the web app, same origin as the API (its CSP allows nothing else)
  if (options.webRoot !== false)
    registerWebApp(app as unknown as FastifyInstance, await loadWebApp(options.webRoot ?? WEB_ROOT));

  const routes = allRoutes(deps, uploads);
  const doc = openApiDocument([...routes, { spec: OPENAPI_SPEC, handler: async () => undefined }]);
  routes.push({ spec: OPENAPI_SPEC, handler: async () => doc });
  for (const { spec, handler } of routes) {
    app.route({
      method: spec.method,
      url: spec.url,
      handler: async (rq, rp) => {
        const { req, reply } = as1(rq, rp);
        let principal: Principal | undefined;
        if (spec.auth !== "public") {
          principal = await principalOf(deps, req);
          checkRole(principal, spec.auth.roles, `${spec.operationId}`);
          if (principal.enrolOnly && !ENROL_ONLY.has(spec.operationId)) {
            throw new HttpProblem(403, "TOTP_ENROLMENT_REQUIRED", "set up TOTP first: POST /api/v1/account/totp", {
              code: "PERMISSION_DENIED",
            });
          }
          if (principal.scopes && !principal.scopes.includes(spec.auth.scope)) {
            throw new HttpProblem(403, "FORBIDDEN", `this token lacks scope ${spec.auth.scope}`, {
              code: "PERMISSION_DENIED",
            });
          }
        }
        const ctx: Ctx<unknown, unknown, unknown> = {
          req,
          reply,
          params: parsePart(spec.params, req.params, "path"),
          query: parsePart(spec.query, req.query, "query"),
          body: spec.body ? parseBody(spec.body, req) : undefined,
          principal: principal as Principal,
        };
        const result = await (handler as (c: typeof ctx) => Promise<unknown>)(ctx);
        if (reply.sent) return reply;
        return result === undefined ? reply.send() : reply.send(result);
      },
    });
  }
  (app.server as unknown as import("node:events").EventEmitter).on(
    "session",
    (session: import("node:http2").Http2Session) => {
      try {
        session.setLocalWindowSize(H2_SESSION_WINDOW);
      } catch {
        // the session is already closing
      }
    },
  );
  // A graceful close waits for every open stream, and a response stream whose client stopped reading (or vanished
  // without the socket's end being read) never ends: the server's stop then hung with the connection in CLOSE-WAIT.
  // Connections still open after the grace period are cut.
  const sockets = new Set<import("node:net").Socket>();
  app.server.on("secureConnection", (socket: import("node:net").Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });
  await app.listen({ host: options.host, port: options.port });
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : options.port;
  logger.info({ host: options.host, port }, "https listening");
  const sweep = setInterval(() => {
    sessions.sweep().catch((err: unknown) => logger.warn({ err }, "session sweep failed"));
    void uploads.sweep();
  }, 30_000);
  sweep.unref();
  let closed = false;
  return {
    port,
    sessions,
    close: async () => {
      if (closed) return;
      closed = true;
      clearInterval(sweep);
      await uploads.close();
      await sessions.endAll();
      const closing = app.close();
      let timer: NodeJS.Timeout | undefined;
      const graceOver = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), options.closeGraceMs ?? 5_000);
      });
      if (await Promise.race([closing.then(() => false), graceOver])) {
        logger.warn({ connections: sockets.size }, "https: connections still open at close are cut");
        for (const socket of sockets) socket.destroy();
      }
      clearTimeout(timer);
      await closing;
      cookies.close();
    },
  };
}
