// Resumable uploads, tus 1.0.0 (https://tus.io/protocols/resumable-upload): core (HEAD offset, PATCH append) with the
// creation and termination extensions, as tus-js-client and Uppy speak them. An upload is a vfs write handle kept
// open in this process between PATCH requests: the bytes go into a new encrypted version as they arrive and the
// version is committed only when the last byte is in, so a partial upload is never visible at its path. A PATCH cut
// off midway keeps what was written; HEAD tells the client where to resume. Uploads idle longer than the limit, and
// every unfinished one at shutdown, are discarded.
import { randomUUID } from "node:crypto";
import { z } from "zod";
import { AtrestError } from "../../errors.ts";
import type { VfsSession, WriteHandle } from "../../vfs/types.ts";
import { WriteBatcher } from "../../vfs/write-batch.ts";
import type { HttpServerOptions } from "./deps.ts";
import { checkTokenPath, etagOf, FILE_ROLES, mkdirs } from "./files.ts";
import { HttpProblem } from "./problem.ts";
import { errors, PathSchema, type Principal, type Route, route } from "./routes.ts";

export const TUS_VERSION = "1.0.0";
export const UPLOADS_URL = "/api/v1/uploads";
const WRITE = { roles: FILE_ROLES, scope: "files:write" } as const;
/** Unfinished uploads per user held open at once. */
const MAX_PER_USER = 32;
const MAX_LENGTH = 2 ** 50;

interface Upload {
  id: string;
  user: string;
  path: string;
  length: number;
  vfs: VfsSession;
  handle: WriteHandle;
  lastSeen: number;
  /** A PATCH is writing: a second one for the same upload waits its turn by being refused (409). */
  busy: boolean;
}

/** `key base64,key base64` → values (tus Upload-Metadata). */
export function parseMetadata(header: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!header) return out;
  for (const pair of header.split(",")) {
    const [key, value] = pair.trim().split(/\s+/, 2);
    if (!key) continue;
    if (!/^[\x21-\x7e]+$/.test(key) || (value !== undefined && !/^[A-Za-z0-9+/]*={0,2}$/.test(value))) {
      throw new HttpProblem(400, "INVALID_INPUT", "Upload-Metadata: key base64-value pairs separated by commas");
    }
    out[key] = value === undefined ? "" : Buffer.from(value, "base64").toString("utf8");
  }
  return out;
}

function tusHeader(reply: { header(k: string, v: string): unknown }): void {
  reply.header("tus-resumable", TUS_VERSION);
}

function requireTus(headers: Record<string, unknown>): void {
  if (headers["tus-resumable"] !== TUS_VERSION) {
    throw new HttpProblem(412, "PRECONDITION_FAILED", `Tus-Resumable: ${TUS_VERSION} required`, {
      headers: { "tus-version": TUS_VERSION },
    });
  }
}

const IdParams = z.strictObject({ id: z.uuid() });

export class TusUploads {
  readonly #options: HttpServerOptions;
  readonly #idleMs: number;
  readonly #uploads = new Map<string, Upload>();

  constructor(options: HttpServerOptions, idleMs: number) {
    this.#options = options;
    this.#idleMs = idleMs;
  }

  get size(): number {
    return this.#uploads.size;
  }

  #get(p: Principal, id: string): Upload {
    const u = this.#uploads.get(id);
    // someone else's upload is as unknown as a missing one
    if (!u || u.user !== p.user) throw new HttpProblem(404, "NOT_FOUND", "no such upload", { code: "NOT_FOUND" });
    return u;
  }

  async #drop(u: Upload): Promise<void> {
    this.#uploads.delete(u.id);
    await u.handle.abort(false).catch(() => {});
    await u.vfs.close().catch(() => {});
  }

  async #finish(u: Upload): Promise<void> {
    this.#uploads.delete(u.id);
    try {
      await u.handle.close();
    } finally {
      await u.vfs.close().catch(() => {});
    }
  }

  /** Discards uploads idle past the limit. */
  async sweep(now = Date.now()): Promise<void> {
    for (const u of [...this.#uploads.values()]) {
      if (!u.busy && now - u.lastSeen > this.#idleMs) await this.#drop(u);
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.#uploads.values()].map((u) => this.#drop(u)));
  }

  routes(): Route[] {
    const uploadHeaders = {
      "tus-resumable": TUS_VERSION,
      "upload-offset": "bytes received so far",
      "upload-length": "the upload's total size",
    };
    return [
      route(
        {
          method: "OPTIONS",
          url: UPLOADS_URL,
          operationId: "tusOptions",
          summary: "tus: versions and extensions supported",
          tags: ["uploads"],
          auth: "public",
          responses: {
            204: {
              description: "what this server speaks",
              headers: { "tus-version": TUS_VERSION, "tus-extension": "creation,termination", "tus-max-size": "bytes" },
            },
          },
        },
        async ({ reply }) => {
          tusHeader(reply);
          reply
            .header("tus-version", TUS_VERSION)
            .header("tus-extension", "creation,termination")
            .header("tus-max-size", String(MAX_LENGTH))
            .code(204);
        },
      ),
      route(
        {
          method: "POST",
          url: UPLOADS_URL,
          operationId: "tusCreate",
          summary:
            "tus creation: start an upload (Upload-Length; Upload-Metadata path or filename; missing directories are created)",
          tags: ["uploads"],
          auth: WRITE,
          headers: {
            "tus-resumable": TUS_VERSION,
            "upload-length": "total bytes",
            "upload-metadata": "path (absolute target) or filename (into /), base64 values",
          },
          responses: {
            201: {
              description: "created; Location names the upload",
              headers: { location: "the upload URL", ...uploadHeaders },
            },
            ...errors(400, 401, 403, 404, 409, 412, 413, 507),
          },
        },
        async ({ req, reply, principal }) => {
          requireTus(req.headers);
          tusHeader(reply);
          const rawLength = req.headers["upload-length"];
          if (typeof rawLength !== "string" || !/^\d{1,16}$/.test(rawLength)) {
            throw new HttpProblem(
              400,
              "INVALID_INPUT",
              "Upload-Length: a non-negative integer is required (deferred length is not supported)",
            );
          }
          const length = Number(rawLength);
          if (length > MAX_LENGTH) throw new HttpProblem(413, "PAYLOAD_TOO_LARGE", `Upload-Length over ${MAX_LENGTH}`);
          const meta = parseMetadata(req.headers["upload-metadata"] as string | undefined);
          const target = meta.path ?? (meta.filename ? `/${meta.filename}` : undefined);
          const parsed = PathSchema.safeParse(target);
          if (!parsed.success || parsed.data === "/" || parsed.data.endsWith("/")) {
            throw new HttpProblem(400, "INVALID_PATH", "Upload-Metadata: path (absolute) or filename naming a file", {
              code: "INVALID_PATH",
            });
          }
          const path = parsed.data;
          checkTokenPath(principal, path);
          if ([...this.#uploads.values()].filter((u) => u.user === principal.user).length >= MAX_PER_USER) {
            throw new HttpProblem(409, "CONFLICT", `at most ${MAX_PER_USER} unfinished uploads at once`, {
              code: "CONFLICT",
            });
          }
          const vfs = await this.#options.accounts.openSession(principal.user, {
            protocol: "http",
            sessionId: principal.sessionId,
            sourceIp: principal.sourceIp,
          });
          let handle: WriteHandle;
          try {
            // a folder dropped in the browser arrives as paths under directories that do not exist yet
            await mkdirs(vfs, path.slice(0, path.lastIndexOf("/")));
            handle = await vfs.openWrite(path, { truncate: true, exclusive: meta.overwrite === "false" });
          } catch (err) {
            await vfs.close();
            throw err;
          }
          const u: Upload = {
            id: randomUUID(),
            user: principal.user,
            path,
            length,
            vfs,
            handle,
            lastSeen: Date.now(),
            busy: false,
          };
          this.#uploads.set(u.id, u);
          if (length === 0) await this.#finish(u);
          reply
            .code(201)
            .header("location", `${UPLOADS_URL}/${u.id}`)
            .header("upload-offset", "0")
            .header("upload-length", String(length));
        },
      ),
      route(
        {
          method: "HEAD",
          url: `${UPLOADS_URL}/:id`,
          operationId: "tusOffset",
          summary: "tus: how many bytes of the upload the server has",
          tags: ["uploads"],
          auth: WRITE,
          params: IdParams,
          headers: { "tus-resumable": TUS_VERSION },
          responses: { 200: { description: "the offset", headers: uploadHeaders }, ...errors(401, 403, 404, 412) },
        },
        async ({ req, reply, params, principal }) => {
          requireTus(req.headers);
          tusHeader(reply);
          const u = this.#get(principal, params.id);
          u.lastSeen = Date.now();
          reply
            .header("upload-offset", String(u.handle.size))
            .header("upload-length", String(u.length))
            .header("cache-control", "no-store")
            .code(200);
        },
      ),
      route(
        {
          method: "PATCH",
          url: `${UPLOADS_URL}/:id`,
          operationId: "tusAppend",
          summary: "tus: append bytes at Upload-Offset; the file is committed when the last byte arrives",
          tags: ["uploads"],
          auth: WRITE,
          params: IdParams,
          rawBody: ["application/offset+octet-stream"],
          headers: { "tus-resumable": TUS_VERSION, "upload-offset": "where this body starts" },
          responses: {
            204: { description: "appended", headers: { ...uploadHeaders, etag: "set once the upload is complete" } },
            ...errors(400, 401, 403, 404, 409, 412, 415, 507),
          },
        },
        async ({ req, reply, params, principal }) => {
          requireTus(req.headers);
          tusHeader(reply);
          const type = (req.headers["content-type"] ?? "").split(";")[0].trim().toLowerCase();
          if (type !== "application/offset+octet-stream") {
            throw new HttpProblem(415, "UNSUPPORTED_MEDIA_TYPE", "PATCH body must be application/offset+octet-stream");
          }
          const u = this.#get(principal, params.id);
          const offset = Number(req.headers["upload-offset"]);
          if (!Number.isSafeInteger(offset) || offset !== u.handle.size) {
            throw new HttpProblem(409, "CONFLICT", `Upload-Offset must be ${u.handle.size}`, {
              code: "CONFLICT",
              headers: { "upload-offset": String(u.handle.size) },
            });
          }
          if (u.busy)
            throw new HttpProblem(409, "CONFLICT", "another PATCH is writing this upload", { code: "CONFLICT" });
          u.busy = true;
          // 16–64 KiB pieces gathered into ~1 MiB writes (vfs/write-batch.ts); a write per piece cost a trip
          // through the vfs and sealer for every 16 KiB
          const out = new WriteBatcher(u.handle);
          try {
            try {
              for await (const chunk of req.raw as AsyncIterable<Buffer>) {
                if (out.size + chunk.length > u.length) {
                  throw new HttpProblem(400, "INVALID_INPUT", `body goes past Upload-Length ${u.length}`);
                }
                await out.push(chunk);
                u.lastSeen = Date.now();
              }
            } catch (err) {
              // the client went away midway: what did arrive is kept (a refused piece was never gathered)
              if (!(err instanceof AtrestError)) await out.flush();
              throw err;
            }
            await out.flush();
          } catch (err) {
            u.busy = false;
            // the client went away midway: keep what was written, HEAD tells it where to go on
            if (err instanceof AtrestError) {
              // a write the vfs refused (quota, key manager): the upload cannot go on
              await this.#drop(u);
            }
            throw err;
          }
          u.busy = false;
          u.lastSeen = Date.now();
          const at = u.handle.size;
          if (at === u.length) {
            await this.#finish(u);
            const st = await this.#options.accounts
              .openSession(principal.user, {
                protocol: "http",
                sessionId: principal.sessionId,
                sourceIp: principal.sourceIp,
              })
              .then(async (vfs) => {
                try {
                  return await vfs.stat(u.path);
                } finally {
                  await vfs.close();
                }
              });
            reply.header("etag", etagOf(st));
          }
          reply.header("upload-offset", String(at)).code(204);
        },
      ),
      route(
        {
          method: "DELETE",
          url: `${UPLOADS_URL}/:id`,
          operationId: "tusTerminate",
          summary: "tus termination: discard an unfinished upload",
          tags: ["uploads"],
          auth: WRITE,
          params: IdParams,
          headers: { "tus-resumable": TUS_VERSION },
          responses: { 204: { description: "discarded" }, ...errors(401, 403, 404, 412) },
        },
        async ({ req, reply, params, principal }) => {
          requireTus(req.headers);
          tusHeader(reply);
          await this.#drop(this.#get(principal, params.id));
          reply.code(204);
        },
      ),
    ];
  }
}
