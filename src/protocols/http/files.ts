// File routes: list (paginated), stat, download (Range, ETag), upload (streamed PUT), mkdir, rename, copy, delete and
// a streamed zip of a folder. Each request opens a VfsSession as the caller (permissions, quotas, folder policies and
// the file audit are the vfs's), and closes it when the response is done.
import type { FastifyReply, FastifyRequest } from "fastify";
import { z } from "zod";
import { AtrestError } from "../../errors.ts";
import type { Role } from "../../store/types.ts";
import type { DirEntry, FileStat, VfsSession } from "../../vfs/types.ts";
import type { HttpDeps } from "./deps.ts";
import { HttpProblem } from "./problem.ts";
import { errors, PathSchema, type Principal, type Route, route } from "./routes.ts";
import { BodyLengthError, bodyOf, copyFile, readableOf, writeBody } from "./streams.ts";

/** DESIGN §2: a custodian can destroy keys, so it does not read data; an auditor reads the audit, not the files. */
export const FILE_ROLES: readonly Role[] = ["admin", "user"];
const READ = { roles: FILE_ROLES, scope: "files:read" } as const;
const WRITE = { roles: FILE_ROLES, scope: "files:write" } as const;

export const Stat = z
  .object({
    path: z.string(),
    name: z.string(),
    kind: z.enum(["file", "dir"]),
    size: z.number().int(),
    mtime: z.string().describe("ISO 8601"),
    mode: z.number().int(),
    etag: z.string().optional(),
  })
  .meta({ id: "FileStat" });

export const Listing = z
  .object({ path: z.string(), entries: z.array(Stat), nextCursor: z.string().nullable() })
  .meta({ id: "Listing" });

const PathQuery = z.strictObject({ path: PathSchema });

/** The vfs path a route's `*` wildcard names (URL-decoded by the router), checked like PathSchema. */
export function wildcardPath(params: unknown): string {
  const raw = (params as Record<string, string>)["*"] ?? "";
  const r = PathSchema.safeParse(`/${raw}`);
  if (!r.success)
    throw new HttpProblem(400, "INVALID_PATH", r.error.issues[0]?.message ?? "invalid path", { code: "INVALID_PATH" });
  return r.data.length > 1 && r.data.endsWith("/") ? r.data.slice(0, -1) : r.data;
}

/** A token limited to path prefixes reaches only those. */
export function checkTokenPath(p: Principal, path: string): void {
  if (!p.paths) return;
  const ok = p.paths.some((prefix) => prefix === "/" || path === prefix || path.startsWith(`${prefix}/`));
  if (!ok) throw new HttpProblem(403, "FORBIDDEN", `this token may not reach ${path}`, { code: "PERMISSION_DENIED" });
}

/** Strong validator of a file version: its size and modification time (what nginx uses). */
export function etagOf(st: FileStat): string {
  return `"${st.size.toString(16)}-${Math.round(st.mtime).toString(16)}"`;
}

export function statJson(path: string, st: FileStat) {
  const name = path === "/" ? "" : (path.split("/").pop() ?? "");
  return {
    path,
    name,
    kind: st.kind,
    size: st.size,
    mtime: new Date(st.mtime).toISOString(),
    mode: st.mode,
    ...(st.kind === "file" ? { etag: etagOf(st) } : {}),
  };
}

export function join(dir: string, name: string): string {
  return dir === "/" ? `/${name}` : `${dir}/${name}`;
}

export function encodeCursor(name: string): string {
  return Buffer.from(JSON.stringify({ a: name })).toString("base64url");
}

export function decodeCursor(cursor: string): string {
  try {
    const v = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8")) as { a?: unknown };
    if (typeof v.a === "string") return v.a;
  } catch {}
  throw new HttpProblem(400, "INVALID_INPUT", "query.cursor: not a cursor this server issued");
}

/** A store-order cursor: the position (a name MAC, itself opaque) after which the next page starts. */
export function encodeStoreCursor(after: Buffer): string {
  return Buffer.from(JSON.stringify({ s: after.toString("base64url") })).toString("base64url");
}

export function decodeStoreCursor(cursor: string): Buffer {
  try {
    const v = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8")) as { s?: unknown };
    if (typeof v.s === "string") return Buffer.from(v.s, "base64url");
  } catch {}
  throw new HttpProblem(400, "INVALID_INPUT", "query.cursor: not a cursor this server issued for order=store");
}

interface Range {
  start: number;
  end: number;
}

/** One `bytes=` range, or undefined for none/several (then the whole file is sent, as RFC 9110 allows). */
export function parseRange(header: string | undefined, size: number): Range | undefined | "unsatisfiable" {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return undefined;
  const [, a, b] = m;
  if (a === "" && b === "") return undefined;
  if (a === "") {
    const n = Number(b);
    if (n === 0) return "unsatisfiable";
    return { start: Math.max(0, size - n), end: size };
  }
  const start = Number(a);
  if (start >= size) return "unsatisfiable";
  const end = b === "" ? size : Math.min(size, Number(b) + 1);
  if (end <= start) return "unsatisfiable";
  return { start, end };
}

function ifNoneMatch(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  return header.split(",").some((t) => {
    const v = t.trim().replace(/^W\//, "");
    return v === "*" || v === etag;
  });
}

/** Opens the caller's vfs session; `use` runs with it and the session closes when it settles. */
export async function withVfs<T>(deps: HttpDeps, p: Principal, use: (vfs: VfsSession) => Promise<T>): Promise<T> {
  const vfs = await deps.options.accounts.openSession(p.user, {
    protocol: "http",
    sessionId: p.sessionId,
    sourceIp: p.sourceIp,
  });
  try {
    return await use(vfs);
  } finally {
    await vfs.close();
  }
}

/** Like withVfs, for a response streamed after the handler returns: the session closes when the reply does. */
export async function openFor(deps: HttpDeps, p: Principal, reply: FastifyReply): Promise<VfsSession> {
  const vfs = await deps.options.accounts.openSession(p.user, {
    protocol: "http",
    sessionId: p.sessionId,
    sourceIp: p.sourceIp,
  });
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    void vfs.close();
  };
  reply.raw.once("close", close);
  reply.raw.once("finish", close);
  return vfs;
}

async function walk(vfs: VfsSession, dir: string, into: { path: string; entry: DirEntry }[], limit: number) {
  for (const e of await vfs.list(dir)) {
    const path = join(dir, e.name);
    into.push({ path, entry: e });
    if (into.length > limit) throw new HttpProblem(413, "PAYLOAD_TOO_LARGE", `more than ${limit} entries to zip`);
    if (e.stat.kind === "dir") await walk(vfs, path, into, limit);
  }
}

/** mkdir -p: creates the missing directories of `path`. */
export async function mkdirs(vfs: VfsSession, path: string): Promise<void> {
  let at = "";
  for (const part of path.split("/").filter(Boolean)) {
    at = `${at}/${part}`;
    const existing = await vfs.stat(at).catch((e: unknown) => {
      if (e instanceof AtrestError && e.code === "NOT_FOUND") return undefined;
      throw e;
    });
    if (!existing) await vfs.mkdir(at);
    else if (existing.kind !== "dir") throw new AtrestError("NOT_A_DIRECTORY", `not a directory: ${at}`);
  }
}

const MAX_ZIP_ENTRIES = 100_000;

/** One page of a listing, sorted by name; `shown` is the path as the caller sees it (a share shows its own root). */
export function listingPage(all: DirEntry[], shown: string, limit: number, cursor: string | undefined) {
  all.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  let from = 0;
  if (cursor !== undefined) {
    const after = decodeCursor(cursor);
    from = all.findIndex((e) => e.name > after);
    if (from < 0) from = all.length;
  }
  const page = all.slice(from, from + limit);
  const more = from + limit < all.length;
  return {
    path: shown,
    entries: page.map((e) => statJson(join(shown, e.name), e.stat)),
    nextCursor: more && page.length > 0 ? encodeCursor(page[page.length - 1].name) : null,
  };
}

function storePage(shown: string, entries: DirEntry[], next: Buffer | undefined) {
  return {
    path: shown,
    entries: entries.map((e) => statJson(join(shown, e.name), e.stat)),
    nextCursor: next ? encodeStoreCursor(next) : null,
  };
}

/**
 * Sends the file at `path` of `vfs`: ETag, If-None-Match, Range / If-Range, HEAD. `beforeBody` runs once the answer is
 * known to carry the file's bytes (a share counts a download there); it may throw to refuse.
 */
export async function serveFile(
  req: FastifyRequest,
  reply: FastifyReply,
  vfs: VfsSession,
  path: string,
  beforeBody?: () => Promise<void>,
): Promise<FastifyReply> {
  const st = await vfs.stat(path);
  if (st.kind !== "file")
    throw new AtrestError("IS_A_DIRECTORY", `is a directory: ${path} (use /api/v1/fs/list or /api/v1/zip)`);
  const etag = etagOf(st);
  reply.header("etag", etag).header("accept-ranges", "bytes").header("last-modified", new Date(st.mtime).toUTCString());
  reply.header("cache-control", "private, no-cache");
  if (ifNoneMatch(req.headers["if-none-match"], etag)) return reply.code(304).send();
  const ifRange = req.headers["if-range"];
  const rangeHeader = ifRange === undefined || ifRange === etag ? req.headers.range : undefined;
  const range = parseRange(rangeHeader, st.size);
  if (range === "unsatisfiable") {
    throw new HttpProblem(416, "RANGE_NOT_SATISFIABLE", `the file has ${st.size} bytes`, {
      headers: { "content-range": `bytes */${st.size}` },
    });
  }
  const name = path.split("/").pop() || "download";
  const start = range?.start ?? 0;
  const end = range?.end ?? st.size;
  if (req.method === "HEAD") {
    reply.header("content-length", String(end - start));
    if (range) reply.code(206).header("content-range", `bytes ${start}-${end - 1}/${st.size}`);
    return reply.type("application/octet-stream").send();
  }
  await beforeBody?.();
  reply.header("content-disposition", `attachment; filename*=UTF-8''${encodeURIComponent(name)}`);
  reply.type("application/octet-stream");
  reply.header("content-length", String(end - start));
  if (range) reply.code(206).header("content-range", `bytes ${start}-${end - 1}/${st.size}`);
  return reply.send(bodyOf(() => vfs.openRead(path, { end }), start, end));
}

/** Streams directory `dir` of `vfs` as a zip (entries stored); `name` names the download. */
export async function serveZip(
  reply: FastifyReply,
  vfs: VfsSession,
  dir: string,
  name?: string,
  beforeBody?: () => Promise<void>,
): Promise<FastifyReply> {
  const st = await vfs.stat(dir);
  if (st.kind !== "dir") throw new AtrestError("NOT_A_DIRECTORY", `not a directory: ${dir}`);
  const entries: { path: string; entry: DirEntry }[] = [];
  await walk(vfs, dir, entries, MAX_ZIP_ENTRIES);
  await beforeBody?.();
  // yazl is loaded by the first folder download, not with the HTTPS door
  const { default: yazl } = await import("yazl");
  const zip = new yazl.ZipFile();
  const base = dir === "/" ? 1 : dir.length + 1;
  for (const { path, entry } of entries) {
    const entryName = path.slice(base);
    const mtime = new Date(entry.stat.mtime);
    if (entry.stat.kind === "dir") zip.addEmptyDirectory(entryName, { mtime });
    else
      zip.addReadStream(
        readableOf(() => vfs.openRead(path)),
        entryName,
        { mtime, compress: false, size: entry.stat.size },
      );
  }
  zip.end();
  const folder = name ?? (dir === "/" ? "files" : (dir.split("/").pop() ?? "files"));
  reply
    .type("application/zip")
    .header("content-disposition", `attachment; filename*=UTF-8''${encodeURIComponent(folder)}.zip`);
  return reply.send(zip.outputStream);
}

export function fileRoutes(deps: HttpDeps): Route[] {
  const fileHeaders = {
    etag: "strong validator of this version",
    "content-length": "bytes in the body",
    "accept-ranges": "bytes",
  };
  return [
    route(
      {
        method: "GET",
        url: "/api/v1/fs/list",
        operationId: "listDirectory",
        summary: "List a directory a page at a time, sorted by name (default) or in store order",
        description:
          "order=name (default) sorts the whole folder by name: the server keeps each folder's sorted names while a digest " +
          "of its children's name MACs in the store is unchanged (a change through any node shows), so a page reads that " +
          "digest and the page's entries; after a change the next page reads and sorts every entry's sealed name again. " +
          "order=store pages in a stable server order (not alphabetical; sorting is then the client's business) and reads " +
          "and decrypts only that page's entries. " +
          "A cursor is valid only with the order that issued it.",
        tags: ["files"],
        auth: READ,
        query: z.strictObject({
          path: PathSchema.default("/"),
          limit: z.coerce.number().int().min(1).max(5000).default(1000),
          cursor: z.string().max(2048).optional().describe("nextCursor of the previous page"),
          order: z.enum(["name", "store"]).default("name").describe("name: sorted by name; store: per-page cost"),
        }),
        responses: { 200: { description: "one page of entries", schema: Listing }, ...errors(400, 401, 403, 404, 409) },
      },
      async ({ query, principal }) => {
        checkTokenPath(principal, query.path);
        if (query.order === "store") {
          const after = query.cursor === undefined ? undefined : decodeStoreCursor(query.cursor);
          return withVfs(deps, principal, async (vfs) => {
            if (!vfs.listPage) {
              // a session without store paging: the name-ordered page, its cursor kept in store form
              const all = await vfs.list(query.path);
              const from = after === undefined ? 0 : Number(after.toString() || "0");
              const page = all.slice(from, from + query.limit);
              const next = from + query.limit < all.length ? Buffer.from(String(from + query.limit)) : undefined;
              return storePage(query.path, page, next);
            }
            const { entries, next } = await vfs.listPage(query.path, after, query.limit);
            return storePage(query.path, entries, next);
          });
        }
        const after = query.cursor === undefined ? undefined : decodeCursor(query.cursor);
        return withVfs(deps, principal, async (vfs) => {
          if (!vfs.listSorted) return listingPage(await vfs.list(query.path), query.path, query.limit, query.cursor);
          // only the page's rows are read and decrypted; every name is sorted (opened through the tree's cache)
          const { entries, more } = await vfs.listSorted(query.path, after, query.limit);
          return {
            path: query.path,
            entries: entries.map((e) => statJson(join(query.path, e.name), e.stat)),
            nextCursor: more && entries.length > 0 ? encodeCursor(entries[entries.length - 1].name) : null,
          };
        });
      },
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/fs/stat",
        operationId: "stat",
        summary: "A file's or directory's size, time and kind",
        tags: ["files"],
        auth: READ,
        query: PathQuery,
        responses: { 200: { description: "the entry", schema: Stat }, ...errors(400, 401, 403, 404) },
      },
      async ({ query, principal }) => {
        checkTokenPath(principal, query.path);
        return statJson(query.path, await withVfs(deps, principal, (vfs) => vfs.stat(query.path)));
      },
    ),
    route(
      {
        method: "POST",
        url: "/api/v1/fs/mkdir",
        operationId: "mkdir",
        summary: "Create a directory (and its parents with parents: true)",
        tags: ["files"],
        auth: WRITE,
        body: z.strictObject({ path: PathSchema, parents: z.boolean().default(false) }),
        responses: { 201: { description: "created", schema: Stat }, ...errors(400, 401, 403, 404, 409, 415) },
      },
      async ({ body, principal, reply }) => {
        checkTokenPath(principal, body.path);
        const st = await withVfs(deps, principal, async (vfs) => {
          if (body.parents) await mkdirs(vfs, body.path);
          else await vfs.mkdir(body.path);
          return vfs.stat(body.path);
        });
        reply.code(201);
        return statJson(body.path, st);
      },
    ),
    route(
      {
        method: "POST",
        url: "/api/v1/fs/rename",
        operationId: "rename",
        summary: "Rename or move a file or directory",
        tags: ["files"],
        auth: WRITE,
        body: z.strictObject({ from: PathSchema, to: PathSchema, overwrite: z.boolean().default(false) }),
        responses: { 200: { description: "moved", schema: Stat }, ...errors(400, 401, 403, 404, 409, 415) },
      },
      async ({ body, principal }) => {
        checkTokenPath(principal, body.from);
        checkTokenPath(principal, body.to);
        const st = await withVfs(deps, principal, async (vfs) => {
          await vfs.rename(body.from, body.to, body.overwrite);
          return vfs.stat(body.to);
        });
        return statJson(body.to, st);
      },
    ),
    route(
      {
        method: "POST",
        url: "/api/v1/fs/copy",
        operationId: "copy",
        summary: "Copy a file (re-encrypted under a new data key), or a directory tree",
        tags: ["files"],
        auth: WRITE,
        body: z.strictObject({ from: PathSchema, to: PathSchema, overwrite: z.boolean().default(false) }),
        responses: { 201: { description: "copied", schema: Stat }, ...errors(400, 401, 403, 404, 409, 415, 507) },
      },
      async ({ body, principal, reply }) => {
        checkTokenPath(principal, body.from);
        checkTokenPath(principal, body.to);
        if (body.to === body.from || body.to.startsWith(`${body.from}/`)) {
          throw new HttpProblem(409, "CONFLICT", "cannot copy a directory into itself", { code: "CONFLICT" });
        }
        const st = await withVfs(deps, principal, async (vfs) => {
          const src = await vfs.stat(body.from);
          if (src.kind === "file") await copyFile(vfs, body.from, body.to, body.overwrite);
          else {
            const copyDir = async (from: string, to: string) => {
              await vfs.mkdir(to);
              for (const e of await vfs.list(from)) {
                if (e.stat.kind === "dir") await copyDir(join(from, e.name), join(to, e.name));
                else await copyFile(vfs, join(from, e.name), join(to, e.name), false);
              }
            };
            await copyDir(body.from, body.to);
          }
          return vfs.stat(body.to);
        });
        reply.code(201);
        return statJson(body.to, st);
      },
    ),
    route(
      {
        method: "DELETE",
        url: "/api/v1/files/*",
        operationId: "deleteFile",
        summary: "Delete a file or an empty directory",
        tags: ["files"],
        auth: WRITE,
        responses: { 204: { description: "deleted" }, ...errors(400, 401, 403, 404, 409) },
      },
      async ({ req, principal, reply }) => {
        const path = wildcardPath(req.params);
        checkTokenPath(principal, path);
        await withVfs(deps, principal, async (vfs) => {
          const st = await vfs.stat(path);
          if (st.kind === "dir") await vfs.rmdir(path);
          else await vfs.remove(path);
        });
        reply.code(204);
      },
    ),
    route(
      {
        method: ["GET", "HEAD"],
        url: "/api/v1/files/*",
        operationId: "download",
        summary: "Download a file; Range (one byte range), If-None-Match and If-Range are honoured",
        tags: ["files"],
        auth: READ,
        headers: {
          range: "bytes=START-END, bytes=START- or bytes=-SUFFIX",
          "if-none-match": "an ETag",
          "if-range": "an ETag",
        },
        responses: {
          200: { description: "the file", contentType: "application/octet-stream", headers: fileHeaders },
          206: {
            description: "the requested range",
            contentType: "application/octet-stream",
            headers: { ...fileHeaders, "content-range": "bytes START-END/SIZE" },
          },
          304: { description: "not modified (If-None-Match)" },
          ...errors(400, 401, 403, 404, 409, 416),
        },
      },
      async ({ req, reply, principal }) => {
        const path = wildcardPath(req.params);
        checkTokenPath(principal, path);
        const vfs = await openFor(deps, principal, reply);
        return serveFile(req, reply, vfs, path);
      },
    ),
    route(
      {
        method: "PUT",
        url: "/api/v1/files/*",
        operationId: "upload",
        summary: "Upload a file (the body, streamed); replaces an existing one unless If-None-Match: *",
        tags: ["files"],
        auth: WRITE,
        rawBody: ["application/octet-stream", "*/*"],
        headers: {
          "if-none-match": "* to refuse replacing an existing file",
          "if-match": "the ETag the file must still have",
        },
        responses: {
          201: { description: "stored (committed only once the whole body arrived)", schema: Stat },
          ...errors(400, 401, 403, 404, 409, 412, 507),
        },
      },
      async ({ req, reply, principal }) => {
        const path = wildcardPath(req.params);
        checkTokenPath(principal, path);
        const declared = req.headers["content-length"];
        const expected = declared === undefined ? undefined : Number(declared);
        const st = await withVfs(deps, principal, async (vfs) => {
          const ifMatch = req.headers["if-match"];
          if (ifMatch !== undefined) {
            const cur = await vfs.stat(path).catch(() => undefined);
            if (cur?.kind !== "file" || !ifNoneMatch(ifMatch, etagOf(cur))) {
              throw new HttpProblem(412, "PRECONDITION_FAILED", "If-Match does not match the current version", {
                code: "CONFLICT",
              });
            }
          }
          const handle = await vfs.openWrite(path, { truncate: true, exclusive: req.headers["if-none-match"] === "*" });
          try {
            const raw = req.raw as AsyncIterable<Buffer> & { aborted?: boolean; complete?: boolean };
            const stream = (raw as unknown as { stream?: { rstCode?: number } }).stream;
            const aborted = () => raw.aborted === true || (stream?.rstCode ?? 0) !== 0;
            return (await writeBody(raw, handle, { expected, aborted })).stat;
          } catch (err) {
            if (err instanceof BodyLengthError) throw new HttpProblem(400, "INVALID_INPUT", err.message);
            throw err;
          }
        });
        reply.code(201).header("etag", etagOf(st));
        return statJson(path, st);
      },
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/zip",
        operationId: "downloadZip",
        summary: "Download a directory as a zip file, streamed (entries stored, not compressed)",
        tags: ["files"],
        auth: READ,
        query: PathQuery,
        responses: {
          200: { description: "a zip archive", contentType: "application/zip" },
          ...errors(400, 401, 403, 404, 409, 413),
        },
      },
      async ({ query, reply, principal }) => {
        checkTokenPath(principal, query.path);
        const vfs = await openFor(deps, principal, reply);
        return serveZip(reply, vfs, query.path);
      },
    ),
  ];
}
