// The `limits` settings of the SFTP door (src/protocols/sftp/limits.ts) with their ATREST_* environment twins.
import { z } from "zod";
import { DEFAULT_LIMITS, parseMaxStartups } from "../protocols/sftp/limits.ts";

const count = (d: number, min = 0) => z.coerce.number().int().min(min).max(1_000_000).default(d);
const bytes = (d: number) =>
  z.coerce
    .number()
    .int()
    .min(64 * 1024)
    .max(2 ** 40)
    .default(d);

const maxStartups = z
  .union([z.string(), z.object({ start: z.number(), rate: z.number(), full: z.number() })])
  .transform((v, ctx) => {
    try {
      return parseMaxStartups(typeof v === "string" ? v : `${v.start}:${v.rate}:${v.full}`);
    } catch (err) {
      ctx.addIssue({ code: "custom", message: (err as Error).message });
      return z.NEVER;
    }
  });

const d = DEFAULT_LIMITS;
export const limitsSchema = z
  .object({
    loginGraceSeconds: z.coerce.number().int().min(0).max(86_400).default(d.loginGraceSeconds),
    maxStartups: maxStartups.default({ ...d.maxStartups }),
    maxStartupsPerSource: count(d.maxStartupsPerSource),
    maxConnectionsPerSource: count(d.maxConnectionsPerSource),
    maxConnectionsPerUser: count(d.maxConnectionsPerUser),
    maxChannelsPerConnection: count(d.maxChannelsPerConnection, 1),
    maxHandlesPerSession: count(d.maxHandlesPerSession, 1),
    maxFilesPerUser: count(d.maxFilesPerUser),
    reorderBytesPerHandle: bytes(d.reorderBytesPerHandle),
    reorderBytesPerConnection: bytes(d.reorderBytesPerConnection),
    reorderBytesTotal: bytes(d.reorderBytesTotal),
    queuedBytesPerConnection: bytes(d.queuedBytesPerConnection),
    queuedBytesTotal: bytes(d.queuedBytesTotal),
    fdReserve: count(d.fdReserve),
  })
  .strict();

/** ATREST_* twins of the `limits` settings. */
export const limitsEnv: Record<string, string> = {
  loginGraceSeconds: "ATREST_LOGIN_GRACE_SECONDS",
  maxStartups: "ATREST_MAX_STARTUPS",
  maxStartupsPerSource: "ATREST_MAX_STARTUPS_PER_SOURCE",
  maxConnectionsPerSource: "ATREST_MAX_CONNECTIONS_PER_SOURCE",
  maxConnectionsPerUser: "ATREST_MAX_CONNECTIONS_PER_USER",
  maxChannelsPerConnection: "ATREST_MAX_CHANNELS_PER_CONNECTION",
  maxHandlesPerSession: "ATREST_MAX_HANDLES_PER_SESSION",
  maxFilesPerUser: "ATREST_MAX_FILES_PER_USER",
  reorderBytesPerHandle: "ATREST_REORDER_BYTES_PER_HANDLE",
  reorderBytesPerConnection: "ATREST_REORDER_BYTES_PER_CONNECTION",
  reorderBytesTotal: "ATREST_REORDER_BYTES_TOTAL",
  queuedBytesPerConnection: "ATREST_QUEUED_BYTES_PER_CONNECTION",
  queuedBytesTotal: "ATREST_QUEUED_BYTES_TOTAL",
  fdReserve: "ATREST_FD_RESERVE",
};
