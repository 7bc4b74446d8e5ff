// `atrest kms …`: the key manager as a service. Commands on the KMS directory itself (init, serve, client
// issue|list|revoke, server-cert, backup, restore) run on the KMS host; seal-state commands (unseal, seal, status)
// talk to a running `kms serve` over mTLS with a client certificate. Key lifecycle commands: ./kms-keys.ts.

import { readFile } from "node:fs/promises";
import { type Command, Option } from "commander";
import { pino } from "pino";
import * as z from "zod";
import { type AuditConfig, auditConfigSchema } from "../audit/config.ts";
import { AtrestError } from "../errors.ts";
import { sweepTempTree } from "../fsutil/durable.ts";
import { KMS_ROLES, type KmsRole } from "../kms/api/caller.ts";
import { RemoteKms } from "../kms/api/client.ts";
import type { KmsStatus } from "../kms/api/types.ts";
import { DEV_MODE_WARNING } from "../kms/embedded.ts";
import { say } from "./common.ts";
import { registerKmsKeys } from "./kms-keys.ts";
import { registerKmsSecrets } from "./kms-secrets.ts";
import { readSecretLine, readSecretLines } from "./secret-input.ts";

export const DEFAULT_KMS_DIR = "./kms";
export const DEFAULT_KMS_PORT = 8443;

function kmsDirOption(): Option {
  return new Option("--data <dir>", `KMS directory (default ${DEFAULT_KMS_DIR})`)
    .env("ATREST_KMS_DATA")
    .default(DEFAULT_KMS_DIR);
}

/**
 * The HSM user PIN: from --hsm-pin-file (first line; the file should be 0600 and not in the data directory's
 * backups) or ATREST_HSM_PIN. Never from argv.
 */
async function readHsmPin(file: string | undefined): Promise<string | undefined> {
  if (file) {
    const text = await readFile(file, "utf8").catch((e: NodeJS.ErrnoException) => {
      throw new AtrestError("NOT_FOUND", `cannot read the HSM PIN file ${file} (${e.code ?? e.message})`);
    });
    const pin = text.split(/\r?\n/)[0] ?? "";
    if (pin === "") throw new AtrestError("INVALID_INPUT", `the HSM PIN file ${file} is empty`);
    return pin;
  }
  return process.env.ATREST_HSM_PIN || undefined;
}

function hsmPinFileOption(): Option {
  return new Option(
    "--hsm-pin-file <file>",
    "file whose first line is the HSM token's user PIN (else ATREST_HSM_PIN)",
  ).env("ATREST_HSM_PIN_FILE");
}

function urlOption(): Option {
  return new Option("--kms <url>", "https://host:port of the running key manager")
    .env("ATREST_KMS")
    .makeOptionMandatory();
}

function certOption(): Option {
  return new Option("--cert <dir>", "client certificate directory (client.key, client.crt, ca.crt)")
    .env("ATREST_KMS_CERT")
    .makeOptionMandatory();
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function intOption(what: string, min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < min || n > max) {
      throw new AtrestError("INVALID_INPUT", `${what} must be an integer from ${min} to ${max} (got ${value})`);
    }
    return n;
  };
}

async function withRemote<T>(opts: { kms: string; cert: string }, fn: (kms: RemoteKms) => Promise<T>): Promise<T> {
  const kms = await RemoteKms.connect({ url: opts.kms, certDir: opts.cert });
  try {
    return await fn(kms);
  } finally {
    await kms.close();
  }
}

/** Unsealing, sealing and seal state are each node's own: a list of nodes would leave unclear which one answered. */
function oneNode(url: string): void {
  if (url.includes(",")) {
    throw new AtrestError(
      "INVALID_INPUT",
      "give one KMS node's URL: each node is unsealed, sealed and reports its seal state on its own",
    );
  }
}

function statusLine(s: KmsStatus): string {
  if (!s.sealed)
    return `unsealed (${s.kind === "dev-file" ? "dev mode key file" : s.kind === "pkcs11" ? "master key in an HSM" : `shamir ${s.threshold} of ${s.shares}`})`;
  return `sealed: ${s.progress}/${s.threshold} shares submitted (shamir ${s.threshold} of ${s.shares})`;
}

export function registerKms(program: Command): void {
  const kms = program
    .command("kms")
    .description("key manager: the embedded one in the data directory, or a separate service (kms serve)");

  kms
    .command("init")
    .description(
      "create a KMS directory: master key sealed by Shamir shares (printed once) or a dev key file, and its CA",
    )
    .addOption(kmsDirOption())
    .option("--shares <n>", "number of unseal key shares to print (2-255)", intOption("--shares", 2, 255))
    .option("--threshold <k>", "shares needed to unseal (2..shares)", intOption("--threshold", 2, 255))
    .option("--dev", "dev mode: master key in a key file beside the database (unprotected; loud warning)")
    .option(
      "--hsm-library <path>",
      "master key in a PKCS#11 HSM: the vendor's module (e.g. /usr/lib/softhsm/libsofthsm2.so)",
    )
    .option("--hsm-token <label>", "HSM: the token's label")
    .option(
      "--hsm-key-label <label>",
      "HSM: label of the master key (generated in the token unless it exists)",
      "atrest-master",
    )
    .addOption(hsmPinFileOption())
    .option("--san <name>", "extra IP or DNS name for the server certificate (repeatable)", collect, [])
    .addOption(
      new Option(
        "--store <url>",
        "keep the KMS's database in PostgreSQL (postgres://…?schema=kms), shared by several KMS nodes; default kms.db",
      ).env("ATREST_KMS_STORE"),
    )
    .option(
      "--join <dir>",
      "add a node to a --store another node initialised: DIR holds copies of its ca.crt and ca.key (and master.key " +
        "in dev mode); no new master key, the custodians' shares unseal this node too",
    )
    .option(
      "--shares-per-custodian <mode>",
      "one: each custodian certificate counts once toward the threshold (default); any: one custodian may submit " +
        "several shares",
      "one",
    )
    .action(
      async (opts: {
        data: string;
        shares?: number;
        threshold?: number;
        dev?: boolean;
        san: string[];
        sharesPerCustodian: string;
        hsmLibrary?: string;
        hsmToken?: string;
        hsmKeyLabel: string;
        hsmPinFile?: string;
        store?: string;
        join?: string;
      }) => {
        if (opts.sharesPerCustodian !== "one" && opts.sharesPerCustodian !== "any") {
          throw new AtrestError("INVALID_INPUT", "--shares-per-custodian must be one or any");
        }
        let hsm: { library: string; tokenLabel: string; keyLabel: string; pin: string } | undefined;
        if (opts.hsmLibrary !== undefined || opts.hsmToken !== undefined) {
          if (!opts.hsmLibrary || !opts.hsmToken) {
            throw new AtrestError("INVALID_INPUT", "--hsm-library and --hsm-token go together");
          }
          const pin = await readHsmPin(opts.hsmPinFile);
          if (!pin)
            throw new AtrestError("INVALID_INPUT", "the HSM PIN is needed: --hsm-pin-file FILE or ATREST_HSM_PIN");
          hsm = { library: opts.hsmLibrary, tokenLabel: opts.hsmToken, keyLabel: opts.hsmKeyLabel, pin };
        }
        const { initKmsDir } = await import("../kms/home.ts");
        const r = await initKmsDir(opts.data, {
          shares: opts.shares,
          threshold: opts.threshold,
          dev: opts.dev,
          sans: opts.san,
          oneSharePerCustodian: opts.sharesPerCustodian === "one",
          hsm,
          ...(opts.store !== undefined ? { store: opts.store } : {}),
          ...(opts.join !== undefined ? { joinFrom: opts.join } : {}),
        });
        if (r.mode === "joined") {
          say(`${opts.data} joined the KMS store (${r.kind}); its own server certificate is in ${opts.data}`);
          process.stdout.write(
            `\nNext: atrest kms serve --data ${opts.data}, then the custodians unseal this node with their shares\n`,
          );
          return;
        }
        if (r.mode === "pkcs11") {
          say(
            `initialised KMS in ${opts.data}: master key "${r.config.keyLabel}" in HSM token "${r.config.tokenLabel}" ` +
              `(${r.generated ? "generated in the token" : "the existing key"}; sensitive, not extractable)`,
          );
          process.stdout.write(
            `\nNext: atrest kms serve --data ${opts.data} --hsm-pin-file FILE (the token's PIN unseals it at start)\n` +
              "      Back up the token with the HSM's own tools: kms.db is useless without that key.\n",
          );
          return;
        }
        if (r.mode === "dev-file") {
          say(r.created ? `initialised KMS in ${opts.data} (dev mode)` : `${opts.data} is already initialised`);
          process.stderr.write(`\n${DEV_MODE_WARNING}\n\n`);
          return;
        }
        say(`initialised KMS in ${opts.data}: ${r.config.threshold} of ${r.config.shares} shares unseal it`);
        process.stdout.write(
          `\nUnseal key shares (shown ONCE, never stored; give one to each custodian, keep them apart):\n\n${r.shares
            .map((s, i) => `  share ${i + 1}: ${s}\n`)
            .join(
              "",
            )}\nNext: atrest kms client issue <name> --role custodian --out DIR --data ${opts.data}  (one per custodian)\n` +
            `      atrest kms serve --data ${opts.data}, then each custodian: atrest kms unseal --kms URL --cert DIR\n` +
            (r.config.oneSharePerCustodian
              ? "Each custodian certificate counts once: a quorum needs that many distinct custodians.\n"
              : "One custodian certificate may submit several shares (--shares-per-custodian any).\n"),
        );
      },
    );

  kms
    .command("serve")
    .description("run the key manager: HTTPS JSON API with mutual TLS (starts sealed unless dev mode)")
    .addOption(kmsDirOption())
    .addOption(
      new Option("--host <addr>", "listen address (default 127.0.0.1)").env("ATREST_KMS_HOST").default("127.0.0.1"),
    )
    .addOption(
      new Option("--port <n>", `listen port; 0 = any free port (default ${DEFAULT_KMS_PORT})`)
        .env("ATREST_KMS_PORT")
        .default(DEFAULT_KMS_PORT)
        .argParser(intOption("--port", 0, 65535)),
    )
    .addOption(
      new Option("--metrics-port <n>", "plain-HTTP /metrics on 127.0.0.1 (0 = off; mTLS /metrics is always on)")
        .env("ATREST_KMS_METRICS_PORT")
        .default(0)
        .argParser(intOption("--metrics-port", 0, 65535)),
    )
    .addOption(
      new Option(
        "--kmip-port <n>",
        "also serve KMIP (TTLV over mutual TLS, standard port 5696) on this port; 0 = any free port (default: off)",
      )
        .env("ATREST_KMS_KMIP_PORT")
        .argParser(intOption("--kmip-port", 0, 65535)),
    )
    .addOption(
      new Option("--log-level <level>", "pino level (default info)")
        .env("ATREST_LOG_LEVEL")
        .default("info")
        .choices(["fatal", "error", "warn", "info", "debug", "trace", "silent"]),
    )
    .addOption(
      new Option(
        "--kms-config <file>",
        'JSON config: {"audit": {"destinations": […]}} ships the KMS audit log to SIEMs (as the server\'s audit section)',
      ).env("ATREST_KMS_CONFIG"),
    )
    .option(
      "--one-share-per-custodian",
      "count each custodian once toward the unseal threshold, also for a KMS initialised with --shares-per-custodian any",
    )
    .addOption(
      new Option(
        "--scheduler-interval <ms>",
        "how often automatic rotation and due destruction are checked, ms (default 60000; 0 = never on this node)",
      )
        .env("ATREST_KMS_SCHEDULER_INTERVAL")
        .argParser(intOption("--scheduler-interval", 0, 86_400_000)),
    )
    .addOption(hsmPinFileOption())
    .option("--hsm-library <path>", "HSM: the PKCS#11 module, if not at the path recorded by kms init")
    .action(
      async (opts: {
        data: string;
        host: string;
        port: number;
        metricsPort: number;
        logLevel: string;
        kmsConfig?: string;
        oneSharePerCustodian?: boolean;
        kmipPort?: number;
        hsmPinFile?: string;
        hsmLibrary?: string;
        schedulerInterval?: number;
      }) => {
        // Loaded here so that other commands do not pay for the server and certificate code.
        const { KmsServer } = await import("../kms/server/server.ts");
        const { startMetricsServer } = await import("../metrics/server.ts");
        const logger = pino({ level: opts.logLevel, base: { service: "atrest-kms" } });
        const temps = await sweepTempTree(opts.data, 2);
        if (temps > 0) logger.warn({ removed: temps }, "removed temp files left by an interrupted write");
        const audit = opts.kmsConfig ? await readKmsServeConfig(opts.kmsConfig) : undefined;
        const server = await KmsServer.start({
          dir: opts.data,
          host: opts.host,
          port: opts.port,
          logger,
          audit,
          oneSharePerCustodian: opts.oneSharePerCustodian,
          ...(opts.schedulerInterval !== undefined ? { schedulerIntervalMs: opts.schedulerInterval } : {}),
          hsm: { pin: await readHsmPin(opts.hsmPinFile), ...(opts.hsmLibrary ? { library: opts.hsmLibrary } : {}) },
          ...(opts.kmipPort !== undefined ? { kmip: { port: opts.kmipPort } } : {}),
        });
        if (audit?.destinations.length) {
          say(
            `kms audit shipped to ${audit.destinations.map((d) => `${d.name} (${d.transport} ${d.host}:${d.port} ${d.format})`).join(", ")}`,
          );
        }
        const host = opts.host.includes(":") ? `[${opts.host}]` : opts.host;
        say(`kms listening on https://${host}:${server.port}`);
        if (server.kmipPort !== undefined) say(`kms KMIP listening on ${host}:${server.kmipPort}`);
        const metrics =
          opts.metricsPort > 0
            ? await startMetricsServer(server.metrics.registry, "127.0.0.1", opts.metricsPort)
            : undefined;
        if (metrics) say(`kms metrics on http://127.0.0.1:${metrics.port}/metrics`);
        const st = server.status();
        if (st.kind === "dev-file") process.stderr.write(`\n${DEV_MODE_WARNING}\n\n`);
        say(
          st.sealed
            ? `kms is sealed: ${st.threshold} of ${st.shares} shares needed (atrest kms unseal --kms https://${host}:${server.port} --cert DIR)`
            : "kms is unsealed",
        );
        let stopping = false;
        const stop = async (signal: string) => {
          if (stopping) return;
          stopping = true;
          logger.info({ signal }, "kms: shutting down (sealing)");
          await metrics?.close();
          await server.close();
          process.exit(0);
        };
        process.on("SIGINT", () => void stop("SIGINT"));
        process.on("SIGTERM", () => void stop("SIGTERM"));
      },
    );

  kms
    .command("unseal")
    .description(
      "submit one unseal share to a running KMS (read from stdin or a hidden prompt, never the command line)",
    )
    .addOption(urlOption())
    .addOption(certOption())
    .option("--reset", "discard the shares submitted so far instead")
    .action(async (opts: { kms: string; cert: string; reset?: boolean }) => {
      oneNode(opts.kms);
      await withRemote(opts, async (remote) => {
        if (opts.reset) {
          const s = await remote.resetUnseal();
          say(`unseal progress reset: ${statusLine(s)}`);
          return;
        }
        const before = await remote.status();
        if (!before.sealed) {
          say("already unsealed");
          return;
        }
        const share = await readSecretLine(`unseal share (${before.progress + 1}/${before.threshold}): `);
        if (!share)
          throw new AtrestError("INVALID_INPUT", "no share given (pipe it on stdin or type it at the prompt)");
        const s = await remote.unseal(share);
        say(s.sealed ? `unseal progress ${s.progress}/${s.threshold}` : "unsealed");
      });
    });

  kms
    .command("seal")
    .description("seal a running KMS: it forgets its master key until unsealed again (custodian or admin)")
    .addOption(urlOption())
    .addOption(certOption())
    .action(async (opts: { kms: string; cert: string }) => {
      oneNode(opts.kms);
      await withRemote(opts, async (remote) => say(statusLine(await remote.seal())));
    });

  kms
    .command("status")
    .description("seal state of a running KMS")
    .addOption(urlOption())
    .addOption(certOption())
    .option("--json", "machine-readable output")
    .action(async (opts: { kms: string; cert: string; json?: boolean }) => {
      oneNode(opts.kms);
      await withRemote(opts, async (remote) => {
        const s = await remote.status();
        if (opts.json) process.stdout.write(`${JSON.stringify(s)}\n`);
        else say(statusLine(s));
      });
    });

  const client = kms.command("client").description("client certificates issued by the KMS CA (run on the KMS host)");

  client
    .command("issue <name>")
    .description("issue a client certificate: writes client.key, client.crt and ca.crt (0600) to --out")
    .addOption(kmsDirOption())
    .addOption(new Option("--role <role>", "what the client may do").choices([...KMS_ROLES]).makeOptionMandatory())
    .requiredOption("--out <dir>", "directory for the client's key and certificates")
    .option("--days <n>", "validity in days (default 365)", intOption("--days", 1, 3650))
    .option(
      "--public-key <file>",
      "certify this ECDSA P-256 public key (PEM) the person generated, e.g. a custodian's browser key: no key is written",
    )
    .action(
      async (name: string, opts: { data: string; role: KmsRole; out: string; days?: number; publicKey?: string }) => {
        const { issueClient } = await import("../kms/home.ts");
        const publicKeyPem = opts.publicKey === undefined ? undefined : await readFile(opts.publicKey, "utf8");
        const row = await issueClient(opts.data, name, opts.role, opts.out, { days: opts.days, publicKeyPem });
        say(
          `issued ${row.role} certificate for ${row.name} (sha256 ${row.fingerprint}, until ${row.notAfter}) in ${opts.out}`,
        );
      },
    );

  client
    .command("list")
    .description("list issued client certificates")
    .addOption(kmsDirOption())
    .option("--json", "machine-readable output")
    .action(async (opts: { data: string; json?: boolean }) => {
      const { openKmsDb } = await import("../kms/home.ts");
      const { listClients } = await import("../kms/clients.ts");
      const db = openKmsDb(opts.data);
      try {
        const rows = listClients(db);
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
          return;
        }
        for (const r of rows) {
          const state = r.revokedAt ? `revoked ${r.revokedAt}` : `valid until ${r.notAfter}`;
          process.stdout.write(`${r.name}\t${r.role}\t${state}\tsha256:${r.fingerprint}\n`);
        }
      } finally {
        db.close();
      }
    });

  client
    .command("revoke <name-or-fingerprint>")
    .description("revoke a client's certificates (a running KMS refuses them within a second)")
    .addOption(kmsDirOption())
    .action(async (who: string, opts: { data: string }) => {
      const { openKmsDb } = await import("../kms/home.ts");
      const { revokeClient } = await import("../kms/clients.ts");
      const db = openKmsDb(opts.data);
      try {
        const n = revokeClient(db, who, new Date().toISOString());
        say(n > 0 ? `revoked ${n} certificate(s) of ${who}` : `${who} was already revoked`);
      } finally {
        db.close();
      }
    });

  kms
    .command("server-cert")
    .description("re-issue the KMS server's TLS certificate (e.g. to add --san names); restart kms serve to use it")
    .addOption(kmsDirOption())
    .option("--san <name>", "extra IP or DNS name (repeatable)", collect, [])
    .action(async (opts: { data: string; san: string[] }) => {
      const { issueServerCert, loadCa } = await import("../kms/ca.ts");
      const issued = await issueServerCert(opts.data, await loadCa(opts.data), opts.san);
      say(`issued server certificate (sha256 ${issued.fingerprint}, until ${issued.notAfter})`);
    });

  kms
    .command("backup")
    .description("write an encrypted, integrity-protected bundle of the KMS (readable only with a quorum of shares)")
    .addOption(kmsDirOption())
    .requiredOption("--out <file>", "bundle to write (0600)")
    .action(async (opts: { data: string; out: string }) => {
      const { backupKms } = await import("../kms/backup.ts");
      const r = await backupKms(opts.data, opts.out);
      say(`backed up ${r.files.join(", ")} to ${r.path} (${r.bytes} bytes, encrypted)`);
    });

  kms
    .command("restore")
    .description("restore a bundle into a new or empty KMS directory; the custodians enter a quorum of shares on stdin")
    .addOption(kmsDirOption())
    .requiredOption("--in <file>", "bundle written by kms backup")
    .action(async (opts: { data: string; in: string }) => {
      const { restoreKms } = await import("../kms/backup.ts");
      const r = await restoreKms(opts.in, opts.data, (threshold, total) =>
        readSecretLines(threshold, (i) => `unseal share ${i + 1}/${threshold} (of ${total}): `),
      );
      say(`restored the KMS backup of ${r.createdAt} into ${r.dir} (${r.files.join(", ")})`);
      say(`start it with atrest kms serve --data ${r.dir}; it starts sealed: unseal it with the same shares`);
    });

  registerKmsKeys(kms);
  registerKmsSecrets(kms);
}

/** `kms serve --kms-config FILE`: today only its `audit` section (the file server's schema: destinations, filters). */
async function readKmsServeConfig(file: string): Promise<AuditConfig> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, "utf8"));
  } catch (e) {
    throw new AtrestError("INVALID_INPUT", `--kms-config ${file}: ${(e as Error).message}`);
  }
  const r = z.strictObject({ audit: auditConfigSchema.optional() }).safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new AtrestError(
      "INVALID_INPUT",
      `--kms-config ${file}: ${issue?.path.join(".") || "config"}: ${issue?.message ?? "invalid"}`,
    );
  }
  return r.data.audit ?? { failClosed: false, destinations: [] };
}
