// Minimal audit event for the foundation; the audit issue extends it (hash chain, SIEM encoders).
// Both the job user (authenticated principal) and the effective user (identity the action ran as) are recorded.

export type AuditAction =
  | "login"
  | "logout"
  | "upload"
  | "download"
  | "delete"
  | "rename"
  | "mkdir"
  | "rmdir"
  | "user.add"
  | "user.remove"
  | "key.create"
  | "key.rotate";

export interface AuditEvent {
  action: AuditAction;
  outcome: "success" | "failure";
  user: string;
  effectiveUser?: string;
  protocol?: "sftp" | "cli" | "http" | "s3";
  sourceIp?: string;
  sessionId?: string;
  path?: string;
  targetPath?: string;
  size?: number;
  keyRef?: string;
  method?: string;
  reason?: string;
}

export interface AuditSink {
  record(event: AuditEvent): void;
}
