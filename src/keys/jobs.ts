// Shared parts of the key jobs (rewrap, reencrypt): which files a key covers, job rows, progress.
import { randomUUID } from "node:crypto";
import { AtrestError } from "../errors.ts";
import { assertKeyName, parseKeyRef } from "../kms/api/key-ref.ts";
import type { Logger } from "../logger.ts";
import type { BlobStore } from "../store/blobs.ts";
import { KEY_CURSOR_START, type KeyJobRow, type KeyRefRange, type MetaStore } from "../store/types.ts";
import { testHooks } from "../test-hooks.ts";
import type { KeyManager } from "./provider.ts";

export interface KeyJobDeps {
  store: MetaStore;
  blobs: BlobStore;
  /** The key manager itself (no DEK cache: a job must see the key manager's current answer). */
  keys: KeyManager;
  /** Directory for the job lock and the rewrap journal (`data/keys`). */
  dir: string;
  logger?: Logger;
}

export interface JobProgress {
  kind: KeyJobRow["kind"];
  key: string;
  total: number;
  done: number;
  skipped: number;
  failed: number;
  bytes: number;
  resumed: boolean;
}

export interface JobFailure {
  nodeId: string;
  keyRef: string;
  reason: string;
}

/** key_refs of `name` at any version. */
export function keyRange(name: string, exclude?: string): KeyRefRange {
  assertKeyName(name);
  return { from: `kek:${name}:v`, to: `kek:${name}:w`, exclude };
}

/** Files per key_ref that `pick` accepts, summed. */
export async function countFiles(store: MetaStore, pick: (ref: { name: string; version: number }) => boolean) {
  let n = 0;
  for (const { keyRef, files } of await store.keyRefCounts()) {
    const ref = keyRef ? parseKeyRef(keyRef) : undefined;
    if (ref && pick(ref)) n += files;
  }
  return n;
}

/** The unfinished job for (kind, scope), or a new one counting `total` files. */
export async function openJob(
  store: MetaStore,
  kind: KeyJobRow["kind"],
  scope: string,
  total: () => Promise<number>,
): Promise<{ job: KeyJobRow; resumed: boolean }> {
  const existing = await store.openKeyJob(kind, scope);
  if (existing) return { job: existing, resumed: true };
  const now = new Date().toISOString();
  const job: KeyJobRow = {
    id: randomUUID(),
    kind,
    scope,
    state: "running",
    cursor: KEY_CURSOR_START,
    total: await total(),
    done: 0,
    skipped: 0,
    failed: 0,
    bytes: 0,
    startedAt: now,
    updatedAt: now,
  };
  await store.transaction((tx) => tx.putKeyJob(job));
  return { job, resumed: false };
}

/** Key names a job covers: the one asked for, or every key the key manager has. */
export async function jobKeys(keys: KeyManager, key: string | undefined) {
  const all = await keys.listKeys();
  if (key === undefined) return all;
  const found = all.find((k) => k.name === key);
  if (!found) throw new AtrestError("NOT_FOUND", `unknown key: kek:${key}`);
  return [found];
}

/** Test-only crash point: a no-op unless a test installed the hook (src/test-hooks.ts). */
export function testCrashPoint(kind: string, batch: number): void {
  testHooks().crashPoint?.(kind, batch);
}
