// Key administration through KmsService (role operator; reads also auditor, custodian, admin, server): create,
// rotate, read and list keys, set a key's rotation policy and minimum versions, change a version's state.

import type { KmsCaller } from "./api/caller.ts";
import { formatKeyRef } from "./api/key-ref.ts";
import type { KeyStateSnapshot } from "./api/types.ts";
import type { RotationPolicy } from "./db.ts";
import { type KeyringKeyInfo, keyStateSnapshot } from "./key-info.ts";
import type { CreateKeyOptions } from "./key-lifecycle.ts";
import { type KmsOperation, roleAllows } from "./policy.ts";
import type { ServiceOps } from "./service-op.ts";

export interface KeyPolicyInput {
  rotation?: RotationPolicy;
  /** Cryptoperiod for `auto` rotation. */
  rotationDays?: number;
  minDecryptionVersion?: number;
  minEncryptionVersion?: number;
}

export type SettableState = "active" | "deactivated" | "compromised";

/** A key's state is reported to a caller that may do one of these with it. */
const WATCHED_OPS: readonly KmsOperation[] = ["read", "unwrap", "decrypt"];

/** How often a waiting key-state watch looks at the database again, ms. */
const KEY_STATE_POLL_MS = 100;

export class KeyAdmin {
  readonly #ops: ServiceOps;

  constructor(ops: ServiceOps) {
    this.#ops = ops;
  }

  createKey(caller: KmsCaller, name: string, options: Omit<CreateKeyOptions, "material"> = {}): KeyringKeyInfo {
    return this.#ops.run(caller, "create", "key.create", name, undefined, (ev) => {
      const info = this.#ops.keyring.createKey(name, { ...options, material: undefined });
      ev.keyRef = formatKeyRef(name, info.currentVersion);
      ev.detailExtra = { state: info.versions[0]?.state, rotation: info.rotation.policy };
      return info;
    });
  }

  rotateKey(caller: KmsCaller, name: string): KeyringKeyInfo {
    return this.#ops.run(caller, "rotate", "key.rotate", name, undefined, (ev) => {
      const info = this.#ops.keyring.rotateKey(name);
      ev.keyRef = formatKeyRef(name, info.currentVersion);
      return info;
    });
  }

  getKey(caller: KmsCaller, name: string): KeyringKeyInfo {
    return this.#ops.run(caller, "read", "key.read", name, undefined, () => this.#ops.keyring.getKey(name));
  }

  /** Keys the caller may read: a client policy narrows the list to its globs. */
  listKeys(caller: KmsCaller): KeyringKeyInfo[] {
    return this.#ops.run(caller, "read", "key.read", undefined, undefined, () => {
      const epoch = this.#ops.keyring.epoch();
      return this.#ops.keyring.listKeys().filter((k) => {
        try {
          this.#ops.policies.authorize(caller, "read", k.name, epoch);
          return true;
        } catch {
          return false;
        }
      });
    });
  }

  /**
   * The states of the keys the caller may read, answered when they differ from `since` (an earlier etag) or after
   * `waitMs` (a long poll: file servers learn of a compromise or a raised minimum within a poll interval). Audited
   * once per call.
   */
  async watchKeyStates(caller: KmsCaller, since: string | undefined, waitMs: number): Promise<KeyStateSnapshot> {
    let snap = this.#ops.run(caller, "read", "key.read", undefined, undefined, (ev) => {
      ev.detailExtra = { what: "key-states" };
      return this.#snapshot(caller);
    });
    const deadline = performance.now() + waitMs;
    while (since !== undefined && snap.etag === since && performance.now() < deadline && !this.#ops.closed) {
      await new Promise((r) => setTimeout(r, KEY_STATE_POLL_MS));
      if (this.#ops.closed) break;
      snap = this.#snapshot(caller);
    }
    return snap;
  }

  /** Keys the caller may read or use to decrypt (a cache of its DEKs must hear of their changes even without read). */
  #snapshot(caller: KmsCaller): KeyStateSnapshot {
    const epoch = this.#ops.keyring.epoch();
    const may = (op: KmsOperation, name: string) => {
      try {
        this.#ops.policies.authorize(caller, op, name, epoch);
        return true;
      } catch {
        return false;
      }
    };
    const keys = this.#ops.keyring
      .listKeys()
      .filter((k) => WATCHED_OPS.some((op) => roleAllows(caller.role, op) && may(op, k.name)));
    return keyStateSnapshot(keys);
  }

  setKeyPolicy(caller: KmsCaller, name: string, policy: KeyPolicyInput): KeyringKeyInfo {
    return this.#ops.run(caller, "set-policy", "key.state", name, undefined, (ev) => {
      ev.detailExtra = { policy };
      const info = this.#ops.keyring.setPolicy(name, policy);
      ev.keyRef = formatKeyRef(name, info.currentVersion);
      return info;
    });
  }

  setVersionState(caller: KmsCaller, name: string, version: number, state: SettableState): KeyringKeyInfo {
    return this.#ops.run(caller, "set-state", "key.state", name, undefined, (ev) => {
      ev.keyRef = formatKeyRef(name, version);
      ev.detailExtra = { state };
      return this.#ops.keyring.setVersionState(name, version, state);
    });
  }
}
