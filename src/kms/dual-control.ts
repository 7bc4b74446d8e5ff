// Dual control through KmsService, the first half: asking for a destruction, an export, a client policy or a master
// rotation; reading requests; custodians' approvals and rejections. Carrying out an approved request is in
// approved-requests.ts.

import { AtrestError, KeyUnavailableError } from "../errors.ts";
import type { KmsCaller } from "./api/caller.ts";
import { formatKeyRef } from "./api/key-ref.ts";
import type { KmsRequest, RequestStatus } from "./approvals.ts";
import { createRequest, executeRequest, type RequestDeps, refOfRequest } from "./approved-requests.ts";
import { exportPublicKey, IMPORT_ALGORITHM } from "./byok.ts";
import type { KeyringKeyInfo } from "./key-info.ts";
import { MAX_DESTROY_DAYS, MIN_DESTROY_DAYS } from "./key-lifecycle.ts";
import { type ClientPolicy, parseClientPolicy, type StoredClientPolicy } from "./policy.ts";
import type { ServiceOps } from "./service-op.ts";

export const DEFAULT_DESTROY_DAYS = 30;

export interface DestroyRequestInput {
  /** One version; default every version of the key not yet destroyed. */
  version?: number;
  /** Waiting period after approval, 7–30 days (default 30). */
  waitingDays?: number;
  reason?: string;
}

export interface ExportRequestInput {
  /** Default: the current version. */
  version?: number;
  /** RSA (≥ 2048-bit) public key, PEM, the material will be wrapped to. */
  publicKeyPem: string;
  reason?: string;
}

export class DualControl {
  readonly #ops: ServiceOps;
  readonly #deps: RequestDeps;

  constructor(ops: ServiceOps, deps: RequestDeps) {
    this.#ops = ops;
    this.#deps = deps;
  }

  /** Asks for destruction of a key (every live version) or one version; runs after quorum + the waiting period. */
  requestDestroy(caller: KmsCaller, name: string, input: DestroyRequestInput = {}): KmsRequest {
    return this.#ops.run(caller, "request-destroy", "key.request", name, undefined, (ev) => {
      const days = input.waitingDays ?? DEFAULT_DESTROY_DAYS;
      if (!Number.isInteger(days) || days < MIN_DESTROY_DAYS || days > MAX_DESTROY_DAYS) {
        throw new AtrestError(
          "INVALID_INPUT",
          `the waiting period before destruction must be ${MIN_DESTROY_DAYS} to ${MAX_DESTROY_DAYS} days`,
        );
      }
      const versions = this.#ops.keyring.destroyableVersions(name, input.version);
      const key = this.#ops.keyring.getKey(name);
      const live = key.versions.filter((v) => v.state !== "destroyed").length;
      if (input.version === key.currentVersion && live > 1) {
        throw new AtrestError(
          "INVALID_INPUT",
          `kek:${name}:v${key.currentVersion} is the current version: rotate first, or destroy the whole key`,
        );
      }
      return createRequest(this.#deps, caller, ev, "destroy", name, { versions, waitingDays: days }, input.reason);
    });
  }

  /** Clears a scheduled destruction (all scheduled versions of the key, or one). One person may stop a destroy. */
  cancelDestroy(caller: KmsCaller, name: string, version?: number): KeyringKeyInfo {
    return this.#ops.run(caller, "cancel-destroy", "key.destroy", name, undefined, (ev) => {
      const key = this.#ops.keyring.getKey(name);
      const scheduled = key.versions.filter((v) => v.destroyAt && (version === undefined || v.version === version));
      if (scheduled.length === 0) {
        throw new AtrestError(
          "INVALID_INPUT",
          `no destruction is scheduled for kek:${name}${version ? `:v${version}` : ""}`,
        );
      }
      const versions = scheduled.map((v) => v.version);
      ev.detailExtra = { cancelled: versions.map((v) => formatKeyRef(name, v)) };
      this.#ops.keyring.scheduleDestroy(name, versions, null, null);
      return this.#ops.keyring.getKey(name);
    });
  }

  /** Asks for the key material wrapped to `publicKeyPem` (CKM_RSA_AES_KEY_WRAP); fetch it with fetchExport. */
  exportKey(caller: KmsCaller, name: string, input: ExportRequestInput): KmsRequest {
    return this.#ops.run(caller, "request-export", "key.request", name, undefined, (ev) => {
      exportPublicKey(input.publicKeyPem);
      const key = this.#ops.keyring.getKey(name);
      const version = input.version ?? key.currentVersion;
      const v = key.versions.find((x) => x.version === version);
      if (!v) throw new AtrestError("NOT_FOUND", `unknown key version: ${formatKeyRef(name, version)}`);
      if (v.state === "destroyed") throw new KeyUnavailableError(`${formatKeyRef(name, version)} is destroyed`);
      return createRequest(
        this.#deps,
        caller,
        ev,
        "export",
        name,
        { version, publicKeyPem: input.publicKeyPem },
        input.reason,
      );
    });
  }

  /** The exported material (wrapped to the requester's public key), for the requester of an executed export. */
  fetchExport(caller: KmsCaller, id: string): { wrapped: Buffer; keyRef: string; algorithm: string } {
    return this.#ops.run(caller, "request-export", "key.export", undefined, undefined, (ev) => {
      ev.target = id;
      const r = this.#deps.approvals.get(id, this.#ops.keyring.now());
      if (r.kind !== "export") throw new AtrestError("INVALID_INPUT", `request ${id} is not an export`);
      if (r.requester !== caller.name) {
        throw new AtrestError("PERMISSION_DENIED", `permission denied: only ${r.requester} may fetch export ${id}`);
      }
      const blob = this.#deps.approvals.resultBlob(id);
      if (r.status !== "executed" || !blob) {
        throw new AtrestError(
          "INVALID_INPUT",
          `export ${id} is ${r.status}${r.status === "pending" ? " (needs approvals)" : ""}`,
        );
      }
      ev.keyRef = formatKeyRef(r.target, Number(r.params.version));
      return { wrapped: blob, keyRef: ev.keyRef, algorithm: IMPORT_ALGORITHM };
    });
  }

  /** Asks to set (or with null remove) a client's key policy. */
  setClientPolicy(caller: KmsCaller, client: string, policy: ClientPolicy | null, reason?: string): KmsRequest {
    return this.#ops.run(caller, "request-client-policy", "key.request", undefined, undefined, (ev) => {
      if (!/^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/.test(client)) {
        throw new AtrestError("INVALID_INPUT", `invalid client name ${JSON.stringify(client.slice(0, 80))}`);
      }
      const checked = policy === null ? null : parseClientPolicy(policy);
      return createRequest(this.#deps, caller, ev, "client-policy", client, { policy: checked }, reason);
    });
  }

  getClientPolicy(caller: KmsCaller, client: string): StoredClientPolicy | undefined {
    return this.#ops.run(caller, "read-client-policy", "key.read", undefined, undefined, (ev) => {
      ev.target = client;
      return this.#ops.policies.get(client);
    });
  }

  listClientPolicies(caller: KmsCaller): StoredClientPolicy[] {
    return this.#ops.run(caller, "read-client-policy", "key.read", undefined, undefined, () =>
      this.#ops.policies.list(),
    );
  }

  /** Asks for a new master key; on approval every KEK version is re-sealed under it in one transaction. */
  requestMasterRotation(caller: KmsCaller, reason?: string): KmsRequest {
    return this.#ops.run(caller, "request-master-rotation", "key.request", undefined, undefined, (ev) => {
      if (!this.#deps.persistMaster) {
        throw new AtrestError(
          "UNSUPPORTED",
          "master key rotation needs a sealed key manager (kms init --shares): a dev-mode key file cannot be rotated",
        );
      }
      return createRequest(this.#deps, caller, ev, "master-rotation", "master", {}, reason);
    });
  }

  listRequests(caller: KmsCaller, status?: RequestStatus): KmsRequest[] {
    return this.#ops.run(caller, "list-requests", "key.read", undefined, undefined, () =>
      this.#deps.approvals.list(this.#ops.keyring.now(), status),
    );
  }

  getRequest(caller: KmsCaller, id: string): KmsRequest {
    return this.#ops.run(caller, "list-requests", "key.read", undefined, undefined, (ev) => {
      ev.target = id;
      return this.#deps.approvals.get(id, this.#ops.keyring.now());
    });
  }

  /** A custodian's approval; the request runs as soon as the quorum is reached (a destroy is then scheduled). */
  approve(caller: KmsCaller, id: string, reason = ""): KmsRequest {
    const decided = this.#ops.run(caller, "decide-request", "key.approve", undefined, undefined, (ev) => {
      ev.target = id;
      const { request, reached } = this.#deps.approvals.decide(id, caller, "approve", reason, this.#ops.keyring.now());
      ev.keyRef = refOfRequest(request);
      ev.detailExtra = { kind: request.kind, approvals: approvedBy(request), quorum: request.quorum };
      return { request, reached };
    });
    return decided.reached ? executeRequest(this.#deps, caller, decided.request) : decided.request;
  }

  /** One custodian's rejection ends a request. */
  reject(caller: KmsCaller, id: string, reason = ""): KmsRequest {
    return this.#ops.run(caller, "decide-request", "key.reject", undefined, undefined, (ev) => {
      ev.target = id;
      const { request } = this.#deps.approvals.decide(id, caller, "reject", reason, this.#ops.keyring.now());
      ev.keyRef = refOfRequest(request);
      ev.detailExtra = { kind: request.kind };
      return request;
    });
  }
}

function approvedBy(r: KmsRequest): string[] {
  return r.approvals.filter((a) => a.decision === "approve").map((a) => a.custodian);
}
