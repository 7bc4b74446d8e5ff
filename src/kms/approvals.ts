// Dual control: destroy, export, client-policy change and master-key rotation are requests that need approvals from
// k distinct custodians (k = the KMS's quorum, default 2) before they run. The requester can never approve their own
// request, one custodian's rejection ends it, and a request nobody completes expires (default 24 h). This module is
// the request store and its rules; KmsService executes a request the moment its quorum is reached.

import { randomBytes } from "node:crypto";
import { AtrestError } from "../errors.ts";
import type { KmsCaller } from "./api/caller.ts";
import type { KmsDb } from "./db.ts";

export const REQUEST_KINDS = ["destroy", "export", "client-policy", "master-rotation"] as const;
export type RequestKind = (typeof REQUEST_KINDS)[number];
export type RequestStatus = "pending" | "executed" | "rejected" | "failed" | "expired";

export const DEFAULT_QUORUM = 2;
export const DEFAULT_REQUEST_TTL_MS = 24 * 3_600_000;
const QUORUM_META = "approval_quorum";

export interface Decision {
  custodian: string;
  decision: "approve" | "reject";
  reason: string;
  at: string;
}

export interface KmsRequest {
  id: string;
  kind: RequestKind;
  /** What it acts on: a key name, a client name, or "master". */
  target: string;
  /** Kind-specific parameters (never secret). */
  params: Record<string, unknown>;
  requester: string;
  requesterRole: string;
  reason: string;
  quorum: number;
  createdAt: string;
  expiresAt: string;
  status: RequestStatus;
  decidedAt?: string;
  /** What execution did, or why it failed. */
  result?: string;
  approvals: Decision[];
}

interface RawRequest {
  id: string;
  kind: RequestKind;
  target: string;
  params: string;
  requester: string;
  requester_role: string;
  reason: string;
  quorum: number;
  created_at: string;
  expires_at: string;
  status: Exclude<RequestStatus, "expired">;
  decided_at: string | null;
  result: string | null;
}

/** The quorum set at `kms init` (meta row), else `fallback`. */
export function readQuorum(db: KmsDb, fallback = DEFAULT_QUORUM): number {
  const raw = db.getMeta(QUORUM_META);
  if (!raw) return fallback;
  const n = Number(Buffer.from(raw).toString("ascii"));
  return Number.isInteger(n) && n >= 1 ? n : fallback;
}

/** Sets how many distinct custodians must approve (at init; changing it later is itself a governance decision). */
export function writeQuorum(db: KmsDb, k: number): void {
  if (!Number.isInteger(k) || k < 1 || k > 16) {
    throw new AtrestError("INVALID_INPUT", "the approval quorum must be an integer from 1 to 16");
  }
  db.putMeta(QUORUM_META, Buffer.from(String(k), "ascii"));
}

export class Approvals {
  readonly #db: KmsDb;

  constructor(db: KmsDb) {
    this.#db = db;
  }

  create(
    kind: RequestKind,
    target: string,
    params: Record<string, unknown>,
    requester: KmsCaller,
    reason: string,
    quorum: number,
    now: Date,
    ttlMs: number,
  ): KmsRequest {
    const id = `req-${randomBytes(6).toString("hex")}`;
    this.#db
      .prepare(
        `INSERT INTO requests (id, kind, target, params, requester, requester_role, reason, quorum, created_at,
           expires_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')`,
      )
      .run(
        id,
        kind,
        target,
        JSON.stringify(params),
        requester.name,
        requester.role,
        reason,
        quorum,
        now.toISOString(),
        new Date(now.getTime() + ttlMs).toISOString(),
      );
    return this.get(id, now);
  }

  get(id: string, now: Date): KmsRequest {
    const row = this.#db.prepare("SELECT * FROM requests WHERE id = ?").get(id) as RawRequest | undefined;
    if (!row) throw new AtrestError("NOT_FOUND", `no such request: ${id}`);
    return this.#toRequest(row, now);
  }

  list(now: Date, status?: RequestStatus): KmsRequest[] {
    const rows = this.#db.prepare("SELECT * FROM requests ORDER BY created_at, id").all() as unknown as RawRequest[];
    return rows.map((r) => this.#toRequest(r, now)).filter((r) => status === undefined || r.status === status);
  }

  /** Requests whose quorum was reached but whose execution did not finish (e.g. a crash in between). */
  approvedPending(now: Date): KmsRequest[] {
    return this.list(now).filter(
      (r) =>
        r.status !== "executed" && r.status !== "rejected" && r.status !== "failed" && approvedCount(r) >= r.quorum,
    );
  }

  /**
   * Records one custodian's decision under the write lock. Returns the request after it; `reached` is true when this
   * approval completed the quorum (the caller then executes it).
   */
  decide(
    id: string,
    custodian: KmsCaller,
    decision: "approve" | "reject",
    reason: string,
    now: Date,
  ): { request: KmsRequest; reached: boolean } {
    return this.#db.transaction(() => {
      const r = this.get(id, now);
      if (r.status === "expired") {
        throw new AtrestError("CONFLICT", `request ${id} expired at ${r.expiresAt}; ask for a new one`);
      }
      if (r.status !== "pending" || approvedCount(r) >= r.quorum) {
        throw new AtrestError("CONFLICT", `request ${id} is already ${r.status === "pending" ? "approved" : r.status}`);
      }
      if (custodian.name === r.requester) {
        throw new AtrestError(
          "PERMISSION_DENIED",
          `permission denied: ${custodian.name} requested ${id} and cannot also ${decision} it (dual control)`,
        );
      }
      if (r.approvals.some((a) => a.custodian === custodian.name)) {
        throw new AtrestError("EXISTS", `${custodian.name} already decided on request ${id}`);
      }
      this.#db
        .prepare("INSERT INTO approvals (request_id, custodian, decision, reason, at) VALUES (?, ?, ?, ?, ?)")
        .run(id, custodian.name, decision, reason, now.toISOString());
      if (decision === "reject") {
        this.#finish(id, "rejected", `rejected by ${custodian.name}${reason ? `: ${reason}` : ""}`, now);
        return { request: this.get(id, now), reached: false };
      }
      const after = this.get(id, now);
      return { request: after, reached: approvedCount(after) >= after.quorum };
    });
  }

  markExecuted(id: string, result: string, now: Date, blob?: Buffer): void {
    this.#finish(id, "executed", result, now, blob);
  }

  markFailed(id: string, reason: string, now: Date): void {
    this.#finish(id, "failed", reason, now);
  }

  /** The execution output of an export (the key wrapped to the requester's public key). */
  resultBlob(id: string): Buffer | undefined {
    const row = this.#db.prepare("SELECT result_blob FROM requests WHERE id = ?").get(id) as
      | { result_blob: Uint8Array | null }
      | undefined;
    return row?.result_blob ? Buffer.from(row.result_blob) : undefined;
  }

  #finish(id: string, status: "executed" | "rejected" | "failed", result: string, now: Date, blob?: Buffer): void {
    this.#db
      .prepare("UPDATE requests SET status = ?, decided_at = ?, result = ?, result_blob = ? WHERE id = ?")
      .run(status, now.toISOString(), result, blob ?? null, id);
  }

  #toRequest(row: RawRequest, now: Date): KmsRequest {
    const approvals = (
      this.#db
        .prepare("SELECT custodian, decision, reason, at FROM approvals WHERE request_id = ? ORDER BY at, custodian")
        .all(row.id) as unknown as Decision[]
    ).map((d) => ({ custodian: d.custodian, decision: d.decision, reason: d.reason, at: d.at }));
    const r: KmsRequest = {
      id: row.id,
      kind: row.kind,
      target: row.target,
      params: JSON.parse(row.params) as Record<string, unknown>,
      requester: row.requester,
      requesterRole: row.requester_role,
      reason: row.reason,
      quorum: row.quorum,
      createdAt: row.created_at,
      expiresAt: row.expires_at,
      status: row.status,
      approvals,
    };
    // Expiry is computed, never stored: a request with its quorum reached before expiry still executes.
    const approved = approvals.filter((a) => a.decision === "approve").length;
    if (r.status === "pending" && approved < r.quorum && Date.parse(r.expiresAt) <= now.getTime()) r.status = "expired";
    if (row.decided_at) r.decidedAt = row.decided_at;
    if (row.result) r.result = row.result;
    return r;
  }
}

function approvedCount(r: KmsRequest): number {
  return r.approvals.filter((a) => a.decision === "approve").length;
}
