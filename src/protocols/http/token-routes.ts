// API tokens over HTTPS: a logged-in user issues tokens for their scripts (the secret is in the answer once), lists
// and revokes them. A token cannot issue tokens: only a browser session can, so a leaked token cannot mint more.
import { z } from "zod";
import { MAX_TOKEN_DAYS } from "../../service/tokens.ts";
import type { ApiTokenRow } from "../../store/types.ts";
import { actorOf } from "./actor.ts";
import type { HttpDeps } from "./deps.ts";
import { HttpProblem } from "./problem.ts";
import { ALL_ROLES, errors, PathSchema, type Principal, type Route, route, SCOPES } from "./routes.ts";

const ACCOUNT = { roles: ALL_ROLES, scope: "account" } as const;

const TokenInfo = z
  .object({
    id: z.string(),
    name: z.string(),
    scopes: z.array(z.enum(SCOPES)),
    paths: z.array(z.string()),
    createdAt: z.string(),
    expiresAt: z.string(),
    lastUsedAt: z.string().nullable(),
  })
  .meta({ id: "ApiToken" });

function info(t: ApiTokenRow) {
  return {
    id: t.id,
    name: t.name,
    scopes: t.scopes,
    paths: t.paths,
    createdAt: new Date(t.createdAt).toISOString(),
    expiresAt: new Date(t.expiresAt).toISOString(),
    lastUsedAt: t.lastUsedAt === null ? null : new Date(t.lastUsedAt).toISOString(),
  };
}

function sessionOnly(p: Principal): void {
  if (p.via !== "session") {
    throw new HttpProblem(403, "FORBIDDEN", "tokens are issued from a logged-in session, not with a token", {
      code: "PERMISSION_DENIED",
    });
  }
}

export function tokenRoutes(deps: HttpDeps): Route[] {
  const tokens = deps.options.tokens;
  return [
    route(
      {
        method: "POST",
        url: "/api/v1/tokens",
        operationId: "createToken",
        summary: "Issue an API token for yourself (the secret is in this answer only)",
        tags: ["auth"],
        auth: ACCOUNT,
        body: z
          .strictObject({
            name: z.string().min(1).max(100),
            scopes: z.array(z.enum(SCOPES)).min(1),
            paths: z.array(PathSchema).max(32).default(["/"]),
            expiresInDays: z.number().int().min(1).max(MAX_TOKEN_DAYS).default(30),
          })
          .meta({ id: "NewApiToken" }),
        responses: {
          201: {
            description: "issued; send it as Authorization: Bearer <token>",
            schema: TokenInfo.extend({ token: z.string() }),
          },
          ...errors(400, 401, 403, 415),
        },
      },
      async ({ body, principal, reply }) => {
        sessionOnly(principal);
        const { token, row } = await tokens.create(actorOf(principal), body);
        reply.code(201);
        return { ...info(row), token };
      },
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/tokens",
        operationId: "listTokens",
        summary: "Your API tokens (never their secrets)",
        tags: ["auth"],
        auth: ACCOUNT,
        responses: {
          200: { description: "tokens", schema: z.object({ tokens: z.array(TokenInfo) }) },
          ...errors(401, 403),
        },
      },
      async ({ principal }) => ({ tokens: (await tokens.list(principal.user)).map(info) }),
    ),
    route(
      {
        method: "DELETE",
        url: "/api/v1/tokens/:id",
        operationId: "revokeToken",
        summary: "Revoke one of your API tokens (an admin: anyone's)",
        tags: ["auth"],
        auth: ACCOUNT,
        params: z.strictObject({ id: z.string().regex(/^[A-Za-z0-9_-]{16}$/) }),
        responses: { 204: { description: "revoked" }, ...errors(400, 401, 403, 404) },
      },
      async ({ params, principal, reply }) => {
        await tokens.revoke(actorOf(principal), params.id);
        reply.code(204);
      },
    ),
  ];
}
