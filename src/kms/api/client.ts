// RemoteKms: the file server's side of a separate key manager. A KeyProvider over HTTPS with mutual TLS (client
// certificate from `atrest kms client issue`), keep-alive sockets (bounded), and problem+json mapped back to the same
// AtrestError classes the embedded provider throws. Concurrent unwraps are coalesced into batch requests.
// A key manager that is down or unreachable fails fast with KeyUnavailableError "key manager unavailable at …".
// Several KMS nodes on one store (docs/kms.md, High availability): `url` is a comma-separated list; the client keeps
// using the node that answers and moves to the next at once on a connection failure or a 503 (sealed). Idempotent
// calls (unwrap, data keys, rewrap, reads) are also re-sent to the next node when the answer was lost mid-request,
// so a node killed under an upload costs that upload nothing.

import { readFile } from "node:fs/promises";
import { Agent, request } from "node:https";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import { AtrestError, KeyUnavailableError } from "../../errors.ts";
import { CLIENT_CA_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE } from "./cert-files.ts";
import { errorFromCode } from "./errors.ts";
import { audienceOf, type SignedKmsCall } from "./relayed.ts";
import {
  type AuditMark,
  changedKeys,
  type DataKey,
  type EncryptionContext,
  type KeyInfo,
  type KeyProvider,
  type KeyStateSnapshot,
  type KeyStateWatcher,
  type KmsStatus,
} from "./types.ts";
import { keyRefOfWrapped } from "./wrapped.ts";

export interface RemoteKmsOptions {
  /** https://host:port of `atrest kms serve`, or several nodes' URLs separated by commas. */
  url: string;
  /** Directory with client.key, client.crt and ca.crt (as written by `atrest kms client issue --out DIR`). */
  certDir?: string;
  /** PEM alternatives to certDir. */
  key?: string;
  cert?: string;
  ca?: string;
  /** TCP + TLS connect deadline, ms (default 2000; 1000 with several nodes, so a dead host costs at most that). */
  connectTimeoutMs?: number;
  /** Whole-request deadline, ms (default 15000). */
  requestTimeoutMs?: number;
  /** Concurrent sockets to the KMS (default 16). */
  maxSockets?: number;
  /** Coalesce concurrent unwrap calls into batch requests (default true). */
  coalesce?: boolean;
}

export type ItemOutcome<T> = T | { error: AtrestError };

interface Problem {
  title?: string;
  detail?: string;
  code?: string;
  status?: number;
}

const MAX_BATCH = 1000;

interface Endpoint {
  origin: string;
  host: string;
  port: number;
}

/**
 * Which failures move a call to the next node: "any" (idempotent: also a lost answer), "unsent" (the node surely
 * did not act: refused connection, 503), "none" (node-specific: unseal shares, seal).
 */
type Failover = "any" | "unsent" | "none";

/** A failed attempt: whether the request may have reached the node, and what it answered (503: it did nothing). */
interface Attempt {
  error: Error;
  sent: boolean;
  status?: number;
}

function parseEndpoints(list: string): Endpoint[] {
  const out: Endpoint[] = [];
  for (const part of list.split(",")) {
    const raw = part.trim();
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new AtrestError("INVALID_INPUT", `invalid key manager URL ${JSON.stringify(raw)}`);
    }
    if (url.protocol !== "https:" || url.pathname !== "/" || url.search || url.username) {
      throw new AtrestError("INVALID_INPUT", `key manager URL must be https://host:port, got ${raw}`);
    }
    if (out.some((e) => e.origin === url.origin)) continue;
    out.push({ origin: url.origin, host: url.hostname.replace(/^\[|\]$/g, ""), port: Number(url.port || 443) });
  }
  return out;
}

interface PendingUnwrap {
  wrapped: Buffer;
  context: EncryptionContext;
  resolve: (dek: Buffer) => void;
  reject: (e: Error) => void;
}

/** Long-poll length of a key-state watch, ms (the server's limit is 10 s; the request deadline must exceed it). */
const WATCH_WAIT_MS = 8000;
/** Pause after a failed watch request before the next, ms. */
const WATCH_RETRY_MS = 500;

export class RemoteKms implements KeyProvider, KeyStateWatcher {
  /** The node URLs, comma-separated as given. */
  readonly url: string;
  /** The key manager a signed call must name (relayed.ts): SHA-256 of its CA certificate (the same on every node). */
  readonly audience: string;
  readonly #endpoints: Endpoint[];
  /** The node in use: the last one that answered. */
  #current = 0;
  #failovers = 0;
  readonly #agent: Agent;
  readonly #connectTimeoutMs: number;
  readonly #requestTimeoutMs: number;
  readonly #coalesce: boolean;
  #queue: PendingUnwrap[] = [];
  #flushScheduled = false;
  #closed = false;

  private constructor(
    endpoints: Endpoint[],
    tls: { key: string; cert: string; ca: string },
    options: RemoteKmsOptions,
  ) {
    this.#endpoints = endpoints;
    this.url = endpoints.map((e) => e.origin).join(",");
    this.audience = audienceOf(tls.ca);
    this.#connectTimeoutMs = options.connectTimeoutMs ?? (endpoints.length > 1 ? 1000 : 2000);
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 15_000;
    this.#coalesce = options.coalesce ?? true;
    const maxSockets = options.maxSockets ?? 16;
    this.#agent = new Agent({
      keepAlive: true,
      maxSockets,
      maxFreeSockets: maxSockets,
      // Idle sockets are dropped before the server's 60 s keep-alive timeout closes them under us.
      timeout: 30_000,
      scheduling: "lifo",
      key: tls.key,
      cert: tls.cert,
      ca: tls.ca,
      minVersion: "TLSv1.2",
    });
  }

  /** Loads the client certificate and prepares the connection pool; does not contact the KMS. */
  static async connect(options: RemoteKmsOptions): Promise<RemoteKms> {
    const endpoints = parseEndpoints(options.url);
    let tls: { key: string; cert: string; ca: string };
    if (options.key && options.cert && options.ca) {
      tls = { key: options.key, cert: options.cert, ca: options.ca };
    } else if (options.certDir) {
      const dir = options.certDir;
      try {
        const [key, cert, ca] = await Promise.all(
          [CLIENT_KEY_FILE, CLIENT_CERT_FILE, CLIENT_CA_FILE].map((f) => readFile(join(dir, f), "utf8")),
        );
        tls = { key, cert, ca };
      } catch (e) {
        throw new AtrestError(
          "INVALID_INPUT",
          `cannot read the KMS client certificate in ${dir}: ${(e as Error).message} ` +
            `(expected ${CLIENT_KEY_FILE}, ${CLIENT_CERT_FILE}, ${CLIENT_CA_FILE} from atrest kms client issue)`,
        );
      }
    } else {
      throw new AtrestError("INVALID_INPUT", "a KMS client certificate directory is required (--kms-cert DIR)");
    }
    return new RemoteKms(endpoints, tls, options);
  }

  // ---- KeyProvider ----

  async generateDataKey(keyName: string, context: EncryptionContext): Promise<DataKey> {
    const r = await this.#call<{ plaintext: string; wrapped: string; keyRef: string }>(
      "POST",
      `/v1/keys/${encodeURIComponent(keyName)}/generate-data-key`,
      { context },
      false,
      "any",
    );
    return toDataKey(r);
  }

  unwrap(wrapped: Buffer, context: EncryptionContext): Promise<Buffer> {
    if (!this.#coalesce) return this.#unwrapOne(wrapped, context);
    return new Promise((resolve, reject) => {
      this.#queue.push({ wrapped, context, resolve, reject });
      if (!this.#flushScheduled) {
        this.#flushScheduled = true;
        // Calls made in the same turn of the event loop (e.g. several sessions opening files) share one request.
        setImmediate(() => this.#flush());
      }
    });
  }

  keyRefOf(wrapped: Buffer): string {
    return keyRefOfWrapped(wrapped);
  }

  async listKeys(): Promise<KeyInfo[]> {
    return (await this.#call<{ keys: KeyInfo[] }>("GET", "/v1/keys")).keys;
  }

  createKey(name: string, options: { rotation?: string; rotationDays?: number; preActive?: boolean } = {}) {
    return this.#call<KeyInfo>("POST", "/v1/keys", { name, ...options });
  }

  rotateKey(name: string): Promise<KeyInfo> {
    return this.#call<KeyInfo>("POST", `/v1/keys/${encodeURIComponent(name)}/rotate`, {});
  }

  getKey(name: string): Promise<KeyInfo> {
    return this.#call<KeyInfo>("GET", `/v1/keys/${encodeURIComponent(name)}`);
  }

  async close(): Promise<void> {
    this.#closed = true;
    const pending = this.#queue;
    this.#queue = [];
    for (const p of pending) p.reject(new KeyUnavailableError("key manager client is closed"));
    this.#agent.destroy();
  }

  // ---- beyond KeyProvider ----

  async generateDataKeys(keyName: string, contexts: readonly EncryptionContext[]): Promise<DataKey[]> {
    const out: DataKey[] = [];
    for (let i = 0; i < contexts.length; i += MAX_BATCH) {
      const r = await this.#call<{ items: { plaintext: string; wrapped: string; keyRef: string }[] }>(
        "POST",
        `/v1/keys/${encodeURIComponent(keyName)}/batch/generate-data-key`,
        { contexts: contexts.slice(i, i + MAX_BATCH) },
        false,
        "any",
      );
      out.push(...r.items.map(toDataKey));
    }
    return out;
  }

  async wrap(
    keyName: string,
    plaintext: Buffer,
    context: EncryptionContext,
  ): Promise<{ wrapped: Buffer; keyRef: string }> {
    const r = await this.#call<{ wrapped: string; keyRef: string }>(
      "POST",
      `/v1/keys/${encodeURIComponent(keyName)}/wrap`,
      { plaintext: plaintext.toString("base64"), context },
      false,
      "any",
    );
    return { wrapped: Buffer.from(r.wrapped, "base64"), keyRef: r.keyRef };
  }

  /** One outcome per item, in order; a failed item does not fail the others. Plaintexts are the caller's to zero. */
  unwrapBatch(
    items: readonly { wrapped: Buffer; context: EncryptionContext }[],
  ): Promise<ItemOutcome<{ plaintext: Buffer; keyRef: string }>[]> {
    return this.#batch("/v1/batch/unwrap", items, (it: { plaintext: string; keyRef: string }) => ({
      plaintext: Buffer.from(it.plaintext, "base64"),
      keyRef: it.keyRef,
    }));
  }

  async rewrap(wrapped: Buffer, context: EncryptionContext): Promise<{ wrapped: Buffer; keyRef: string }> {
    const r = await this.#call<{ wrapped: string; keyRef: string }>(
      "POST",
      "/v1/rewrap",
      { wrapped: wrapped.toString("base64"), context },
      false,
      "any",
    );
    return { wrapped: Buffer.from(r.wrapped, "base64"), keyRef: r.keyRef };
  }

  rewrapBatch(
    items: readonly { wrapped: Buffer; context: EncryptionContext }[],
  ): Promise<ItemOutcome<{ wrapped: Buffer; keyRef: string }>[]> {
    return this.#batch("/v1/batch/rewrap", items, (it: { wrapped: string; keyRef: string }) => ({
      wrapped: Buffer.from(it.wrapped, "base64"),
      keyRef: it.keyRef,
    }));
  }

  /** Sends wrapped items in requests of at most MAX_BATCH, decoding each successful item with `decode`. */
  async #batch<J extends object, T>(
    path: string,
    items: readonly { wrapped: Buffer; context: EncryptionContext }[],
    decode: (item: J) => T,
  ): Promise<ItemOutcome<T>[]> {
    const out: ItemOutcome<T>[] = [];
    for (let i = 0; i < items.length; i += MAX_BATCH) {
      const chunk = items.slice(i, i + MAX_BATCH);
      const r = await this.#call<{ items: ItemJson<J>[] }>(
        "POST",
        path,
        { items: chunk.map((it) => ({ wrapped: it.wrapped.toString("base64"), context: it.context })) },
        false,
        "any",
      );
      for (const it of r.items) out.push("error" in it ? { error: itemError(it.error) } : decode(it as J));
    }
    return out;
  }

  // ---- audit high-water marks (kms/audit-marks.ts) ----

  /** This client's mark for `log`, or (auditor, custodian, admin certificate) another client's. */
  async auditMark(log: string, client?: string): Promise<AuditMark | undefined> {
    const q = client === undefined ? "" : `?client=${encodeURIComponent(client)}`;
    const r = await this.#call<{ mark: AuditMark | null }>("GET", `/v1/audit-marks/${encodeURIComponent(log)}${q}`);
    return r.mark ?? undefined;
  }

  /** Raises this client's mark (server certificate); never lowers it. */
  async raiseAuditMark(log: string, seq: number, hash: string): Promise<AuditMark> {
    const r = await this.#call<{ mark: AuditMark }>("POST", `/v1/audit-marks/${encodeURIComponent(log)}`, {
      seq,
      hash,
    });
    return r.mark;
  }

  /** Forgets `client`'s mark (custodian certificate). */
  async resetAuditMark(client: string, log: string, reason: string): Promise<AuditMark | undefined> {
    const r = await this.#call<{ was: AuditMark | null }>("POST", `/v1/audit-marks/${encodeURIComponent(log)}/reset`, {
      client,
      reason,
    });
    return r.was ?? undefined;
  }

  /** Seal state; also a health check (any valid client certificate may ask). */
  status(): Promise<KmsStatus> {
    return this.#call<KmsStatus>("GET", "/v1/status");
  }

  /** Submits one unseal share (custodian certificate). Each node is unsealed on its own: never fails over. */
  unseal(share: string): Promise<KmsStatus> {
    return this.#call<KmsStatus>("POST", "/v1/unseal", { share }, false, "none");
  }

  resetUnseal(): Promise<KmsStatus> {
    return this.#call<KmsStatus>("POST", "/v1/unseal", { reset: true }, false, "none");
  }

  seal(): Promise<KmsStatus> {
    return this.#call<KmsStatus>("POST", "/v1/seal", {}, false, "none");
  }

  /** The node in use now (its origin), and how many times calls moved to another node. */
  get active(): { url: string; failovers: number } {
    return { url: (this.#endpoints[this.#current] as Endpoint).origin, failovers: this.#failovers };
  }

  /** Prometheus text (operator, admin or auditor certificate). */
  async metrics(): Promise<string> {
    return this.#call<string>("GET", "/metrics", undefined, true);
  }

  /**
   * Long-polls `GET /v1/key-states` and calls `onChange` with the keys whose state changed (a version deactivated,
   * compromised or destroyed, a minimum raised, a rotation), within about a round trip of the change. Failed polls
   * are retried every 0.5 s; the first answer after a failure is compared with the last one seen, so a change made
   * while the KMS was unreachable is still reported. Returns a function that stops the watch.
   */
  watchKeyStates(onChange: (keys: string[]) => void, onUnreachable?: () => void): () => void {
    let stopped = false;
    let last: KeyStateSnapshot | undefined;
    const wait = Math.max(0, Math.min(WATCH_WAIT_MS, this.#requestTimeoutMs - 2000));
    const loop = async () => {
      while (!stopped && !this.#closed) {
        try {
          const q = last ? `?since=${encodeURIComponent(last.etag)}&wait=${wait}` : "";
          const snap = await this.#call<KeyStateSnapshot>("GET", `/v1/key-states${q}`);
          if (stopped) return;
          if (last && snap.etag !== last.etag) {
            const keys = changedKeys(last, snap);
            if (keys.length) onChange(keys);
          }
          last = snap;
        } catch {
          if (stopped || this.#closed) return;
          onUnreachable?.();
          await new Promise((r) => setTimeout(r, WATCH_RETRY_MS).unref());
        }
      }
    };
    void loop();
    return () => {
      stopped = true;
    };
  }

  /** Carries a call a person signed (relayed.ts); it runs at the key manager as that person. */
  relay<T>(call: SignedKmsCall): Promise<T> {
    return this.#call<T>("POST", "/v1/relay", call);
  }

  /** Any other API call (governance routes): JSON in, JSON out, errors mapped. */
  call<T>(method: "GET" | "POST" | "PUT" | "DELETE", path: string, body?: unknown): Promise<T> {
    return this.#call<T>(method, path, body);
  }

  // ---- internals ----

  async #unwrapOne(wrapped: Buffer, context: EncryptionContext): Promise<Buffer> {
    const r = await this.#call<{ plaintext: string }>(
      "POST",
      "/v1/unwrap",
      { wrapped: wrapped.toString("base64"), context },
      false,
      "any",
    );
    return Buffer.from(r.plaintext, "base64");
  }

  #flush(): void {
    this.#flushScheduled = false;
    while (this.#queue.length > 0) {
      const batch = this.#queue.splice(0, MAX_BATCH);
      if (batch.length === 1) {
        const [p] = batch;
        this.#unwrapOne(p.wrapped, p.context).then(p.resolve, p.reject);
        continue;
      }
      this.unwrapBatch(batch.map((p) => ({ wrapped: p.wrapped, context: p.context }))).then(
        (results) => {
          results.forEach((r, i) => {
            if ("error" in r) batch[i].reject(r.error);
            else batch[i].resolve(r.plaintext);
          });
        },
        (e: Error) => {
          for (const p of batch) p.reject(e);
        },
      );
    }
  }

  async #call<T>(method: string, path: string, body?: unknown, text = false, failover?: Failover): Promise<T> {
    if (this.#closed) throw new KeyUnavailableError("key manager client is closed");
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    // Reads are idempotent; other calls default to moving on only when the node surely did not act.
    const mode = failover ?? (method === "GET" ? "any" : "unsent");
    const n = mode === "none" ? 1 : this.#endpoints.length;
    const first = this.#current;
    let last: Attempt | undefined;
    for (let i = 0; i < n; i++) {
      const at = (first + i) % this.#endpoints.length;
      const attempt = await this.#send<T>(this.#endpoints[at] as Endpoint, method, path, payload, text, true).then(
        (value) => ({ value }),
        (a: Attempt) => a,
      );
      if ("value" in attempt) {
        if (at !== this.#current) {
          this.#current = at;
          this.#failovers++;
        }
        return attempt.value;
      }
      last = attempt;
      // A node's own answer (4xx, 500) is the answer: another node would say the same from the same store.
      const moveOn = attempt.status === 503 || (attempt.status === undefined && (!attempt.sent || mode === "any"));
      if (!moveOn || this.#closed) break;
    }
    throw (last as Attempt).error;
  }

  /** One attempt at one node; rejects with an Attempt (the error, and whether the node may have acted). */
  #send<T>(
    node: Endpoint,
    method: string,
    path: string,
    payload: Buffer | undefined,
    text: boolean,
    mayRetry: boolean,
  ): Promise<T> {
    return new Promise<T>((resolveValue, rejectAttempt) => {
      let sent = false;
      const resolve = resolveValue;
      const fail = (error: Error, status?: number) =>
        rejectAttempt({ error, sent, ...(status === undefined ? {} : { status }) } as Attempt);
      const headers: Record<string, string | number> = { accept: "application/json" };
      if (payload) {
        headers["content-type"] = "application/json";
        headers["content-length"] = payload.length;
      }
      const req = request({
        host: node.host,
        port: node.port,
        method,
        path,
        agent: this.#agent,
        headers,
      });
      let connectTimer: NodeJS.Timeout | undefined;
      const deadline = setTimeout(
        () => req.destroy(new Error(`no answer within ${this.#requestTimeoutMs} ms`)),
        this.#requestTimeoutMs,
      );
      const done = () => {
        clearTimeout(deadline);
        if (connectTimer) clearTimeout(connectTimer);
      };
      req.on("socket", (socket: TLSSocket) => {
        if (!socket.connecting && !(socket as { pending?: boolean }).pending) {
          sent = true;
          return;
        }
        connectTimer = setTimeout(
          () => req.destroy(new Error(`connect timeout after ${this.#connectTimeoutMs} ms`)),
          this.#connectTimeoutMs,
        );
        socket.once("secureConnect", () => {
          sent = true;
          clearTimeout(connectTimer);
        });
      });
      req.on("error", (err: NodeJS.ErrnoException) => {
        done();
        // A kept-alive socket the server closed while idle: the request never reached it, so send it again once.
        if (mayRetry && req.reusedSocket && (err.code === "ECONNRESET" || err.code === "EPIPE")) {
          this.#send<T>(node, method, path, payload, text, false).then(resolve, rejectAttempt);
          return;
        }
        fail(new KeyUnavailableError(`key manager unavailable at ${node.origin}: ${describe(err)}`, { cause: err }));
      });
      req.on("response", (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", (err) => {
          done();
          fail(new KeyUnavailableError(`key manager unavailable at ${node.origin}: ${describe(err)}`, { cause: err }));
        });
        res.on("end", () => {
          done();
          const raw = Buffer.concat(chunks).toString("utf8");
          const status = res.statusCode ?? 0;
          if (status === 200) {
            if (text) return resolve(raw as T);
            try {
              return resolve(JSON.parse(raw) as T);
            } catch {
              return fail(new KeyUnavailableError(`key manager at ${node.origin} sent a malformed answer`), status);
            }
          }
          let p: Problem = {};
          try {
            p = JSON.parse(raw) as Problem;
          } catch {
            // not a problem document (a proxy?): report the status
          }
          const detail = p.detail ?? `HTTP ${status}`;
          // 503: sealed (or shutting down): it did nothing, another node may serve the call.
          fail(errorFromCode(p.code, status === 503 ? `${detail} (${node.origin})` : detail), status);
        });
      });
      req.end(payload);
    });
  }
}

type ItemJson<T> = T | { error: { code: string; message: string } };

function itemError(e: { code: string; message: string }): AtrestError {
  return errorFromCode(e.code, e.message);
}

function toDataKey(r: { plaintext: string; wrapped: string; keyRef: string }): DataKey {
  return { plaintext: Buffer.from(r.plaintext, "base64"), wrapped: Buffer.from(r.wrapped, "base64"), keyRef: r.keyRef };
}

function describe(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case "ECONNREFUSED":
      return "connection refused";
    case "ECONNRESET":
      return "connection reset";
    case "ENOTFOUND":
      return "unknown host";
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return "host unreachable";
    case "DEPTH_ZERO_SELF_SIGNED_CERT":
    case "UNABLE_TO_VERIFY_LEAF_SIGNATURE":
    case "SELF_SIGNED_CERT_IN_CHAIN":
    case "ERR_TLS_CERT_ALTNAME_INVALID":
    case "CERT_HAS_EXPIRED":
      return `the key manager's TLS certificate is not trusted (${err.code}): wrong ca.crt or wrong host name?`;
    default:
      if (/alert|certificate|handshake|ssl/i.test(err.message)) {
        return `TLS handshake failed (${err.message.split("\n")[0]}): client certificate not accepted by this KMS?`;
      }
      return err.message;
  }
}
