// `atrest keys reencrypt --key K`: new DEKs and rewritten data for every file under K, kept S3 versions included
// (after a compromise, or to move files whose folder rule changed; a version follows the rule of its object's path).
// One file at a time, streamed (memory stays flat), each switched in its own transaction (Vfs.reencryptFile);
// progress and the cursor are persisted, so a crash or ^C resumes where it stopped.
import type { NodeRow, UserRow } from "../store/types.ts";
import type { Vfs } from "../vfs/vfs.ts";
import {
  countFiles,
  type JobFailure,
  type JobProgress,
  jobKeys,
  type KeyJobDeps,
  keyRange,
  openJob,
  testCrashPoint,
} from "./jobs.ts";
import { acquireJobLock } from "./lock.ts";
import { NodePaths } from "./node-paths.ts";
import { recoverRewrap } from "./rewrap.ts";

export interface ReencryptOptions {
  key: string;
  /** Only files under this version; default every version below the current one. */
  version?: number;
  /** Every version including the current one (e.g. files moved under another folder's rule). */
  allVersions?: boolean;
  /** Target KEK for every file; default the mapping rule of each file's current path and owner. */
  to?: string;
  onProgress?: (p: JobProgress) => void;
}

export interface ReencryptReport extends JobProgress {
  seconds: number;
  failures: JobFailure[];
}

export async function reencrypt(deps: KeyJobDeps & { vfs: Vfs }, options: ReencryptOptions): Promise<ReencryptReport> {
  const started = performance.now();
  const { store, vfs } = deps;
  const lock = await acquireJobLock(deps.dir, "reencrypt", store);
  try {
    await recoverRewrap(deps);
    const [key] = await jobKeys(deps.keys, options.key);
    const name = options.key;
    const current = key?.currentVersion ?? 1;
    const wanted = (v: number) =>
      options.version !== undefined ? v === options.version : options.allVersions ? true : v < current;
    const scope = `key=${name};${options.version !== undefined ? `v=${options.version}` : options.allVersions ? "all" : `below=${current}`};to=${options.to ?? "rules"}`;
    const { job, resumed } = await openJob(store, "reencrypt", scope, () =>
      countFiles(store, (r) => r.name === name && wanted(r.version)),
    );
    // Blobs a crashed run wrote but never switched to: unreferenced copies, safe to drop.
    const stale = await store.pendingBlobs(job.id);
    if (stale.length > 0) {
      await store.transaction(async (tx) => {
        for (const id of stale) await tx.removePendingBlob(id);
      });
      const referenced = await store.blobIds();
      for (const id of stale) if (!referenced.has(id)) await vfs.blobs.remove(id);
    }
    const failures: JobFailure[] = [];
    const progress = (): ReencryptReport => ({
      kind: "reencrypt",
      key: name,
      total: job.total,
      done: job.done,
      skipped: job.skipped,
      failed: job.failed,
      bytes: job.bytes,
      resumed,
      seconds: (performance.now() - started) / 1000,
      failures,
    });
    const paths = new NodePaths(vfs.tree);
    const users = new Map<string, UserRow | undefined>();
    const owner = async (id: string | null) => {
      if (!id) return undefined;
      if (!users.has(id)) users.set(id, await store.getUserById(id));
      return users.get(id);
    };
    const pending = {
      add: (blobId: string) => store.transaction((tx) => tx.addPendingBlob(blobId, job.id)),
      remove: (blobId: string) => store.transaction((tx) => tx.removePendingBlob(blobId)),
    };
    const range = keyRange(name);
    const retry: string[] = [];
    let n = 0;
    // A kept S3 version (`version`: no node to read again; its row changes only by a key job, under this job's lock).
    const one = async (nodeId: string, redo: boolean, kept?: NodeRow) => {
      const node = kept ?? (await store.getNode(nodeId));
      const version = Number(node?.keyRef?.startsWith(range.from) ? node.keyRef.slice(range.from.length) : Number.NaN);
      if (!node || !Number.isInteger(version) || !wanted(version)) {
        if (!redo) job.skipped++;
        return;
      }
      try {
        const target = options.to ?? (await vfs.kek.choose(await owner(node.ownerId), await paths.of(node))).key;
        if (target === name && version === current) {
          // Already where the rules want it (--all-versions): nothing to fix.
          if (!redo) job.skipped++;
          return;
        }
        const r = await vfs.reencryptFile(node, target, pending);
        if (r.outcome === "done") {
          job.done++;
          job.bytes += r.bytes;
          if (redo) job.skipped--;
        } else if (!redo) {
          job.skipped++;
          // a version that "changed" was deleted meanwhile: nothing to retry
          if (!kept) retry.push(nodeId);
        }
      } catch (err) {
        job.failed++;
        if (redo) job.skipped--;
        const e = err as { code?: string; message?: string };
        if (failures.length < 50) {
          failures.push({
            nodeId,
            keyRef: node.keyRef ?? "?",
            reason: `${e.code ?? "ERROR"}: ${e.message ?? String(err)}`,
          });
        }
      }
    };
    options.onProgress?.(progress());
    for (;;) {
      const rows = await store.filesByKeyRef(range, job.cursor, 100);
      if (rows.length === 0) break;
      for (const { cursor, node, version } of rows) {
        lock.check();
        await one(node.id, false, version ? node : undefined);
        job.cursor = cursor;
        job.updatedAt = new Date().toISOString();
        await store.transaction((tx) => tx.putKeyJob(job));
        testCrashPoint("reencrypt", ++n);
        options.onProgress?.(progress());
      }
    }
    // Files replaced while they were being copied: once more, if they still need it (a new upload usually has a new
    // DEK under the current version already, and is then left alone).
    for (const id of retry) {
      lock.check();
      await one(id, true);
    }
    job.state = "done";
    job.updatedAt = new Date().toISOString();
    await store.transaction((tx) => tx.putKeyJob(job));
    const report = progress();
    options.onProgress?.(report);
    return report;
  } finally {
    await lock.release();
  }
}
