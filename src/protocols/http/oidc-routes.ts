// OIDC login (openid-client): authorization code flow with PKCE (S256), `state` and `nonce`. `GET
// /api/v1/auth/oidc/login` sends the browser to the provider with a fresh state, nonce and code verifier, kept in the
// browser's HttpOnly cookie sealed under the server's cookie key (sealed-cookie.ts: any node of a cluster finishes the
// login); the provider sends it back to `GET /api/v1/auth/oidc/callback`, where the state must match the cookie's
// (an unexpired login started in this browser), the code is exchanged
// with the verifier, the ID token is checked (issuer, audience, signature, nonce) and the user claim names the atrest
// user. Provisioning (auto: create at first login; existing: must exist) and the group claim → groups mapping go
// through the admin use-cases; the login itself goes through the LoginService like a password (the defender's ban
// first, the login audit with method oidc, refusals scored), then the browser session is the same as a password's.
import { randomUUID } from "node:crypto";
import type * as OidcClient from "openid-client";
import { z } from "zod";
import type { Actor } from "../../service/actor.ts";
import { validateGroupName, validateUserName } from "../../service/users.ts";
import type { HttpDeps } from "./deps.ts";
import type { OidcSettings } from "./oidc-settings.ts";
import { HttpProblem } from "./problem.ts";
import { errors, type Route, route } from "./routes.ts";
import { SESSION_COOKIE } from "./sessions.ts";

const STATE_COOKIE = "__Host-atrest_oidc";
const PENDING_MS = 10 * 60_000;
const OIDC_PURPOSE = "oidc-login";

interface Pending {
  verifier: string;
  nonce: string;
  /** Where the web app wants to land after login (a path on this server). */
  next: string;
}

// openid-client (with jose and oauth4webapi) is loaded by the first OIDC request: most servers configure no OIDC
// provider, and one that does keeps no login code in memory until a login starts
const oidcClient = (): Promise<typeof OidcClient> => import("openid-client");

export function oidcRoutes(deps: HttpDeps): Route[] {
  const settings = deps.options.oidc;
  // the login's state, nonce and PKCE verifier travel in the browser's sealed cookie (any node finishes the login)
  const pending = {
    seal: (state: string, p: Pending) => deps.cookies.seal(OIDC_PURPOSE, { state, ...p }, PENDING_MS),
    open: (value: string | undefined): (Pending & { state: string }) | undefined => {
      const v = deps.cookies.open(OIDC_PURPOSE, value);
      const ok = v && [v.state, v.verifier, v.nonce, v.next].every((x) => typeof x === "string");
      return ok ? (v as unknown as Pending & { state: string }) : undefined;
    },
  };
  let config: Promise<OidcClient.Configuration> | undefined;
  const configuration = () => {
    if (!settings) throw new HttpProblem(404, "NOT_FOUND", "OIDC login is not configured");
    config ??= oidcClient()
      .then((oidc) => oidc.discovery(new URL(settings.issuer), settings.clientId, settings.clientSecret))
      .catch((err: unknown) => {
        config = undefined; // the provider may come up later: try again next time
        throw err;
      });
    return config;
  };
  const system: Actor = {
    user: `oidc:${settings ? new URL(settings.issuer).host : "-"}`,
    role: "admin",
    protocol: "http",
  };

  return [
    route(
      {
        method: "GET",
        url: "/api/v1/auth/oidc",
        operationId: "oidcInfo",
        summary: "Whether OIDC login is configured, and the label of its button",
        tags: ["auth"],
        auth: "public",
        responses: {
          200: {
            description: "OIDC login",
            schema: z.object({ enabled: z.boolean(), label: z.string().optional(), loginUrl: z.string().optional() }),
          },
        },
      },
      async () =>
        settings ? { enabled: true, label: settings.label, loginUrl: "/api/v1/auth/oidc/login" } : { enabled: false },
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/auth/oidc/login",
        operationId: "oidcLogin",
        summary: "Start an OIDC login: redirects to the provider (authorization code + PKCE, state, nonce)",
        tags: ["auth"],
        auth: "public",
        query: z.strictObject({
          next: z
            .string()
            .max(512)
            .regex(/^\/(?!\/)[^\\]*$/, "a path on this server")
            .default("/")
            .describe("where to go after login"),
        }),
        responses: { 302: { description: "to the provider" }, 503: { description: "the provider cannot be reached" } },
      },
      async ({ reply, query }) => {
        const s = settings as OidcSettings;
        const cfg = await configuration().catch(() => {
          throw new HttpProblem(503, "UNAVAILABLE", "the OIDC provider cannot be reached", { code: "UNSUPPORTED" });
        });
        const oidc = await oidcClient();
        const verifier = oidc.randomPKCECodeVerifier();
        const state = oidc.randomState();
        const nonce = oidc.randomNonce();
        const url = oidc.buildAuthorizationUrl(cfg, {
          redirect_uri: s.redirectUri,
          scope: s.scopes.join(" "),
          code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
          code_challenge_method: "S256",
          state,
          nonce,
        });
        // SameSite=Lax: the provider's redirect back is a cross-site top-level navigation
        reply.setCookie(STATE_COOKIE, pending.seal(state, { verifier, nonce, next: query.next }), {
          path: "/",
          secure: true,
          httpOnly: true,
          sameSite: "lax",
          maxAge: PENDING_MS / 1000,
        });
        return reply.redirect(url.href, 302);
      },
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/auth/oidc/callback",
        operationId: "oidcCallback",
        summary: "The provider's redirect back: checks state, PKCE and nonce, logs in, sets the session cookie",
        tags: ["auth"],
        auth: "public",
        query: z.object({}).catchall(z.string()),
        responses: {
          303: { description: "logged in: to the page the login started from" },
          ...errors(401),
        },
      },
      async ({ req, reply }) => {
        const s = settings as OidcSettings;
        const { login } = deps.options;
        const sessionId = randomUUID();
        const url = new URL(req.url, s.redirectUri);
        const state = url.searchParams.get("state") ?? "";
        const p = pending.open(req.cookies[STATE_COOKIE]);
        reply.clearCookie(STATE_COOKIE, { path: "/", secure: true, httpOnly: true, sameSite: "lax" });
        const refuse = async (reason: string, user = "-") => {
          await login.login({
            user,
            protocol: "http",
            sessionId,
            sourceIp: req.ip,
            credential: { method: "oidc", issuer: s.issuer, refused: reason },
          });
          throw new HttpProblem(401, "UNAUTHORIZED", "login refused", { code: "AUTH_FAILED" });
        };
        // no login started in this browser (or it expired, or the cookie is not ours): a forged or replayed callback
        if (!p) return refuse("unknown or expired state");
        // the state must come back to the browser that started the login (login CSRF); the provider's single-use code
        // stops a replay of a callback with its cookie
        if (p.state !== state) return refuse("state does not match this browser");
        let claims: Record<string, unknown>;
        try {
          const cfg = await configuration();
          const oidc = await oidcClient();
          // the provider's own redirect target: the query as received, on the configured redirect URI
          const current = new URL(s.redirectUri);
          current.search = url.search;
          const tokens = await oidc.authorizationCodeGrant(cfg, current, {
            pkceCodeVerifier: p.verifier,
            expectedState: state,
            expectedNonce: p.nonce,
            idTokenExpected: true,
          });
          const id = tokens.claims();
          if (!id) return refuse("no ID token");
          claims = { ...id };
          if (tokens.access_token && (claims[s.usernameClaim] === undefined || claims[s.groupClaim] === undefined)) {
            const info = await oidc.fetchUserInfo(cfg, tokens.access_token, id.sub).catch(() => undefined);
            if (info) claims = { ...info, ...claims };
          }
        } catch (err) {
          const code = (err as { code?: unknown; error?: unknown }).error ?? (err as { code?: unknown }).code;
          // Not the error object: openid-client's errors carry the provider's answer as `cause`, and on a malformed
          // token response that body holds the access and ID tokens.
          const e = err as Error;
          deps.options.logger.warn(
            { error: e.name, reason: e.message, code: typeof code === "string" ? code.slice(0, 64) : undefined },
            "oidc: code exchange or ID token check failed",
          );
          return refuse(`provider answer refused${typeof code === "string" ? ` (${code.slice(0, 64)})` : ""}`);
        }
        const name = claims[s.usernameClaim];
        if (typeof name !== "string") return refuse(`no ${s.usernameClaim} claim`);
        const username = name.toLowerCase();
        try {
          validateUserName(username);
        } catch {
          return refuse(`${s.usernameClaim} is not a valid user name`);
        }
        const raw = claims[s.groupClaim];
        const values = Array.isArray(raw)
          ? raw.filter((v) => typeof v === "string")
          : typeof raw === "string"
            ? [raw]
            : [];
        const mapped = [...new Set(values.map((v) => s.groupMap[v]).filter((g): g is string => g !== undefined))];
        for (const g of mapped) validateGroupName(g);
        const admin = deps.options.admin;
        const existing = await deps.options.user(username);
        // refused by the ban before anyone is created or changed
        if (await login.defender?.banned({ ip: req.ip, user: username })) return refuse("banned", username);
        if (!existing && s.provision === "auto") {
          await admin.addUser(system, { name: username, external: true, groups: mapped });
        } else if (existing && s.provision === "auto") {
          const managed = new Set(Object.values(s.groupMap));
          // groups the mapping manages follow the claim; other groups an admin gave stay
          const next = [...existing.groups.filter((g) => !managed.has(g)), ...mapped].sort();
          if (next.join(",") !== [...existing.groups].sort().join(","))
            await admin.setUserGroups(system, username, next);
        }
        const result = await login.login({
          user: username,
          protocol: "http",
          sessionId,
          sourceIp: req.ip,
          credential: { method: "oidc", issuer: s.issuer },
        });
        const row = result.outcome === "success" ? await deps.options.user(result.user) : undefined;
        if (result.outcome !== "success" || !row) {
          if (result.outcome === "success") login.logout(sessionId);
          throw new HttpProblem(401, "UNAUTHORIZED", "login refused", { code: "AUTH_FAILED" });
        }
        const { cookie } = await deps.sessions.create(row.name, req.ip, sessionId);
        login.onEnd(sessionId, () => void deps.sessions.endId(sessionId));
        reply.setCookie(SESSION_COOKIE, cookie, {
          path: "/",
          secure: true,
          httpOnly: true,
          sameSite: "strict",
          maxAge: Math.floor(deps.sessions.settings.absoluteMs / 1000),
        });
        // the web app reads the CSRF token from GET /api/v1/auth/session
        return reply.redirect(p.next, 303);
      },
    ),
  ];
}
