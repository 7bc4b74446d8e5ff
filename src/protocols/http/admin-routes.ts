// Administration over HTTPS, each route a thin call into the service: users, groups, folders and the defender's bans
// through service/admin.ts (which checks the role again and audits with the caller as job user); the audit log and
// login histories for auditors; keys and their versions for custodians, through the key manager client. DESIGN §2:
// admin manages identities and folders, custodian keys, auditor reads; no route lets one role do another's job.
import { z } from "zod";
import { AtrestError } from "../../errors.ts";
import { KMS_SIGNED_HEADER } from "../../kms/api/relayed.ts";
import type { KeyInfo } from "../../kms/api/types.ts";
import { requireRole } from "../../service/actor.ts";
import type { UserChange as UserChangeInput } from "../../service/admin.ts";
import { ROLES, type UserRow } from "../../store/types.ts";
import { actorOf } from "./actor.ts";
import type { HttpDeps } from "./deps.ts";
import { ALL_ROLES, errors, type Route, route } from "./routes.ts";

const ADMIN = { roles: ["admin"], scope: "admin" } as const;
const ADMIN_READ = { roles: ["admin", "auditor"], scope: "admin" } as const;
const AUDIT = { roles: ["auditor"], scope: "audit" } as const;
const KEYS = { roles: ["custodian"], scope: "keys" } as const;
const PERMS = ["list", "download", "upload", "overwrite", "delete", "rename", "mkdir"] as const;

const Name = z.string().regex(/^[a-z_][a-z0-9._-]{0,31}$/, "1-32 of a-z 0-9 . _ - starting with a letter or _");
const KeyName = z.string().min(1).max(64);

const User = z
  .object({
    name: z.string(),
    role: z.enum(ROLES as [string, ...string[]]),
    home: z.string(),
    groups: z.array(z.string()),
    permissions: z.record(z.string(), z.array(z.string())),
    publicKeys: z.array(z.string()),
    hasPassword: z.boolean(),
    kek: z.string().nullable(),
    requireTotp: z.boolean().describe("password logins need a TOTP code (by this user's flag; groups may add it)"),
    disabled: z.boolean().describe("no login by any door; nothing runs as the user (shares, triggers)"),
    quotaBytes: z.number(),
    quotaFiles: z.number(),
    usedBytes: z.number(),
    usedFiles: z.number(),
    createdAt: z.string(),
  })
  .meta({ id: "User" });

function userJson(u: UserRow) {
  return {
    name: u.name,
    role: u.role,
    home: u.home,
    groups: u.groups,
    permissions: u.permissions,
    publicKeys: u.publicKeys,
    hasPassword: u.passwordHash !== null,
    kek: u.kek,
    requireTotp: u.requireTotp === true,
    disabled: u.disabled === true,
    quotaBytes: u.quotaBytes,
    quotaFiles: u.quotaFiles,
    usedBytes: u.usedBytes,
    usedFiles: u.usedFiles,
    createdAt: u.createdAt,
  };
}

const NewUser = z
  .strictObject({
    name: Name,
    password: z.string().min(8).max(1024).optional(),
    publicKeys: z.array(z.string().max(16_384)).max(100).optional(),
    home: z.string().startsWith("/").max(4096).optional(),
    groups: z.array(Name).max(100).optional(),
    permissions: z.record(z.string().startsWith("/"), z.array(z.enum(PERMS))).optional(),
    quotaBytes: z.number().int().min(0).optional(),
    quotaFiles: z.number().int().min(0).optional(),
    role: z.enum(ROLES as [string, ...string[]]).optional(),
    kek: KeyName.optional(),
    requireTotp: z.boolean().optional().describe("password logins need a TOTP code (enrolled at the first login)"),
  })
  .meta({ id: "NewUser" });

const Quota = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const UserChange = z
  .strictObject({
    home: z.string().startsWith("/").max(4096).optional().describe("a new home (files already stored stay put)"),
    permissions: z.record(z.string().startsWith("/").max(4096), z.array(z.enum(PERMS))).optional(),
    groups: z.array(Name).max(100).optional(),
    quotaBytes: Quota.optional().describe("0 = unlimited"),
    quotaFiles: Quota.optional().describe("0 = unlimited"),
    requireTotp: z.boolean().optional(),
    disabled: z.boolean().optional().describe("true: refuse every login and end the user's live connections"),
  })
  .refine((c) => Object.keys(c).length > 0, "name at least one field to change")
  .meta({ id: "UserChange" });

const Group = z.object({
  name: z.string(),
  options: z.object({ key: z.string().optional(), requireTotp: z.boolean().optional() }),
  createdAt: z.string(),
});
const Folder = z.object({ path: z.string(), options: z.record(z.string(), z.unknown()), createdAt: z.string() });
const Ban = z.object({
  kind: z.enum(["ip", "user"]),
  subject: z.string(),
  since: z.string(),
  until: z.string(),
  count: z.number(),
  active: z.boolean(),
});

const AuditRecord = z.object({ seq: z.number(), record: z.record(z.string(), z.unknown()) }).meta({ id: "AuditMatch" });
const AuditQuery = z.strictObject({
  user: z.string().max(64).optional(),
  action: z.string().max(64).optional(),
  path: z.string().max(4096).optional().describe("records whose path or target path starts with this"),
  outcome: z.enum(["success", "failure"]).optional(),
  since: z.iso.datetime({ offset: true }).optional(),
  limit: z.coerce.number().int().min(1).max(10_000).default(200),
});

const KeyVersion = z.object({ version: z.number(), state: z.string() }).loose();
const Key = z
  .object({
    name: z.string(),
    currentVersion: z.number(),
    versions: z.array(KeyVersion),
    rotation: z
      .object({ policy: z.string(), periodDays: z.number().optional(), nextRotationAt: z.string().optional() })
      .optional(),
    minDecryptionVersion: z.number().optional(),
    minEncryptionVersion: z.number().optional(),
    origin: z.string().optional(),
    type: z.string().optional(),
    compromised: z.boolean().optional(),
  })
  .meta({ id: "Key" });
/** What the key manager tells about a key (the embedded one tells its rotation policy and limits too). */
const keyJson = (k: KeyInfo) => {
  const x = k as KeyInfo & Record<string, unknown>;
  const pick = ["rotation", "minDecryptionVersion", "minEncryptionVersion", "origin", "type", "compromised"] as const;
  return {
    name: k.name,
    currentVersion: k.currentVersion,
    versions: k.versions,
    ...Object.fromEntries(pick.filter((f) => x[f] !== undefined).map((f) => [f, x[f]])),
  };
};

export function adminRoutes(deps: HttpDeps): Route[] {
  const o = deps.options;
  const admin = o.admin;
  const history = (user: string, since: string | undefined, limit: number) =>
    o.auditQuery((r) => (r.action === "login" || r.action === "logout") && r.user === user, {
      since: since ? new Date(since) : undefined,
      limit,
    });
  return [
    route(
      {
        method: "GET",
        url: "/api/v1/admin/users",
        operationId: "listUsers",
        summary: "Users (never their password hashes)",
        tags: ["admin"],
        auth: ADMIN_READ,
        responses: { 200: { description: "users", schema: z.object({ users: z.array(User) }) }, ...errors(401, 403) },
      },
      async ({ principal }) => ({ users: (await admin.listUsers(actorOf(principal))).map(userJson) }),
    ),
    route(
      {
        method: "POST",
        url: "/api/v1/admin/users",
        operationId: "addUser",
        summary: "Add a user (password and/or SSH public keys)",
        tags: ["admin"],
        auth: ADMIN,
        body: NewUser,
        responses: { 201: { description: "added", schema: User }, ...errors(400, 401, 403, 409, 415) },
      },
      async ({ body, principal, reply }) => {
        const u = await admin.addUser(actorOf(principal), body as Parameters<typeof admin.addUser>[1]);
        reply.code(201);
        return userJson(u);
      },
    ),
    route(
      {
        method: "PUT",
        url: "/api/v1/admin/users/:name/require-totp",
        operationId: "setUserRequireTotp",
        summary: "Require (or stop requiring) a TOTP code at this user's password logins",
        tags: ["admin"],
        auth: ADMIN,
        params: z.strictObject({ name: Name }),
        body: z.strictObject({ required: z.boolean() }),
        responses: { 200: { description: "the user", schema: User }, ...errors(400, 401, 403, 404, 415) },
      },
      async ({ params, body, principal }) =>
        userJson(await admin.setUserRequireTotp(actorOf(principal), params.name, body.required)),
    ),
    route(
      {
        method: "PATCH",
        url: "/api/v1/admin/users/:name",
        operationId: "changeUser",
        summary: "Change a user's home, permissions, groups, quotas, TOTP requirement or disable/enable them",
        tags: ["admin"],
        auth: ADMIN,
        params: z.strictObject({ name: Name }),
        body: UserChange,
        responses: { 200: { description: "the user", schema: User }, ...errors(400, 401, 403, 404, 409, 415, 422) },
      },
      async ({ params, body, principal }) =>
        userJson(await admin.changeUser(actorOf(principal), params.name, body as UserChangeInput, o.login)),
    ),
    route(
      {
        method: "DELETE",
        url: "/api/v1/admin/users/:name/sessions",
        operationId: "endUserSessions",
        summary:
          "End a user's sessions: browser sessions, SFTP connections and S3 requests in flight (`ended`: this node's; other nodes on the store end theirs within 2 s)",
        tags: ["admin"],
        auth: ADMIN,
        params: z.strictObject({ name: Name }),
        responses: {
          200: { description: "how many ended", schema: z.object({ ended: z.number() }) },
          ...errors(400, 401, 403, 404),
        },
      },
      async ({ params, principal }) => {
        const ended = await admin.endSessions(actorOf(principal), params.name, o.login);
        // the other nodes end theirs at their next check (within 2 s)
        await o.liveSessions?.endEverywhere(params.name);
        return { ended };
      },
    ),
    route(
      {
        method: "DELETE",
        url: "/api/v1/admin/users/:name",
        operationId: "removeUser",
        summary: "Remove a user (their files stay; their browser sessions end)",
        tags: ["admin"],
        auth: ADMIN,
        params: z.strictObject({ name: Name }),
        responses: { 204: { description: "removed" }, ...errors(400, 401, 403, 404) },
      },
      async ({ params, principal, reply }) => {
        await admin.removeUser(actorOf(principal), params.name);
        o.login.endUser(params.name);
        await deps.sessions.endUser(params.name);
        reply.code(204);
      },
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/admin/groups",
        operationId: "listGroups",
        summary: "Groups",
        tags: ["admin"],
        auth: ADMIN_READ,
        responses: {
          200: { description: "groups", schema: z.object({ groups: z.array(Group) }) },
          ...errors(401, 403),
        },
      },
      async ({ principal }) => ({ groups: await admin.listGroups(actorOf(principal)) }),
    ),
    route(
      {
        method: "PUT",
        url: "/api/v1/admin/groups/:name",
        operationId: "putGroup",
        summary: "Create a group or replace its options (key: the KEK for members' files)",
        tags: ["admin"],
        auth: ADMIN,
        params: z.strictObject({ name: Name }),
        body: z.strictObject({
          key: KeyName.optional(),
          requireTotp: z.boolean().optional().describe("members' password logins need a TOTP code"),
        }),
        responses: { 200: { description: "the group", schema: Group }, ...errors(400, 401, 403, 415) },
      },
      async ({ params, body, principal }) => admin.putGroup(actorOf(principal), params.name, body),
    ),
    route(
      {
        method: "DELETE",
        url: "/api/v1/admin/groups/:name",
        operationId: "removeGroup",
        summary: "Remove a group",
        tags: ["admin"],
        auth: ADMIN,
        params: z.strictObject({ name: Name }),
        responses: { 204: { description: "removed" }, ...errors(400, 401, 403, 404) },
      },
      async ({ params, principal, reply }) => {
        await admin.removeGroup(actorOf(principal), params.name);
        reply.code(204);
      },
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/admin/folders",
        operationId: "listFolders",
        summary: "Folders and their encryption policy",
        tags: ["admin"],
        auth: ADMIN_READ,
        responses: {
          200: { description: "folders", schema: z.object({ folders: z.array(Folder) }) },
          ...errors(401, 403),
        },
      },
      async ({ principal }) => ({ folders: await admin.listFolders(actorOf(principal)) }),
    ),
    route(
      {
        method: "PUT",
        url: "/api/v1/admin/folders",
        operationId: "putFolder",
        summary: "Create a folder (global path) or replace its policy (key: the KEK for files written under it)",
        tags: ["admin"],
        auth: ADMIN,
        body: z.strictObject({ path: z.string().startsWith("/").max(4096), key: KeyName.optional() }),
        responses: { 200: { description: "the folder", schema: Folder }, ...errors(400, 401, 403, 415) },
      },
      async ({ body, principal }) =>
        admin.putFolder(actorOf(principal), body.path, body.key === undefined ? {} : { key: body.key }),
    ),
    route(
      {
        method: "DELETE",
        url: "/api/v1/admin/folders",
        operationId: "removeFolder",
        summary: "Remove a folder rule (the directory and its files stay)",
        tags: ["admin"],
        auth: ADMIN,
        query: z.strictObject({ path: z.string().startsWith("/").max(4096) }),
        responses: { 204: { description: "removed" }, ...errors(400, 401, 403, 404) },
      },
      async ({ query, principal, reply }) => {
        await admin.removeFolder(actorOf(principal), query.path);
        reply.code(204);
      },
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/admin/bans",
        operationId: "listBans",
        summary: "The brute-force defender's bans (ended ones too: they lengthen the next)",
        tags: ["admin"],
        auth: ADMIN_READ,
        responses: { 200: { description: "bans", schema: z.object({ bans: z.array(Ban) }) }, ...errors(401, 403) },
      },
      async ({ principal }) => {
        const now = Date.now();
        return {
          bans: (await admin.listBans(actorOf(principal))).map((b) => ({
            kind: b.kind,
            subject: b.subject,
            since: new Date(b.since).toISOString(),
            until: new Date(b.until).toISOString(),
            count: b.count,
            active: b.until > now,
          })),
        };
      },
    ),
    route(
      {
        method: "DELETE",
        url: "/api/v1/admin/bans/:subject",
        operationId: "unban",
        summary: "Lift the bans on an IP address or a user name (audited)",
        tags: ["admin"],
        auth: ADMIN,
        params: z.strictObject({ subject: z.string().min(1).max(128) }),
        responses: {
          200: { description: "what was lifted", schema: z.object({ lifted: z.number() }) },
          ...errors(400, 401, 403),
        },
      },
      async ({ params, principal }) => ({ lifted: (await admin.unban(actorOf(principal), params.subject)).length }),
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/admin/sessions",
        operationId: "listSessions",
        summary:
          "Logged-in connections of every door right now: browser sessions (any node accepts them) and every node's SFTP/S3 connections, with the node",
        tags: ["admin"],
        auth: ADMIN_READ,
        responses: {
          200: {
            description: "sessions",
            schema: z.object({
              sessions: z.array(
                z.object({
                  sessionId: z.string(),
                  user: z.string(),
                  protocol: z.string(),
                  sourceIp: z.string().optional(),
                  since: z.string(),
                  /** The node the connection is on (several nodes on one store; browser sessions have none). */
                  node: z.string().optional(),
                }),
              ),
            }),
          },
          ...errors(401, 403),
        },
      },
      async () => {
        // browser sessions from the table: with a shared store every node's, not only those that logged in here
        const browser = (await deps.sessions.listAll()).map((s) => ({
          sessionId: s.id,
          user: s.user,
          protocol: "http",
          sourceIp: s.sourceIp,
          since: s.created,
        }));
        // the other doors' connections (SFTP, S3, …): every node's as each published them in the store, else this
        // node's; the login service's record of browser logins is left out, as it keeps a session ended through
        // another node until this one next sees it
        const others: {
          sessionId: string;
          user: string;
          protocol: string;
          sourceIp?: string;
          since: number;
          node?: string;
        }[] = o.liveSessions ? await o.liveSessions.list() : o.login.sessions().filter((s) => s.protocol !== "http");
        return {
          sessions: [...browser, ...others].map((s) => ({
            sessionId: s.sessionId,
            user: s.user,
            protocol: s.protocol,
            ...(s.sourceIp !== undefined ? { sourceIp: s.sourceIp } : {}),
            since: new Date(s.since).toISOString(),
            ...("node" in s && s.node !== undefined ? { node: s.node } : {}),
          })),
        };
      },
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/audit",
        operationId: "queryAudit",
        summary: "Audit records (decrypted), newest `limit` of those matching, oldest first",
        tags: ["audit"],
        auth: AUDIT,
        query: AuditQuery,
        responses: {
          200: { description: "matches", schema: z.object({ records: z.array(AuditRecord) }) },
          ...errors(400, 401, 403),
        },
      },
      async ({ query: q }) => ({
        records: o.auditQuery(
          (r) =>
            (q.user === undefined || r.user === q.user || r.effectiveUser === q.user) &&
            (q.action === undefined || r.action === q.action) &&
            (q.outcome === undefined || r.outcome === q.outcome) &&
            (q.path === undefined || (r.path ?? "").startsWith(q.path) || (r.targetPath ?? "").startsWith(q.path)),
          { since: q.since ? new Date(q.since) : undefined, limit: q.limit },
        ),
      }),
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/audit/logins/:user",
        operationId: "loginHistory",
        summary: "A user's logins (successes and failures with method, source and reason) and logouts",
        tags: ["audit"],
        auth: AUDIT,
        params: z.strictObject({ user: z.string().min(1).max(64) }),
        query: z.strictObject({
          since: z.iso.datetime({ offset: true }).optional(),
          limit: z.coerce.number().int().min(1).max(10_000).default(200),
        }),
        responses: {
          200: { description: "matches", schema: z.object({ records: z.array(AuditRecord) }) },
          ...errors(400, 401, 403),
        },
      },
      async ({ params, query }) => ({ records: history(params.user, query.since, query.limit) }),
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/account/logins",
        operationId: "myLoginHistory",
        summary: "Your own login history",
        tags: ["account"],
        auth: { roles: ALL_ROLES, scope: "account" },
        query: z.strictObject({
          since: z.iso.datetime({ offset: true }).optional(),
          limit: z.coerce.number().int().min(1).max(1000).default(50),
        }),
        responses: {
          200: { description: "matches", schema: z.object({ records: z.array(AuditRecord) }) },
          ...errors(400, 401, 403),
        },
      },
      async ({ principal, query }) => ({ records: history(principal.user, query.since, query.limit) }),
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/keys",
        operationId: "listKeys",
        summary: "Key encryption keys and their versions (from the key manager)",
        tags: ["keys"],
        auth: KEYS,
        responses: { 200: { description: "keys", schema: z.object({ keys: z.array(Key) }) }, ...errors(401, 403, 503) },
      },
      async ({ principal }) => {
        requireRole(actorOf(principal), ["custodian"], "listing keys");
        return { keys: (await o.keys.listKeys()).map(keyJson) };
      },
    ),
    route(
      {
        method: "POST",
        url: "/api/v1/keys",
        operationId: "createKey",
        summary: "Create a key encryption key",
        tags: ["keys"],
        auth: KEYS,
        body: z.strictObject({ name: KeyName }),
        responses: { 201: { description: "created", schema: Key }, ...errors(400, 401, 403, 409, 415, 503) },
      },
      async ({ body, principal, reply }) => {
        requireRole(actorOf(principal), ["custodian"], "creating a key");
        const k = await o.keys.createKey(body.name);
        reply.code(201);
        return keyJson(k);
      },
    ),
    route(
      {
        method: "POST",
        url: "/api/v1/keys/:name/rotate",
        operationId: "rotateKey",
        summary: "Rotate a key: a new version wraps new files; old versions still unwrap until retired",
        tags: ["keys"],
        auth: KEYS,
        params: z.strictObject({ name: KeyName }),
        responses: { 200: { description: "rotated", schema: Key }, ...errors(400, 401, 403, 404, 503) },
      },
      async ({ params, principal }) => {
        requireRole(actorOf(principal), ["custodian"], "rotating a key");
        const known = (await o.keys.listKeys()).some((k) => k.name === params.name);
        if (!known) throw new AtrestError("NOT_FOUND", `no such key: ${params.name}`);
        return keyJson(await o.keys.rotateKey(params.name));
      },
    ),
    route(
      {
        method: "PUT",
        url: "/api/v1/keys/:name/rotation",
        operationId: "setKeyRotation",
        headers: { [KMS_SIGNED_HEADER]: "remote key manager: the custodian's signed call (see listKeyRequests)" },
        summary: "Set a key's rotation policy: auto (every periodDays), manual or none (audited by the key manager)",
        tags: ["keys"],
        auth: KEYS,
        params: z.strictObject({ name: KeyName }),
        body: z
          .strictObject({
            policy: z.enum(["auto", "manual", "none"]),
            periodDays: z.number().int().min(1).max(3650).optional().describe("the cryptoperiod of auto rotation"),
          })
          .refine((b) => b.policy !== "auto" || b.periodDays !== undefined, "auto rotation needs periodDays")
          .refine((b) => b.policy === "auto" || b.periodDays === undefined, "periodDays is for auto rotation only"),
        responses: { 200: { description: "the key", schema: Key }, ...errors(400, 401, 403, 404, 415, 428, 501, 503) },
      },
      async ({ params, body, principal, req }) => {
        requireRole(actorOf(principal), ["custodian"], "setting a key's rotation policy");
        const set = o.custody?.setRotation;
        if (!set) throw new AtrestError("UNSUPPORTED", "this server's key manager has no rotation policies");
        const signed = req.headers[KMS_SIGNED_HEADER];
        return keyJson(
          await set({ user: principal.user, ...(typeof signed === "string" ? { signed } : {}) }, params.name, body),
        );
      },
    ),
  ];
}
