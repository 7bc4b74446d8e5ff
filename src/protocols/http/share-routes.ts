// Share links over HTTPS. The owner's side (a logged-in user or a token with scope `shares`) makes, lists and revokes
// links; the public side (`/api/v1/s/<link>/…`, which the web app's page `/s/<link>` uses, and a plain HTML page at
// `/api/v1/s/<link>/page` that needs no web app) needs no account: the link is the credential, with the share's password sent as `X-Share-Password` or unlocked once for this browser
// (`POST /api/v1/s/<link>/unlock` sets a sealed cookie naming the share, sealed-cookie.ts: every node accepts it). The checks are the service's (service/shares.ts); what runs on the
// files runs in the owner's file session whose audit job user is `share:<id>`.
import type { FastifyReply, FastifyRequest } from "fastify";
import { z } from "zod";
import { AtrestError } from "../../errors.ts";
import { MAX_SHARE_DAYS, type Share, type ShareRefusal } from "../../service/shares.ts";
import type { VfsSession } from "../../vfs/types.ts";
import { actorOf } from "./actor.ts";
import type { HttpDeps } from "./deps.ts";
import { FILE_ROLES, join, Listing, listingPage, Stat, serveFile, serveZip, statJson } from "./files.ts";
import { HttpProblem } from "./problem.ts";
import { errors, PathSchema, type Route, route } from "./routes.ts";
import { sharePage } from "./share-page.ts";
import { BodyLengthError, writeBody } from "./streams.ts";

const OWNER = { roles: FILE_ROLES, scope: "shares" } as const;
export const SHARE_PASSWORD_HEADER = "x-share-password";
const UNLOCK_MS = 3_600_000;

const ShareInfo = z
  .object({
    id: z.string(),
    kind: z.enum(["file", "dir"]),
    path: z.string().nullable().describe("where the shared entry is now in your view; null once it is gone"),
    passwordProtected: z.boolean(),
    expiresAt: z.string().nullable(),
    allowDownload: z.boolean(),
    allowUpload: z.boolean(),
    maxDownloads: z.number().int().describe("0 = unlimited"),
    downloads: z.number().int(),
    maxUploads: z.number().int().describe("0 = unlimited"),
    uploads: z.number().int(),
    allowFrom: z.array(z.string()),
    owner: z.string(),
    createdAt: z.string(),
    lastUsedAt: z.string().nullable(),
  })
  .meta({ id: "Share" });

const PublicShare = z
  .object({
    id: z.string(),
    kind: z.enum(["file", "dir"]),
    name: z.string().describe("name of the shared file or directory"),
    size: z.number().int().optional().describe("bytes (file shares)"),
    owner: z.string(),
    expiresAt: z.string().nullable(),
    allowDownload: z.boolean(),
    allowUpload: z.boolean(),
    downloadsLeft: z.number().int().nullable().describe("null = unlimited"),
    uploadsLeft: z.number().int().nullable().describe("null = unlimited"),
  })
  .meta({ id: "PublicShare" });

const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());

function info(s: Share, path: string | null) {
  return {
    id: s.id,
    kind: s.kind,
    path,
    passwordProtected: s.passwordHash !== null,
    expiresAt: iso(s.expiresAt),
    allowDownload: s.allowDownload,
    allowUpload: s.allowUpload,
    maxDownloads: s.maxDownloads,
    downloads: s.downloads,
    maxUploads: s.maxUploads,
    uploads: s.uploads,
    allowFrom: s.allowFrom,
    owner: s.ownerName,
    createdAt: new Date(s.createdAt).toISOString(),
    lastUsedAt: iso(s.lastUsedAt),
  };
}

const REFUSALS: Record<ShareRefusal, () => HttpProblem> = {
  "not-found": () => new HttpProblem(404, "NOT_FOUND", "no such share link", { code: "NOT_FOUND" }),
  banned: () => new HttpProblem(404, "NOT_FOUND", "no such share link", { code: "NOT_FOUND" }),
  gone: () => new HttpProblem(410, "GONE", "this share link has expired or what it shared is gone"),
  source: () =>
    new HttpProblem(403, "FORBIDDEN", "this share link cannot be used from your address", {
      code: "PERMISSION_DENIED",
    }),
  "password-required": () =>
    new HttpProblem(401, "SHARE_PASSWORD_REQUIRED", `this share link needs its password (${SHARE_PASSWORD_HEADER})`, {
      code: "AUTH_FAILED",
    }),
  "bad-password": () =>
    new HttpProblem(401, "SHARE_PASSWORD_REQUIRED", "wrong share password", { code: "AUTH_FAILED" }),
};

const unlockCookie = (id: string) => `__Host-atrest_share_${id}`;
const UNLOCK_PURPOSE = "share-unlock";

const LinkParams = z.strictObject({ link: z.string().min(1).max(128) });
const SharePath = PathSchema.default("/").describe("path inside the shared directory (/ = the share itself)");

/** Where the share's root is now in the owner's view (undefined: gone, the share is forgotten). */
async function rootOf(deps: HttpDeps, vfs: VfsSession, share: Share): Promise<string> {
  const root = await vfs.pathOf?.(share.nodeId);
  if (root === undefined) {
    await deps.options.shares.forget(share);
    throw REFUSALS.gone();
  }
  return root;
}

function inside(root: string, p: string): string {
  return p === "/" ? root : root === "/" ? p : `${root}${p}`;
}

export function shareRoutes(deps: HttpDeps): Route[] {
  const shares = () => deps.options.shares;
  // a browser that gave a share's password carries a sealed cookie naming the share (any node accepts it)
  const unlocked = {
    add: (id: string) => deps.cookies.seal(UNLOCK_PURPOSE, { id }, UNLOCK_MS),
    check: (id: string, value: string | undefined) => deps.cookies.open(UNLOCK_PURPOSE, value)?.id === id,
  };

  /** The share a public request names, checked, with the owner's session (closed when the reply ends). */
  async function open(req: FastifyRequest, reply: FastifyReply, link: string) {
    const pw = req.headers[SHARE_PASSWORD_HEADER];
    const parsedId = link.split(".")[0] ?? "";
    const cookie = /^[A-Za-z0-9_-]{16}$/.test(parsedId) ? req.cookies[unlockCookie(parsedId)] : undefined;
    const r = await shares().open(link, {
      sourceIp: req.ip,
      password: typeof pw === "string" ? pw : undefined,
      unlocked: cookie !== undefined && unlocked.check(parsedId, cookie) ? parsedId : undefined,
    });
    if (!r.ok) throw REFUSALS[r.why]();
    const vfs = await shares().session(r.share, req.ip);
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      void vfs.close();
    };
    reply.raw.once("close", close);
    reply.raw.once("finish", close);
    try {
      const root = await rootOf(deps, vfs, r.share);
      return { share: r.share, vfs, root };
    } catch (err) {
      close();
      throw err;
    }
  }

  const needDownload = (s: Share) => {
    if (!s.allowDownload)
      throw new HttpProblem(403, "FORBIDDEN", "this share link takes uploads only", { code: "PERMISSION_DENIED" });
  };
  const take = (s: Share, kind: "download" | "upload", ip: string, what: string) => async () => {
    if (!(await shares().take(s, kind))) {
      shares().used(s, ip, what, "failure", `${kind} limit reached`);
      throw new HttpProblem(410, "GONE", `this share link's ${kind} limit is reached`);
    }
    shares().used(s, ip, what);
  };

  return [
    route(
      {
        method: "POST",
        url: "/api/v1/shares",
        operationId: "createShare",
        summary: "Share a file or directory by link (the link is in this answer only)",
        tags: ["shares"],
        auth: OWNER,
        body: z
          .strictObject({
            path: PathSchema,
            password: z.string().min(1).max(1024).optional().describe("asked of whoever opens the link (argon2id)"),
            expiresInDays: z.number().int().min(1).max(MAX_SHARE_DAYS).optional().describe("default: never"),
            allowDownload: z.boolean().default(true),
            allowUpload: z.boolean().default(false).describe("directories: new files may be uploaded into it"),
            maxDownloads: z.number().int().min(0).default(0).describe("0 = unlimited"),
            maxUploads: z.number().int().min(0).default(0).describe("0 = unlimited"),
            allowFrom: z.array(z.string().max(64)).max(64).default([]).describe("source IPs or CIDRs; empty = any"),
          })
          .meta({ id: "NewShare" }),
        responses: {
          201: {
            description: "created; `link` and `url` are shown once",
            schema: ShareInfo.extend({
              link: z.string().describe("the secret link id: /s/<link> (web app), /api/v1/s/<link> (JSON)"),
              url: z.string().describe("/s/<link>: the web app's page for the link"),
              pageUrl: z.string().describe("/api/v1/s/<link>/page: a plain HTML page (no web app needed)"),
            }),
          },
          ...errors(400, 401, 403, 404, 415),
        },
      },
      async ({ body, principal, reply }) => {
        const { link, row } = await shares().create(actorOf(principal), body);
        reply.code(201);
        return { ...info(row, body.path), link, url: `/s/${link}`, pageUrl: `/api/v1/s/${link}/page` };
      },
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/shares",
        operationId: "listShares",
        summary: "Your share links (an admin's all=true: everyone's); never the link itself",
        tags: ["shares"],
        auth: OWNER,
        query: z.strictObject({ all: z.enum(["true", "false"]).default("false") }),
        responses: {
          200: { description: "share links", schema: z.object({ shares: z.array(ShareInfo) }) },
          ...errors(401, 403),
        },
      },
      async ({ principal, query }) => {
        const rows = await shares().list(actorOf(principal), query.all === "true");
        const out = [];
        for (const r of rows) {
          let path: string | null = null;
          try {
            const vfs = await deps.options.accounts.openSession(r.ownerName, {
              protocol: "http",
              sessionId: principal.sessionId,
              sourceIp: principal.sourceIp,
            });
            try {
              path = (await vfs.pathOf?.(r.nodeId)) ?? null;
            } finally {
              await vfs.close();
            }
          } catch {}
          out.push(info(r, path));
        }
        return { shares: out };
      },
    ),
    route(
      {
        method: "DELETE",
        url: "/api/v1/shares/:id",
        operationId: "revokeShare",
        summary: "Revoke a share link (yours; an admin: anyone's)",
        tags: ["shares"],
        auth: OWNER,
        params: z.strictObject({ id: z.string().min(1).max(64) }),
        responses: { 204: { description: "revoked" }, ...errors(401, 403, 404) },
      },
      async ({ params, principal, reply }) => {
        await shares().revoke(actorOf(principal), params.id);
        reply.code(204);
      },
    ),
    // ---- public side: the link is the credential ----
    route(
      {
        method: "GET",
        url: "/api/v1/s/:link",
        operationId: "openShare",
        summary: "What a share link shares (no account needed; X-Share-Password if it has one)",
        tags: ["shares"],
        auth: "public",
        params: LinkParams,
        headers: { [SHARE_PASSWORD_HEADER]: "the share's password, if it has one" },
        responses: { 200: { description: "the share", schema: PublicShare }, ...errors(401, 403, 404) },
      },
      async ({ req, reply, params }) => {
        const { share, vfs, root } = await open(req, reply, params.link);
        const st = await vfs.stat(root);
        shares().used(share, req.ip, "open");
        return publicInfo(share, root, st.kind === "file" ? st.size : undefined);
      },
    ),
    route(
      {
        method: "POST",
        url: "/api/v1/s/:link/unlock",
        operationId: "unlockShare",
        summary: "Check a share's password once and remember it in this browser for an hour (cookie)",
        tags: ["shares"],
        auth: "public",
        params: LinkParams,
        body: z.strictObject({ password: z.string().min(1).max(1024) }),
        responses: { 200: { description: "unlocked", schema: PublicShare }, ...errors(400, 401, 403, 404, 415) },
      },
      async ({ req, reply, params, body }) => {
        req.headers[SHARE_PASSWORD_HEADER] = body.password;
        const { share, vfs, root } = await open(req, reply, params.link);
        const st = await vfs.stat(root);
        reply.setCookie(unlockCookie(share.id), unlocked.add(share.id), {
          path: "/",
          secure: true,
          httpOnly: true,
          sameSite: "lax",
          maxAge: UNLOCK_MS / 1000,
        });
        shares().used(share, req.ip, "unlock");
        return publicInfo(share, root, st.kind === "file" ? st.size : undefined);
      },
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/s/:link/list",
        operationId: "listShare",
        summary: "List a directory of a shared directory, a page at a time",
        tags: ["shares"],
        auth: "public",
        params: LinkParams,
        query: z.strictObject({
          path: SharePath,
          limit: z.coerce.number().int().min(1).max(5000).default(1000),
          cursor: z.string().max(2048).optional(),
        }),
        headers: { [SHARE_PASSWORD_HEADER]: "the share's password, if it has one" },
        responses: { 200: { description: "one page", schema: Listing }, ...errors(400, 401, 403, 404, 409, 410) },
      },
      async ({ req, reply, params, query }) => {
        const { share, vfs, root } = await open(req, reply, params.link);
        needDownload(share);
        if (share.kind !== "dir") throw new AtrestError("NOT_A_DIRECTORY", "a file is shared, not a directory");
        const all = await vfs.list(inside(root, query.path));
        shares().used(share, req.ip, `list ${query.path}`);
        return listingPage(all, query.path, query.limit, query.cursor);
      },
    ),
    route(
      {
        method: ["GET", "HEAD"],
        url: "/api/v1/s/:link/download",
        operationId: "downloadShare",
        summary: "Download the shared file, or a file of a shared directory (?path=); Range and ETag as for files",
        tags: ["shares"],
        auth: "public",
        params: LinkParams,
        query: z.strictObject({ path: SharePath }),
        headers: { [SHARE_PASSWORD_HEADER]: "the share's password, if it has one", range: "one byte range" },
        responses: {
          200: { description: "the file", contentType: "application/octet-stream" },
          206: { description: "the requested range", contentType: "application/octet-stream" },
          304: { description: "not modified" },
          ...errors(400, 401, 403, 404, 409, 410, 416),
        },
      },
      async ({ req, reply, params, query }) => {
        const { share, vfs, root } = await open(req, reply, params.link);
        needDownload(share);
        if (share.kind === "file" && query.path !== "/") throw new AtrestError("NOT_FOUND", "a file is shared");
        const path = inside(root, query.path);
        return serveFile(req, reply, vfs, path, take(share, "download", req.ip, `download ${query.path}`));
      },
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/s/:link/zip",
        operationId: "zipShare",
        summary: "A shared directory (or a directory in it) as a zip, streamed; counts as one download",
        tags: ["shares"],
        auth: "public",
        params: LinkParams,
        query: z.strictObject({ path: SharePath }),
        headers: { [SHARE_PASSWORD_HEADER]: "the share's password, if it has one" },
        responses: {
          200: { description: "a zip archive", contentType: "application/zip" },
          ...errors(400, 401, 403, 404, 409, 410, 413),
        },
      },
      async ({ req, reply, params, query }) => {
        const { share, vfs, root } = await open(req, reply, params.link);
        needDownload(share);
        const dir = inside(root, query.path);
        const name = query.path === "/" ? root.split("/").pop() || "share" : undefined;
        return serveZip(reply, vfs, dir, name, take(share, "download", req.ip, `zip ${query.path}`));
      },
    ),
    route(
      {
        method: "PUT",
        url: "/api/v1/s/:link/files/*",
        operationId: "uploadShare",
        summary: "Upload a new file into a shared directory that takes uploads (never replaces a file)",
        tags: ["shares"],
        auth: "public",
        params: z.strictObject({ link: z.string().min(1).max(128), "*": z.string() }),
        rawBody: ["application/octet-stream", "*/*"],
        headers: { [SHARE_PASSWORD_HEADER]: "the share's password, if it has one" },
        responses: {
          201: { description: "stored (committed only once the whole body arrived)", schema: Stat },
          ...errors(400, 401, 403, 404, 409, 410, 507),
        },
      },
      async ({ req, reply, params }) => {
        const raw = params["*"];
        const link = params.link;
        const rel = PathSchema.safeParse(`/${raw}`);
        if (!rel.success || rel.data === "/" || rel.data.endsWith("/")) {
          throw new HttpProblem(400, "INVALID_PATH", "name the file to upload", { code: "INVALID_PATH" });
        }
        const { share, vfs, root } = await open(req, reply, link);
        if (!share.allowUpload || share.kind !== "dir") {
          throw new HttpProblem(403, "FORBIDDEN", "this share link takes no uploads", { code: "PERMISSION_DENIED" });
        }
        const path = inside(root, rel.data);
        const what = `upload ${rel.data}`;
        if (!(await shares().take(share, "upload"))) {
          shares().used(share, req.ip, what, "failure", "upload limit reached");
          throw new HttpProblem(410, "GONE", "this share link's upload limit is reached");
        }
        const declared = req.headers["content-length"];
        const expected = declared === undefined ? undefined : Number(declared);
        try {
          const handle = await vfs.openWrite(path, { truncate: true, exclusive: true });
          const body = req.raw as AsyncIterable<Buffer> & { aborted?: boolean };
          const st = (await writeBody(body, handle, { expected, aborted: () => body.aborted === true })).stat;
          shares().used(share, req.ip, what);
          reply.code(201);
          return statJson(rel.data, st);
        } catch (err) {
          await shares().giveBack(share, "upload");
          shares().used(share, req.ip, what, "failure", err instanceof AtrestError ? err.code : "INTERNAL");
          if (err instanceof BodyLengthError) throw new HttpProblem(400, "INVALID_INPUT", err.message);
          throw err;
        }
      },
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/s/:link/page",
        operationId: "sharePage",
        summary: "A plain HTML page for the link (no account, no web app, no script needed to download)",
        tags: ["shares"],
        auth: "public",
        params: LinkParams,
        query: z.strictObject({ path: SharePath }),
        responses: { 200: { description: "an HTML page", contentType: "text/html" } },
      },
      async ({ req, reply, params, query }) => {
        let opened: Awaited<ReturnType<typeof open>>;
        try {
          opened = await open(req, reply, params.link);
        } catch (err) {
          if (err instanceof HttpProblem && err.status !== 500) {
            const passwordForm = err.slug === "SHARE_PASSWORD_REQUIRED";
            return sendPage(reply, err.status, sharePage({ link: params.link, error: err.message, passwordForm }));
          }
          throw err;
        }
        const { share, vfs, root } = opened;
        const st = await vfs.stat(root);
        const pub = publicInfo(share, root, st.kind === "file" ? st.size : undefined);
        let entries: { name: string; path: string; kind: "file" | "dir"; size: number }[] | undefined;
        if (share.kind === "dir" && share.allowDownload) {
          const all = await vfs.list(inside(root, query.path));
          all.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
          entries = all
            .slice(0, 5000)
            .map((e) => ({ name: e.name, path: join(query.path, e.name), kind: e.stat.kind, size: e.stat.size }));
        }
        shares().used(share, req.ip, `page ${query.path}`);
        return sendPage(reply, 200, sharePage({ link: params.link, share: pub, path: query.path, entries }));
      },
    ),
  ];
}

function sendPage(reply: FastifyReply, status: number, page: { html: string; nonce: string }) {
  return reply
    .code(status)
    .type("text/html; charset=utf-8")
    .header(
      "content-security-policy",
      `default-src 'none'; script-src 'nonce-${page.nonce}'; style-src 'nonce-${page.nonce}'; connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'`,
    )
    .header("referrer-policy", "no-referrer")
    .send(page.html);
}

function publicInfo(s: Share, root: string, size: number | undefined) {
  return {
    id: s.id,
    kind: s.kind,
    name: root === "/" ? "/" : (root.split("/").pop() ?? ""),
    ...(size !== undefined ? { size } : {}),
    owner: s.ownerName,
    expiresAt: iso(s.expiresAt),
    allowDownload: s.allowDownload,
    allowUpload: s.allowUpload,
    downloadsLeft: s.maxDownloads === 0 ? null : Math.max(0, s.maxDownloads - s.downloads),
    uploadsLeft: s.maxUploads === 0 ? null : Math.max(0, s.maxUploads - s.uploads),
  };
}
