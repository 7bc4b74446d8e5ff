// Key custody over HTTPS, for custodians (auditors read the files-per-version figures too): files per key version,
// who can decrypt a file, the key manager's dual-control requests (ask for a destruction, approve, reject: each
// custodian acts under their own name, and the key manager refuses a requester approving their own request), and
// rewrap/reencrypt jobs run by this server with their live progress. The work is behind KeyCustody, built by the
// wiring (src/wiring/key-custody.ts): this file only validates, checks roles and maps.
import { z } from "zod";
import { AtrestError } from "../../errors.ts";
import { KMS_SIGNED_HEADER } from "../../kms/api/relayed.ts";
import { requireRole } from "../../service/actor.ts";
import { actorOf } from "./actor.ts";
import type { HttpDeps } from "./deps.ts";
import { errors, PathSchema, type Route, route } from "./routes.ts";

const CUSTODIAN = { roles: ["custodian"], scope: "keys" } as const;
const KeyName = z.string().min(1).max(64);
const Request = z.object({ id: z.string(), status: z.string() }).loose().meta({ id: "KeyRequest" });
const Job = z
  .object({
    id: z.string(),
    kind: z.enum(["rewrap", "reencrypt"]),
    key: z.string(),
    state: z.enum(["running", "done", "failed"]),
    startedBy: z.string(),
    startedAt: z.string(),
    finishedAt: z.string().optional(),
    total: z.number(),
    done: z.number(),
    skipped: z.number(),
    failed: z.number(),
    bytes: z.number(),
    error: z.string().optional(),
  })
  .meta({ id: "KeyJob" });
/** With a remote key manager each call is the custodian's signed statement (src/kms/api/relayed.ts). */
const SIGNED_HEADER = {
  [KMS_SIGNED_HEADER]:
    "remote key manager: base64url JSON {statement, signature, certificate}; without it the answer is 428 with the statement to sign",
};
const who = (principal: { user: string }, req: { headers: Record<string, string | string[] | undefined> }) => {
  const h = req.headers[KMS_SIGNED_HEADER];
  return { user: principal.user, ...(typeof h === "string" ? { signed: h } : {}) };
};
const Reason = z.strictObject({ reason: z.string().max(1000).default("") });
/** The custodian accepts that files under a version being destroyed are lost: without it the server refuses (409). */
const AcceptDataLoss = z
  .boolean()
  .optional()
  .describe("destroy although files are still wrapped under the version (they become unreadable for good); audited");

export function custodyRoutes(deps: HttpDeps): Route[] {
  const custody = () => {
    const c = deps.options.custody;
    if (!c) throw new AtrestError("UNSUPPORTED", "key custody is not available on this server");
    return c;
  };
  const requests = () => {
    const r = custody().requests;
    if (!r) {
      throw new AtrestError("UNSUPPORTED", "this server's key manager has no dual-control requests");
    }
    return r;
  };
  return [
    route(
      {
        method: "GET",
        url: "/api/v1/keys/status",
        operationId: "keyVersionFiles",
        summary: "Files per key version: what a rotation still has to rewrap",
        tags: ["keys"],
        auth: { roles: ["custodian", "auditor"], scope: "keys" },
        responses: {
          200: {
            description: "counts",
            schema: z.object({
              versions: z.array(z.object({ keyRef: z.string().nullable(), files: z.number(), current: z.boolean() })),
            }),
          },
          ...errors(401, 403, 503),
        },
      },
      async () => ({ versions: await custody().status() }),
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/keys/who-can-decrypt",
        operationId: "whoCanDecrypt",
        summary: "The key behind a file (global path), where it lives, its state, and who may unwrap under it",
        tags: ["keys"],
        auth: CUSTODIAN,
        query: z.strictObject({ path: PathSchema }),
        responses: {
          200: { description: "the report", schema: z.record(z.string(), z.unknown()) },
          ...errors(400, 401, 403, 404, 503),
        },
      },
      async ({ query, principal }) => {
        requireRole(actorOf(principal), ["custodian"], "who-can-decrypt");
        return custody().whoCanDecrypt(query.path);
      },
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/keys/requests",
        operationId: "listKeyRequests",
        headers: SIGNED_HEADER,
        summary: "Dual-control requests (destroy, export, client policy, master rotation) and their approvals",
        tags: ["keys"],
        auth: CUSTODIAN,
        query: z.strictObject({ status: z.enum(["pending", "executed", "rejected", "failed", "expired"]).optional() }),
        responses: {
          200: { description: "requests", schema: z.object({ requests: z.array(Request) }) },
          ...errors(400, 401, 403, 428, 501, 503),
        },
      },
      async ({ query, principal, req }) => ({ requests: await requests().list(who(principal, req), query.status) }),
    ),
    route(
      {
        method: "POST",
        url: "/api/v1/keys/:name/destroy",
        operationId: "requestKeyDestroy",
        headers: SIGNED_HEADER,
        summary:
          "Ask for a key's (or one version's) destruction: runs after other custodians approve and a waiting period",
        tags: ["keys"],
        auth: CUSTODIAN,
        params: z.strictObject({ name: KeyName }),
        body: z.strictObject({
          version: z.number().int().min(1).optional(),
          waitingDays: z.number().int().min(1).max(365).optional(),
          reason: z.string().max(1000).optional(),
          acceptDataLoss: AcceptDataLoss,
        }),
        responses: {
          201: { description: "the request", schema: Request },
          ...errors(400, 401, 403, 404, 409, 415, 428, 501),
        },
      },
      async ({ params, body, principal, reply, req }) => {
        const r = await requests().requestDestroy(who(principal, req), params.name, body);
        reply.code(201);
        return r;
      },
    ),
    route(
      {
        method: "POST",
        url: "/api/v1/keys/:name/cancel-destroy",
        operationId: "cancelKeyDestroy",
        headers: SIGNED_HEADER,
        summary: "Stop a scheduled destruction (every scheduled version, or one) during its waiting period",
        tags: ["keys"],
        auth: CUSTODIAN,
        params: z.strictObject({ name: KeyName }),
        body: z.strictObject({ version: z.number().int().min(1).optional() }),
        responses: {
          200: { description: "the key now", schema: z.record(z.string(), z.unknown()) },
          ...errors(400, 401, 403, 404, 415, 428, 501),
        },
      },
      async ({ params, body, principal, req }) =>
        requests().cancelDestroy(who(principal, req), params.name, body.version),
    ),
    route(
      {
        method: "POST",
        url: "/api/v1/keys/requests/:id/approve",
        operationId: "approveKeyRequest",
        headers: SIGNED_HEADER,
        summary: "Approve a request as this custodian (never your own); it runs when the quorum is reached",
        tags: ["keys"],
        auth: CUSTODIAN,
        params: z.strictObject({ id: z.string().min(1).max(128) }),
        body: Reason.extend({ acceptDataLoss: AcceptDataLoss }),
        responses: {
          200: { description: "the request now", schema: Request },
          ...errors(400, 401, 403, 404, 409, 415, 428, 501),
        },
      },
      async ({ params, body, principal, req }) =>
        requests().approve(who(principal, req), params.id, body.reason, body.acceptDataLoss),
    ),
    route(
      {
        method: "POST",
        url: "/api/v1/keys/requests/:id/reject",
        operationId: "rejectKeyRequest",
        headers: SIGNED_HEADER,
        summary: "Reject a request as this custodian (one rejection ends it)",
        tags: ["keys"],
        auth: CUSTODIAN,
        params: z.strictObject({ id: z.string().min(1).max(128) }),
        body: Reason,
        responses: {
          200: { description: "the request now", schema: Request },
          ...errors(400, 401, 403, 404, 409, 415, 428, 501),
        },
      },
      async ({ params, body, principal, req }) => requests().reject(who(principal, req), params.id, body.reason),
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/keys/jobs",
        operationId: "listKeyJobs",
        summary: "Rewrap and reencrypt jobs this server ran or runs, with their progress",
        tags: ["keys"],
        auth: CUSTODIAN,
        responses: { 200: { description: "jobs", schema: z.object({ jobs: z.array(Job) }) }, ...errors(401, 403) },
      },
      async () => ({ jobs: custody().jobs.list() }),
    ),
    route(
      {
        method: "POST",
        url: "/api/v1/keys/jobs",
        operationId: "startKeyJob",
        summary: "Start a rewrap (data keys under the key's current version) or reencrypt (new data keys and blobs)",
        tags: ["keys"],
        auth: CUSTODIAN,
        body: z.strictObject({
          kind: z.enum(["rewrap", "reencrypt"]),
          key: KeyName,
          version: z.number().int().min(1).optional().describe("reencrypt: only files under this version"),
          allVersions: z.boolean().optional().describe("reencrypt: the current version's files too"),
          to: KeyName.optional().describe("reencrypt: new key for every file"),
        }),
        responses: { 202: { description: "started", schema: Job }, ...errors(400, 401, 403, 409, 415) },
      },
      async ({ body, principal, reply }) => {
        requireRole(actorOf(principal), ["custodian"], "starting a key job");
        const job = custody().jobs.start(principal.user, body);
        reply.code(202);
        return job;
      },
    ),
  ];
}
