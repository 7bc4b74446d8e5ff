// Login, logout and the current session. Passwords go through the service's LoginService (the defender first, argon2id
// even for unknown users, the login audit), so the answer for an unknown user, a wrong password and a banned source is
// one and the same 401.
import { randomUUID } from "node:crypto";
import { z } from "zod";
import { ROLES } from "../../store/types.ts";
import type { HttpDeps } from "./deps.ts";
import { HttpProblem } from "./problem.ts";
import { ALL_ROLES, errors, type Route, route } from "./routes.ts";
import { SESSION_COOKIE } from "./sessions.ts";

const LoginBody = z
  .strictObject({
    username: z.string().min(1).max(64),
    password: z.string().min(1).max(1024),
    totp: z.string().min(6).max(64).optional().describe("TOTP or recovery code, for users with a second factor"),
  })
  .meta({ id: "LoginRequest" });

const SessionInfo = z
  .object({
    user: z.string(),
    role: z.enum(ROLES as [string, ...string[]]),
    csrfToken: z.string().optional().describe("send as X-CSRF-Token on POST/PUT/PATCH/DELETE with the cookie"),
    via: z.enum(["session", "token"]),
    expiresAt: z.string().optional(),
    idleTimeoutSeconds: z.number().optional(),
    totpEnrolmentRequired: z
      .boolean()
      .optional()
      .describe("TOTP is required of you and not set up: only enrolment works until you confirm a code"),
  })
  .meta({ id: "Session" });

export function authRoutes(deps: HttpDeps): Route[] {
  const { options: o, sessions } = deps;
  return [
    route(
      {
        method: "POST",
        url: "/api/v1/auth/login",
        operationId: "login",
        summary: "Log in with user name and password; sets the session cookie",
        tags: ["auth"],
        auth: "public",
        body: LoginBody,
        responses: { 200: { description: "logged in", schema: SessionInfo }, ...errors(400, 401, 415) },
      },
      async ({ req, reply, body }) => {
        const sessionId = randomUUID();
        const result = await o.login.login({
          user: body.username,
          protocol: "http",
          sessionId,
          sourceIp: req.ip,
          credential: { method: "password", password: body.password, otp: body.totp },
          canEnrol: true,
        });
        if (result.outcome === "refused" && result.secondFactor) {
          throw new HttpProblem(401, "SECOND_FACTOR_REQUIRED", "a TOTP code (or a recovery code) is required", {
            code: "AUTH_FAILED",
          });
        }
        const row = result.outcome === "success" ? await o.user(result.user) : undefined;
        if (result.outcome !== "success" || !row) {
          if (result.outcome === "success") o.login.logout(sessionId);
          throw new HttpProblem(401, "UNAUTHORIZED", "login refused", { code: "AUTH_FAILED" });
        }
        const enrolOnly = result.outcome === "success" && result.enrolSecondFactor === true;
        const { cookie, session } = await sessions.create(row.name, req.ip, sessionId, enrolOnly);
        // the user removed (maybe added again under the same name) while logged in: the service ends this session
        o.login.onEnd(sessionId, () => void sessions.endId(sessionId));
        reply.setCookie(SESSION_COOKIE, cookie, {
          path: "/",
          secure: true,
          httpOnly: true,
          sameSite: "strict",
          maxAge: Math.floor(sessions.settings.absoluteMs / 1000),
        });
        return {
          user: row.name,
          role: row.role,
          csrfToken: session.csrf,
          via: "session",
          expiresAt: new Date(session.created + sessions.settings.absoluteMs).toISOString(),
          idleTimeoutSeconds: Math.floor(sessions.settings.idleMs / 1000),
          ...(enrolOnly ? { totpEnrolmentRequired: true } : {}),
        };
      },
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/auth/session",
        operationId: "currentSession",
        summary: "Who is logged in (and the CSRF token of a browser session)",
        tags: ["auth"],
        auth: { roles: ALL_ROLES, scope: "account" },
        responses: { 200: { description: "the caller", schema: SessionInfo }, ...errors(401) },
      },
      async ({ req, principal }) => {
        const s = await sessions.lookup(req.cookies[SESSION_COOKIE]);
        return {
          user: principal.user,
          role: principal.role,
          via: principal.via,
          ...(s && principal.via === "session"
            ? {
                csrfToken: s.csrf,
                expiresAt: new Date(s.created + sessions.settings.absoluteMs).toISOString(),
                idleTimeoutSeconds: Math.floor(sessions.settings.idleMs / 1000),
                ...(s.enrolOnly ? { totpEnrolmentRequired: true } : {}),
              }
            : {}),
        };
      },
    ),
    route(
      {
        method: "POST",
        url: "/api/v1/auth/logout",
        operationId: "logout",
        summary: "End this browser session",
        tags: ["auth"],
        auth: { roles: ALL_ROLES, scope: "account" },
        responses: { 204: { description: "logged out" }, ...errors(401, 403) },
      },
      async ({ req, reply }) => {
        const value = req.cookies[SESSION_COOKIE];
        if (value) await sessions.end(value);
        reply.clearCookie(SESSION_COOKIE, { path: "/", secure: true, httpOnly: true, sameSite: "strict" });
        reply.code(204);
      },
    ),
    route(
      {
        method: "POST",
        url: "/api/v1/auth/logout-all",
        operationId: "logoutEverywhere",
        summary: "End every browser session of the caller (all devices)",
        tags: ["auth"],
        auth: { roles: ALL_ROLES, scope: "account" },
        responses: {
          200: { description: "sessions ended", schema: z.object({ ended: z.number().int() }) },
          ...errors(401, 403),
        },
      },
      async ({ reply, principal }) => {
        const ended = await sessions.endUser(principal.user);
        reply.clearCookie(SESSION_COOKIE, { path: "/", secure: true, httpOnly: true, sameSite: "strict" });
        return { ended };
      },
    ),
  ];
}
