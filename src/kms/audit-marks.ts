// High-water marks of file servers' audit logs, kept by the key manager (issue 11 item 11): the newest signed
// checkpoint (sequence number, chain hash) a file server has written into its log. The file server raises its own
// mark at every checkpoint and can never lower it; `audit verify` reads it back, so a log cut back to an earlier
// checkpoint or emptied is caught even when the file server's own copy of the mark (meta.db) was rolled back with it.
// A mark is keyed by (client, log): a server client only ever reaches its own. Each value is sealed under the master
// key (label audit-mark:<client>:<log>), so editing kms.db cannot forge or lower one without the master key; it is
// re-sealed on master rotation. Resetting one (a log moved aside on purpose) is a custodian's act, audited.
// Authorization and audit: audit-mark-ops.ts.

import { AtrestError } from "../errors.ts";
import type { AuditMark } from "./api/types.ts";
import type { Keyring } from "./keyring.ts";
import { auditMarkLabel } from "./master-secrets.ts";

const LOG_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const HASH = /^[0-9a-f]{64}$/;

export { auditMarkLabel };

export function assertLogName(log: unknown): asserts log is string {
  if (typeof log !== "string" || !LOG_NAME.test(log)) {
    throw new AtrestError("INVALID_INPUT", "invalid audit log name: expected [a-z0-9][a-z0-9._-]{0,62}");
  }
}

function assertMark(seq: unknown, hash: unknown): void {
  if (!Number.isSafeInteger(seq) || (seq as number) < 1) {
    throw new AtrestError("INVALID_INPUT", "an audit mark's seq is a positive integer");
  }
  if (typeof hash !== "string" || !HASH.test(hash)) {
    throw new AtrestError("INVALID_INPUT", "an audit mark's hash is 64 lowercase hex digits");
  }
}

interface Row {
  client: string;
  log: string;
  sealed: Uint8Array;
}

export class AuditMarks {
  readonly #keyring: Keyring;

  constructor(keyring: Keyring) {
    this.#keyring = keyring;
  }

  get(client: string, log: string): AuditMark | undefined {
    assertLogName(log);
    const row = this.#keyring.db
      .prepare("SELECT client, log, sealed FROM audit_marks WHERE client = ? AND log = ?")
      .get(client, log) as Row | undefined;
    return row ? this.#open(row) : undefined;
  }

  list(): AuditMark[] {
    const rows = this.#keyring.db
      .prepare("SELECT client, log, sealed FROM audit_marks ORDER BY client, log")
      .all() as unknown as Row[];
    return rows.map((r) => this.#open(r));
  }

  /**
   * Raises the mark to (seq, hash); a lower seq leaves it as it is (`raised` false). The same seq with another hash
   * is refused (CONFLICT): two different logs claim the same checkpoint, i.e. the log was replaced.
   */
  raise(client: string, log: string, seq: number, hash: string): { mark: AuditMark; raised: boolean } {
    assertLogName(log);
    assertMark(seq, hash);
    return this.#keyring.db.transaction(() => {
      const current = this.get(client, log);
      if (current && current.seq > seq) return { mark: current, raised: false };
      if (current && current.seq === seq) {
        if (current.hash !== hash) {
          throw new AtrestError(
            "CONFLICT",
            `audit mark ${client}/${log} is at entry ${seq} with another hash: the log at that entry was replaced`,
          );
        }
        return { mark: current, raised: false };
      }
      const mark: AuditMark = { client, log, seq, hash, at: this.#keyring.now().toISOString() };
      const sealed = this.#keyring.sealSecret(
        auditMarkLabel(client, log),
        Buffer.from(JSON.stringify({ seq, hash, at: mark.at })),
      );
      this.#keyring.db
        .prepare(
          `INSERT INTO audit_marks (client, log, sealed, updated_at) VALUES (?, ?, ?, ?)
           ON CONFLICT (client, log) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at`,
        )
        .run(client, log, sealed, mark.at);
      return { mark, raised: true };
    });
  }

  /** Forgets the mark; returns what it was. */
  reset(client: string, log: string): AuditMark | undefined {
    assertLogName(log);
    return this.#keyring.db.transaction(() => {
      const was = this.get(client, log);
      this.#keyring.db.prepare("DELETE FROM audit_marks WHERE client = ? AND log = ?").run(client, log);
      return was;
    });
  }

  #open(row: Row): AuditMark {
    const plain = this.#keyring.openSecret(auditMarkLabel(row.client, row.log), row.sealed);
    try {
      const v = JSON.parse(plain.toString("utf8")) as { seq: number; hash: string; at: string };
      return { client: row.client, log: row.log, seq: v.seq, hash: v.hash, at: v.at };
    } finally {
      plain.fill(0);
    }
  }
}
