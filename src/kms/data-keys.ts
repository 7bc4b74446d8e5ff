// Data-key operations through KmsService (role server): generate, wrap, unwrap and rewrap data keys, one or a batch.
// The hot path of the file server; a batch gives one result or error per item, and never a raw unexpected error text.

import type { KmsCaller } from "./api/caller.ts";
import { INTERNAL_ERROR_MESSAGE, type KmsItemError, kmsErrorCode } from "./api/errors.ts";
import { formatKeyRef } from "./api/key-ref.ts";
import type { DataKey, EncryptionContext } from "./api/types.ts";
import { parseWrapped } from "./api/wrapped.ts";
import type { KmsOperation } from "./policy.ts";
import type { PendingEvent } from "./service-audit.ts";
import type { ServiceOps } from "./service-op.ts";

export interface WrapResult {
  wrapped: Buffer;
  keyRef: string;
}
export interface UnwrapResult {
  plaintext: Buffer;
  keyRef: string;
}
export type ItemError = KmsItemError;

export class DataKeys {
  readonly #ops: ServiceOps;
  readonly #onInternalError: (err: unknown, op: KmsOperation) => void;

  constructor(ops: ServiceOps, onInternalError: (err: unknown, op: KmsOperation) => void) {
    this.#ops = ops;
    this.#onInternalError = onInternalError;
  }

  generateDataKey(caller: KmsCaller, keyName: string, context: EncryptionContext, version?: number): DataKey {
    return this.#ops.run(caller, "generate-data-key", "key.wrap", keyName, context, (ev) => {
      const dk = this.#ops.keyring.generateDataKey(keyName, context, version);
      ev.keyRef = dk.keyRef;
      return dk;
    });
  }

  /**
   * A batch under one version (the current one), audited as one record: the count, the key version and each data
   * key's encryption context in order (a file server's pool of keys made ahead, vfs/dek-pool.ts). All or nothing.
   */
  generateDataKeys(caller: KmsCaller, keyName: string, contexts: readonly EncryptionContext[]): DataKey[] {
    if (contexts.length === 0) return [];
    return this.#ops.run(caller, "generate-data-key", "key.wrap", keyName, undefined, (ev) => {
      ev.detailExtra = { count: contexts.length, contexts };
      const version = this.#ops.keyring.encryptionVersion(keyName);
      ev.keyRef = formatKeyRef(keyName, version);
      const out: DataKey[] = [];
      try {
        for (const context of contexts) out.push(this.#ops.keyring.generateDataKey(keyName, context, version));
      } catch (e) {
        for (const dk of out) dk.plaintext.fill(0);
        throw e;
      }
      return out;
    });
  }

  /** Wraps a caller-supplied 32-byte key. */
  wrap(
    caller: KmsCaller,
    keyName: string,
    plaintext: Buffer,
    context: EncryptionContext,
    version?: number,
  ): WrapResult {
    return this.#ops.run(caller, "wrap", "key.wrap", keyName, context, (ev) => {
      const r = this.#ops.keyring.wrap(keyName, plaintext, context, version);
      ev.keyRef = r.keyRef;
      return r;
    });
  }

  /** The plaintext is a fresh buffer the caller owns and must zero. */
  unwrap(caller: KmsCaller, wrapped: Buffer, context: EncryptionContext): UnwrapResult {
    const name = keyNameOf(wrapped);
    return this.#ops.run(caller, "unwrap", "key.unwrap", name, context, (ev) => {
      ev.keyRef = refOf(wrapped);
      const { dek, keyRef } = this.#ops.keyring.unwrap(wrapped, context);
      this.#flagCompromised(ev, wrapped);
      return { plaintext: dek, keyRef };
    });
  }

  /** One result per item, in order: a failed item carries its error and does not fail the others. */
  unwrapBatch(
    caller: KmsCaller,
    items: readonly { wrapped: Buffer; context: EncryptionContext }[],
  ): (UnwrapResult | ItemError)[] {
    return items.map((item) => this.#settle("unwrap", () => this.unwrap(caller, item.wrapped, item.context)));
  }

  /** Re-wraps under the current version of the key the blob names; the DEK never leaves the KMS. */
  rewrap(caller: KmsCaller, wrapped: Buffer, context: EncryptionContext): WrapResult {
    const name = keyNameOf(wrapped);
    return this.#ops.run(caller, "rewrap", "key.wrap", name, context, (ev) => {
      ev.detailExtra = { from: refOf(wrapped) };
      const r = this.#ops.keyring.rewrap(wrapped, context);
      this.#flagCompromised(ev, wrapped);
      ev.keyRef = r.keyRef;
      return r;
    });
  }

  rewrapBatch(
    caller: KmsCaller,
    items: readonly { wrapped: Buffer; context: EncryptionContext }[],
  ): (WrapResult | ItemError)[] {
    return items.map((item) => this.#settle("rewrap", () => this.rewrap(caller, item.wrapped, item.context)));
  }

  wrapBatch(
    caller: KmsCaller,
    keyName: string,
    items: readonly { plaintext: Buffer; context: EncryptionContext }[],
  ): (WrapResult | ItemError)[] {
    return items.map((item) => this.#settle("wrap", () => this.wrap(caller, keyName, item.plaintext, item.context)));
  }

  /** Use of a compromised version is marked in its audit record, so a SIEM rule can alert on it. */
  #flagCompromised(ev: PendingEvent, wrapped: Buffer): void {
    const p = parseWrapped(wrapped);
    if (this.#ops.keyring.stateOf(p.name, p.version) === "compromised") {
      ev.detailExtra = { ...ev.detailExtra, compromised: formatKeyRef(p.name, p.version) };
    }
  }

  #settle<T>(op: KmsOperation, fn: () => T): T | ItemError {
    return settleItem(op, fn, this.#onInternalError);
  }
}

/** One batch item: its result, or its error (an unexpected one reported to `onInternal`, sent without its text). */
export function settleItem<T>(
  op: KmsOperation,
  fn: () => T,
  onInternal: (err: unknown, op: KmsOperation) => void,
): T | ItemError {
  try {
    return fn();
  } catch (e) {
    const code = kmsErrorCode(e);
    if (code !== "INTERNAL") return { error: { code, message: (e as Error).message } };
    onInternal(e, op);
    return { error: { code, message: INTERNAL_ERROR_MESSAGE } };
  }
}

/** Key name a wrapped blob names, or undefined when it is malformed (the keyring then reports IntegrityError). */
function keyNameOf(wrapped: Buffer): string | undefined {
  try {
    return parseWrapped(wrapped).name;
  } catch {
    return undefined;
  }
}

function refOf(wrapped: Buffer): string | undefined {
  try {
    const p = parseWrapped(wrapped);
    return formatKeyRef(p.name, p.version);
  } catch {
    return undefined;
  }
}
