import { readFileSync } from "node:fs";
import { z } from "zod";
import { auditConfigSchema } from "../audit/config.ts";
import { AtrestError } from "../errors.ts";
import { allowListOf, DEFAULT_DEFENDER } from "../service/defender.ts";
import { limitsEnv, limitsSchema } from "./limits.ts";

const seconds = (d: number) =>
  z.coerce
    .number()
    .int()
    .min(1)
    .max(365 * 86_400)
    .default(d);
const score = (d: number) => z.coerce.number().int().min(0).max(1000).default(d);

const defenderSchema = z
  .object({
    enabled: z
      .union([z.boolean(), z.enum(["true", "false"]).transform((v) => v === "true")], {
        error: "must be true or false",
      })
      .default(DEFAULT_DEFENDER.enabled),
    threshold: z.coerce.number().int().min(1).max(10_000).default(DEFAULT_DEFENDER.threshold),
    userThreshold: z.coerce.number().int().min(1).max(10_000).default(DEFAULT_DEFENDER.userThreshold),
    scoreFailure: score(DEFAULT_DEFENDER.scoreFailure),
    scoreKeyRejected: score(DEFAULT_DEFENDER.scoreKeyRejected),
    observationSeconds: seconds(DEFAULT_DEFENDER.observationSeconds),
    banSeconds: seconds(DEFAULT_DEFENDER.banSeconds),
    banIncrementPercent: z.coerce.number().int().min(0).max(1000).default(DEFAULT_DEFENDER.banIncrementPercent),
    maxBanSeconds: seconds(DEFAULT_DEFENDER.maxBanSeconds),
    // IPs and CIDRs never scored or banned; loopback is not in it by default (a local attacker is an attacker too).
    allowList: z
      .union([
        z.array(z.string()),
        z.string().transform((v) =>
          v
            .split(",")
            .map((x) => x.trim())
            .filter(Boolean),
        ),
      ])
      .default([]),
  })
  .strict()
  .superRefine((d, ctx) => {
    try {
      allowListOf(d.allowList);
    } catch (err) {
      ctx.addIssue({ code: "custom", path: ["allowList"], message: (err as Error).message });
    }
  });

/** ATREST_DEFENDER_* twins of the `defender` settings. */
const defenderEnv: Record<string, string> = {
  enabled: "ATREST_DEFENDER_ENABLED",
  threshold: "ATREST_DEFENDER_THRESHOLD",
  userThreshold: "ATREST_DEFENDER_USER_THRESHOLD",
  scoreFailure: "ATREST_DEFENDER_SCORE_FAILURE",
  scoreKeyRejected: "ATREST_DEFENDER_SCORE_KEY_REJECTED",
  observationSeconds: "ATREST_DEFENDER_OBSERVATION_SECONDS",
  banSeconds: "ATREST_DEFENDER_BAN_SECONDS",
  banIncrementPercent: "ATREST_DEFENDER_BAN_INCREMENT_PERCENT",
  maxBanSeconds: "ATREST_DEFENDER_MAX_BAN_SECONDS",
  allowList: "ATREST_DEFENDER_ALLOW_LIST",
};

/**
 * OIDC login of the HTTPS door (src/protocols/http/oidc-routes.ts): authorization code flow with PKCE against one
 * provider. Config file only (`oidc`), the client secret also from ATREST_OIDC_CLIENT_SECRET.
 */
const oidcSchema = z
  .object({
    issuer: z.url({ protocol: /^https$/, error: "must be the provider's https:// issuer URL" }),
    clientId: z.string().min(1),
    clientSecret: z.string().min(1).optional(),
    // where the provider sends the browser back: https://<this server>/api/v1/auth/oidc/callback
    redirectUri: z.url({ protocol: /^https$/, error: "must be https://<server>/api/v1/auth/oidc/callback" }),
    scopes: z.array(z.string().min(1)).default(["openid", "profile"]),
    // the claim that names the atrest user (its value must be a valid user name)
    usernameClaim: z.string().min(1).default("preferred_username"),
    // the claim (a string or a list of strings) whose values map to atrest groups through groupMap
    groupClaim: z.string().min(1).default("groups"),
    groupMap: z.record(z.string(), z.string()).default({}),
    // auto: a user the provider vouches for is created at first login (role user, no password); existing: must exist
    provision: z.enum(["auto", "existing"]).default("existing"),
    // the login button's label in the web app
    label: z.string().min(1).max(64).default("Single sign-on"),
  })
  .strict();

// One schema for the config file, ATREST_* environment variables and command-line flags (in rising precedence).
export const serverConfigSchema = z
  .object({
    data: z.string().min(1).default("./data"),
    // Metadata store: `sqlite` (<data>/meta.db, the default) or postgres://user@host:port/db?schema=name&pool=N for
    // several nodes on one database (recorded in the data dir; the password comes from PGPASSWORD, never the URL).
    meta: z
      .string()
      .regex(/^(sqlite|postgres(ql)?:\/\/.+)$/, { error: "must be sqlite or a postgres:// URL" })
      .optional(),
    // Blob store: `local` (<data>/blobs, the default) or s3://bucket/prefix (several nodes on one bucket), with the
    // endpoint of an S3-compatible server and the region; credentials come from the AWS SDK chain (AWS_* env).
    blobs: z
      .string()
      .regex(/^(local|s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?)$/, {
        error: "must be local or s3://bucket/prefix",
      })
      .optional(),
    blobsEndpoint: z.url({ protocol: /^https?$/, error: "must be an http(s):// URL" }).optional(),
    blobsRegion: z.string().min(1).max(64).optional(),
    // This node's id among the server processes sharing one PostgreSQL store (audit records, trigger leases).
    nodeId: z
      .string()
      .regex(/^[a-z0-9][a-z0-9._-]{0,47}$/, {
        error: "must be 1-48 lowercase letters, digits, dot, dash or underscore, starting with a letter or digit",
      })
      .optional(),
    host: z.string().min(1).default("127.0.0.1"),
    // 0 disables the protocol (DESIGN §6); "auto" lets the OS pick a free port (printed at start; tests use it).
    sftpPort: z
      .union([z.literal("auto"), z.coerce.number().int().min(0).max(65535)], {
        error: 'must be a port number 0-65535 (0 = disabled) or "auto"',
      })
      .default(2022),
    // HTTPS API (src/protocols/http); 8443 stays the key manager's.
    httpPort: z
      .union([z.literal("auto"), z.coerce.number().int().min(0).max(65535)], {
        error: 'must be a port number 0-65535 (0 = disabled) or "auto"',
      })
      .default(8080),
    // An operator's TLS certificate and key (PEM) for the HTTPS door; unset = a self-signed one kept in <data>/tls.
    tlsCert: z.string().min(1).optional(),
    tlsKey: z.string().min(1).optional(),
    // S3 door (src/protocols/s3), on 9000 by default: HTTPS with the server's certificate (the HTTPS door's, tlsCert
    // or the generated one) unless s3TlsCert/s3TlsKey name another; plain HTTP (--s3-tls off) only on loopback.
    s3Port: z
      .union([z.literal("auto"), z.coerce.number().int().min(0).max(65535)], {
        error: 'must be a port number 0-65535 (0 = disabled) or "auto"',
      })
      .default(9000),
    s3Tls: z.enum(["on", "off"]).default("on"),
    s3TlsCert: z.string().min(1).optional(),
    s3TlsKey: z.string().min(1).optional(),
    // S3 multipart uploads neither completed nor aborted are removed (parts and records) this many hours after they
    // were created; 0 = kept until aborted.
    s3MultipartExpiry: z.coerce.number().min(0).default(168),
    // The region the S3 door is (GetBucketLocation; a CreateBucket LocationConstraint must name it).
    s3Region: z
      .string()
      .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, { error: "must be a region name like us-east-1 (a-z, 0-9, -)" })
      .default("us-east-1"),
    // S3 public ACLs (grants to AllUsers or AuthenticatedUsers; what lets unsigned requests in), like S3's Block Public
    // Access: "block" refuses setting them and ignores any kept; "allow" honours them.
    s3PublicAccess: z.enum(["block", "allow"]).default("block"),
    // Base domains of virtual-hosted-style S3 requests (bucket.<domain>), comma-separated; "" = path-style only.
    s3Domain: z
      .string()
      .regex(/^([a-z0-9.-]+(,[a-z0-9.-]+)*)?$/i, { error: "must be comma-separated domain names" })
      .default("s3.localhost,localhost"),
    idleTimeout: z.coerce.number().int().min(0).default(600),
    maxSessions: z.coerce.number().int().min(1).default(256),
    logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
    // Unwrapped DEKs kept in memory (DESIGN §3): age in seconds and count; 0 turns the cache off.
    dekCacheSeconds: z.coerce.number().int().min(0).max(86_400).default(300),
    dekCacheEntries: z.coerce.number().int().min(0).max(10_000_000).default(10_000),
    // Remote key manager (https URL) and the directory with its client certificate; unset = embedded key manager.
    // One key manager, or several nodes on one store, comma-separated (docs/kms.md, High availability).
    kms: z
      .string()
      .refine((v) => v.split(",").every((u) => z.url({ protocol: /^https$/ }).safeParse(u.trim()).success), {
        message: "must be an https:// URL of the key manager (or several, comma-separated)",
      })
      .optional(),
    kmsCert: z.string().min(1).optional(),
    // Loopback HTTP `GET /metrics` (Prometheus text) on this port; 0 = off.
    metricsPort: z.coerce
      .number()
      .int()
      .min(0)
      .max(65535, { error: "must be a port number 0-65535 (0 = off)" })
      .default(0),
    // SIEM destinations and fail-closed (config file; ATREST_AUDIT_FAIL_CLOSED=true|false sets failClosed).
    audit: auditConfigSchema.prefault({}),
    // Brute-force defender shared by every door (src/service/defender.ts); env twins in `defenderEnv` below.
    defender: defenderSchema.prefault({}),
    // SFTP pre-authentication and resource limits (src/config/limits.ts); env twins in `limitsEnv`.
    limits: limitsSchema.prefault({}),
    // OIDC login for the HTTPS door; absent = off.
    oidc: oidcSchema.optional(),
  })
  .strict()
  .refine((c) => !c.tlsCert === !c.tlsKey, {
    path: ["tlsKey"],
    message: "tlsCert and tlsKey go together",
  })
  .refine((c) => !c.s3TlsCert === !c.s3TlsKey, {
    path: ["s3TlsKey"],
    message: "s3TlsCert and s3TlsKey go together",
  })
  .refine((c) => c.s3Port === 0 || c.s3Tls === "on" || ["127.0.0.1", "::1", "localhost"].includes(c.host), {
    path: ["s3Tls"],
    message: "--s3-tls off (plain HTTP: signatures and SSE-C keys in clear) is allowed only on a loopback --host",
  })
  .refine((c) => !c.kms || c.kmsCert, {
    path: ["kmsCert"],
    message: "required with kms: the directory written by `atrest kms client issue` (client.key, client.crt, ca.crt)",
  });

export type ServerConfig = z.infer<typeof serverConfigSchema>;

const envNames: Partial<Record<keyof ServerConfig, string>> = {
  data: "ATREST_DATA",
  meta: "ATREST_META",
  nodeId: "ATREST_NODE_ID",
  blobs: "ATREST_BLOBS",
  blobsEndpoint: "ATREST_BLOBS_ENDPOINT",
  blobsRegion: "ATREST_BLOBS_REGION",
  host: "ATREST_HOST",
  sftpPort: "ATREST_SFTP_PORT",
  httpPort: "ATREST_HTTP_PORT",
  tlsCert: "ATREST_TLS_CERT",
  tlsKey: "ATREST_TLS_KEY",
  idleTimeout: "ATREST_IDLE_TIMEOUT",
  s3Port: "ATREST_S3_PORT",
  s3Tls: "ATREST_S3_TLS",
  s3MultipartExpiry: "ATREST_S3_MULTIPART_EXPIRY",
  s3Region: "ATREST_S3_REGION",
  s3Domain: "ATREST_S3_DOMAIN",
  s3PublicAccess: "ATREST_S3_PUBLIC_ACCESS",
  maxSessions: "ATREST_MAX_SESSIONS",
  logLevel: "ATREST_LOG_LEVEL",
  dekCacheSeconds: "ATREST_DEK_CACHE_SECONDS",
  dekCacheEntries: "ATREST_DEK_CACHE_ENTRIES",
  kms: "ATREST_KMS",
  kmsCert: "ATREST_KMS_CERT",
  metricsPort: "ATREST_METRICS_PORT",
};

function fromEnv(env: NodeJS.ProcessEnv): Partial<Record<keyof ServerConfig, string>> {
  const out: Partial<Record<keyof ServerConfig, string>> = {};
  for (const [key, name] of Object.entries(envNames) as [keyof ServerConfig, string][]) {
    if (env[name] !== undefined && env[name] !== "") out[key] = env[name];
  }
  return out;
}

function fromFile(path: string | undefined): Record<string, unknown> {
  if (!path) return {};
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new AtrestError("INVALID_INPUT", `cannot read config file ${path}: ${(err as Error).message}`);
  }
}

/** Merges file < env < flags and validates; a bad value names the setting and what is allowed. */
export function loadConfig(
  flags: Partial<Record<keyof ServerConfig, unknown>>,
  configFile?: string,
  env = process.env,
): ServerConfig {
  const defined = Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined));
  const merged: Record<string, unknown> = { ...fromFile(configFile ?? env.ATREST_CONFIG), ...fromEnv(env), ...defined };
  const failClosed = env.ATREST_AUDIT_FAIL_CLOSED;
  if (failClosed !== undefined && failClosed !== "") {
    if (failClosed !== "true" && failClosed !== "false") {
      throw new AtrestError("INVALID_INPUT", "config audit.failClosed: ATREST_AUDIT_FAIL_CLOSED must be true or false");
    }
    const audit = typeof merged.audit === "object" && merged.audit !== null ? merged.audit : {};
    merged.audit = { ...audit, failClosed: failClosed === "true" };
  }
  const defender: Record<string, unknown> =
    typeof merged.defender === "object" && merged.defender !== null ? { ...merged.defender } : {};
  for (const [key, name] of Object.entries(defenderEnv)) {
    if (env[name] !== undefined && env[name] !== "") defender[key] = env[name];
  }
  merged.defender = defender;
  const limits: Record<string, unknown> =
    typeof merged.limits === "object" && merged.limits !== null ? { ...merged.limits } : {};
  for (const [key, name] of Object.entries(limitsEnv)) {
    if (env[name] !== undefined && env[name] !== "") limits[key] = env[name];
  }
  merged.limits = limits;
  const oidcSecret = env.ATREST_OIDC_CLIENT_SECRET;
  if (oidcSecret && typeof merged.oidc === "object" && merged.oidc !== null) {
    merged.oidc = { ...merged.oidc, clientSecret: oidcSecret };
  }
  const parsed = serverConfigSchema.safeParse(merged);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new AtrestError("INVALID_INPUT", `config ${issue.path.join(".") || "(root)"}: ${issue.message}`);
  }
  return parsed.data;
}
