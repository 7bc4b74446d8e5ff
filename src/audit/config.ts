// The `audit` section of the JSON config file: fail-closed and the SIEM destinations (docs/audit.md, README).
import { z } from "zod";
import { FORMATS } from "./syslog/message.ts";

const names = z.array(z.string().min(1)).optional();

export const filterSchema = z
  .object({
    events: names,
    excludeEvents: names,
    includePaths: names,
    excludePaths: names,
    includeUsers: names,
    excludeUsers: names,
  })
  .strict();

export const destinationSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, {
      error: "must be 1-64 of A-Z a-z 0-9 . _ - starting with a letter or digit",
    }),
    transport: z.enum(["udp", "tcp", "tls"], { error: "must be udp, tcp or tls" }),
    host: z.string().min(1),
    port: z.number().int().min(1).max(65535, { error: "must be a port number 1-65535" }),
    format: z.enum(FORMATS as [string, ...string[]], { error: `must be one of ${FORMATS.join(", ")}` }),
    /** PEM file of the CA that must have signed the receiver's certificate (TLS; others are refused). */
    ca: z.string().min(1).optional(),
    cert: z.string().min(1).optional(),
    key: z.string().min(1).optional(),
    leefDelimiter: z
      .string()
      .refine((d) => [...d].length === 1 && d !== "=", { error: "must be one character other than =" })
      .optional(),
    facility: z.number().int().min(0).max(23).optional(),
    confirmMs: z.number().int().min(0).max(60_000).optional(),
    retryMaxMs: z.number().int().min(100).max(600_000).optional(),
    maxBacklog: z.number().int().min(0).optional(),
    startAt: z.enum(["beginning", "end"]).optional(),
    filter: filterSchema.optional(),
  })
  .strict()
  .superRefine((d, ctx) => {
    if (d.transport !== "tls" && (d.ca || d.cert || d.key)) {
      ctx.addIssue({ code: "custom", message: "ca, cert and key apply to transport tls only", path: ["transport"] });
    }
    if ((d.cert === undefined) !== (d.key === undefined)) {
      ctx.addIssue({ code: "custom", message: "cert and key go together", path: [d.cert ? "key" : "cert"] });
    }
    if (d.leefDelimiter !== undefined && d.format !== "leef") {
      ctx.addIssue({ code: "custom", message: "applies to format leef only", path: ["leefDelimiter"] });
    }
  });

export const auditConfigSchema = z
  .object({
    /** Refuse logins and file operations while the audit log cannot be written. */
    failClosed: z.boolean().default(false),
    destinations: z.array(destinationSchema).default([]),
  })
  .strict()
  .superRefine((a, ctx) => {
    const seen = new Set<string>();
    a.destinations.forEach((d, i) => {
      if (seen.has(d.name)) {
        ctx.addIssue({
          code: "custom",
          message: `duplicate destination name ${d.name}`,
          path: ["destinations", i, "name"],
        });
      }
      seen.add(d.name);
    });
  });

export type AuditConfig = z.infer<typeof auditConfigSchema>;
export type DestinationConfig = z.infer<typeof destinationSchema>;
