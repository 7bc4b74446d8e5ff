// What the file server needs from a key manager beyond the KeyProvider contract: rewrap (and its batch form) for
// `keys rewrap`, key lookups for reports. The embedded provider and the remote client both offer them; anything
// optional here is feature-tested at run time so the file server works with either.
import { AtrestError } from "../errors.ts";
import type { AuditMark, EncryptionContext, KeyInfo, KeyProvider } from "../kms/api/types.ts";

export interface RewrapResult {
  wrapped: Buffer;
  keyRef: string;
}

/** One item of a batch call: its result, or its error (an AtrestError from the remote client, code + message). */
export type BatchItemResult<T> = T | { error: { code: string; message: string } };

export interface KeyManager extends KeyProvider {
  rewrap?(wrapped: Buffer, context: EncryptionContext): Promise<RewrapResult>;
  rewrapBatch?(items: { wrapped: Buffer; context: EncryptionContext }[]): Promise<BatchItemResult<RewrapResult>[]>;
  getKey?(name: string): Promise<KeyInfo & { minDecryptionVersion?: number }>;
  /** The audit high-water mark the key manager keeps for this file server's log `log` (kms/audit-marks.ts). */
  auditMark?(log: string): Promise<AuditMark | undefined>;
  /** Raises it (never lowers it). */
  raiseAuditMark?(log: string, seq: number, hash: string): Promise<AuditMark>;
  /** Forgets `client`'s mark; needs a custodian (the embedded key manager: the local custodian identity). */
  resetAuditMark?(client: string, log: string, reason: string): Promise<AuditMark | undefined>;
}

/** Rewraps many DEKs in one call where the key manager has a batch form, one by one otherwise. */
export async function rewrapMany(
  keys: KeyManager,
  items: { wrapped: Buffer; context: EncryptionContext }[],
): Promise<BatchItemResult<RewrapResult>[]> {
  if (items.length === 0) return [];
  if (keys.rewrapBatch) return keys.rewrapBatch(items);
  const rewrap = keys.rewrap?.bind(keys);
  if (!rewrap) throw new AtrestError("UNSUPPORTED", "this key manager cannot rewrap data keys");
  const out: BatchItemResult<RewrapResult>[] = [];
  for (const item of items) {
    try {
      out.push(await rewrap(item.wrapped, item.context));
    } catch (err) {
      const code = err instanceof AtrestError ? err.code : "INTERNAL";
      out.push({ error: { code, message: (err as Error).message } });
    }
  }
  return out;
}

export function isBatchError<T>(r: BatchItemResult<T>): r is { error: { code: string; message: string } } {
  return typeof r === "object" && r !== null && "error" in r;
}

/** The key's current version as the key manager reports it. */
export async function currentVersion(keys: KeyManager, name: string): Promise<number> {
  const info = keys.getKey ? await keys.getKey(name) : (await keys.listKeys()).find((k) => k.name === name);
  if (!info) throw new AtrestError("NOT_FOUND", `unknown key: kek:${name}`);
  return info.currentVersion;
}
