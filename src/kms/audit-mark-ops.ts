// Audit high-water marks through KmsService (audit-marks.ts): raise (server, its own mark only), read (every role; a
// server only its own), list (not server), reset (custodian). Every call is authorized by role and audited with the
// mark as target and its sequence number as detail (a hash is not secret, but it is not needed in the record).

import { AtrestError } from "../errors.ts";
import type { KmsCaller } from "./api/caller.ts";
import type { AuditMark } from "./api/types.ts";
import { AuditMarks, assertLogName, auditMarkLabel } from "./audit-marks.ts";
import type { ServiceOps } from "./service-op.ts";

export class AuditMarkOps {
  readonly #ops: ServiceOps;
  readonly #marks: AuditMarks;

  constructor(ops: ServiceOps) {
    this.#ops = ops;
    this.#marks = new AuditMarks(ops.keyring);
  }

  raise(caller: KmsCaller, log: string, seq: number, hash: string): { mark: AuditMark; raised: boolean } {
    return this.#ops.run(caller, "raise-audit-mark", "kms.audit-mark", undefined, undefined, (ev) => {
      ev.target = auditMarkLabel(caller.name, String(log));
      ev.detailExtra = { what: "raise", seq };
      const r = this.#marks.raise(caller.name, log, seq, hash);
      ev.detailExtra = { what: "raise", seq, raised: r.raised, mark: r.mark.seq };
      return r;
    });
  }

  /** `client` defaults to the caller; a server may read only its own. */
  get(caller: KmsCaller, log: string, client = caller.name): AuditMark | undefined {
    return this.#ops.run(caller, "read-audit-mark", "kms.audit-mark", undefined, undefined, (ev) => {
      ev.target = auditMarkLabel(client, String(log));
      ev.detailExtra = { what: "read" };
      assertLogName(log);
      if (caller.role === "server" && client !== caller.name) {
        throw new AtrestError(
          "PERMISSION_DENIED",
          `permission denied: client ${caller.name} (role server) may read only its own audit marks`,
        );
      }
      const mark = this.#marks.get(client, log);
      if (mark) ev.detailExtra = { what: "read", seq: mark.seq };
      return mark;
    });
  }

  list(caller: KmsCaller): AuditMark[] {
    return this.#ops.run(caller, "read-audit-mark", "kms.audit-mark", undefined, undefined, (ev) => {
      ev.detailExtra = { what: "list" };
      const all = this.#marks.list();
      return caller.role === "server" ? all.filter((m) => m.client === caller.name) : all;
    });
  }

  reset(caller: KmsCaller, client: string, log: string, reason: string): AuditMark | undefined {
    return this.#ops.run(caller, "reset-audit-mark", "kms.audit-mark.reset", undefined, undefined, (ev) => {
      ev.target = auditMarkLabel(client, String(log));
      if (!reason.trim()) throw new AtrestError("INVALID_INPUT", "resetting an audit mark needs a reason");
      const was = this.#marks.reset(client, log);
      ev.detailExtra = { was: was?.seq ?? null, reason };
      return was;
    });
  }
}
