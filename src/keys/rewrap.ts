// `atrest keys rewrap`: moves every file's wrapped DEK (kept S3 versions included) to its key's current version without
// touching file data.
// Per batch: read the headers, one batch rewrap at the key manager, journal the new header slots (journal.ts says why
// that makes it crash-safe), write the slots in place, commit the new key refs and the job's cursor together.

import { join } from "node:path";
import { AtrestError } from "../errors.ts";
import { FIXED_LENGTH, HEADER_PROBE_BYTES, parseHeader, replaceWrappedDek } from "../format/header.ts";
import { parseKeyRef } from "../kms/api/key-ref.ts";
import type { EncryptionContext } from "../kms/api/types.ts";
import type { HeadAccess } from "../store/blobs.ts";
import { fileContext } from "../vfs/file-context.ts";
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
import { HeaderJournal, type JournalEntry, replayJournal } from "./journal.ts";
import { acquireJobLock } from "./lock.ts";
import { isBatchError, type KeyManager, rewrapMany } from "./provider.ts";
import { serviceKeyContexts } from "./service-keys.ts";

export interface RewrapOptions {
  /** Only this key; default every key. */
  key?: string;
  /** Files per key-manager batch call and per journal file. Default 1000. */
  batchSize?: number;
  /** Headers are flushed to disk (and their journals dropped) at least every this many files. Default 20,000. */
  flushEvery?: number;
  onProgress?: (p: JobProgress) => void;
}

export interface RewrapKeyReport extends JobProgress {
  version: number;
}

export interface RewrapReport {
  keys: RewrapKeyReport[];
  /** Service keys (metadata, audit) moved to their key's current version. */
  serviceKeys: string[];
  /** Headers repaired from a crashed run's journal before starting. */
  repaired: number;
  seconds: number;
  /** First failures (up to 50): file id, key ref, reason. */
  failures: JobFailure[];
}

const MAX_REPORTED_FAILURES = 50;
/** The wrapped DEK's u16 length field, then the wrapped DEK (format/header.ts). */
const WRAPPED_LENGTH_AT = FIXED_LENGTH - 2;
const WRAPPED_AT = FIXED_LENGTH;

export function journalDir(dir: string): string {
  return join(dir, "journal");
}

/** Replays a crashed rewrap's journal, if any (server start and every key job call this first). */
export async function recoverRewrap(deps: KeyJobDeps): Promise<number> {
  const heads = deps.blobs.heads?.();
  if (!heads) return 0;
  return replayJournal(new HeaderJournal(journalDir(deps.dir)), heads, deps.store);
}

export async function rewrap(deps: KeyJobDeps, options: RewrapOptions = {}): Promise<RewrapReport> {
  const heads = deps.blobs.heads?.();
  if (!heads)
    throw new AtrestError("UNSUPPORTED", "this blob store cannot rewrite headers in place: use keys reencrypt");
  const started = performance.now();
  const lock = await acquireJobLock(deps.dir, "rewrap", deps.store);
  try {
    const journal = new HeaderJournal(journalDir(deps.dir));
    const repaired = await replayJournal(journal, heads, deps.store);
    const failures: JobFailure[] = [];
    const reports: RewrapKeyReport[] = [];
    const keys = await jobKeys(deps.keys, options.key);
    const serviceKeys = await rewrapServiceKeys(deps, new Map(keys.map((k) => [k.name, k.currentVersion])));
    for (const key of keys) {
      reports.push(
        await rewrapKey(deps, heads, journal, key.name, key.currentVersion, options, failures, () => lock.check()),
      );
    }
    return { keys: reports, serviceKeys, repaired, seconds: (performance.now() - started) / 1000, failures };
  } finally {
    await lock.release();
  }
}

/** Rewraps the wrapped service keys in the settings (one transaction; they are few). Returns the settings moved. */
async function rewrapServiceKeys(deps: KeyJobDeps, current: Map<string, number>): Promise<string[]> {
  const { store } = deps;
  const work: { setting: string; wrapped: Buffer; context: EncryptionContext }[] = [];
  for (const [setting, context] of Object.entries(await serviceKeyContexts(store))) {
    const wrapped = await store.getSetting(setting);
    if (!wrapped) continue;
    const ref = parseKeyRef(deps.keys.keyRefOf(wrapped));
    if (ref && current.has(ref.name) && current.get(ref.name) !== ref.version) work.push({ setting, wrapped, context });
  }
  const results = await rewrapMany(deps.keys, work);
  const moved: string[] = [];
  await store.transaction(async (tx) => {
    for (const [i, r] of results.entries()) {
      const w = work[i] as (typeof work)[number];
      if (isBatchError(r)) {
        throw new AtrestError(
          r.error.code === "KEY_UNAVAILABLE" ? "KEY_UNAVAILABLE" : "INTEGRITY",
          `cannot rewrap service key ${w.setting}: ${r.error.message}`,
        );
      }
      await tx.setSetting(w.setting, r.wrapped);
      moved.push(w.setting);
    }
  });
  return moved;
}

async function rewrapKey(
  deps: KeyJobDeps,
  heads: HeadAccess,
  journal: HeaderJournal,
  name: string,
  version: number,
  options: RewrapOptions,
  failures: JobFailure[],
  /** Throws when the job's lease is lost: before each batch, so no two nodes ever work on one job at once. */
  check: () => void,
): Promise<RewrapKeyReport> {
  const { store } = deps;
  const current = `kek:${name}:v${version}`;
  const range = keyRange(name, current);
  const { job, resumed } = await openJob(store, "rewrap", `key=${name}`, () =>
    countFiles(store, (r) => r.name === name && r.version !== version),
  );
  const progress = (): RewrapKeyReport => ({
    kind: "rewrap",
    key: name,
    version,
    total: job.total,
    done: job.done,
    skipped: job.skipped,
    failed: job.failed,
    bytes: job.bytes,
    resumed,
  });
  const batchSize = options.batchSize ?? 1000;
  const flushEvery = options.flushEvery ?? 20_000;
  let unflushed: string[] = [];
  let unflushedFiles = 0;
  const flush = async () => {
    await heads.flush();
    await journal.remove(unflushed);
    unflushed = [];
    unflushedFiles = 0;
  };
  let batchNo = 0;
  options.onProgress?.(progress());
  for (;;) {
    check();
    const rows = await store.filesByKeyRef(range, job.cursor, batchSize);
    if (rows.length === 0) break;
    const work: {
      nodeId: string;
      blobId: string;
      fileBlob: string;
      head: Buffer;
      wrapped: Buffer;
      context: EncryptionContext;
    }[] = [];
    // files with a piece that could not be rewrapped keep their key ref (a rerun visits them again)
    const failedNodes = new Set<string>();
    let skipped = 0;
    for (const { node, version } of rows) {
      if (!node.contentId || !node.blobId) {
        skipped++;
        continue;
      }
      // a pieced file (an S3 multipart object kept as its parts): every piece has a header of its own
      const pieces = await store.filePieces(node.contentId);
      const containers = pieces.length > 0 ? pieces : [{ blobId: node.blobId, contentId: node.contentId }];
      for (const c of containers) {
        const head = heads.read(c.blobId, HEADER_PROBE_BYTES);
        if (!head) {
          // deleted or replaced since the query: skipped. A file that still points at a blob this directory does
          // not have was written through another node with blobs of its own (PostgreSQL with local blobs): a
          // failure, so the job does not end as if the old key version protected no file any more
          // (a kept version's blob never changes: only a job rewrites it, under this job's lock)
          const still = c.blobId === node.blobId && (version || (await store.getNode(node.id))?.blobId === node.blobId);
          if (still) {
            if (!failedNodes.has(node.id)) job.failed++;
            noteFailure(failures, node.id, node.keyRef ?? "?", missingBlob());
          } else if (c.blobId === node.blobId) skipped++;
          failedNodes.add(node.id);
          continue;
        }
        try {
          const header = parseHeader(head);
          work.push({
            nodeId: node.id,
            blobId: c.blobId,
            fileBlob: node.blobId,
            head: head.subarray(0, header.headerLength),
            wrapped: header.wrappedDek,
            context: fileContext(c.contentId),
          });
        } catch (err) {
          if (!failedNodes.has(node.id)) job.failed++;
          failedNodes.add(node.id);
          noteFailure(failures, node.id, node.keyRef ?? "?", err);
        }
      }
    }
    const results = await rewrapMany(deps.keys as KeyManager, work);
    const entries: JournalEntry[] = [];
    results.forEach((r, i) => {
      const w = work[i] as (typeof work)[number];
      if (isBatchError(r)) {
        if (!failedNodes.has(w.nodeId)) job.failed++;
        failedNodes.add(w.nodeId);
        noteFailure(failures, w.nodeId, deps.keys.keyRefOf(w.wrapped), r.error);
        return;
      }
      // Only the wrapped-DEK field (length, bytes, zero padding up to where the old one ended) changes.
      const end = WRAPPED_AT + Math.max(w.wrapped.length, r.wrapped.length);
      const bytes = replaceWrappedDek(w.head, r.wrapped).subarray(WRAPPED_LENGTH_AT, end);
      entries.push({
        nodeId: w.nodeId,
        blobId: w.blobId,
        ...(w.fileBlob !== w.blobId ? { fileBlob: w.fileBlob } : {}),
        offset: WRAPPED_LENGTH_AT,
        bytes,
        keyRef: r.keyRef,
      });
    });
    if (entries.length > 0) {
      unflushed.push(await journal.append(entries));
      for (const e of entries) if (!heads.write(e.blobId, e.bytes, e.offset)) skipped++;
    }
    testCrashPoint("rewrap", ++batchNo);
    job.cursor = (rows[rows.length - 1] as (typeof rows)[number]).cursor;
    job.skipped += skipped;
    job.updatedAt = new Date().toISOString();
    await store.transaction(async (tx) => {
      const seen = new Set<string>();
      for (const e of entries) {
        if (failedNodes.has(e.nodeId) || seen.has(e.nodeId)) continue;
        seen.add(e.nodeId);
        // A file replaced meanwhile keeps its new version's key ref (its new blob has a new DEK anyway).
        if (await tx.updateNodeIfBlob(e.nodeId, e.fileBlob ?? e.blobId, { keyRef: e.keyRef })) job.done++;
        else job.skipped++;
      }
      await tx.putKeyJob(job);
    });
    unflushedFiles += entries.length;
    if (unflushedFiles >= flushEvery) await flush();
    options.onProgress?.(progress());
  }
  await flush();
  job.state = "done";
  job.updatedAt = new Date().toISOString();
  await store.transaction((tx) => tx.putKeyJob(job));
  const report = progress();
  options.onProgress?.(report);
  return report;
}

function missingBlob(): AtrestError {
  return new AtrestError(
    "NOT_FOUND",
    "the file's blob is not in this data directory's blob store (written through another node with local blobs?): " +
      "run keys rewrap on that node too",
  );
}

function noteFailure(failures: JobFailure[], nodeId: string, keyRef: string, err: unknown): void {
  if (failures.length >= MAX_REPORTED_FAILURES) return;
  const e = err as { code?: string; message?: string };
  failures.push({ nodeId, keyRef, reason: `${e.code ?? "ERROR"}: ${e.message ?? String(err)}` });
}
