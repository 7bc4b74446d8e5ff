// `atrest kms serve`: the key manager as its own process. HTTPS with mutual TLS: the server trusts only certificates
// issued by its own CA (ca.ts), and the certificate's fingerprint names a client row (clients.ts) that becomes the
// caller of every KmsService call. Starts sealed (Shamir) or unsealed (dev key file); while sealed, every key
// operation answers 503 "sealed".

import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import type { AuditConfig } from "../../audit/config.ts";
import { AuditPipeline } from "../../audit/pipeline.ts";
import { AtrestError, KeyUnavailableError } from "../../errors.ts";
import { type Logger, silentLogger } from "../../logger.ts";
import { PROMETHEUS_CONTENT_TYPE } from "../../metrics/registry.ts";
import type { KmsCaller } from "../api/caller.ts";
import type { KmsStatus } from "../api/types.ts";
import { loadServerTls } from "../ca.ts";
import { ClientDirectory, listClients } from "../clients.ts";
import { kmsClock } from "../clock.ts";
import type { KmsDb } from "../db.ts";
import { hasKmsDb, KMS_DB_FILE, openKmsDb } from "../home.ts";
import type { HsmAccess } from "../hsm-source.ts";
import { Keyring } from "../keyring.ts";
import { KmipServer } from "../kmip/server.ts";
import { KmsAudit } from "../kms-audit.ts";
import type { MasterKeySource } from "../master-source.ts";
import { KmsMetrics } from "../metrics.ts";
import { DEFAULT_SCHEDULER_INTERVAL_MS, KmsScheduler } from "../scheduler.ts";
import { disposeMaster, type MasterKeyLike } from "../seal.ts";
import { KmsService, type KmsServiceOptions } from "../service.ts";
import { canonicalJson } from "../service-audit.ts";
import { masterSourceFor } from "../unseal.ts";
import { HttpError, PROBLEM_CONTENT_TYPE, problemOf, SealedError } from "./problem.ts";
import { RELAYABLE_OPS, RelayVerifier } from "./relay.ts";
import { METRICS_ROLES, ROUTES, type RouteContext, Router, type SealControl } from "./routes.ts";

export const DEFAULT_BODY_LIMIT = 1 << 20;

export interface KmsServerOptions {
  /** The KMS directory (kms.db, CA and TLS files), initialised by `atrest kms init`. */
  dir: string;
  /** Count each custodian once toward the unseal threshold even if the seal config does not say so. */
  oneSharePerCustodian?: boolean;
  /** PIN (and optionally another module path) for a key manager whose master key is in a PKCS#11 token. */
  hsm?: HsmAccess;
  host?: string;
  /** 0 = any free port. */
  port?: number;
  logger?: Logger;
  /** Largest request body accepted, bytes (default 1 MiB). */
  bodyLimit?: number;
  /** Extra KmsService options (fail-closed, quorum …); the KMS audit log in the directory is the default sink. */
  service?: KmsServiceOptions;
  /** Scheduler period (auto rotation, due destruction), ms; 0 disables. Default 60 s. */
  schedulerIntervalMs?: number;
  /**
   * SIEM destinations for the KMS audit log: the file server's `audit` config (destinations, formats, filters,
   * spool), shipped while unsealed. Spool cursors and stats.json live in `<dir>/audit/`.
   */
  audit?: AuditConfig;
  /** Also serve KMIP (kmip/server.ts) on this port (0 = any free port) and host (default: `host`); off if absent. */
  kmip?: { port: number; host?: string };
}

const VERSION = "1";

export class KmsServer {
  readonly #dir: string;
  readonly #db: KmsDb;
  readonly #source: MasterKeySource;
  readonly #clients: ClientDirectory;
  readonly #logger: Logger;
  readonly #bodyLimit: number;
  readonly #serviceOptions: KmsServiceOptions;
  readonly #router = new Router(ROUTES);
  readonly #fingerprints = new WeakMap<TLSSocket, string>();
  #relay: RelayVerifier | undefined;
  readonly metrics: KmsMetrics;
  readonly #audit: KmsAudit;
  readonly #schedulerMs: number;
  #scheduler: KmsScheduler | undefined;
  readonly #auditConfig: AuditConfig | undefined;
  #pipeline: Promise<AuditPipeline | undefined> | undefined;
  #service: KmsService | undefined;
  #server: Server | undefined;
  #kmip: KmipServer | undefined;
  #closed = false;

  private constructor(dir: string, db: KmsDb, source: MasterKeySource, options: KmsServerOptions) {
    this.#dir = dir;
    this.#db = db;
    this.#source = source;
    this.#clients = new ClientDirectory(db);
    this.#logger = options.logger ?? silentLogger;
    this.#bodyLimit = options.bodyLimit ?? DEFAULT_BODY_LIMIT;
    this.#audit = new KmsAudit(dir);
    this.#schedulerMs = options.schedulerIntervalMs ?? DEFAULT_SCHEDULER_INTERVAL_MS;
    this.#auditConfig = options.audit;
    this.#serviceOptions = {
      auditLog: this.#audit,
      persistMaster: (m: MasterKeyLike) => this.#source.storeMaster(m),
      newMaster: () => this.#source.newMaster(),
      onAuditError: (err: unknown) => this.#logger.error({ err }, "kms: audit record not written"),
      onInternalError: (err: unknown, op: string) => this.#logger.error({ err, op }, "kms: internal error"),
      ...options.service,
    };
    this.metrics = new KmsMetrics(
      () => {
        const s = this.#source.status();
        return { sealed: this.sealed, progress: s.progress, threshold: s.threshold };
      },
      () =>
        this.#service
          ? this.#service.keyring.listKeys().map((k) => ({
              name: k.name,
              currentSince:
                k.versions.find((v) => v.version === k.currentVersion)?.createdAt ?? new Date().toISOString(),
            }))
          : [],
    );
  }

  /** Opens the KMS directory, unseals at once if the master source needs no people (dev key file), and listens. */
  static async start(options: KmsServerOptions): Promise<KmsServer> {
    const dir = options.dir;
    if (!hasKmsDb(dir)) {
      throw new KeyUnavailableError(`KMS not initialised: ${join(dir, KMS_DB_FILE)} not found (run atrest kms init)`);
    }
    const tls = await loadServerTls(dir).catch((e: NodeJS.ErrnoException) => {
      throw e.code === "ENOENT"
        ? new AtrestError("NOT_FOUND", `no TLS files in ${dir} (${e.path}); run atrest kms init --data ${dir}`)
        : e;
    });
    const db = openKmsDb(dir);
    let kms: KmsServer;
    try {
      kms = new KmsServer(
        dir,
        db,
        masterSourceFor(db, dir, { oneSharePerCustodian: options.oneSharePerCustodian, hsm: options.hsm }),
        options,
      );
      const master = await kms.#source.autoUnseal();
      if (master) kms.#openService(master);
    } catch (e) {
      db.close();
      throw e;
    }
    const server = createServer(
      {
        key: tls.key,
        cert: tls.cert,
        ca: tls.ca,
        requestCert: true,
        rejectUnauthorized: true,
        minVersion: "TLSv1.2",
        handshakeTimeout: 10_000,
      },
      (req, res) => void kms.#handle(req, res),
    );
    server.keepAliveTimeout = 60_000;
    server.headersTimeout = 20_000;
    server.requestTimeout = 30_000;
    server.on("tlsClientError", (err, socket) => {
      kms.#logger.warn({ err: err.message, remote: socket.remoteAddress }, "kms: TLS handshake refused");
    });
    kms.#server = server;
    kms.#relay = new RelayVerifier(tls.ca, (fp, ip) => kms.#clients.identify(fp, ip));
    try {
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(options.port ?? 0, options.host ?? "127.0.0.1", () => {
          server.off("error", reject);
          resolve();
        });
      });
      if (options.kmip) {
        kms.#kmip = await KmipServer.start({
          host: options.kmip.host ?? options.host ?? "127.0.0.1",
          port: options.kmip.port,
          tls,
          identify: (fp, ip) => kms.#clients.identify(fp, ip),
          service: () => kms.service(),
          logger: kms.#logger,
          observe: (outcome, seconds, items) => kms.metrics.observe("kmip", outcome, seconds, items),
        });
      }
    } catch (e) {
      await kms.close();
      throw e;
    }
    return kms;
  }

  /** The KMIP port, when KMIP is on. */
  get kmipPort(): number | undefined {
    return this.#kmip?.port;
  }

  get port(): number {
    const addr = this.#server?.address() as AddressInfo | null | undefined;
    if (!addr) throw new AtrestError("INVALID_INPUT", "the KMS server is not listening");
    return addr.port;
  }

  get dir(): string {
    return this.#dir;
  }

  get sealed(): boolean {
    return this.#service === undefined;
  }

  status(): KmsStatus {
    const s = this.#source.status();
    return {
      sealed: this.sealed,
      kind: s.kind,
      threshold: s.threshold,
      shares: s.shares,
      progress: s.progress,
      version: VERSION,
    };
  }

  /** The unsealed service (for in-process use such as tests and benches); throws SealedError while sealed. */
  service(): KmsService {
    if (this.#service) return this.#service;
    const s = this.#source.status();
    throw new SealedError(s.threshold - s.progress);
  }

  #openService(master: MasterKeyLike): void {
    let keyring: Keyring;
    try {
      keyring = new Keyring(this.#db, master, {
        now: kmsClock(), // the system time (a test may move it: clock.ts)
        // Another node on the shared store rotated the master: this one's is stale, so it seals (custodians unseal it
        // again; the same shares open the new master) rather than seal anything under the old one.
        onMasterReplaced: () => setImmediate(() => void this.#sealReplaced()),
      });
    } catch (e) {
      disposeMaster(master);
      this.#source.seal();
      throw e;
    }
    try {
      // The audit keys live in kms.db under the master key: the log opens now and writes what was buffered.
      this.#audit.unseal(keyring);
    } catch (e) {
      keyring.close();
      throw e;
    }
    const service = new KmsService(keyring, this.#serviceOptions);
    this.#service = service;
    this.#startPipeline();
    if (this.#schedulerMs > 0) {
      this.#scheduler = new KmsScheduler(service, {
        onError: (err) => this.#logger.error({ err }, "kms: scheduled pass failed"),
        onRun: (run) => this.#logger.info({ ...run }, "kms: scheduled changes"),
      }).start(this.#schedulerMs);
    }
  }

  /** Seal-state events go to the KMS audit (buffered while sealed, written at the next unseal). */
  #auditSeal(
    action: "kms.seal" | "kms.unseal",
    caller: KmsCaller,
    outcome: "success" | "failure",
    detail: Record<string, unknown>,
    reason?: string,
  ): void {
    try {
      this.#audit.record({
        action,
        outcome,
        user: caller.name,
        role: caller.role,
        protocol: "kms",
        ...(caller.certFingerprint ? { userId: caller.certFingerprint } : {}),
        ...(caller.sourceIp ? { sourceIp: caller.sourceIp } : {}),
        detail: canonicalJson(detail),
        ...(reason !== undefined ? { reason } : {}),
      });
    } catch (err) {
      this.#logger.error({ err }, "kms: audit record not written");
    }
  }

  readonly #seal: SealControl = {
    status: () => this.status(),
    unseal: async (caller: KmsCaller, share: string) => {
      if (caller.role !== "custodian") {
        const msg = `permission denied: client ${caller.name} (role ${caller.role}) may not unseal (needs custodian)`;
        this.#auditSeal("kms.unseal", caller, "failure", { op: "unseal" }, msg);
        throw new AtrestError("PERMISSION_DENIED", msg);
      }
      if (!this.sealed) return { ...this.status(), detail: "already unsealed" };
      let r: Awaited<ReturnType<MasterKeySource["submitShare"]>>;
      try {
        r = await this.#source.submitShare(share, caller.name);
      } catch (e) {
        const s = this.#source.status();
        this.#auditSeal(
          "kms.unseal",
          caller,
          "failure",
          { op: "unseal", progress: s.progress, threshold: s.threshold },
          (e as Error).message,
        );
        throw e;
      }
      if (r.master) {
        if (this.#closed || !this.sealed) r.master.fill(0);
        else this.#openService(r.master);
        this.#auditSeal("kms.unseal", caller, "success", { op: "unseal", unsealed: true, threshold: r.threshold });
        this.#logger.info({ client: caller.name }, "kms: unsealed");
      } else {
        this.#auditSeal("kms.unseal", caller, "success", {
          op: "unseal-share",
          progress: r.progress,
          threshold: r.threshold,
        });
        this.#logger.info({ client: caller.name, progress: r.progress, threshold: r.threshold }, "kms: unseal share");
      }
      return this.status();
    },
    resetUnseal: (caller: KmsCaller) => {
      if (caller.role !== "custodian") {
        throw new AtrestError(
          "PERMISSION_DENIED",
          `permission denied: client ${caller.name} (role ${caller.role}) may not reset the unseal (needs custodian)`,
        );
      }
      this.#source.reset();
      this.#auditSeal("kms.unseal", caller, "success", { op: "unseal-reset" });
      this.#logger.info({ client: caller.name }, "kms: unseal progress reset");
      return this.status();
    },
    seal: async (caller: KmsCaller) => {
      if (caller.role !== "custodian" && caller.role !== "admin") {
        const msg = `permission denied: client ${caller.name} (role ${caller.role}) may not seal the key manager (needs custodian or admin)`;
        this.#auditSeal("kms.seal", caller, "failure", { op: "seal" }, msg);
        throw new AtrestError("PERMISSION_DENIED", msg);
      }
      // Recorded before sealing: after it the log is closed and would only buffer the event.
      this.#auditSeal("kms.seal", caller, "success", { op: "seal" });
      await this.#sealNow();
      this.#logger.info({ client: caller.name }, "kms: sealed");
      return this.status();
    },
  };

  /** Ships the (now open) KMS audit log to the configured SIEM destinations, until the next seal. */
  #startPipeline(): void {
    const source = this.#audit.source;
    if (!this.#auditConfig || this.#auditConfig.destinations.length === 0 || !source) return;
    const db = this.#db;
    const users = {
      // custodian and admin certificates are the KMS's privileged identities: a filter may not hide them
      listUsers: async () =>
        listClients(db)
          .filter((c) => c.revokedAt === null)
          .map((c) => ({ name: c.name, role: c.role })),
    };
    this.#pipeline = AuditPipeline.start(this.#auditConfig, {
      audit: source.log,
      key: source.key,
      store: users,
      logger: this.#logger,
    }).catch((err: unknown) => {
      this.#logger.error({ err }, "kms: audit shipping to the SIEM did not start");
      return undefined;
    });
  }

  /** Destinations of the KMS audit pipeline with their delivery state (tests, status). */
  async auditPipeline(): Promise<AuditPipeline | undefined> {
    return this.#pipeline;
  }

  async #sealReplaced(): Promise<void> {
    if (!this.#service) return;
    this.#logger.warn("kms: the master key was rotated through another node: sealing; unseal this node again");
    this.#auditSeal("kms.seal", { name: "kms", role: "admin" }, "success", {
      op: "seal",
      trigger: "master rotated on another node",
    });
    await this.#sealNow();
  }

  async #sealNow(): Promise<void> {
    const service = this.#service;
    this.#service = undefined;
    const pipeline = this.#pipeline;
    this.#pipeline = undefined;
    // Deliver what is written (a few seconds at most) and save the cursors before the log closes.
    await (await pipeline)?.stop();
    this.#scheduler?.stop();
    this.#scheduler = undefined;
    service?.close();
    this.#source.seal();
    await this.#audit.seal();
  }

  #identify(req: IncomingMessage): KmsCaller {
    const socket = req.socket as TLSSocket;
    let fp = this.#fingerprints.get(socket);
    if (fp === undefined) {
      // rejectUnauthorized guarantees a certificate chaining to our CA; this is its identity.
      const cert = socket.getPeerCertificate();
      if (!socket.authorized || !cert?.fingerprint256) {
        throw new HttpError(401, "unauthorized", "AUTH_FAILED", "a client certificate issued by this KMS is required");
      }
      fp = cert.fingerprint256.replace(/:/g, "").toLowerCase();
      this.#fingerprints.set(socket, fp);
    }
    const id = this.#clients.identify(fp, socket.remoteAddress);
    if ("refused" in id) throw new HttpError(403, "forbidden", "PERMISSION_DENIED", id.refused);
    return id.caller;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const t0 = performance.now();
    let op = "unknown";
    let items = 0;
    try {
      const caller = this.#identify(req);
      const url = req.url ?? "/";
      const q = url.indexOf("?");
      const path = q < 0 ? url : url.slice(0, q);
      const query = new URLSearchParams(q < 0 ? "" : url.slice(q + 1));
      if (path === "/metrics") {
        op = "metrics";
        if (req.method !== "GET") throw new HttpError(405, "method not allowed", "INVALID_INPUT", "use GET");
        if (!METRICS_ROLES.includes(caller.role)) {
          throw new AtrestError(
            "PERMISSION_DENIED",
            `permission denied: client ${caller.name} (role ${caller.role}) may not read metrics`,
          );
        }
        const body = this.metrics.render();
        res.writeHead(200, { "content-type": PROMETHEUS_CONTENT_TYPE, "content-length": Buffer.byteLength(body) });
        res.end(body);
        this.metrics.observe(op, "success", (performance.now() - t0) / 1000);
        return;
      }
      let method = req.method ?? "GET";
      let target = path;
      let targetQuery = query;
      let body = await this.#readJson(req);
      let actor = caller;
      if (path === "/v1/relay") {
        // a person's signed call carried by a file server (relay.ts): it runs as the person
        op = "relay";
        if (method !== "POST") throw new HttpError(405, "method not allowed", "INVALID_INPUT", "use POST");
        const relayed = (this.#relay as RelayVerifier).verify(caller, body);
        actor = relayed.caller;
        const s = relayed.statement;
        const sq = s.path.indexOf("?");
        method = s.method;
        target = sq < 0 ? s.path : s.path.slice(0, sq);
        targetQuery = new URLSearchParams(sq < 0 ? "" : s.path.slice(sq + 1));
        body = s.body === null ? undefined : s.body;
      }
      const m = this.#router.match(method, target);
      if (!("route" in m)) {
        if (m.allowed.length === 0) throw new HttpError(404, "not found", "NOT_FOUND", `no such endpoint: ${target}`);
        res.setHeader("allow", m.allowed.join(", "));
        throw new HttpError(405, "method not allowed", "INVALID_INPUT", `${method} not allowed on ${target}`);
      }
      if (actor !== caller && !RELAYABLE_OPS.has(m.route.op)) {
        throw new AtrestError(
          "PERMISSION_DENIED",
          `${m.route.op} cannot be a signed call (${[...RELAYABLE_OPS].join(", ")})`,
        );
      }
      op = actor === caller ? m.route.op : `relay:${m.route.op}`;
      const ctx: RouteContext = {
        caller: actor,
        params: m.params,
        query: targetQuery,
        body,
        service: () => this.service(),
        seal: this.#seal,
      };
      let out = m.route.handler(ctx);
      if (out instanceof Promise) out = await out;
      const json = JSON.stringify(out);
      if (out && typeof out === "object" && "items" in out && Array.isArray(out.items)) items = out.items.length;
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(json) });
      res.end(json);
      this.metrics.observe(op, "success", (performance.now() - t0) / 1000, items);
    } catch (err) {
      const p = problemOf(err);
      if (p.status === 500) this.#logger.error({ err, op }, "kms: internal error");
      const json = JSON.stringify(p);
      if (!res.headersSent) {
        // A body we did not read may still be arriving: close rather than drain an oversized request.
        if (p.status === 413) res.setHeader("connection", "close");
        res.writeHead(p.status, { "content-type": PROBLEM_CONTENT_TYPE, "content-length": Buffer.byteLength(json) });
        res.end(json);
      } else {
        res.destroy();
      }
      const outcome = err instanceof SealedError ? "sealed" : p.code.toLowerCase();
      this.metrics.observe(op, outcome, (performance.now() - t0) / 1000);
    }
  }

  #readJson(req: IncomingMessage): Promise<unknown> {
    const declared = Number(req.headers["content-length"] ?? 0);
    if (declared > this.#bodyLimit) {
      req.resume();
      return Promise.reject(this.#tooLarge());
    }
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on("data", (c: Buffer) => {
        size += c.length;
        if (size > this.#bodyLimit) {
          req.removeAllListeners("data");
          req.resume();
          reject(this.#tooLarge());
          return;
        }
        chunks.push(c);
      });
      req.once("error", reject);
      req.once("end", () => {
        if (size > this.#bodyLimit) return;
        if (size === 0) return resolve(undefined);
        const text = chunks.length === 1 ? chunks[0].toString("utf8") : Buffer.concat(chunks).toString("utf8");
        try {
          resolve(JSON.parse(text));
        } catch {
          reject(new AtrestError("INVALID_INPUT", "request body is not valid JSON"));
        }
      });
    });
  }

  #tooLarge(): HttpError {
    return new HttpError(413, "payload too large", "INVALID_INPUT", `request body exceeds ${this.#bodyLimit} bytes`);
  }

  /** Seals (zeroes the master key and KEKs), stops listening, closes the database. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#sealNow();
    await this.#kmip?.close();
    const server = this.#server;
    if (server) {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    }
    this.#db.close();
  }
}
