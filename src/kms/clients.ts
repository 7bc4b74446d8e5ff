// Clients of the KMS: one row per certificate the KMS CA issued (kms.db table `clients`). The HTTPS server maps the
// presented certificate's SHA-256 fingerprint to a row, and the row (name, role) is the caller's identity; a revoked
// row is refused even though its certificate still chains to the CA.

import { AtrestError } from "../errors.ts";
import type { KmsCaller, KmsRole } from "./api/caller.ts";
import type { KmsDb } from "./db.ts";

export interface ClientRow {
  fingerprint: string;
  name: string;
  role: KmsRole;
  serial: string;
  issuedAt: string;
  notAfter: string;
  revokedAt: string | null;
}

interface RawClient {
  fingerprint: string;
  name: string;
  role: KmsRole;
  serial: string;
  issued_at: string;
  not_after: string;
  revoked_at: string | null;
}

const toRow = (r: RawClient): ClientRow => ({
  fingerprint: r.fingerprint,
  name: r.name,
  role: r.role,
  serial: r.serial,
  issuedAt: r.issued_at,
  notAfter: r.not_after,
  revokedAt: r.revoked_at,
});

const CLIENT_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export function assertClientName(name: string): void {
  if (!CLIENT_NAME.test(name)) {
    throw new AtrestError(
      "INVALID_INPUT",
      `invalid client name ${JSON.stringify(name.slice(0, 80))}: expected [a-z0-9][a-z0-9._-]{0,62}`,
    );
  }
}

export function listClients(db: KmsDb): ClientRow[] {
  return (db.prepare("SELECT * FROM clients ORDER BY name, issued_at").all() as unknown as RawClient[]).map(toRow);
}

/**
 * Records a newly issued certificate. A name keeps one role for life (client policies are per name): issuing again
 * under the same name with another role is refused while an unrevoked certificate of that name exists.
 */
export function recordClient(db: KmsDb, row: Omit<ClientRow, "revokedAt">): void {
  assertClientName(row.name);
  db.transaction(() => {
    const other = db
      .prepare("SELECT role FROM clients WHERE name = ? AND revoked_at IS NULL AND role <> ? LIMIT 1")
      .get(row.name, row.role) as { role: string } | undefined;
    if (other) {
      throw new AtrestError(
        "EXISTS",
        `client ${row.name} already has a valid certificate with role ${other.role}; revoke it first`,
      );
    }
    db.prepare(
      "INSERT INTO clients (fingerprint, name, role, serial, issued_at, not_after) VALUES (?, ?, ?, ?, ?, ?)",
    ).run(row.fingerprint, row.name, row.role, row.serial, row.issuedAt, row.notAfter);
  });
}

/** Revokes every certificate of `name` (or the one with that fingerprint). Returns how many were revoked. */
export function revokeClient(db: KmsDb, nameOrFingerprint: string, at: string): number {
  const fp = nameOrFingerprint.toLowerCase().replace(/:/g, "");
  const r = db
    .prepare("UPDATE clients SET revoked_at = ? WHERE (name = ? OR fingerprint = ?) AND revoked_at IS NULL")
    .run(at, nameOrFingerprint, fp);
  const n = Number(r.changes);
  if (n === 0) {
    const known = db.prepare("SELECT 1 FROM clients WHERE name = ? OR fingerprint = ?").get(nameOrFingerprint, fp);
    if (!known) throw new AtrestError("NOT_FOUND", `no such client: ${nameOrFingerprint}`);
  }
  return n;
}

export type Identity = { caller: KmsCaller } | { refused: string };

/**
 * Fingerprint → caller, for the server's per-request check. Reloads when another process (the CLI issuing or
 * revoking) committed, checked at most every `refreshMs` so a revocation applies within that time.
 */
export class ClientDirectory {
  readonly #db: KmsDb;
  readonly #refreshMs: number;
  #byFingerprint = new Map<string, ClientRow>();
  #dataVersion = -1;
  #checkedAt = Number.NEGATIVE_INFINITY;

  constructor(db: KmsDb, refreshMs = 250) {
    this.#db = db;
    this.#refreshMs = refreshMs;
  }

  /** Forces a reload at the next lookup (after this process changed the table). */
  invalidate(): void {
    this.#checkedAt = Number.NEGATIVE_INFINITY;
    this.#dataVersion = -1;
  }

  identify(fingerprint: string, sourceIp: string | undefined, now = Date.now()): Identity {
    this.#refresh();
    const row = this.#byFingerprint.get(fingerprint);
    if (!row) return { refused: `client certificate ${fingerprint.slice(0, 16)}… is not registered with this KMS` };
    if (row.revokedAt !== null) return { refused: `client certificate of ${row.name} was revoked at ${row.revokedAt}` };
    // TLS already refuses expired certificates; this covers a clock that moved since the handshake.
    if (Date.parse(row.notAfter) <= now) return { refused: `client certificate of ${row.name} has expired` };
    const caller: KmsCaller = { name: row.name, role: row.role, certFingerprint: fingerprint };
    if (sourceIp !== undefined) caller.sourceIp = sourceIp;
    return { caller };
  }

  #refresh(): void {
    const t = performance.now();
    if (t - this.#checkedAt < this.#refreshMs) return;
    this.#checkedAt = t;
    const dv = this.#db.dataVersion();
    if (dv === this.#dataVersion && this.#byFingerprint.size > 0) return;
    this.#dataVersion = dv;
    this.#byFingerprint = new Map(listClients(this.#db).map((r) => [r.fingerprint, r]));
  }
}
