// How KmsService audits: one record per call (who, key ref, operation, encryption context, outcome) into the KMS
// audit log, written before the caller sees the result; with fail-closed on, a record that cannot be written refuses
// the operation.

import type { AuditAction, AuditEvent, AuditSink } from "../audit/types.ts";
import { KeyUnavailableError } from "../errors.ts";
import type { KmsCaller } from "./api/caller.ts";
import type { EncryptionContext } from "./api/types.ts";

/** What an operation learns while it runs (the version used, the request id), for its audit record. */
export interface PendingEvent {
  keyRef: string | undefined;
  target?: string;
  detailExtra?: Record<string, unknown>;
}

export class ServiceAudit {
  readonly #sink: AuditSink | undefined;
  readonly #failClosed: boolean;
  readonly #onAuditError: (err: unknown) => void;

  constructor(sink: AuditSink | undefined, failClosed: boolean, onAuditError: (err: unknown) => void) {
    this.#sink = sink;
    this.#failClosed = failClosed;
    this.#onAuditError = onAuditError;
  }

  record(
    caller: KmsCaller,
    action: AuditAction,
    op: string,
    outcome: "success" | "failure",
    ev: PendingEvent,
    context: EncryptionContext | undefined,
    reason?: string,
  ): void {
    if (!this.#sink) return;
    const event: AuditEvent = {
      action,
      outcome,
      user: caller.name,
      role: caller.role,
      protocol: "kms",
      detail:
        ev.detailExtra === undefined
          ? `{${context ? `"context":${contextJson(context)},` : ""}"op":${JSON.stringify(op)}}`
          : canonicalJson({ op, ...(context ? { context } : {}), ...ev.detailExtra }),
    };
    if (caller.certFingerprint) event.userId = caller.certFingerprint;
    if (caller.sourceIp) event.sourceIp = caller.sourceIp;
    if (caller.via) event.method = `signed statement relayed by ${caller.via}`;
    if (ev.keyRef) event.keyRef = ev.keyRef;
    if (ev.target) event.target = ev.target;
    if (reason !== undefined) event.reason = reason;
    try {
      this.#sink.record(event);
    } catch (err) {
      if (this.#failClosed) {
        throw new KeyUnavailableError("key manager audit log cannot be written: refusing the operation (fail closed)", {
          cause: err,
        });
      }
      this.#onAuditError(err);
    }
  }
}

/** Canonical JSON of a flat context (keys sorted), the same bytes as canonicalJson but without its generic walk. */
function contextJson(context: EncryptionContext): string {
  const keys = Object.keys(context).sort();
  let out = "{";
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i] as string;
    out += `${i ? "," : ""}${JSON.stringify(k)}:${JSON.stringify(context[k])}`;
  }
  return `${out}}`;
}

/** JSON with object keys sorted at every level: the same context always audits as the same bytes. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (v && typeof v === "object" && !Array.isArray(v) && !Buffer.isBuffer(v)) {
      const o = v as Record<string, unknown>;
      return Object.fromEntries(
        Object.keys(o)
          .sort()
          .filter((k) => o[k] !== undefined)
          .map((k) => [k, o[k]]),
      );
    }
    return v;
  });
}

/** If auditing fails after key material was produced, the caller never sees it, so zero it here. */
export function scrub(result: unknown): void {
  if (Array.isArray(result)) {
    for (const r of result) scrub(r);
    return;
  }
  if (result && typeof result === "object") {
    const r = result as { plaintext?: unknown };
    if (Buffer.isBuffer(r.plaintext)) r.plaintext.fill(0);
  }
}
