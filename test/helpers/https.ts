// A small HTTPS client for API tests: trusts only the server's own certificate (<data>/tls/server.crt, pinned as the
// CA), keeps the session cookie and CSRF token of a login, and returns status, headers and the whole body.
import { readFile } from "node:fs/promises";
import { request } from "node:https";
import { join } from "node:path";
import type { Readable } from "node:stream";

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  json<T = Record<string, unknown>>(): T;
}

export interface RequestOptions {
  headers?: Record<string, string>;
  body?: string | Buffer | Readable;
  /** JSON body (sets content-type). */
  json?: unknown;
  /** Leave out the session cookie and CSRF header. */
  anonymous?: boolean;
}

export class ApiClient {
  readonly port: number;
  readonly ca: string;
  cookie: string | undefined;
  csrf: string | undefined;
  bearer: string | undefined;
  /** Source address (any of 127/8 is loopback on Linux): the defender tells clients apart by it. */
  localAddress: string | undefined;

  constructor(port: number, ca: string, localAddress?: string) {
    this.port = port;
    this.ca = ca;
    this.localAddress = localAddress;
  }

  static async forData(port: number, data: string): Promise<ApiClient> {
    return new ApiClient(port, await readFile(join(data, "tls", "server.crt"), "utf8"));
  }

  get base(): string {
    return `https://127.0.0.1:${this.port}`;
  }

  /** A second client on the same server with no session. */
  fresh(localAddress?: string): ApiClient {
    return new ApiClient(this.port, this.ca, localAddress);
  }

  async login(username: string, password: string): Promise<Reply> {
    const r = await this.req("POST", "/api/v1/auth/login", { json: { username, password }, anonymous: true });
    if (r.status === 200) {
      const set = r.headers["set-cookie"];
      const first = (Array.isArray(set) ? set : [set ?? ""]).find((c) => c.startsWith("__Host-atrest_session="));
      this.cookie = first?.split(";")[0];
      this.csrf = r.json<{ csrfToken: string }>().csrfToken;
    }
    return r;
  }

  req(method: string, path: string, o: RequestOptions = {}): Promise<Reply> {
    const headers: Record<string, string> = { ...o.headers };
    if (!o.anonymous) {
      if (this.cookie) headers.cookie = this.cookie;
      if (this.csrf && !("x-csrf-token" in headers)) headers["x-csrf-token"] = this.csrf;
      if (this.bearer) headers.authorization = `Bearer ${this.bearer}`;
    }
    let body = o.body;
    if (o.json !== undefined) {
      body = JSON.stringify(o.json);
      headers["content-type"] ??= "application/json";
    }
    // Node sends a DELETE body neither chunked nor with a length unless told
    if (typeof body === "string" || Buffer.isBuffer(body))
      headers["content-length"] ??= String(Buffer.byteLength(body));
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host: "127.0.0.1",
          port: this.port,
          method,
          path,
          headers,
          ca: this.ca,
          servername: "localhost",
          localAddress: this.localAddress,
          agent: false,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("error", reject);
          res.on("end", () => {
            const buf = Buffer.concat(chunks);
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: buf,
              json: <T>() => JSON.parse(buf.toString("utf8")) as T,
            });
          });
        },
      );
      req.on("error", reject);
      if (body === undefined) req.end();
      else if (typeof body === "string" || Buffer.isBuffer(body)) req.end(body);
      else body.pipe(req);
    });
  }
}

export function assertProblem(r: Reply, status: number): Record<string, unknown> {
  if (r.status !== status) throw new Error(`expected ${status}, got ${r.status}: ${r.body.toString().slice(0, 300)}`);
  const type = String(r.headers["content-type"] ?? "");
  if (!type.startsWith("application/problem+json")) throw new Error(`not problem+json: ${type}`);
  const p = r.json();
  for (const k of ["type", "title", "status", "detail", "code"]) {
    if (!(k in p)) throw new Error(`problem without ${k}: ${r.body.toString()}`);
  }
  if (p.status !== status) throw new Error(`problem status ${p.status} != ${status}`);
  return p;
}
