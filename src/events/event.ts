// A trigger event: an audit record as the trigger engine sees it. Paths are global (the server's tree): the audit
// path is in the acting user's view (their home is `/`), so the engine joins it to that user's home.
import type { AuditRecord } from "../audit/types.ts";
import type { EventKind } from "./schema.ts";

export interface TriggerEvent {
  kind: EventKind;
  /** ISO 8601 time of the audit record (or of the schedule firing). */
  time: string;
  /** Job user (the authenticated principal). */
  user: string;
  /** Effective user (the identity the action ran as); equals `user` for ordinary sessions. */
  effectiveUser: string;
  protocol?: string;
  sourceIp?: string;
  sessionId?: string;
  /** Global path of the file or directory. */
  path?: string;
  /** Global rename target. */
  targetPath?: string;
  size?: number;
  keyRef?: string;
  method?: string;
  reason?: string;
}

/** Job users of sessions opened by triggers; their events never fire rules (no loops). */
export const TRIGGER_USER_PREFIX = "trigger:";

/**
 * The event kind an audit record stands for, or undefined when no rule can react to it. (`key-rotated` comes from
 * watching the key manager, key-watch.ts: rotations are recorded in the key manager's own audit log.)
 */
export function eventKindOf(r: AuditRecord): EventKind | undefined {
  if (r.action === "login") return r.outcome === "success" ? "login" : "login-failed";
  if (r.outcome !== "success") return undefined;
  switch (r.action) {
    case "upload":
    case "download":
    case "delete":
    case "rename":
    case "mkdir":
      return r.action;
    default:
      return undefined;
  }
}

/** Fields exposed to templates, commands and webhooks (never file content, never secrets). */
export function eventFields(e: TriggerEvent): Record<string, string> {
  const out: Record<string, string> = { event: e.kind, time: e.time, user: e.user, effectiveUser: e.effectiveUser };
  for (const k of ["protocol", "sourceIp", "sessionId", "path", "targetPath", "keyRef", "method", "reason"] as const) {
    const v = e[k];
    if (v !== undefined) out[k] = v;
  }
  if (e.size !== undefined) out.size = String(e.size);
  return out;
}
