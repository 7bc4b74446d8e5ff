// Per-destination event filters (the Townsend LogAgent list): event types with a SECURITY preset, include/exclude
// path globs, include/exclude users. Privileged users (role admin or custodian, and the CLI's `admin` principal) are
// never filtered: a filter that excludes one by name is refused when the pipeline starts, and at run time an event
// whose job user or effective user is privileged always passes, whatever the filter says.
import { AtrestError } from "../errors.ts";
import { ACTIONS, type AuditAction, type AuditRecord } from "./types.ts";

export interface FilterConfig {
  /** Action names, `prefix.*` wildcards (`key.*`) and presets (`SECURITY`, `ALL`); default all. */
  events?: string[];
  excludeEvents?: string[];
  /** Globs over the event's path (and rename target): `*` within a segment, `**` across, `?` one character. */
  includePaths?: string[];
  excludePaths?: string[];
  includeUsers?: string[];
  excludeUsers?: string[];
}

/** Security-relevant actions: logins (incl. failures), deletes, IAM, folders, keys, seal/unseal, configuration. */
export const SECURITY_ACTIONS: readonly AuditAction[] = [
  "login",
  "logout",
  "defender.ban",
  "defender.unban",
  "defender.expire",
  "delete",
  "rmdir",
  "permission.change",
  "share.use",
  "user.add",
  "user.remove",
  "user.change",
  "group.change",
  "folder.change",
  "key.create",
  "key.rotate",
  "key.destroy",
  "key.approve",
  "kms.seal",
  "kms.unseal",
  "config.change",
  "audit.config.change",
];

/** The name the CLI records as job user for administrative commands. */
export const CLI_ADMIN = "admin";

const ALL_ACTIONS = Object.keys(ACTIONS) as AuditAction[];

/** Expands action names, wildcards and presets; an unknown name is an error naming it. */
export function expandEvents(names: readonly string[], where: string): Set<AuditAction> {
  const out = new Set<AuditAction>();
  for (const raw of names) {
    const name = raw.trim();
    const upper = name.toUpperCase();
    let matched: readonly AuditAction[];
    if (upper === "SECURITY") matched = SECURITY_ACTIONS;
    else if (upper === "ALL" || name === "*") matched = ALL_ACTIONS;
    else if (name.endsWith(".*")) matched = ALL_ACTIONS.filter((a) => a.startsWith(name.slice(0, -1)));
    else matched = ALL_ACTIONS.filter((a) => a === name);
    if (matched.length === 0) {
      throw new AtrestError(
        "INVALID_INPUT",
        `${where}: unknown event "${raw}" (use SECURITY, ALL, an action such as login or upload, or a prefix like key.*)`,
      );
    }
    for (const a of matched) out.add(a);
  }
  return out;
}

/** Compiles a glob to an anchored regular expression. */
export function globToRegExp(glob: string): RegExp {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i] as string;
    if (c === "*") {
      if (glob[i + 1] === "*") {
        i++;
        if (glob[i + 1] === "/") {
          i++;
          re += "(?:.*/)?"; // `**/` matches zero or more whole segments
        } else re += ".*";
      } else re += "[^/]*";
    } else if (c === "?") re += "[^/]";
    else re += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

function compileGlobs(globs: readonly string[] | undefined, where: string): RegExp[] | undefined {
  if (globs === undefined) return undefined;
  return globs.map((g) => {
    if (!g.startsWith("/")) throw new AtrestError("INVALID_INPUT", `${where}: path glob "${g}" must start with /`);
    return globToRegExp(g);
  });
}

export interface Privileged {
  /** Whether the user name belongs to a privileged user (admin/custodian role, or the CLI principal). */
  has(user: string): boolean;
  /** The role that makes the user privileged, for error messages. */
  roleOf(user: string): string | undefined;
}

export type EventFilter = (r: AuditRecord) => boolean;

/**
 * Checks a filter config and compiles it. `where` prefixes errors (e.g. `audit destination "siem" filter`).
 * Refuses a filter that excludes a privileged user by name.
 */
export function compileFilter(cfg: FilterConfig | undefined, where: string, privileged: Privileged): EventFilter {
  const c = cfg ?? {};
  for (const user of c.excludeUsers ?? []) {
    if (privileged.has(user)) {
      throw new AtrestError(
        "INVALID_INPUT",
        `${where}: excludeUsers names "${user}", a privileged user (${privileged.roleOf(user) ?? "admin"}); ` +
          "events of admins and custodians are never filtered",
      );
    }
  }
  const events = c.events ? expandEvents(c.events, where) : undefined;
  const excludeEvents = c.excludeEvents ? expandEvents(c.excludeEvents, where) : undefined;
  const includePaths = compileGlobs(c.includePaths, where);
  const excludePaths = compileGlobs(c.excludePaths, where);
  const includeUsers = c.includeUsers ? new Set(c.includeUsers) : undefined;
  const excludeUsers = c.excludeUsers ? new Set(c.excludeUsers) : undefined;
  const matches = (res: RegExp[], path: string) => res.some((re) => re.test(path));
  // included when the path or the rename target matches; excluded only when both do (a rename out of an excluded
  // folder into a visible one stays visible)
  const included = (res: RegExp[], r: AuditRecord) =>
    matches(res, r.path as string) || (r.targetPath !== undefined && matches(res, r.targetPath));
  const excluded = (res: RegExp[], r: AuditRecord) =>
    matches(res, r.path as string) && (r.targetPath === undefined || matches(res, r.targetPath));
  return (r) => {
    const effective = r.effectiveUser ?? r.user;
    if (
      r.role === "admin" ||
      r.role === "custodian" ||
      privileged.has(r.user) ||
      (effective !== r.user && privileged.has(effective))
    ) {
      return true;
    }
    if (events && !events.has(r.action)) return false;
    if (excludeEvents?.has(r.action)) return false;
    // Path rules apply to events that name a path; a login or a key event has none and is not affected.
    if (r.path !== undefined) {
      if (includePaths && !included(includePaths, r)) return false;
      if (excludePaths && excluded(excludePaths, r)) return false;
    }
    if (includeUsers && !includeUsers.has(r.user) && !includeUsers.has(effective)) return false;
    if (excludeUsers && (excludeUsers.has(r.user) || excludeUsers.has(effective))) return false;
    return true;
  };
}
