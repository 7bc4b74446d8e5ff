// The one way a KmsService call runs, shared by the facade and the modules it delegates to (key administration,
// dual-control requests, BYOK): refuse once closed, authorize the caller (role + client policy), run, and audit the
// outcome, success or failure, before the caller sees the result.

import type { AuditAction } from "../audit/types.ts";
import { KeyUnavailableError } from "../errors.ts";
import type { KmsCaller } from "./api/caller.ts";
import { isValidKeyName } from "./api/key-ref.ts";
import type { EncryptionContext } from "./api/types.ts";
import type { Keyring } from "./keyring.ts";
import { type ClientPolicies, isSecretOperation, type KmsOperation } from "./policy.ts";
import { type PendingEvent, type ServiceAudit, scrub } from "./service-audit.ts";

export class ServiceOps {
  readonly keyring: Keyring;
  readonly policies: ClientPolicies;
  readonly #audit: ServiceAudit;
  #closed = false;

  constructor(keyring: Keyring, policies: ClientPolicies, audit: ServiceAudit) {
    this.keyring = keyring;
    this.policies = policies;
    this.#audit = audit;
  }

  /** Every later call is refused with "key manager is closed". */
  close(): void {
    this.#closed = true;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Authorizes, runs and audits one operation. `ev` lets `fn` fill in what it learns (the version used); `keyRef`
   * names what is audited when it is not the KEK `key` (a KMIP object).
   */
  run<T>(
    caller: KmsCaller,
    op: KmsOperation,
    action: AuditAction,
    key: string | undefined,
    context: EncryptionContext | undefined,
    fn: (ev: PendingEvent) => T,
    keyRef?: string,
  ): T {
    const named = key !== undefined && isValidKeyName(key);
    const ev: PendingEvent = isSecretOperation(op)
      ? { keyRef: undefined, ...(named ? { target: `secret:${key}` } : {}) }
      : { keyRef: keyRef ?? (named ? `kek:${key}` : undefined) };
    let result: T;
    try {
      if (this.#closed) throw new KeyUnavailableError("key manager is closed");
      this.policies.authorize(caller, op, key, this.keyring.epoch());
      result = fn(ev);
    } catch (e) {
      this.#audit.record(caller, action, op, "failure", ev, context, (e as Error).message);
      throw e;
    }
    try {
      this.#audit.record(caller, action, op, "success", ev, context);
    } catch (e) {
      scrub(result);
      throw e;
    }
    return result;
  }
}
