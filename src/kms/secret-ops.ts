// Application secrets through KmsService: put (operator), get by name and version (server, narrowed to secret-name
// globs by the client policy), list and versions (metadata only), remove (operator; shreds every version). Every call
// is audited with the secret's name and version as target, never its value; the scheduler pass warns once per
// version whose rotation reminder has come (secret.rotation-due).

import type { KmsCaller } from "./api/caller.ts";
import { SCHEDULER_CALLER } from "./approved-requests.ts";
import { type SecretInfo, SecretStore, type SecretValue, type SecretVersionInfo } from "./secrets.ts";
import type { ServiceAudit } from "./service-audit.ts";
import type { ServiceOps } from "./service-op.ts";

export class SecretOps {
  readonly #ops: ServiceOps;
  readonly #audit: ServiceAudit;
  readonly #store: SecretStore;

  constructor(ops: ServiceOps, audit: ServiceAudit) {
    this.#ops = ops;
    this.#audit = audit;
    this.#store = new SecretStore(ops.keyring);
  }

  /** A new version from `value` (copied and sealed; the caller zeroes its buffer). */
  put(caller: KmsCaller, name: string, value: Buffer, rotateAfterDays?: number | null): SecretInfo {
    return this.#ops.run(caller, "write-secret", "secret.write", name, undefined, (ev) => {
      const info = this.#store.put(name, value, caller.name, rotateAfterDays);
      ev.target = `secret:${name}:v${info.currentVersion}`;
      ev.detailExtra = {
        bytes: value.length,
        ...(info.rotateAfterDays ? { rotateAfterDays: info.rotateAfterDays } : {}),
      };
      return info;
    });
  }

  /** The value is a fresh buffer the caller owns and must zero. */
  get(caller: KmsCaller, name: string, version?: number): SecretValue {
    return this.#ops.run(caller, "read-secret", "secret.read", name, undefined, (ev) => {
      if (version !== undefined) ev.target = `secret:${name}:v${version}`;
      const v = this.#store.get(name, version);
      ev.target = `secret:${name}:v${v.version}`;
      if (v.rotationDue) ev.detailExtra = { rotationDue: true };
      return v;
    });
  }

  /** Secrets the caller may list (a client policy narrows to its secret globs); `dueOnly` keeps those due. */
  list(caller: KmsCaller, dueOnly = false): SecretInfo[] {
    return this.#ops.run(caller, "list-secrets", "secret.read", undefined, undefined, (ev) => {
      ev.detailExtra = { what: dueOnly ? "list-due" : "list" };
      const epoch = this.#ops.keyring.epoch();
      return this.#store.list().filter((s) => {
        if (dueOnly && !s.rotationDue) return false;
        try {
          this.#ops.policies.authorize(caller, "list-secrets", s.name, epoch);
          return true;
        } catch {
          return false;
        }
      });
    });
  }

  versions(caller: KmsCaller, name: string): { secret: SecretInfo; versions: SecretVersionInfo[] } {
    return this.#ops.run(caller, "list-secrets", "secret.read", name, undefined, (ev) => {
      ev.detailExtra = { what: "versions" };
      return { secret: this.#store.info(name), versions: this.#store.versions(name) };
    });
  }

  remove(caller: KmsCaller, name: string): { name: string; destroyedVersions: number } {
    return this.#ops.run(caller, "delete-secret", "secret.delete", name, undefined, (ev) => {
      const n = this.#store.remove(name);
      ev.detailExtra = { destroyedVersions: n };
      return { name, destroyedVersions: n };
    });
  }

  /** Scheduler: one warning audit event per secret version whose rotation reminder came; returns their names. */
  warnDue(): string[] {
    const due = this.#store.takeNewlyDue(this.#ops.keyring.now());
    for (const s of due) {
      this.#audit.record(
        SCHEDULER_CALLER,
        "secret.rotation-due",
        "rotation-due",
        "success",
        {
          keyRef: undefined,
          target: `secret:${s.name}:v${s.currentVersion}`,
          detailExtra: { updatedAt: s.updatedAt, rotateAfterDays: s.rotateAfterDays, rotateAt: s.rotateAt },
        },
        undefined,
      );
    }
    return due.map((s) => s.name);
  }
}
