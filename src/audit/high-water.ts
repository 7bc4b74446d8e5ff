// The audit log's high-water mark: the newest signed checkpoint (its sequence number and chain hash) that a writer has
// put into the log, remembered twice: in the metadata store (setting `audit.highwater`) and by the key manager (a
// sealed mark per client and log, kms/audit-marks.ts, which the file server can raise but never lower). `audit verify`
// of the data directory's log takes both as anchors, so a log cut back to an earlier checkpoint, or emptied, or
// replaced by a shorter valid-looking one, is reported as `truncated` or `edited` instead of OK, even when meta.db was
// rolled back to an older copy with it. The SIEM's copy (last delivered sequence) and `--anchor` remain further
// independent checks (docs/operations.md).
import type { MetaStore } from "../store/types.ts";

export const HIGH_WATER_SETTING = "audit.highwater";
/** The log name of the data directory's audit log at the key manager. */
export const KMS_MARK_LOG = "audit";

/** What the key manager offers for marks (keys/provider.ts KeyManager; absent on an older one). */
export interface MarkKeeper {
  auditMark?(log: string): Promise<{ seq: number; hash: string; at: string } | undefined>;
  raiseAuditMark?(log: string, seq: number, hash: string): Promise<unknown>;
}

/** Raises the key manager's mark for the data directory's log (no-op for a key manager without marks). */
export async function raiseKmsHighWater(keys: MarkKeeper, seq: number, hash: string, node?: string): Promise<void> {
  await keys.raiseAuditMark?.(markNames(node).kmsLog, seq, hash);
}

export interface HighWater {
  seq: number;
  /** Hex SHA-256 chain hash of the entry at `seq` (a checkpoint). */
  hash: string;
  /** ISO time it was recorded. */
  at: string;
}

function parse(raw: Buffer | undefined): HighWater | undefined {
  if (!raw) return undefined;
  try {
    const v = JSON.parse(raw.toString("utf8")) as HighWater;
    if (Number.isSafeInteger(v.seq) && v.seq > 0 && /^[0-9a-f]{64}$/.test(v.hash)) return v;
  } catch {}
  return undefined;
}

/**
 * Where a log's marks live: one per server node when several share one store (`node`, each node writes its own log in
 * its own data directory), else the data directory's one.
 */
export function markNames(node?: string): { setting: string; kmsLog: string } {
  return node
    ? { setting: `${HIGH_WATER_SETTING}:${node}`, kmsLog: `${KMS_MARK_LOG}.${node}` }
    : { setting: HIGH_WATER_SETTING, kmsLog: KMS_MARK_LOG };
}

export async function readHighWater(store: MetaStore, node?: string): Promise<HighWater | undefined> {
  return parse(await store.getSetting(markNames(node).setting));
}

/** Raises the mark to (seq, hash) unless it is already at or beyond seq. */
export async function raiseHighWater(store: MetaStore, seq: number, hash: string, node?: string): Promise<void> {
  const { setting } = markNames(node);
  await store.transaction(async (tx) => {
    const current = parse(await tx.getSetting(setting));
    if (current && current.seq >= seq) return;
    const mark: HighWater = { seq, hash, at: new Date().toISOString() };
    await tx.setSetting(setting, Buffer.from(JSON.stringify(mark)));
  });
}

/** Forgets the mark (an operator who moved a damaged log aside and starts a new chain: `audit highwater reset`). */
export async function resetHighWater(store: MetaStore, node?: string): Promise<HighWater | undefined> {
  const { setting } = markNames(node);
  return store.transaction(async (tx) => {
    const current = parse(await tx.getSetting(setting));
    await tx.setSetting(setting, Buffer.from(JSON.stringify({ reset: new Date().toISOString() })));
    return current;
  });
}
