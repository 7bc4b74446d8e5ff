// The rule document (`atrest trigger add --file rule.json`, and the future HTTP API): zod schemas for its shape.
// Semantic checks that need the database (owner, users, groups, PGP recipients) are in rules.ts.
import { z } from "zod";

export const EVENT_KINDS = [
  "upload",
  "download",
  "delete",
  "rename",
  "mkdir",
  "login",
  "login-failed",
  "key-rotated",
  "schedule",
] as const;
export type EventKind = (typeof EVENT_KINDS)[number];
/** Events that name a file or directory: path and size conditions and file actions apply to them. */
export const FILE_EVENTS: readonly EventKind[] = ["upload", "download", "delete", "rename", "mkdir"];

export const PROTOCOLS = ["sftp", "http", "s3", "cli", "sync", "kms", "trigger"] as const;
const DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"] as const;

const name = z.string().regex(/^[a-z_][a-z0-9._-]{0,63}$/, "use 1-64 of a-z 0-9 . _ - starting with a letter or _");
const absPath = z.string().min(1).startsWith("/", "must be an absolute path in the server's tree");
const hhmm = z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, "use HH:MM (24 h)");
const seconds = (max: number) => z.number().int().min(1).max(max);

const conditions = z
  .object({
    /** Job or effective user of the event is one of these. */
    users: z.array(z.string().min(1)).min(1).optional(),
    /** The event's (effective) user is a member of one of these groups. */
    groups: z.array(z.string().min(1)).min(1).optional(),
    /** Globs over the global path (the server's tree, not the user's view); any may match. */
    paths: z.array(z.string().min(1)).min(1).optional(),
    size: z
      .object({ min: z.number().int().min(0).optional(), max: z.number().int().min(0).optional() })
      .strict()
      .refine((s) => s.min === undefined || s.max === undefined || s.min <= s.max, "size.min is above size.max")
      .optional(),
    protocols: z.array(z.enum(PROTOCOLS)).min(1).optional(),
    /** Local time window in `timeZone` (IANA name, default UTC); `from` > `to` spans midnight. */
    time: z
      .object({
        from: hhmm,
        to: hhmm,
        days: z.array(z.enum(DAYS)).min(1).optional(),
        timeZone: z.string().optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

const schedule = z.union([z.object({ every: z.string() }).strict(), z.object({ cron: z.string() }).strict()]);

const overwrite = z.boolean().default(false);

const actions = z.discriminatedUnion("type", [
  z
    .object({
      type: z.literal("pgp-encrypt"),
      /** User names, `@group` (members' keys) or key fingerprints. */
      recipients: z.array(z.string().min(1)).min(1),
      /** Also sign with the organisation key. */
      sign: z.boolean().default(false),
      /** Delete the plaintext once `<name>.pgp` is written. */
      removePlaintext: z.boolean().default(false),
      /** Every recipient key must carry a certification by a trusted organisation key. */
      requireCertified: z.boolean().default(false),
    })
    .strict(),
  z.object({ type: z.literal("pgp-sign") }).strict(),
  z.object({ type: z.literal("move"), to: absPath, overwrite }).strict(),
  z.object({ type: z.literal("copy"), to: absPath, overwrite }).strict(),
  z
    .object({
      type: z.literal("rename"),
      /** New name in the same directory; templates: {name} {stem} {ext} {date} {time} {rule} {user}. */
      name: z.string().min(1),
      overwrite,
    })
    .strict(),
  z.object({ type: z.literal("delete") }).strict(),
  z
    .object({
      type: z.literal("webhook"),
      url: z.string(),
      /** HMAC-SHA256 key; generated (and printed once) when absent. Stored wrapped by the key manager. */
      secret: z.string().min(16, "secret must be at least 16 characters").optional(),
      /** PEM CA certificate(s) to trust instead of the system store (self-signed receivers). */
      ca: z.string().optional(),
      timeoutSeconds: seconds(300).default(10),
    })
    .strict(),
  z
    .object({
      type: z.literal("email"),
      to: z.array(z.email()).min(1),
      subject: z.string().default("atrest trigger {rule}: {event}"),
      text: z.string().optional(),
      smtp: z
        .object({
          host: z.string().min(1),
          port: z.number().int().min(1).max(65535).default(587),
          from: z.email(),
          user: z.string().optional(),
          /** Stored wrapped by the key manager, never shown. */
          password: z.string().optional(),
          /** Implicit TLS (port 465); otherwise STARTTLS is required. */
          secure: z.boolean().default(false),
          ca: z.string().optional(),
        })
        .strict(),
    })
    .strict(),
  z
    .object({
      type: z.literal("retention"),
      /** Subtree to sweep (global path). */
      path: absPath,
      olderThanDays: z.number().positive(),
      mode: z.enum(["delete", "archive"]).default("delete"),
      /** Archive destination (global path) for mode "archive"; the relative layout is kept. */
      archiveTo: absPath.optional(),
    })
    .strict()
    .refine((r) => r.mode === "delete" || r.archiveTo !== undefined, "archive mode needs archiveTo"),
  z
    .object({
      type: z.literal("command"),
      /** Program and arguments, run without a shell; templates allowed in arguments. */
      argv: z.array(z.string().min(1)).min(1),
      timeoutSeconds: seconds(3600).default(60),
      /** Extra environment; the event fields are passed as ATREST_* variables. */
      env: z.record(z.string().regex(/^[A-Z_][A-Z0-9_]*$/), z.string()).optional(),
    })
    .strict(),
]);

export const ruleSchema = z
  .object({
    name,
    description: z.string().max(500).optional(),
    enabled: z.boolean().default(true),
    /** User the actions run as (their permissions apply); must exist. */
    owner: z.string().min(1),
    event: z.union([z.enum(EVENT_KINDS), z.array(z.enum(EVENT_KINDS)).min(1)]),
    schedule: schedule.optional(),
    conditions: conditions.default({}),
    actions: z.array(actions).min(1).max(32),
    retry: z
      .object({
        /** Attempts per execution, the first included. */
        attempts: z.number().int().min(1).max(50).default(5),
        /** Wait before the 2nd attempt; doubles each time up to maxDelaySeconds. */
        delaySeconds: z.number().min(0).max(3600).default(5),
        maxDelaySeconds: z.number().min(0).max(86_400).default(900),
      })
      .strict()
      .default({ attempts: 5, delaySeconds: 5, maxDelaySeconds: 900 }),
  })
  .strict();

export type RuleInput = z.input<typeof ruleSchema>;
export type Rule = z.output<typeof ruleSchema>;
export type Action = Rule["actions"][number];
export type Conditions = Rule["conditions"];

export function eventsOf(rule: Pick<Rule, "event">): EventKind[] {
  return Array.isArray(rule.event) ? rule.event : [rule.event];
}
