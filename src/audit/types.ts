// The audit event model (issue 5): one typed event for every security-relevant action across all protocols and the
// key manager. Both the job user (`user`: the authenticated principal) and the effective user (`effectiveUser`: the
// identity the action ran as, e.g. an admin acting for a user, a trigger acting for its rule owner) are recorded.
// Never a secret or file content: names, paths, sizes, key refs and reasons only.

/** Every action an audit event can name. Existing names are stable (records on disk and SIEM rules use them). */
export type AuditAction =
  // authentication
  | "login" // success or failure; `method` (password, publickey, token, oidc) and, on failure, `reason`
  | "logout"
  // brute-force defender (src/service/defender.ts): `target` = the banned IP or user name, `detail` = kind, until, count
  | "defender.ban"
  | "defender.unban" // lifted by an operator (the job user)
  | "defender.expire"
  // file access
  | "upload"
  | "download"
  | "delete"
  | "rename" // `path` → `targetPath`
  | "mkdir"
  | "rmdir"
  | "permission.change" // `path` (or `target`), `detail` says what changed
  | "attrs.change" // a file's or directory's mtime or mode set by a client (SFTP SETSTAT); `detail` says which
  | "symlink" // SFTP SYMLINK: always refused (links are not supported), recorded as a failure
  | "share.use" // a share link was used; `target` is the share id, never the link secret
  | "share.create" // a share link made (`target` = share id, `path`, `detail` = its limits; never the secret)
  | "share.revoke"
  // identity and access management
  | "user.add"
  | "user.remove"
  | "user.change"
  | "group.change"
  | "token.create" // an API token issued (`target` = token id, `detail` = scopes, paths, expiry; never the secret)
  | "token.revoke"
  | "folder.change"
  // key manager
  | "key.create"
  | "key.rotate"
  | "key.wrap"
  | "key.unwrap"
  | "key.encrypt" // encryption API: encrypt, or re-encrypt (rewrap) a ciphertext under the current version
  | "key.decrypt"
  | "key.hmac"
  | "key.sign"
  | "key.verify" // an HMAC or signature checked; `detail` has valid true/false
  | "secret.write" // an application secret's new version (`target` secret:<name>:v<N>; never the value)
  | "secret.read" // a secret's value read (`target` names the version), or secrets/versions listed
  | "secret.delete" // a secret removed: every version's value shredded
  | "secret.rotation-due" // warning: a secret's rotation reminder came (`detail` rotateAt)
  | "key.destroy"
  | "key.approve"
  | "kms.seal"
  | "kms.unseal"
  | "key.read" // key metadata shown or listed
  | "key.state" // version state or key policy (rotation, min versions) changed; `detail` says what
  | "key.import" // BYOK material imported (new key or new version)
  | "key.export" // key material exported (wrapped to a requester's public key) after dual-control approval
  | "key.request" // a dual-control request created (`target` = request id, `detail` = kind and parameters)
  | "key.reject" // a custodian rejected a request
  | "kms.policy" // a KMS client policy changed (after approval)
  | "kms.master.rotate" // the KMS master key was rotated (after approval)
  | "kms.audit-mark" // a file server's audit high-water mark raised or read (`target` audit-mark:<client>:<log>, `detail` seq)
  | "kms.audit-mark.reset" // a custodian reset an audit high-water mark (`detail` the mark it was, and the reason)
  // OpenPGP (src/pgp): key store changes, on-demand keys, inbound signature checks
  | "pgp.key.import" // `target` = fingerprint, `detail` = owner
  | "pgp.key.remove"
  | "pgp.key.generate" // on-demand key pair: the private half was handed out once, only the public key is kept
  | "pgp.key.certify" // the organisation key certified `target`
  | "pgp.orgkey.create"
  | "pgp.trust.change" // trusted organisation keys added or removed
  | "pgp.verify" // inbound OpenPGP check of an upload: `path`, `target` = signer fingerprint, `reason` on failure
  // E2EE sync (src/sync/server): `target` = region or device id, `detail` = what (versions, counts, device ids);
  // never a name (the server has none: names are encrypted on the devices)
  | "sync.device" // a device registered (pending approval)
  | "sync.chain" // a device chain link appended: a device approved (add) or revoked
  | "sync.region" // a region created, or its retention changed
  | "sync.manifest" // a signed manifest accepted (or refused), or read
  | "sync.envelope" // region key envelopes stored
  | "sync.blob" // an encrypted blob uploaded or read
  | "sync.link" // a share link created or revoked (`target` = link id; its key never reaches the server)
  // configuration
  | "config.change"
  | "audit.config.change";

export type AuditOutcome = "success" | "failure";
/** `trigger`: an action of the trigger engine (src/events), job user `trigger:<rule>`, effective user the owner. */
export type AuditProtocol = "sftp" | "cli" | "http" | "s3" | "sync" | "kms" | "trigger";
/** ECS `event.category` values used by atrest. */
export type AuditCategory = "authentication" | "file" | "iam" | "configuration";

/** Who made an admin change, as the audit names them: the service's Actor (job user, role, protocol, source). */
export type AuditActor = Pick<AuditEvent, "user" | "role" | "protocol" | "sourceIp" | "sessionId">;

export interface AuditEvent {
  action: AuditAction;
  outcome: AuditOutcome;
  /** Job user: the authenticated principal (ECS user.name). */
  user: string;
  /** Stable id of the job user, when the caller knows one (ECS user.id, CEF suid). */
  userId?: string;
  /** Effective user: the identity the action ran as (ECS user.effective.name); absent means the same as `user`. */
  effectiveUser?: string;
  /** Role of the job user when it matters (admin, custodian, auditor, user). */
  role?: string;
  protocol?: AuditProtocol;
  sourceIp?: string;
  sourcePort?: number;
  sessionId?: string;
  /** Object path (file, folder) the action touched. */
  path?: string;
  /** Second path of a rename/copy. */
  targetPath?: string;
  size?: number;
  /** Key id/version (`kek:<name>:v<N>`) involved, where relevant. */
  keyRef?: string;
  /** Authentication method (password, publickey, token, oidc, totp). */
  method?: string;
  /** Why it failed (or why it was done: an approval's justification). Never a secret. */
  reason?: string;
  /** Non-path object of a user/group/folder/share/config/approval event: a name or id. */
  target?: string;
  /** Short non-secret description of a change (e.g. "permissions rw- → r--", "setting sftp.port"). */
  detail?: string;
  /** The server node that wrote the record, when several share one store (`--node-id`; ECS observer.name). */
  node?: string;
}

/** A stored event: the event plus the time it was recorded (ISO 8601, UTC, ms). */
export type AuditRecord = AuditEvent & { time: string };

export interface AuditSink {
  record(event: AuditEvent): void;
  /**
   * Called before an operation runs (and before a login is accepted). Throws when the audit log cannot be written and
   * fail-closed is on; returns a promise when producers must slow down (a SIEM spool over its bound).
   */
  admit?(): Promise<void> | undefined;
  /**
   * Records `event`; with fail-closed on, returns a promise that resolves once the record is durable (written and
   * fdatasynced, with whatever else was queued meanwhile: group commit) and rejects with AUDIT_UNAVAILABLE when it
   * cannot be, so the caller refuses the operation. `retract`: a record that failed is dropped instead of retried
   * (for an event that does not happen without its record, e.g. a login). Without fail-closed it is `record`.
   */
  commit?(event: AuditEvent, options?: { retract?: boolean }): Promise<void> | undefined;
  /** Fail-closed mode is on: operations wait for durable records (see commit). */
  readonly failClosed?: boolean;
}

/** `sink.commit(event)` where the sink has it, else `sink.record(event)`. */
export function commitEvent(
  sink: AuditSink | undefined,
  event: AuditEvent,
  options?: { retract?: boolean },
): Promise<void> | undefined {
  if (!sink) return undefined;
  if (sink.commit) return sink.commit(event, options);
  sink.record(event);
  return undefined;
}

export interface ActionInfo {
  category: AuditCategory;
  /** ECS event.type values. */
  type: readonly string[];
  /** Human-readable name (CEF Name, LEEF/5424 message). */
  name: string;
  /** Base severity 0–10 (CEF scale); failures are raised, see `severityOf`. */
  severity: number;
}

/** Per-action metadata; `Record<AuditAction, …>` makes the compiler insist every action has an entry. */
export const ACTIONS: Readonly<Record<AuditAction, ActionInfo>> = {
  login: { category: "authentication", type: ["start"], name: "Login", severity: 3 },
  logout: { category: "authentication", type: ["end"], name: "Logout", severity: 1 },
  "defender.ban": { category: "authentication", type: ["denied"], name: "Login ban", severity: 7 },
  "defender.unban": { category: "authentication", type: ["allowed"], name: "Login ban lifted", severity: 6 },
  "defender.expire": { category: "authentication", type: ["end"], name: "Login ban expired", severity: 3 },
  upload: { category: "file", type: ["creation"], name: "File upload", severity: 3 },
  download: { category: "file", type: ["access"], name: "File download", severity: 3 },
  delete: { category: "file", type: ["deletion"], name: "File delete", severity: 5 },
  rename: { category: "file", type: ["change"], name: "File rename", severity: 3 },
  mkdir: { category: "file", type: ["creation"], name: "Directory create", severity: 2 },
  rmdir: { category: "file", type: ["deletion"], name: "Directory delete", severity: 4 },
  "permission.change": { category: "iam", type: ["change"], name: "Permission change", severity: 6 },
  "attrs.change": { category: "file", type: ["change"], name: "File attributes change", severity: 3 },
  symlink: { category: "file", type: ["creation"], name: "Symbolic link create", severity: 3 },
  "share.use": { category: "file", type: ["access"], name: "Share link use", severity: 4 },
  "share.create": { category: "iam", type: ["creation"], name: "Share link create", severity: 5 },
  "share.revoke": { category: "iam", type: ["deletion"], name: "Share link revoke", severity: 5 },
  "user.add": { category: "iam", type: ["user", "creation"], name: "User add", severity: 6 },
  "user.remove": { category: "iam", type: ["user", "deletion"], name: "User remove", severity: 6 },
  "user.change": { category: "iam", type: ["user", "change"], name: "User change", severity: 6 },
  "group.change": { category: "iam", type: ["group", "change"], name: "Group change", severity: 6 },
  "token.create": { category: "iam", type: ["creation"], name: "API token create", severity: 5 },
  "token.revoke": { category: "iam", type: ["deletion"], name: "API token revoke", severity: 5 },
  "folder.change": { category: "configuration", type: ["change"], name: "Folder change", severity: 5 },
  "key.create": { category: "configuration", type: ["creation"], name: "Key create", severity: 6 },
  "key.rotate": { category: "configuration", type: ["change"], name: "Key rotate", severity: 6 },
  "key.wrap": { category: "configuration", type: ["access"], name: "Key wrap", severity: 2 },
  "key.unwrap": { category: "configuration", type: ["access"], name: "Key unwrap", severity: 3 },
  "key.encrypt": { category: "configuration", type: ["access"], name: "Encrypt", severity: 2 },
  "key.decrypt": { category: "configuration", type: ["access"], name: "Decrypt", severity: 3 },
  "key.hmac": { category: "configuration", type: ["access"], name: "HMAC", severity: 2 },
  "key.sign": { category: "configuration", type: ["access"], name: "Sign", severity: 3 },
  "key.verify": { category: "configuration", type: ["access"], name: "Verify", severity: 1 },
  "secret.write": { category: "configuration", type: ["change"], name: "Secret write", severity: 5 },
  "secret.read": { category: "configuration", type: ["access"], name: "Secret read", severity: 4 },
  "secret.delete": { category: "configuration", type: ["deletion"], name: "Secret delete", severity: 6 },
  "secret.rotation-due": { category: "configuration", type: ["info"], name: "Secret rotation due", severity: 6 },
  "key.destroy": { category: "configuration", type: ["deletion"], name: "Key destroy", severity: 9 },
  "key.approve": { category: "configuration", type: ["allowed"], name: "Key operation approve", severity: 7 },
  "kms.seal": { category: "configuration", type: ["change"], name: "Key manager seal", severity: 8 },
  "kms.unseal": { category: "configuration", type: ["change"], name: "Key manager unseal", severity: 8 },
  "key.read": { category: "configuration", type: ["access"], name: "Key metadata read", severity: 1 },
  "key.state": { category: "configuration", type: ["change"], name: "Key state change", severity: 6 },
  "key.import": { category: "configuration", type: ["creation"], name: "Key import", severity: 7 },
  "key.export": { category: "configuration", type: ["access"], name: "Key export", severity: 9 },
  "key.request": { category: "configuration", type: ["creation"], name: "Key operation request", severity: 6 },
  "key.reject": { category: "configuration", type: ["denied"], name: "Key operation reject", severity: 6 },
  "kms.policy": { category: "iam", type: ["change"], name: "Key manager client policy change", severity: 8 },
  "kms.master.rotate": { category: "configuration", type: ["change"], name: "Master key rotate", severity: 9 },
  "kms.audit-mark": { category: "configuration", type: ["access"], name: "Audit high-water mark", severity: 3 },
  "kms.audit-mark.reset": {
    category: "configuration",
    type: ["change"],
    name: "Audit high-water mark reset",
    severity: 8,
  },
  "pgp.key.import": { category: "configuration", type: ["creation"], name: "OpenPGP key import", severity: 5 },
  "pgp.key.remove": { category: "configuration", type: ["deletion"], name: "OpenPGP key remove", severity: 5 },
  "pgp.key.generate": { category: "configuration", type: ["creation"], name: "OpenPGP key generate", severity: 5 },
  "pgp.key.certify": { category: "configuration", type: ["change"], name: "OpenPGP key certify", severity: 6 },
  "pgp.orgkey.create": {
    category: "configuration",
    type: ["creation"],
    name: "OpenPGP organisation key create",
    severity: 7,
  },
  "pgp.trust.change": { category: "configuration", type: ["change"], name: "OpenPGP trust change", severity: 7 },
  "pgp.verify": { category: "file", type: ["info"], name: "OpenPGP upload check", severity: 3 },
  "sync.device": { category: "iam", type: ["creation"], name: "Sync device register", severity: 4 },
  "sync.chain": { category: "iam", type: ["change"], name: "Sync device chain change", severity: 6 },
  "sync.region": { category: "configuration", type: ["change"], name: "Sync region change", severity: 4 },
  "sync.manifest": { category: "file", type: ["change"], name: "Sync manifest", severity: 3 },
  "sync.envelope": { category: "iam", type: ["change"], name: "Sync key envelopes", severity: 4 },
  "sync.blob": { category: "file", type: ["access"], name: "Sync blob", severity: 2 },
  "sync.link": { category: "file", type: ["change"], name: "Sync share link", severity: 4 },
  "config.change": { category: "configuration", type: ["change"], name: "Configuration change", severity: 6 },
  "audit.config.change": {
    category: "configuration",
    type: ["change"],
    name: "Audit configuration change",
    severity: 8,
  },
};

/** CEF-scale severity (0–10): the action's base, raised by 2 on failure (a failed login is a 5, a failed destroy 10). */
export function severityOf(e: Pick<AuditEvent, "action" | "outcome">): number {
  const base = ACTIONS[e.action]?.severity ?? 5;
  return Math.min(10, e.outcome === "failure" ? base + 2 : base);
}

/** The effective user, defaulting to the job user. */
export function effectiveUserOf(e: AuditEvent): string {
  return e.effectiveUser ?? e.user;
}

/** ECS document (Elastic Common Schema 8.x field names) for one record. */
export interface EcsDocument {
  "@timestamp": string;
  ecs: { version: string };
  event: {
    kind: "event";
    action: AuditAction;
    outcome: AuditOutcome;
    category: AuditCategory[];
    type: string[];
    severity: number;
    reason?: string;
    /** Position in the hash-chained local log (ECS event.sequence). */
    sequence?: number;
  };
  user: { name: string; id?: string; roles?: string[]; effective: { name: string }; target?: { name: string } };
  source?: { ip?: string; port?: number };
  network?: { protocol: string };
  file?: { path?: string; size?: number; target_path?: string };
  authentication?: { method: string };
  observer?: { name: string };
  atrest?: { session_id?: string; key_ref?: string; target?: string; detail?: string };
  message: string;
}

export const ECS_VERSION = "8.11.0";

/**
 * Maps a record to ECS fields: user.name (job user), user.effective.name, source.ip/port, event.action/outcome/
 * category/type, file.path/size, network.protocol. Fields without an ECS home go under `atrest.*` (custom fields
 * belong in a namespace of their own, ECS "Custom fields"). `file.target_path` is likewise not ECS; it is the
 * rename target. Absent values are omitted, never null.
 */
export function ecs(event: AuditRecord): EcsDocument {
  const info = ACTIONS[event.action];
  const doc: EcsDocument = {
    "@timestamp": event.time,
    ecs: { version: ECS_VERSION },
    event: {
      kind: "event",
      action: event.action,
      outcome: event.outcome,
      category: [info.category],
      type: [...info.type],
      severity: severityOf(event),
    },
    user: { name: event.user, effective: { name: effectiveUserOf(event) } },
    message: messageOf(event),
  };
  if (event.reason !== undefined) doc.event.reason = event.reason;
  if (event.userId !== undefined) doc.user.id = event.userId;
  if (event.role !== undefined) doc.user.roles = [event.role];
  if (info.category === "iam" && event.target !== undefined) doc.user.target = { name: event.target };
  if (event.sourceIp !== undefined || event.sourcePort !== undefined) {
    doc.source = {};
    if (event.sourceIp !== undefined) doc.source.ip = event.sourceIp;
    if (event.sourcePort !== undefined) doc.source.port = event.sourcePort;
  }
  if (event.protocol !== undefined) doc.network = { protocol: event.protocol };
  if (event.path !== undefined || event.size !== undefined || event.targetPath !== undefined) {
    doc.file = {};
    if (event.path !== undefined) doc.file.path = event.path;
    if (event.size !== undefined) doc.file.size = event.size;
    if (event.targetPath !== undefined) doc.file.target_path = event.targetPath;
  }
  if (event.method !== undefined) doc.authentication = { method: event.method };
  if (event.node !== undefined) doc.observer = { name: event.node };
  const extra: NonNullable<EcsDocument["atrest"]> = {};
  if (event.sessionId !== undefined) extra.session_id = event.sessionId;
  if (event.keyRef !== undefined) extra.key_ref = event.keyRef;
  if (event.target !== undefined) extra.target = event.target;
  if (event.detail !== undefined) extra.detail = event.detail;
  if (Object.keys(extra).length > 0) doc.atrest = extra;
  return doc;
}

/** One-line human message: "<Name> <outcome>: <user>[ as <effective>] <path>[ -> target]". */
export function messageOf(e: AuditEvent): string {
  const who = e.effectiveUser && e.effectiveUser !== e.user ? `${e.user} as ${e.effectiveUser}` : e.user;
  const what = e.path ?? e.target ?? e.keyRef;
  let msg = `${ACTIONS[e.action].name} ${e.outcome}: ${who}`;
  if (what !== undefined) msg += ` ${what}`;
  if (e.targetPath !== undefined) msg += ` -> ${e.targetPath}`;
  if (e.outcome === "failure" && e.reason) msg += ` (${e.reason})`;
  return msg;
}
