// Route definitions of the HTTPS API: one table of specs (method, path, role, token scope, zod schemas of params,
// query, body and responses) from which Fastify's routes and the OpenAPI 3.1 document (openapi.ts) are both built,
// so the document cannot drift from what is served. Validation happens here, at the edge, once per request.
import type { FastifyReply, FastifyRequest } from "fastify";
import { type ZodType, z } from "zod";
import type { Role } from "../../store/types.ts";
import { HttpProblem } from "./problem.ts";

export type Method = "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS";

/** What an API token may be limited to (a browser session may do everything its role allows). */
export const SCOPES = [
  "files:read",
  "files:write",
  "shares",
  "account",
  "admin",
  "keys",
  "audit",
  "metrics",
  "sync",
] as const;
export type Scope = (typeof SCOPES)[number];

export const ALL_ROLES: readonly Role[] = ["admin", "custodian", "auditor", "user"];

export type Auth = "public" | { roles: readonly Role[]; scope: Scope };

export interface Principal {
  user: string;
  role: Role;
  /** The login session (browser) or `token:<id>` (API token): the audit's session id. */
  sessionId: string;
  via: "session" | "token";
  /** A token's scopes and path prefixes; absent for a session (no limit beyond the role). */
  scopes?: readonly Scope[];
  paths?: readonly string[];
  sourceIp: string;
  /** A browser session limited to TOTP enrolment (TOTP required of the user, none set up yet). */
  enrolOnly?: boolean;
}

export interface ResponseSpec {
  description: string;
  /** JSON body schema; absent for an empty body or a non-JSON one named by `contentType`. */
  schema?: ZodType;
  contentType?: string;
  headers?: Record<string, string>;
}

export interface RouteSpec {
  method: Method | Method[];
  /** Fastify path: `:name` parameters, a trailing `*` for a file path. */
  url: string;
  operationId: string;
  summary: string;
  tags: string[];
  auth: Auth;
  params?: z.ZodObject;
  query?: z.ZodObject;
  /** A JSON body (application/json only). */
  body?: ZodType;
  /** Raw body content types streamed to the handler instead of a JSON body. */
  rawBody?: string[];
  /** Extra request headers to document. */
  headers?: Record<string, string>;
  responses: Record<number, ResponseSpec>;
}

export interface Ctx<P, Q, B> {
  req: FastifyRequest;
  reply: FastifyReply;
  params: P;
  query: Q;
  body: B;
  /** Set on every route whose auth is not "public". */
  principal: Principal;
}

export type Handler<S extends RouteSpec> = (
  ctx: Ctx<
    S["params"] extends z.ZodObject ? z.output<S["params"]> : Record<string, never>,
    S["query"] extends z.ZodObject ? z.output<S["query"]> : Record<string, never>,
    S["body"] extends ZodType ? z.output<S["body"]> : undefined
  >,
) => Promise<unknown>;

export interface Route<S extends RouteSpec = RouteSpec> {
  spec: S;
  handler: Handler<S>;
}

export function route<const S extends RouteSpec>(spec: S, handler: Handler<S>): Route {
  return { spec, handler: handler as unknown as Handler<RouteSpec> };
}

function issues(where: string, err: z.ZodError): string {
  return err.issues
    .slice(0, 5)
    .map((i) => `${where}${i.path.length ? `.${i.path.join(".")}` : ""}: ${i.message}`)
    .join("; ");
}

export function parsePart<T extends ZodType>(schema: T | undefined, value: unknown, where: string): z.output<T> {
  if (!schema) return {} as z.output<T>;
  const r = schema.safeParse(value ?? {});
  if (!r.success) throw new HttpProblem(400, "INVALID_INPUT", issues(where, r.error));
  return r.data;
}

/** The JSON body, refusing other content types (415) and a missing body (400). */
export function parseBody<T extends ZodType>(schema: T, req: FastifyRequest): z.output<T> {
  const type = (req.headers["content-type"] ?? "").split(";")[0].trim().toLowerCase();
  if (type !== "application/json") {
    throw new HttpProblem(415, "UNSUPPORTED_MEDIA_TYPE", "send the request body as application/json");
  }
  return parsePart(schema, req.body, "body");
}

// ---- schemas shared by several route files ----

export const ProblemSchema = z
  .object({
    type: z.string(),
    title: z.string(),
    status: z.number().int(),
    detail: z.string(),
    code: z.string(),
  })
  .meta({ id: "Problem", description: "RFC 9457 problem details" });

/** An absolute path in the user's view (their home is /). `..` segments are refused, never resolved. */
export const PathSchema = z
  .string()
  .min(1)
  .max(4096)
  .refine((p) => p.startsWith("/"), "must start with /")
  .refine((p) => !p.includes("\0"), "must not contain NUL")
  .refine((p) => !p.split("/").some((s) => s === ".." || s === "."), "must not contain . or .. segments")
  .meta({ description: "absolute path in your view of the files (your home is /)", example: "/reports/q3.pdf" });

export const errors = (...codes: number[]): Record<number, ResponseSpec> =>
  Object.fromEntries(
    codes.map((c) => [c, { description: DESCRIPTIONS[c] ?? "error", schema: ProblemSchema, contentType: PROBLEM }]),
  );

const PROBLEM = "application/problem+json";
const DESCRIPTIONS: Record<number, string> = {
  400: "invalid input",
  401: "not authenticated",
  403: "not allowed (role, token scope, path permission, or ban)",
  404: "not found",
  409: "conflict with the current state",
  413: "body too large",
  415: "wrong content type",
  416: "range not satisfiable",
  422: "refused by policy",
  428: "the key manager is remote: sign the returned statement and repeat the request",
  503: "unavailable",
  507: "quota exceeded",
};
