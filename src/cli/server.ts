import type { KeyObject } from "node:crypto";
import module from "node:module";
import { join } from "node:path";
import type { Command } from "commander";
import { Option } from "commander";
import { pino } from "pino";
import { App, AUDIT_CONTEXT, AUDIT_KEY_SETTING, initData } from "../app.ts";
import { AuditPipeline } from "../audit/pipeline.ts";
import { query } from "../audit/query.ts";
import { loadConfig } from "../config/config.ts";
import { aeadKey } from "../crypto/aead.ts";
import { zero } from "../crypto/bytes.ts";
import { containerCrypto } from "../crypto/gcm-native.ts";
import { AtrestError } from "../errors.ts";
import { serviceKey } from "../keys/service-keys.ts";
import { Registry } from "../metrics/registry.ts";
import { type MetricsServer, startMetricsServer } from "../metrics/server.ts";
import { Defender } from "../service/defender.ts";
import { KeyPairs } from "../service/keypairs.ts";
import type { LiveSessionBoard } from "../service/live-sessions.ts";
import { LoginService } from "../service/login.ts";
import { ShareService } from "../service/shares.ts";
import { TokenService } from "../service/tokens.ts";
import { TotpService } from "../service/totp.ts";
import { describeMetaStore, serverNodeId } from "../wiring/meta-store.ts";
import { say } from "./common.ts";
import { startGcPacing } from "./gc-pacing.ts";
import { missingRuntimeSettings } from "./server-runtime.ts";

export function registerServer(program: Command): void {
  program
    .command("server")
    .description("run the file server (SFTP, HTTPS API); initialises the data dir on first run")
    .addOption(new Option("--data <dir>", "data directory (default ./data)").env("ATREST_DATA"))
    .addOption(new Option("--host <addr>", "listen address (default 127.0.0.1)").env("ATREST_HOST"))
    .addOption(
      new Option(
        "--meta <url>",
        "metadata store: sqlite (default, <data>/meta.db) or postgres://user@host/db?schema=s",
      ),
    )
    .addOption(new Option("--node-id <id>", "this node's id among servers sharing one PostgreSQL store"))
    .addOption(new Option("--blobs <url>", "blob store: local (default, <data>/blobs) or s3://bucket/prefix"))
    .addOption(new Option("--blobs-endpoint <url>", "S3 endpoint of an S3-compatible server (default AWS)"))
    .addOption(new Option("--blobs-region <region>", "S3 region (default AWS_REGION or us-east-1)"))
    .addOption(
      new Option("--sftp-port <port>", 'SFTP port; 0 = disabled, "auto" = any free port (default 2022)').env(
        "ATREST_SFTP_PORT",
      ),
    )
    .addOption(
      new Option("--http-port <port>", 'HTTPS API port; 0 = disabled, "auto" = any free port (default 8080)').env(
        "ATREST_HTTP_PORT",
      ),
    )
    .addOption(new Option("--tls-cert <file>", "PEM certificate for HTTPS (default: self-signed, in <data>/tls)"))
    .addOption(new Option("--tls-key <file>", "PEM private key of --tls-cert"))
    .addOption(
      new Option("--s3-port <port>", 'S3 API port; 0 = disabled, "auto" = any free port (default 9000)').env(
        "ATREST_S3_PORT",
      ),
    )
    .addOption(
      new Option(
        "--s3-tls <on|off>",
        "S3 over HTTPS with the server's certificate (default on); off = plain HTTP, loopback only",
      ),
    )
    .addOption(new Option("--s3-tls-cert <file>", "PEM certificate (chain) for the S3 door (default: the server's)"))
    .addOption(new Option("--s3-tls-key <file>", "PEM private key of --s3-tls-cert"))
    .addOption(new Option("--s3-region <region>", "the S3 door's region (default us-east-1)"))
    .addOption(
      new Option(
        "--s3-public-access <block|allow>",
        "S3 ACLs granting AllUsers / AuthenticatedUsers: refused and ignored (block, default) or honoured (allow)",
      ),
    )
    .addOption(
      new Option(
        "--s3-domain <domains>",
        'base domains for virtual-hosted-style S3 requests, comma-separated (default "s3.localhost,localhost"; "" = off)',
      ),
    )
    .addOption(
      new Option(
        "--s3-multipart-expiry <hours>",
        "remove S3 multipart uploads not completed within this many hours (default 168; 0 = never)",
      ),
    )
    .addOption(new Option("--idle-timeout <s>", "disconnect idle sessions after s seconds, 0 = never (default 600)"))
    .addOption(new Option("--max-sessions <n>", "concurrent SSH connections (default 256)"))
    .addOption(new Option("--log-level <level>", "pino level (default info)").env("ATREST_LOG_LEVEL"))
    .addOption(new Option("--kms <url>", "remote key manager https://host:port (default: embedded, dev mode)"))
    .addOption(new Option("--kms-cert <dir>", "client certificate directory from `atrest kms client issue`"))
    .addOption(new Option("--dek-cache-seconds <s>", "keep unwrapped data keys this long, 0 = off (default 300)"))
    .addOption(new Option("--dek-cache-entries <n>", "at most this many cached data keys, 0 = off (default 10000)"))
    .addOption(
      new Option("--metrics-port <port>", "loopback HTTP GET /metrics (Prometheus) port; 0 = off (default 0)").env(
        "ATREST_METRICS_PORT",
      ),
    )
    .action(async (flags, cmd: Command) => {
      // Listen for signals before anything starts: a service manager's stop that arrives while the server is still
      // starting (key manager, audit pipeline, listeners) is honoured as soon as startup finishes, with a clean close
      // (triggers stopped, the audit tail checkpointed), instead of Node's default of dying mid-start.
      let stopWith: ((signal: string) => Promise<void>) | undefined;
      let pendingSignal: string | undefined;
      const onSignal = (signal: NodeJS.Signals) => {
        if (stopWith) void stopWith(signal);
        // a second signal while still starting (e.g. a key manager that does not answer) ends the process at once
        else if (pendingSignal) process.exit(signal === "SIGINT" ? 130 : 143);
        else pendingSignal = signal;
      };
      process.on("SIGINT", onSignal);
      process.on("SIGTERM", onSignal);
      const config = loadConfig(flags, cmd.parent?.opts().config);
      if (process.env.ATREST_GC_PACING !== "0") startGcPacing();
      const missing = missingRuntimeSettings();
      if (missing.length > 0) {
        say(`process settings missing: ${missing.join(" ")} (more memory; see docs/operations.md "Memory")`);
      }
      const logger = pino({ level: config.logLevel, base: { service: "atrest" } });
      const kms = config.kms ? { url: config.kms, certDir: config.kmsCert as string } : undefined;
      const { created, warning } = await initData(config.data, kms);
      if (created) say(`initialised ${config.data} (first run)`);
      if (warning) process.stderr.write(`\n${warning}\n\n`);

      const app = await App.open(config.data, {
        logger,
        sweep: true,
        followKeyStates: true,
        dekCacheSeconds: config.dekCacheSeconds,
        dekCacheEntries: config.dekCacheEntries,
        kms,
        meta: { url: config.meta, nodeId: await serverNodeId(config.data, config.nodeId, config.meta) },
        blobs: { url: config.blobs, endpoint: config.blobsEndpoint, region: config.blobsRegion },
      });
      say(`key manager: ${app.keyManagerLocation}`);
      say(`metadata store: ${describeMetaStore(config.data, config.meta)}${app.node ? ` (node ${app.node})` : ""}`);
      say(`container crypto: ${containerCrypto().describe}`);
      app.audit.setFailClosed(config.audit.failClosed);
      app.audit.onFailure((failure) => {
        if (failure === undefined) logger.warn({ path: app.audit.path }, "audit log writable again");
        else {
          logger.error(
            { path: app.audit.path, failure, failClosed: config.audit.failClosed },
            config.audit.failClosed
              ? "audit log cannot be written: refusing logins and file operations (audit.failClosed)"
              : "audit log cannot be written: records are kept in memory and retried",
          );
        }
      });
      const registry = new Registry();
      let pipeline: AuditPipeline;
      let auditKey: KeyObject | undefined;
      try {
        const raw = await serviceKey(app.store, app.keys, AUDIT_KEY_SETTING, "default", AUDIT_CONTEXT);
        const key = aeadKey(raw);
        auditKey = key;
        zero(raw);
        pipeline = await AuditPipeline.start(config.audit, {
          audit: app.audit,
          key,
          store: app.store,
          logger,
          registry,
        });
      } catch (err) {
        await app.close();
        throw err;
      }
      for (const d of config.audit.destinations) {
        say(`audit destination ${d.name}: ${d.format} over ${d.transport} to ${d.host}:${d.port}`);
      }
      let metrics: MetricsServer | undefined;
      if (config.metricsPort > 0) {
        metrics = await startMetricsServer(registry, "127.0.0.1", config.metricsPort);
        say(`metrics on http://127.0.0.1:${metrics.port}/metrics`);
      }
      const defender = new Defender(config.defender, app.store, app.audit);
      // Expiries are audited within a few seconds of the ban's end; old ban rows are forgotten.
      const defenderSweep = setInterval(() => {
        defender.sweep().catch((err) => logger.warn({ err }, "defender: sweep failed"));
      }, 2000);
      defenderSweep.unref();
      const { sealedSecrets } = await import("../keys/sealed-secrets.ts");
      const vault = await sealedSecrets(app.store, app.keys);
      const totp = new TotpService(vault);
      // TOTP required of a user by their own flag or by any of their groups (read at each login: changes apply at once)
      totp.requiredBy(async (name) => {
        const u = await app.store.getUser(name);
        if (!u) return false;
        if (u.requireTotp) return true;
        for (const g of u.groups) if ((await app.store.getGroup(g))?.options.requireTotp) return true;
        return false;
      });
      const login = new LoginService({ accounts: app, logger, audit: app.audit, defender, secondFactor: totp });
      // Sessions of removed users end within a few seconds, whichever process removed them.
      const loginSweep = setInterval(() => {
        login.sweep().catch((err) => logger.warn({ err }, "login: session sweep failed"));
      }, 2000);
      loginSweep.unref();
      if (!config.defender.enabled) say("brute-force defender disabled (defender.enabled false)");
      const { COOKIE_KEY_CONTEXT, COOKIE_KEY_SETTING, SealedCookies } = await import(
        "../protocols/http/sealed-cookie.ts"
      );
      // one key for every node on this store: a cookie (or a session list) sealed by one node opens on the others
      const cookieKey = await serviceKey(app.store, app.keys, COOKIE_KEY_SETTING, "default", COOKIE_KEY_CONTEXT);
      // several nodes on one store: each publishes its SFTP/S3 connections there for the admin's Sessions page
      let board: LiveSessionBoard | undefined;
      if (app.node) {
        const { LiveSessionBoard } = await import("../service/live-sessions.ts");
        board = new LiveSessionBoard({
          rows: {
            setSetting: (k, v) => app.store.transaction((tx) => tx.setSetting(k, v)),
            deleteSetting: (k) => app.store.transaction((tx) => tx.deleteSetting(k)),
            listSettings: (prefix) => app.store.listSettings(prefix),
          },
          sealer: new SealedCookies(Buffer.from(cookieKey)),
          node: app.node,
          sessions: () => login.sessions().filter((s) => s.protocol !== "http"),
          end: (user, before) => {
            login.endUser(user, "sessions ended by an admin", (l) => l.protocol !== "http" && l.since <= before);
          },
          onError: (err) => logger.warn({ err }, "live sessions: this node's list not published"),
        });
        board.start();
      }
      let sftp: { port: number; transport: { describe: string }; close(): Promise<void> } | undefined;
      if (config.sftpPort === 0) {
        say("sftp disabled (--sftp-port 0)");
      } else {
        // Loaded here so that admin commands do not pay for the SSH stack.
        const { loadOrCreateHostKeys } = await import("../protocols/sftp/hostkeys.ts");
        const { startSftpServer } = await import("../protocols/sftp/server.ts");
        const hostKeys = await loadOrCreateHostKeys(app.paths.hostKeys, vault);
        for (const file of hostKeys.migrated) say(`host key ${file}: sealed under the key manager, clear file removed`);
        sftp = await startSftpServer({
          login,
          hostKeys: hostKeys.keys,
          host: config.host,
          port: config.sftpPort === "auto" ? 0 : config.sftpPort,
          logger,
          idleTimeoutMs: config.idleTimeout * 1000,
          maxSessions: config.maxSessions,
          limits: config.limits,
        });
        say(`sftp listening on ${config.host}:${sftp.port}`);
        say(`sftp transport crypto: ${sftp.transport.describe}`);
        for (const fp of hostKeys.fingerprints) say(`host key ${fp}`);
      }
      // The server's TLS certificate (--tls-cert, or the generated self-signed one), shared by HTTPS and S3.
      let serverTls: import("../wiring/server-tls.ts").ServerTls | undefined;
      const sharedTls = async () => {
        if (!serverTls) {
          const { loadOrCreateServerTls } = await import("../wiring/server-tls.ts");
          serverTls = await loadOrCreateServerTls({
            vault,
            data: config.data,
            certFile: config.tlsCert,
            keyFile: config.tlsKey,
          });
        }
        return serverTls;
      };
      let http: { port: number; close(): Promise<void> } | undefined;
      let syncBlobs: { close(): Promise<void> } | undefined;
      let stopSyncSweeps: (() => Promise<void>) | undefined;
      if (config.httpPort === 0) {
        say("https disabled (--http-port 0)");
      } else {
        const { startHttpServer } = await import("../protocols/http/server.ts");
        const { keyCustody } = await import("../wiring/key-custody.ts");
        const tls = await sharedTls();
        const keys = app.keys as { status?: () => Promise<unknown> } & typeof app.keys;
        const { SyncServer } = await import("../sync/server/service.ts");
        const { LocalBlobStore } = await import("../store/local-blobs.ts");
        // E2EE sync blobs apart from the file tree's (opaque ciphertext the server cannot open; own sweep scope)
        const blobs = new LocalBlobStore(join(config.data, "sync"));
        await blobs.init();
        syncBlobs = blobs;
        const sync = new SyncServer({
          store: app.store,
          blobs,
          audit: app.audit,
          quotaOf: async (user) => (await app.store.getUser(user))?.quotaBytes ?? 0,
          ...syncBlobGrace(process.env.ATREST_SYNC_BLOB_GRACE_SECONDS),
          ...syncSweepEvery(process.env.ATREST_SYNC_SWEEP_SECONDS),
        });
        stopSyncSweeps = sync.startSweeps((err) => logger.warn({ err }, "sync: timed sweep failed"));
        http = await startHttpServer({
          cookieKey,
          ...(board ? { liveSessions: board } : {}),
          // browser sessions sealed in the store's settings: any node on the store accepts them
          sessionRows: {
            getSetting: (k) => app.store.getSetting(k),
            setSetting: (k, v) => app.store.transaction((tx) => tx.setSetting(k, v)),
            deleteSetting: (k) => app.store.transaction((tx) => tx.deleteSetting(k)),
            listSettings: (prefix) => app.store.listSettings(prefix),
          },
          sync,
          host: config.host,
          port: config.httpPort === "auto" ? 0 : config.httpPort,
          tls,
          login,
          tokens: new TokenService(app.store, app.audit),
          totp,
          oidc: config.oidc,
          keyPairs: new KeyPairs({ store: app.store, pgp: app.pgp, audit: app.audit }),
          shares: new ShareService({ store: app.store, accounts: app, audit: app.audit, defender }),
          admin: app.admin,
          keys: app.keys,
          custody: keyCustody(app),
          auditQuery: (pick, o) => query(app.audit.path, auditKey, pick, o),
          audit: app.audit,
          accounts: app,
          user: (name) => app.store.getUser(name),
          logger,
          registry,
          checks: [
            { name: "store", check: async () => void (await app.store.getSetting("metadata.key")) },
            { name: "blobs", check: async () => void (await app.vfs.blobs.ping?.()) },
            {
              name: "key-manager",
              // a key manager that answers but is sealed (restarted, not yet unsealed by its custodians) serves no
              // key: not ready
              check: async () => {
                const status = (await (keys.status ? keys.status() : keys.listKeys())) as { sealed?: unknown };
                if (status && typeof status === "object" && status.sealed === true) throw new Error("sealed");
              },
            },
          ],
        });
        say(`https listening on ${config.host}:${http.port}`);
        say(`tls certificate ${tls.fingerprint} (${tls.source})`);
      }
      let s3: { port: number; close(): Promise<void> } | undefined;
      let multipartSweep: NodeJS.Timeout | undefined;
      if (config.s3Port === 0) {
        say("s3 disabled (--s3-port 0)");
      } else {
        const { startS3Server } = await import("../protocols/s3/server.ts");
        const { globalPath } = await import("../vfs/folders.ts");
        const { readFile } = await import("node:fs/promises");
        const { tlsFingerprint } = await import("../wiring/server-tls.ts");
        // its own certificate if given, else the server's (the HTTPS door's)
        let tls: { cert: string | Buffer; key: string | Buffer; fingerprint: string; source: string } | undefined;
        if (config.s3Tls === "on") {
          if (config.s3TlsCert && config.s3TlsKey) {
            const cert = await readFile(config.s3TlsCert, "utf8");
            tls = {
              cert,
              key: await readFile(config.s3TlsKey),
              fingerprint: tlsFingerprint(cert),
              source: config.s3TlsCert,
            };
          } else tls = { ...(await sharedTls()), source: "the server's certificate" };
        }
        const { S3Buckets } = await import("../service/s3-buckets.ts");
        const buckets = new S3Buckets(app.store);
        // the upgrade to the global bucket namespace: every user's existing top-level folders become their buckets
        const registered = await buckets.registerExisting(
          (user) => app.openSession(user, { protocol: "cli", sessionId: "s3-bucket-registry" }),
          logger,
        );
        if (registered > 0) logger.info({ buckets: registered }, "s3: registered existing buckets");
        s3 = await startS3Server({
          buckets,
          login,
          host: config.host,
          port: config.s3Port === "auto" ? 0 : config.s3Port,
          logger,
          tls: tls && { cert: tls.cert, key: tls.key },
          region: config.s3Region,
          publicAcls: config.s3PublicAccess === "allow",
          domains: config.s3Domain.split(",").filter(Boolean),
          corsRules: async (bucket, accessKeyId) => {
            // the bucket's owner in the global namespace; a presigned URL's access key for a name not registered
            const name = (await app.store.getS3Bucket(bucket))?.owner;
            const k = !name && accessKeyId ? await app.store.getS3Key(accessKeyId) : undefined;
            const owner = name ? await app.store.getUser(name) : k ? await app.store.getUserById(k.userId) : undefined;
            if (!owner) return undefined;
            return app.vfs.dirRecordAt<import("../protocols/s3/cors.ts").CorsRule[]>(
              globalPath(owner.home, `/${bucket}`),
              "cors",
            );
          },
        });
        if (tls && Buffer.isBuffer(tls.key)) zero(tls.key);
        say(`s3 listening on ${tls ? "https" : "http"}://${config.host}:${s3.port}`);
        if (tls) say(`s3 tls certificate ${tls.fingerprint} (${tls.source})`);
        // abandoned multipart uploads: their staged parts go after s3MultipartExpiry hours (checked at start and then
        // every hour, or more often for a short expiry)
        const expiryMs = config.s3MultipartExpiry * 3_600_000;
        if (expiryMs > 0) {
          const expire = () =>
            app.vfs.multipart
              .expire(Date.now() - expiryMs)
              .then((n) => {
                if (n > 0) logger.info({ uploads: n }, "s3: expired abandoned multipart uploads");
              })
              .catch((err) => logger.warn({ err }, "s3: multipart expiry failed"));
          void expire();
          multipartSweep = setInterval(expire, Math.max(1000, Math.min(3_600_000, expiryMs / 4)));
          multipartSweep.unref();
        }
      }
      await app.triggers.start();
      // every module a start loads is now compiled: into the compile cache (if on: bin/atrest.js) now, not only at a
      // clean exit, so that the next start finds it even after a crash or SIGKILL
      module.flushCompileCache?.();
      if ((await app.store.listUsers()).length === 0) {
        say(`no users yet; add one: echo 'secret' | npx atrest user add alice --password-stdin --data ${config.data}`);
      }

      let stopping = false;
      const stop = async (signal: string) => {
        if (stopping) return;
        stopping = true;
        logger.info({ signal }, "shutting down");
        // A step that never finishes (a peer that stopped answering) must not keep a stopped server alive until a
        // service manager's kill: after the deadline the process ends, naming the step, with a failure status.
        let step = "sftp";
        const deadline = setTimeout(() => {
          logger.error({ step, seconds: STOP_DEADLINE_MS / 1000 }, "shutdown did not finish; exiting");
          process.exit(1);
        }, STOP_DEADLINE_MS);
        deadline.unref();
        await sftp?.close();
        step = "https";
        await http?.close();
        step = "sync";
        await board?.stop();
        await stopSyncSweeps?.();
        await syncBlobs?.close();
        step = "s3";
        await s3?.close();
        clearInterval(defenderSweep);
        clearInterval(loginSweep);
        clearInterval(multipartSweep);
        step = "audit pipeline";
        await pipeline.stop();
        step = "metrics";
        await metrics?.close();
        step = "stores";
        await app.close();
        process.exit(0);
      };
      stopWith = stop;
      if (pendingSignal) void stop(pendingSignal);
    });
}

/** How long a stop may take before the process ends anyway (the doors' own grace for open requests is 5 s). */
const STOP_DEADLINE_MS = 30_000;

/** ATREST_SYNC_BLOB_GRACE_SECONDS: how long a blob no manifest names yet survives the sync blob sweep (default 24 h). */
function syncBlobGrace(v: string | undefined): { blobGraceMs?: number } {
  if (v === undefined || v === "") return {};
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0 || n > 366 * 86_400)
    throw new AtrestError("INVALID_INPUT", "ATREST_SYNC_BLOB_GRACE_SECONDS must be 0 … 31622400");
  return { blobGraceMs: n * 1000 };
}

/** ATREST_SYNC_SWEEP_SECONDS: how often the server applies every sync region's retention and sweeps its blobs (default 3600; 0: never). */
function syncSweepEvery(v: string | undefined): { sweepEveryMs?: number } {
  if (v === undefined || v === "") return {};
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0 || n > 7 * 86_400)
    throw new AtrestError("INVALID_INPUT", "ATREST_SYNC_SWEEP_SECONDS must be 0 … 604800");
  return { sweepEveryMs: n * 1000 };
}
