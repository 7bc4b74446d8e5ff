// Who may do what in the key manager: a fixed role → operations table (separation of duties) and, per client, an
// optional policy of key-name globs × operations. Checked on every call, so the hot path is two Map lookups.
//
// Separation of duties (DESIGN.md §2): no role can both read data (unwrap) and destroy or export keys.
//   server     data-key operations (generate, wrap, unwrap, rewrap), the encryption API for applications (encrypt,
//              decrypt, hmac, verify-hmac, sign, verify), KMIP objects (kmip-*: keys a KMIP client creates and gets
//              itself, never the keyring's KEKs), reading its keys' metadata and dual-control requests (a file server
//              checks what a destroy request would take before it carries a custodian's approval: destroy-guard.ts);
//              an application's client certificate has this role, narrowed by its client policy
//   operator   create, rotate, import, show/list, rotation policy and min versions, deactivate/activate/compromise,
//              ask for destruction or export (a request)
//   custodian  approve or reject requests, unseal, show/list
//   auditor    read-only: keys, requests, policies
//   admin      ask for client-policy changes and master rotation (requests); read
//   audit marks (audit-marks.ts): a server raises its own log's high-water mark (never lowers it); every role reads
//              marks (a server only its own); only a custodian resets one

import * as z from "zod";
import { AtrestError } from "../errors.ts";
import type { KmsCaller, KmsRole } from "./api/caller.ts";
import type { KmsDb } from "./db.ts";

/** Operations on one key: a client policy may narrow these to key-name globs. */
export const KEY_OPERATIONS = [
  "generate-data-key",
  "wrap",
  "unwrap",
  "rewrap",
  "encrypt",
  "decrypt",
  "hmac",
  "verify-hmac",
  "sign",
  "verify",
  "read",
  "create",
  "rotate",
  "import",
  "set-policy",
  "set-state",
  "request-destroy",
  "cancel-destroy",
  "request-export",
  "kmip-create",
  "kmip-get",
  "kmip-state",
  "kmip-destroy",
  "kmip-request-destroy",
] as const;
export type KeyOperation = (typeof KEY_OPERATIONS)[number];

/** Operations on one application secret (secret-ops.ts): a client policy narrows them to secret-name globs. */
export const SECRET_OPERATIONS = ["read-secret", "write-secret", "delete-secret", "list-secrets"] as const;
export type SecretOperation = (typeof SECRET_OPERATIONS)[number];
const SECRET_OPS: ReadonlySet<string> = new Set(SECRET_OPERATIONS);
const NAMED_OPS: ReadonlySet<string> = new Set([...KEY_OPERATIONS, ...SECRET_OPERATIONS]);

export function isSecretOperation(op: string): op is SecretOperation {
  return SECRET_OPS.has(op);
}

/** Operations not tied to one key (role-only). */
export type GlobalOperation =
  | "list-requests"
  | "decide-request"
  | "read-client-policy"
  | "request-client-policy"
  | "request-master-rotation"
  | "seal"
  | "raise-audit-mark"
  | "read-audit-mark"
  | "reset-audit-mark";

export type KmsOperation = KeyOperation | SecretOperation | GlobalOperation;

export const DATA_OPERATIONS: readonly KeyOperation[] = ["generate-data-key", "wrap", "unwrap", "rewrap"];
/** The encryption API for applications (app-ops.ts). */
export const APP_OPERATIONS: readonly KeyOperation[] = ["encrypt", "decrypt", "hmac", "verify-hmac", "sign", "verify"];
/**
 * KMIP-managed objects (kmip-objects.ts): create/register, get (the value, to the client), activate/revoke, destroy
 * at once, or ask for destruction under dual control. A KMIP client is a `server` client; its policy decides which.
 */
export const KMIP_OPERATIONS: readonly KeyOperation[] = [
  "kmip-create",
  "kmip-get",
  "kmip-state",
  "kmip-destroy",
  "kmip-request-destroy",
];

const ROLE_OPERATIONS: Readonly<Record<KmsRole, ReadonlySet<KmsOperation>>> = {
  server: new Set<KmsOperation>([
    ...DATA_OPERATIONS,
    ...APP_OPERATIONS,
    ...KMIP_OPERATIONS,
    "read",
    "list-requests",
    "read-secret",
    "list-secrets",
    "raise-audit-mark",
    "read-audit-mark",
  ]),
  operator: new Set<KmsOperation>([
    "read",
    "write-secret",
    "delete-secret",
    "list-secrets",
    "create",
    "rotate",
    "import",
    "set-policy",
    "set-state",
    "request-destroy",
    "cancel-destroy",
    "request-export",
    "list-requests",
    "read-client-policy",
    "read-audit-mark",
  ]),
  custodian: new Set<KmsOperation>([
    "read",
    "list-requests",
    "decide-request",
    "cancel-destroy",
    "seal",
    "read-audit-mark",
    "reset-audit-mark",
  ]),
  auditor: new Set<KmsOperation>(["read", "list-requests", "read-client-policy", "list-secrets", "read-audit-mark"]),
  admin: new Set<KmsOperation>([
    "read",
    "list-secrets",
    "list-requests",
    "read-client-policy",
    "request-client-policy",
    "request-master-rotation",
    "request-destroy",
    "request-export",
    "seal",
    "read-audit-mark",
  ]),
};

export function roleAllows(role: KmsRole, op: KmsOperation): boolean {
  return ROLE_OPERATIONS[role]?.has(op) ?? false;
}

const GLOB = /^[a-z0-9._*?-]{1,63}$/;

const globs = z
  .array(z.string().regex(GLOB, "a key glob uses a-z 0-9 . _ - and the wildcards * and ?"))
  .min(1)
  .max(100);

export const clientPolicySchema = z.strictObject({
  rules: z
    .array(
      z
        .strictObject({
          /** Key-name globs the rule's key operations apply to. */
          keys: globs.optional(),
          /** Secret-name globs the rule's secret operations apply to. */
          secrets: globs.optional(),
          ops: z.array(z.enum([...KEY_OPERATIONS, ...SECRET_OPERATIONS])).min(1),
        })
        .refine((r) => r.keys !== undefined || r.secrets !== undefined, {
          error: "a rule names keys, secrets or both",
        }),
    )
    .max(100),
});
export type ClientPolicy = z.infer<typeof clientPolicySchema>;

/** Parses and validates a policy (from JSON, the CLI or the HTTP API) with a one-line error. */
export function parseClientPolicy(input: unknown): ClientPolicy {
  const r = clientPolicySchema.safeParse(input);
  if (!r.success) {
    const issue = r.error.issues[0];
    const where = issue?.path.length ? ` at ${issue.path.join(".")}` : "";
    throw new AtrestError("INVALID_INPUT", `invalid client policy${where}: ${issue?.message ?? "malformed"}`);
  }
  return r.data;
}

export function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.]/g, "\\.").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp(`^${body}$`);
}

const CACHE_LIMIT = 4096;

/** A policy compiled once: regexes built up front, decisions memoised per (op, key), bounded. */
class CompiledPolicy {
  readonly #rules: { keys: RegExp[]; secrets: RegExp[]; ops: ReadonlySet<string> }[];
  readonly #cache = new Map<string, boolean>();

  constructor(policy: ClientPolicy) {
    this.#rules = policy.rules.map((r) => ({
      keys: (r.keys ?? []).map(globToRegExp),
      secrets: (r.secrets ?? []).map(globToRegExp),
      ops: new Set<string>(r.ops),
    }));
  }

  /** A key operation matches the rules' key globs, a secret operation their secret globs. */
  allows(op: KeyOperation | SecretOperation, name: string): boolean {
    const id = `${op}\0${name}`;
    let ok = this.#cache.get(id);
    if (ok === undefined) {
      const secret = isSecretOperation(op);
      ok = this.#rules.some((r) => r.ops.has(op) && (secret ? r.secrets : r.keys).some((g) => g.test(name)));
      if (this.#cache.size >= CACHE_LIMIT) this.#cache.clear(); // key names come from callers: stay bounded
      this.#cache.set(id, ok);
    }
    return ok;
  }
}

const ALLOW_ALL = { allows: () => true };

export interface StoredClientPolicy {
  client: string;
  policy: ClientPolicy;
  updatedAt: string;
  updatedBy: string;
}

/**
 * Per-client policies in kms.db. A client without one is limited by its role alone (a `server` client may then use
 * every key: restrict it with `kms policy set`). Reads are cached and dropped when the database changes.
 */
export class ClientPolicies {
  readonly #db: KmsDb;
  readonly #compiled = new Map<string, CompiledPolicy | typeof ALLOW_ALL>();
  #epoch = -1;

  constructor(db: KmsDb) {
    this.#db = db;
  }

  /** Throws PERMISSION_DENIED naming client, role, operation and key (never anything secret). */
  authorize(caller: KmsCaller, op: KmsOperation, key: string | undefined, epoch: number): void {
    if (!roleAllows(caller.role, op)) {
      throw denied(caller, op, key, "its role does not allow it");
    }
    if (key === undefined || !NAMED_OPS.has(op)) return;
    if (epoch !== this.#epoch) {
      this.#compiled.clear();
      this.#epoch = epoch;
    }
    let compiled = this.#compiled.get(caller.name);
    if (!compiled) {
      const stored = this.get(caller.name);
      compiled = stored ? new CompiledPolicy(stored.policy) : ALLOW_ALL;
      this.#compiled.set(caller.name, compiled);
    }
    if (!compiled.allows(op as KeyOperation | SecretOperation, key)) {
      throw denied(caller, op, key, "its key policy does not allow it");
    }
  }

  get(client: string): StoredClientPolicy | undefined {
    const row = this.#db
      .prepare("SELECT client, policy, updated_at, updated_by FROM client_policies WHERE client = ?")
      .get(client) as { client: string; policy: string; updated_at: string; updated_by: string } | undefined;
    if (!row) return undefined;
    return {
      client: row.client,
      policy: parseClientPolicy(JSON.parse(row.policy)),
      updatedAt: row.updated_at,
      updatedBy: row.updated_by,
    };
  }

  list(): StoredClientPolicy[] {
    const rows = this.#db.prepare("SELECT client FROM client_policies ORDER BY client").all() as { client: string }[];
    return rows.map((r) => this.get(r.client)).filter((p): p is StoredClientPolicy => p !== undefined);
  }

  /** Writes a policy (null removes it). Callers decide who may: changes go through dual control. */
  set(client: string, policy: ClientPolicy | null, by: string, at: Date): void {
    if (policy === null) {
      this.#db.prepare("DELETE FROM client_policies WHERE client = ?").run(client);
    } else {
      this.#db
        .prepare(
          `INSERT INTO client_policies (client, policy, updated_at, updated_by) VALUES (?, ?, ?, ?)
           ON CONFLICT (client) DO UPDATE SET policy = excluded.policy, updated_at = excluded.updated_at,
           updated_by = excluded.updated_by`,
        )
        .run(client, JSON.stringify(parseClientPolicy(policy)), at.toISOString(), by);
    }
    this.#compiled.delete(client);
  }
}

function denied(caller: KmsCaller, op: KmsOperation, key: string | undefined, why: string): AtrestError {
  const on = key === undefined ? "" : isSecretOperation(op) ? ` on secret ${key}` : ` on kek:${key}`;
  return new AtrestError(
    "PERMISSION_DENIED",
    `permission denied: client ${caller.name} (role ${caller.role}) may not ${op}${on}: ${why}`,
  );
}
