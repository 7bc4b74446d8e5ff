// The caller's own second factor: TOTP enrolment (secret, otpauth URI and its QR code, recovery codes: all shown
// once), confirmation with a first code, status, and disabling with a current code. Only from a browser session.
import { z } from "zod";
import type { HttpDeps } from "./deps.ts";
import { HttpProblem } from "./problem.ts";
import { ALL_ROLES, errors, type Principal, type Route, route } from "./routes.ts";

const ACCOUNT = { roles: ALL_ROLES, scope: "account" } as const;
const Code = z.strictObject({ code: z.string().min(6).max(64) });

function sessionOnly(p: Principal): void {
  if (p.via !== "session") {
    throw new HttpProblem(403, "FORBIDDEN", "the second factor is managed from a logged-in session", {
      code: "PERMISSION_DENIED",
    });
  }
}

export function accountRoutes(deps: HttpDeps): Route[] {
  const totp = deps.options.totp;
  return [
    route(
      {
        method: "GET",
        url: "/api/v1/account/totp",
        operationId: "totpStatus",
        summary: "Whether TOTP is active for you and how many recovery codes are left",
        tags: ["account"],
        auth: ACCOUNT,
        responses: {
          200: {
            description: "status",
            schema: z.object({
              enabled: z.boolean(),
              required: z.boolean().describe("an administrator requires TOTP of you (your own flag or a group's)"),
              recoveryCodesLeft: z.number(),
            }),
          },
          ...errors(401, 403),
        },
      },
      async ({ principal }) => ({
        enabled: await totp.required(principal.user),
        required: await totp.policyRequires(principal.user),
        recoveryCodesLeft: await totp.recoveryLeft(principal.user),
      }),
    ),
    route(
      {
        method: "POST",
        url: "/api/v1/account/totp",
        operationId: "totpEnrol",
        summary: "Start TOTP enrolment: secret, otpauth URI with its QR code (SVG), 10 recovery codes, shown once",
        tags: ["account"],
        auth: ACCOUNT,
        responses: {
          201: {
            description: "pending until confirmed with a first code",
            schema: z.object({
              secret: z.string(),
              otpauthUri: z.string(),
              qrSvg: z.string(),
              recoveryCodes: z.array(z.string()),
            }),
          },
          ...errors(401, 403, 409),
        },
      },
      async ({ principal, reply }) => {
        sessionOnly(principal);
        const e = await totp.enrol(principal.user);
        reply.code(201);
        return {
          ...e,
          qrSvg: await (await import("qrcode")).default.toString(e.otpauthUri, {
            type: "svg",
            errorCorrectionLevel: "M",
          }),
        };
      },
    ),
    route(
      {
        method: "POST",
        url: "/api/v1/account/totp/confirm",
        operationId: "totpConfirm",
        summary: "Confirm the enrolment with a first code; from then on password logins need a code",
        tags: ["account"],
        auth: ACCOUNT,
        body: Code,
        responses: { 204: { description: "active" }, ...errors(400, 401, 403, 415) },
      },
      async ({ body, principal, reply }) => {
        sessionOnly(principal);
        if (!(await totp.verify(principal.user, body.code, { confirm: true }))) {
          throw new HttpProblem(400, "INVALID_INPUT", "wrong code (check the device's clock)");
        }
        // a session limited to enrolment (TOTP required, none yet) becomes a full one
        await deps.sessions.unrestrict(principal.sessionId);
        reply.code(204);
      },
    ),
    route(
      {
        method: "DELETE",
        url: "/api/v1/account/totp",
        operationId: "totpDisable",
        summary: "Turn TOTP off (a current code or a recovery code proves the device is at hand)",
        tags: ["account"],
        auth: ACCOUNT,
        body: Code,
        responses: { 204: { description: "off" }, ...errors(400, 401, 403, 415) },
      },
      async ({ body, principal, reply }) => {
        sessionOnly(principal);
        if (!(await totp.verify(principal.user, body.code))) throw new HttpProblem(400, "INVALID_INPUT", "wrong code");
        await totp.disable(principal.user);
        reply.code(204);
      },
    ),
  ];
}
