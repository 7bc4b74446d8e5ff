// The sync client's HTTPS calls (docs/api.md, /api/v1/sync): one device token, the server's certificate pinned as the
// only CA when given. A refusal comes back as SyncApiError with the problem's stable `code` (DEVICE_REVOKED …).

import type { IncomingMessage } from "node:http";
import { Agent, request } from "node:https";
import type { Readable } from "node:stream";
import { AtrestError } from "../../errors.ts";

export class SyncApiError extends AtrestError {
  readonly status: number;
  readonly problemCode: string;
  constructor(status: number, problemCode: string, detail: string) {
    super(
      status === 401 ? "AUTH_FAILED" : status === 404 ? "NOT_FOUND" : status === 409 ? "CONFLICT" : "REFUSED",
      `server: ${status} ${problemCode}: ${detail}`,
    );
    this.status = status;
    this.problemCode = problemCode;
  }
}

export interface ApiOptions {
  /** https://host:port */
  server: string;
  /** PEM of the server's certificate (or its CA); undefined: the system's CAs. */
  ca?: string;
}

interface Sent {
  json?: unknown;
  body?: Buffer | Readable;
  length?: number;
  headers?: Record<string, string>;
  /** Aborts the request (and the response stream): a run being stopped. */
  signal?: AbortSignal;
}

export class HttpsClient {
  readonly #url: URL;
  readonly #ca: string | undefined;
  readonly #agent: Agent;
  bearer: string | undefined;
  cookie: string | undefined;
  csrf: string | undefined;

  constructor(o: ApiOptions, bearer?: string) {
    this.#url = new URL(o.server);
    if (this.#url.protocol !== "https:") throw new AtrestError("INVALID_INPUT", "the sync server is an https:// URL");
    this.#ca = o.ca;
    this.#agent = new Agent({ keepAlive: true, maxSockets: 4, ...(o.ca ? { ca: o.ca } : {}) });
    this.bearer = bearer;
  }

  close(): void {
    this.#agent.destroy();
  }

  /** The response stream (status < 400), or a SyncApiError. */
  stream(method: string, path: string, sent: Sent = {}): Promise<IncomingMessage> {
    const headers: Record<string, string> = { ...sent.headers };
    if (this.bearer) headers.authorization = `Bearer ${this.bearer}`;
    if (this.cookie) headers.cookie = this.cookie;
    if (this.csrf) headers["x-csrf-token"] = this.csrf;
    let body = sent.body;
    if (sent.json !== undefined) {
      body = Buffer.from(JSON.stringify(sent.json));
      headers["content-type"] = "application/json";
    } else if (body !== undefined) headers["content-type"] ??= "application/octet-stream";
    if (Buffer.isBuffer(body)) headers["content-length"] = String(body.length);
    else if (sent.length !== undefined) headers["content-length"] = String(sent.length);
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host: this.#url.hostname,
          port: this.#url.port || 443,
          method,
          path,
          headers,
          agent: this.#agent,
          ...(this.#ca ? { ca: this.#ca } : {}),
          ...(sent.signal ? { signal: sent.signal } : {}),
        },
        (res) => {
          const status = res.statusCode ?? 0;
          if (status < 400) return resolve(res);
          const parts: Buffer[] = [];
          res.on("data", (c: Buffer) => parts.push(c));
          res.on("error", reject);
          res.on("end", () => {
            let code = `HTTP_${status}`;
            let detail = "";
            try {
              const p = JSON.parse(Buffer.concat(parts).toString("utf8")) as { code?: string; detail?: string };
              code = p.code ?? code;
              detail = p.detail ?? "";
            } catch {
              detail = Buffer.concat(parts).toString("utf8").slice(0, 200);
            }
            reject(new SyncApiError(status, code, detail));
          });
        },
      );
      req.on("error", reject);
      if (body === undefined) req.end();
      else if (Buffer.isBuffer(body)) req.end(body);
      else {
        body.on("error", (err) => req.destroy(err));
        body.pipe(req);
      }
    });
  }

  async call(
    method: string,
    path: string,
    sent: Sent = {},
  ): Promise<{ status: number; body: Buffer; headers: IncomingMessage["headers"] }> {
    const res = await this.stream(method, path, sent);
    const parts: Buffer[] = [];
    for await (const c of res) parts.push(c as Buffer);
    return { status: res.statusCode ?? 0, body: Buffer.concat(parts), headers: res.headers };
  }

  async json<T>(method: string, path: string, sent: Sent = {}): Promise<T> {
    const r = await this.call(method, path, sent);
    return (r.body.length ? JSON.parse(r.body.toString("utf8")) : {}) as T;
  }
}

/** Logs in with a password and issues a `sync` API token for a device (the password is not kept). */
export async function issueDeviceToken(
  o: ApiOptions,
  user: string,
  password: string,
  deviceName: string,
): Promise<string> {
  const c = new HttpsClient(o);
  try {
    const res = await c.call("POST", "/api/v1/auth/login", { json: { username: user, password } });
    const set = res.headers["set-cookie"];
    const cookie = (Array.isArray(set) ? set : [set ?? ""]).find((x) => x.startsWith("__Host-atrest_session="));
    c.cookie = cookie?.split(";")[0];
    c.csrf = (JSON.parse(res.body.toString("utf8")) as { csrfToken: string }).csrfToken;
    const t = await c.json<{ token: string }>("POST", "/api/v1/tokens", {
      json: { name: `sync device ${deviceName}`.slice(0, 100), scopes: ["sync"], expiresInDays: 366 },
    });
    await c.call("POST", "/api/v1/auth/logout").catch(() => undefined);
    return t.token;
  } finally {
    c.close();
  }
}

const R = (region: string) => `/api/v1/sync/regions/${region}`;

/** The /api/v1/sync calls of one device. */
export class SyncApi {
  readonly http: HttpsClient;
  constructor(o: ApiOptions, token: string) {
    this.http = new HttpsClient(o, token);
  }
  close(): void {
    this.http.close();
  }
  registerDevice(cert: unknown) {
    return this.http.json<{ id: string; state: string }>("POST", "/api/v1/sync/devices", { json: { cert } });
  }
  devices() {
    return this.http.json<{
      devices: { id: string; name: string; state: string; fingerprint: string; cert: unknown }[];
    }>("GET", "/api/v1/sync/devices");
  }
  appendLink(link: unknown) {
    return this.http.json<{ seq: number }>("POST", "/api/v1/sync/chain", { json: { link } });
  }
  async chain(user: string): Promise<unknown[]> {
    return (await this.http.json<{ links: unknown[] }>("GET", `/api/v1/sync/users/${encodeURIComponent(user)}/chain`))
      .links;
  }
  createRegion(manifest: Buffer) {
    return this.http.json<{ id: string; version: number }>("POST", "/api/v1/sync/regions", { body: manifest });
  }
  async regions() {
    return (
      await this.http.json<{ regions: { id: string; owner: string; version: number }[] }>("GET", "/api/v1/sync/regions")
    ).regions;
  }
  async manifest(region: string, version?: number): Promise<Buffer> {
    return (await this.http.call("GET", `${R(region)}/manifest${version ? `?version=${version}` : ""}`)).body;
  }
  /** Signed manifests to replay (§7a), the server's head and the region's retention. */
  async manifests(
    region: string,
    q: { since?: number; from?: number; to?: number },
  ): Promise<{
    lines: Buffer[];
    head: { version: number; hash: string };
    retention: { keepVersions: number; keepDays: number; legalHold: boolean };
  }> {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(q)) if (v !== undefined) qs.set(k, String(v));
    const r = await this.http.call("GET", `${R(region)}/manifests${qs.size ? `?${qs}` : ""}`);
    const lines: Buffer[] = [];
    for (let at = 0; at < r.body.length; ) {
      const nl = r.body.indexOf(10, at);
      const end = nl < 0 ? r.body.length : nl;
      if (end > at) lines.push(r.body.subarray(at, end));
      at = end + 1;
    }
    const [hv, hh] = String(r.headers["x-atrest-head"] ?? "").split(" ");
    const [kv, kd, lh] = String(r.headers["x-atrest-retention"] ?? "").split(" ");
    return {
      lines,
      head: { version: Number(hv), hash: hh ?? "" },
      retention: { keepVersions: Number(kv) || 0, keepDays: Number(kd) || 0, legalHold: lh === "1" },
    };
  }
  sweep(region: string) {
    return this.http.json<{ removed: number; usedBytes: number }>("POST", `${R(region)}/sweep`);
  }
  putManifest(region: string, bytes: Buffer) {
    return this.http.json<{ version: number }>("PUT", `${R(region)}/manifest`, { body: bytes });
  }
  async versions(region: string): Promise<number[]> {
    return (await this.http.json<{ versions: number[] }>("GET", `${R(region)}/versions`)).versions;
  }
  setRetention(region: string, keepVersions: number, legalHold: boolean, keepDays = 0) {
    return this.http.json("PUT", `${R(region)}/retention`, { json: { keepVersions, keepDays, legalHold } });
  }
  putEnvelopes(region: string, envelopes: unknown[]) {
    return this.http.json<{ stored: number }>("PUT", `${R(region)}/envelopes`, { json: { envelopes } });
  }
  async envelopes(region: string): Promise<unknown[]> {
    return (await this.http.json<{ envelopes: unknown[] }>("GET", `${R(region)}/envelopes`)).envelopes;
  }
  putBlob(region: string, hash: string, body: Buffer | Readable, length?: number, signal?: AbortSignal) {
    return this.http.json<{ created: boolean; size: number }>("PUT", `${R(region)}/blobs/${hash}`, {
      body,
      ...(length === undefined ? {} : { length }),
      ...(signal ? { signal } : {}),
    });
  }
  getBlob(region: string, hash: string, signal?: AbortSignal): Promise<IncomingMessage> {
    return this.http.stream("GET", `${R(region)}/blobs/${hash}`, signal ? { signal } : {});
  }
  createLink(region: string, link: { id: string; blobHash: string; payload: string; expiresAt: string }) {
    return this.http.json<{ id: string; expiresAt: string }>("POST", `${R(region)}/links`, { json: link });
  }
  async links(region: string) {
    return (
      await this.http.json<{ links: { id: string; expiresAt: string; revoked: boolean; uses: number }[] }>(
        "GET",
        `${R(region)}/links`,
      )
    ).links;
  }
  revokeLink(region: string, id: string) {
    return this.http.call("DELETE", `${R(region)}/links/${id}`);
  }
}
