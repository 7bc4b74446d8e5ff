// Who is acting: every admin use-case takes one, checks its role and names it in the audit as the job user.
import { userInfo } from "node:os";
import type { AuditActor, AuditProtocol } from "../audit/types.ts";
import { AtrestError } from "../errors.ts";
import type { Role } from "../store/types.ts";

export interface Actor {
  user: string;
  role: Role;
  protocol: AuditProtocol;
  sourceIp?: string;
  sessionId?: string;
}

/** The OS account running the CLI (the default `--as`). */
export function osUser(): string {
  try {
    return userInfo().username;
  } catch {
    return "local";
  }
}

/**
 * The CLI's actor: `--as <name>` / ATREST_AS, else the OS user; role admin (whoever can run the CLI on the data dir
 * holds its files and keys anyway), protocol `cli`.
 */
export function cliActor(as?: string): Actor {
  const user = as?.trim() || osUser();
  if (user.length > 64 || !/^[\p{L}\p{N}._@:+-]+$/u.test(user))
    throw new AtrestError("INVALID_INPUT", "--as: 1-64 letters, digits and . _ @ : + -");
  return { user, role: "admin", protocol: "cli" };
}

/** Throws unless the actor holds one of `roles`. */
export function requireRole(actor: Actor, roles: readonly Role[], what: string): void {
  if (!roles.includes(actor.role)) {
    throw new AtrestError(
      "PERMISSION_DENIED",
      `${what} needs role ${roles.join(" or ")} (${actor.user} is ${actor.role})`,
    );
  }
}

/** The audit fields naming the actor as job user. */
export function actorFields(actor: Actor): AuditActor {
  return {
    user: actor.user,
    role: actor.role,
    protocol: actor.protocol,
    ...(actor.sourceIp !== undefined ? { sourceIp: actor.sourceIp } : {}),
    ...(actor.sessionId !== undefined ? { sessionId: actor.sessionId } : {}),
  };
}
