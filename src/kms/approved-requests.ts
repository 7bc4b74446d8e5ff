// Dual control, the second half: creating a request, and carrying out one whose quorum of custodians approved
// (schedule a destruction, export a key, set a client policy, rotate the master key); plus the scheduler's pass, which
// also finishes approved requests a crash left unexecuted.

import type { AuditAction } from "../audit/types.ts";
import { AtrestError } from "../errors.ts";
import type { KmsCaller } from "./api/caller.ts";
import { formatKeyRef } from "./api/key-ref.ts";
import type { Approvals, KmsRequest } from "./approvals.ts";
import { exportPublicKey, resealImportTokens, wrapRsaAes } from "./byok.ts";
import type { Keyring } from "./keyring.ts";
import { destroyKmipObject, resealKmipObjects } from "./kmip-store.ts";
import { type ClientPolicies, parseClientPolicy } from "./policy.ts";
import type { MasterKeyLike } from "./seal.ts";
import type { PendingEvent, ServiceAudit } from "./service-audit.ts";

const DAY_MS = 86_400_000;
const EXECUTION_ACTION: Readonly<Record<KmsRequest["kind"], AuditAction>> = {
  destroy: "key.destroy",
  export: "key.export",
  "client-policy": "kms.policy",
  "master-rotation": "kms.master.rotate",
};
/** Who the scheduler's own actions (auto rotation, due destruction) are attributed to in the audit. */
export const SCHEDULER_CALLER: KmsCaller = Object.freeze({ name: "kms-scheduler", role: "operator" });

export interface ScheduledRun {
  rotated: string[];
  destroyed: string[];
  executed: string[];
  /** Application secrets whose rotation reminder came in this pass (warned once per version). */
  secretsDue?: string[];
}

/** The parts of KmsService requests work on. */
export interface RequestDeps {
  keyring: Keyring;
  approvals: Approvals;
  policies: ClientPolicies;
  audit: ServiceAudit;
  persistMaster: ((newMaster: MasterKeyLike) => void) | undefined;
  newMaster: () => MasterKeyLike;
  ttlMs: number;
  quorum(): number;
}

export function createRequest(
  deps: RequestDeps,
  caller: KmsCaller,
  ev: PendingEvent,
  kind: KmsRequest["kind"],
  target: string,
  params: Record<string, unknown>,
  reason: string | undefined,
): KmsRequest {
  const r = deps.approvals.create(
    kind,
    target,
    params,
    caller,
    reason ?? "",
    deps.quorum(),
    deps.keyring.now(),
    deps.ttlMs,
  );
  ev.target = r.id;
  ev.keyRef = refOfRequest(r);
  ev.detailExtra = { kind, quorum: r.quorum, expiresAt: r.expiresAt, ...auditParams(r) };
  return r;
}

/**
 * Runs a request whose quorum was reached; a failure marks it failed (audited) rather than throwing. The effect and
 * the "executed" mark commit in one transaction that first re-checks the request is still pending, so a crash
 * leaves it either done or still to do (the scheduler finishes it), and two processes never both run it.
 */
export function executeRequest(deps: RequestDeps, by: KmsCaller, r: KmsRequest): KmsRequest {
  const now = deps.keyring.now();
  const ev: PendingEvent = { keyRef: refOfRequest(r), target: r.id, detailExtra: { kind: r.kind } };
  const action: AuditAction = EXECUTION_ACTION[r.kind];
  try {
    const ran = deps.keyring.db.transaction(() => {
      const current = deps.approvals.get(r.id, now);
      const approved = current.approvals.filter((a) => a.decision === "approve").length;
      if (current.status !== "pending" || approved < current.quorum) return false;
      effect(deps, current, now, ev);
      return true;
    });
    if (ran) deps.audit.record(by, action, r.kind, "success", ev, undefined);
  } catch (e) {
    const reason = (e as Error).message;
    deps.approvals.markFailed(r.id, reason, now);
    deps.audit.record(by, action, r.kind, "failure", ev, undefined, reason);
  }
  return deps.approvals.get(r.id, now);
}

/** The effect of an approved request, inside executeRequest's transaction; it also marks the request executed. */
function effect(deps: RequestDeps, r: KmsRequest, now: Date, ev: PendingEvent): void {
  switch (r.kind) {
    case "destroy": {
      if (r.target.startsWith("kmip:")) {
        // A KMIP object's destruction (KMIP Destroy under dual control): at once, no waiting period.
        destroyKmipObject(deps.keyring.db, r.target.slice(5), now);
        ev.detailExtra = { ...ev.detailExtra, op: "kmip-destroy" };
        deps.approvals.markExecuted(r.id, `KMIP object ${r.target.slice(5)} destroyed`, now);
        return;
      }
      const versions = (r.params.versions as number[]) ?? [];
      const at = new Date(now.getTime() + Number(r.params.waitingDays) * DAY_MS);
      deps.keyring.scheduleDestroy(r.target, versions, at, r.id);
      ev.detailExtra = { ...ev.detailExtra, op: "schedule", destroyAt: at.toISOString(), versions };
      deps.approvals.markExecuted(r.id, `destruction scheduled for ${at.toISOString()}`, now);
      return;
    }
    case "export": {
      const version = Number(r.params.version);
      const pub = exportPublicKey(String(r.params.publicKeyPem));
      const material = deps.keyring.exportMaterial(r.target, version);
      try {
        const blob = wrapRsaAes(pub, material);
        deps.approvals.markExecuted(r.id, `exported ${formatKeyRef(r.target, version)}`, now, blob);
      } finally {
        material.fill(0);
      }
      return;
    }
    case "client-policy": {
      const policy = r.params.policy === null ? null : parseClientPolicy(r.params.policy);
      deps.policies.set(r.target, policy, r.requester, now);
      deps.approvals.markExecuted(r.id, policy ? `policy of ${r.target} set` : `policy of ${r.target} removed`, now);
      return;
    }
    case "master-rotation": {
      const persist = deps.persistMaster;
      if (!persist) throw new AtrestError("UNSUPPORTED", "master key rotation needs a sealed key manager");
      let count = 0;
      // The mark goes inside the keyring's re-seal step: nothing may fail between the new master taking effect in
      // memory and the transaction committing.
      count = deps.keyring.rotateMaster(
        deps.newMaster(),
        (m) => {
          persist(m);
          deps.approvals.markExecuted(r.id, "master key rotated; key versions re-sealed", now);
        },
        (reseal) => {
          resealImportTokens(deps.keyring, reseal);
          resealKmipObjects(deps.keyring.db, reseal);
        },
      );
      ev.detailExtra = { ...ev.detailExtra, resealed: count };
      return;
    }
  }
}

/**
 * One scheduler pass at the keyring's clock: automatic rotations that are due, destructions whose waiting period
 * ended, and approved requests whose execution did not finish. Safe to run from several processes at once.
 */
export function runScheduled(deps: RequestDeps): ScheduledRun {
  const now = deps.keyring.now();
  const out: ScheduledRun = { rotated: [], destroyed: [], executed: [] };
  const me = SCHEDULER_CALLER;
  for (const name of deps.keyring.dueRotations(now)) {
    const ev: PendingEvent = { keyRef: `kek:${name}`, detailExtra: { trigger: "cryptoperiod" } };
    try {
      const v = deps.keyring.rotateIfDue(name, now);
      if (v === undefined) continue;
      ev.keyRef = formatKeyRef(name, v);
      out.rotated.push(ev.keyRef);
      deps.audit.record(me, "key.rotate", "rotate", "success", ev, undefined);
    } catch (e) {
      deps.audit.record(me, "key.rotate", "rotate", "failure", ev, undefined, (e as Error).message);
    }
  }
  const destroyed = deps.keyring.destroyDue(now);
  for (const ref of destroyed) {
    deps.audit.record(
      me,
      "key.destroy",
      "destroy",
      "success",
      { keyRef: ref, detailExtra: { trigger: "scheduled" } },
      undefined,
    );
  }
  out.destroyed = destroyed;
  for (const r of deps.approvals.approvedPending(now)) {
    const last = r.approvals.filter((a) => a.decision === "approve").at(-1);
    executeRequest(deps, { name: last?.custodian ?? me.name, role: "custodian" }, r);
    out.executed.push(r.id);
  }
  return out;
}

export function refOfRequest(r: KmsRequest): string | undefined {
  if (r.kind === "destroy" && r.target.startsWith("kmip:")) return r.target;
  if (r.kind === "destroy" || r.kind === "export") {
    const v = r.kind === "export" ? Number(r.params.version) : undefined;
    return v ? formatKeyRef(r.target, v) : `kek:${r.target}`;
  }
  return undefined;
}

/** Request parameters fit for the audit: the export public key is summarised, not copied. */
function auditParams(r: KmsRequest): Record<string, unknown> {
  if (r.kind === "export") return { version: r.params.version };
  if (r.kind === "client-policy") return { client: r.target, policy: r.params.policy };
  if (r.kind === "destroy" && r.target.startsWith("kmip:")) return { kmip: true };
  if (r.kind === "destroy") return { versions: r.params.versions, waitingDays: r.params.waitingDays };
  return {};
}
