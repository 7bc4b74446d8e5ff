// Staged multipart uploads (S3 CreateMultipartUpload / UploadPart / Complete / Abort): each part is its own encrypted
// container in the blob store (a fresh DEK wrapped under the KEK chosen for the object at Create, derived with the
// customer key too for SSE-C uploads), never plaintext and never in memory. What the store keeps is sealed under the
// metadata key like names (MetaCrypto.sealRecord, AAD = the setting key): one record per upload (owner, path, key
// choice, SSE-C check, headers, part numbers) and one per part (blob, content id, key ref, size, ETag), plus one index
// of upload ids. The part blobs are registered as pending blobs (job `s3-multipart:<id>`), so the startup sweep keeps
// them; Abort, Complete and the expiry sweep remove them. Complete itself is done by the session (session.ts): it
// streams the parts in order into one normal new version through openWrite (permissions, quota, audit, atomic commit)
// and then drops the staged state.
import { randomUUID } from "node:crypto";
import { EncryptedReader, readHeader } from "../container-io/encrypted-reader.ts";
import { EncryptedWriter } from "../container-io/encrypted-writer.ts";
import { ParallelSegmentWriter } from "../container-io/parallel-writer.ts";
import type { SealPool } from "../container-io/seal-pool.ts";
import { zero } from "../crypto/bytes.ts";
import { AtrestError, NotFoundError, QuotaExceededError } from "../errors.ts";
import { createHeader, openContainer } from "../format/container.ts";
import type { KeyProvider } from "../kms/api/types.ts";
import type { Logger } from "../logger.ts";
import type { BlobStore } from "../store/blobs.ts";
import type { MetaStore, MetaTx } from "../store/types.ts";
import { fileContext } from "./file-context.ts";
import type { MetaCrypto } from "./meta-crypto.ts";
import { type CustomerKeyCheck, customerDek, customerKeyCheck, verifyCustomerKey } from "./sse-c.ts";
import type {
  CompletedMultipart,
  MultipartChecksum,
  MultipartPart,
  MultipartUploadInfo,
  ObjectMeta,
  PartHandle,
} from "./types.ts";

export interface StagedPiece {
  blobId: string;
  contentId: string;
  size: number;
}

export interface MultipartDeps {
  store: MetaStore;
  blobs: BlobStore;
  keys: KeyProvider;
  crypto: MetaCrypto;
  seal: SealPool;
  logger: Logger;
}

/** An upload as stored (sealed). */
export interface UploadRecord {
  id: string;
  userId: string;
  /** Path in the owner's view. */
  path: string;
  /** KEK name every part and the object are wrapped under (chosen at Create). */
  kek: string;
  /** The key the client named (SSE-KMS), passed again to the object's openWrite; absent = the rule's key. */
  requested?: string;
  ssec?: CustomerKeyCheck;
  headers: Record<string, string>;
  /** S3 object tags the object gets at Complete (x-amz-tagging at Create). */
  tags?: [string, string][];
  /** The S3 ACL the object gets at Complete (x-amz-acl / x-amz-grant-* at Create; grantees are user names). */
  acl?: [string, string][];
  note?: string;
  /** The additional checksum every part gets (x-amz-checksum-algorithm at Create). */
  checksum?: MultipartChecksum;
  initiated: number;
  /** Who created the upload when not the owner (S3: another user or `anonymous` writing into the owner's bucket). */
  initiator?: string;
  /** Part numbers uploaded so far, ascending. */
  parts: number[];
  /**
   * Set in the transaction that commits the completed object: the parts' bytes, charged to the owner's usage while
   * staged, were handed over to the object there (so dropping the parts afterwards does not credit them again).
   */
  released?: true;
  /** The parts count in the owner's usage (uploads created before that was so are not charged, nor credited). */
  charged?: true;
}

interface PartRecord {
  n: number;
  blobId: string;
  contentId: string;
  keyRef: string;
  size: number;
  etag: string;
  mtime: number;
  checksum?: string;
}

interface IndexEntry {
  id: string;
  userId: string;
  initiated: number;
  /** Completed: only its result is kept (a repeated Complete answers it), until it expires like an upload. */
  done?: true;
}

interface DoneRecord {
  userId: string;
  path: string;
  etag: string;
  checksum?: ObjectMeta["checksum"];
}

const INDEX = "s3.multipart.index";
const uploadKey = (id: string) => `s3.multipart:${id}`;
const partKey = (id: string, n: number) => `s3.multipart:${id}:${n}`;
const doneKey = (id: string) => `s3.multipart.done:${id}`;
const jobOf = (id: string) => `s3-multipart:${id}`;
const UPLOAD_ID = /^[0-9a-f]{32}$/;

export class Multipart {
  readonly #d: MultipartDeps;
  /** Uploads a Complete or Abort of this process is finishing: a second one waits its turn and then finds none. */
  readonly #busy = new Set<string>();

  constructor(deps: MultipartDeps) {
    this.#d = deps;
  }

  async #read<T>(reads: Pick<MetaTx, "getSetting">, key: string): Promise<T | undefined> {
    const raw = await reads.getSetting(key);
    return raw ? this.#d.crypto.openRecord<T>(key, raw) : undefined;
  }

  async #write(tx: MetaTx, key: string, value: unknown): Promise<void> {
    await tx.setSetting(key, this.#d.crypto.sealRecord(key, value));
  }

  /** The upload `id` of `userId` at `path`; NOT_FOUND (NoSuchUpload) for anything else. */
  async get(userId: string, id: string, path?: string): Promise<UploadRecord> {
    const rec = UPLOAD_ID.test(id) ? await this.#read<UploadRecord>(this.#d.store, uploadKey(id)) : undefined;
    if (!rec || rec.userId !== userId || (path !== undefined && rec.path !== path)) {
      throw new NotFoundError("no such multipart upload");
    }
    return rec;
  }

  async create(
    rec: Omit<UploadRecord, "id" | "parts" | "initiated" | "ssec">,
    customerKey: Buffer | undefined,
  ): Promise<UploadRecord> {
    const full: UploadRecord = {
      ...rec,
      id: randomUUID().replace(/-/g, ""),
      initiated: Date.now(),
      parts: [],
      charged: true,
      ...(customerKey ? { ssec: customerKeyCheck(customerKey) } : {}),
    };
    await this.#d.store.transaction(async (tx) => {
      await this.#write(tx, uploadKey(full.id), full);
      const index = (await this.#read<IndexEntry[]>(tx, INDEX)) ?? [];
      index.push({ id: full.id, userId: full.userId, initiated: full.initiated });
      await this.#write(tx, INDEX, index);
    });
    return full;
  }

  /** Every upload of `userId`, oldest first. */
  async list(userId: string): Promise<UploadRecord[]> {
    const index = (await this.#read<IndexEntry[]>(this.#d.store, INDEX)) ?? [];
    const out: UploadRecord[] = [];
    for (const e of index) {
      if (e.userId !== userId || e.done) continue;
      const rec = await this.#read<UploadRecord>(this.#d.store, uploadKey(e.id));
      if (rec) out.push(rec);
    }
    return out;
  }

  async parts(rec: UploadRecord): Promise<MultipartPart[]> {
    const out: MultipartPart[] = [];
    for (const n of rec.parts) {
      const p = await this.#read<PartRecord>(this.#d.store, partKey(rec.id, n));
      if (p) {
        out.push({
          partNumber: p.n,
          size: p.size,
          etag: p.etag,
          mtime: p.mtime,
          ...(p.checksum ? { checksum: p.checksum } : {}),
        });
      }
    }
    return out;
  }

  /** Starts part `n` of `rec` (replacing an earlier upload of that number when it commits). */
  async openPart(rec: UploadRecord, n: number, customerKey: Buffer | undefined): Promise<PartHandle> {
    if (!Number.isInteger(n) || n < 1 || n > 10_000) {
      throw new AtrestError("INVALID_INPUT", "Part number must be an integer between 1 and 10000, inclusive");
    }
    // SSE-C: every part needs the upload's key (a missing or other key is refused before anything is stored)
    verifyCustomerKey(rec.ssec, customerKey);
    const contentId = randomUUID();
    const dk = await this.#d.keys.generateDataKey(rec.kek, fileContext(contentId));
    const { header, keys } = (() => {
      let dek = dk.plaintext;
      try {
        if (rec.ssec && customerKey) dek = customerDek(dk.plaintext, customerKey, contentId);
        return createHeader({ dek, fileId: contentId, wrappedDek: dk.wrapped });
      } finally {
        zero(dk.plaintext, dek);
      }
    })();
    const blob = await this.#d.blobs.create().catch((err) => {
      keys.destroy();
      throw err;
    });
    try {
      // registered before it exists under its id, so a server starting meanwhile does not sweep it
      await this.#d.store.transaction((tx) => tx.addPendingBlob(blob.id, jobOf(rec.id)));
      await blob.write([header]);
    } catch (err) {
      keys.destroy();
      await blob.abort();
      await this.#d.store.transaction((tx) => tx.removePendingBlob(blob.id)).catch(() => undefined);
      throw err;
    }
    const user = await this.#d.store.getUserById(rec.userId);
    const replacing = (await this.#read<PartRecord>(this.#d.store, partKey(rec.id, n)))?.size ?? 0;
    const room =
      rec.charged && user && user.quotaBytes > 0
        ? user.quotaBytes - user.usedBytes + replacing
        : Number.POSITIVE_INFINITY;
    let etag = "";
    let checksum: string | undefined;
    const mtime = Date.now();
    const writer = new EncryptedWriter<MultipartPart>({
      blob,
      keys,
      writer: new ParallelSegmentWriter(this.#d.seal, keys),
      startSize: 0,
      // refused early, as the bytes stream in (the commit decides again, on the usage as it is then)
      quotaLeft: () => room,
      discard: () => blob.abort(),
      commit: async ({ size }) => {
        const part: PartRecord = {
          n,
          blobId: blob.id,
          contentId,
          keyRef: dk.keyRef,
          size,
          etag,
          mtime,
          ...(checksum ? { checksum } : {}),
        };
        const replaced = await this.#d.store.transaction(async (tx) => {
          const current = await this.#read<UploadRecord>(tx, uploadKey(rec.id));
          if (!current) throw new NotFoundError("no such multipart upload");
          if (current.released) throw new NotFoundError("no such multipart upload");
          const old = await this.#read<PartRecord>(tx, partKey(rec.id, n));
          // a staged part counts in its owner's usage (and quota) from its commit until the upload is dropped
          const delta = size - (old?.size ?? 0);
          if (current.charged) {
            const user = await tx.getUserById(rec.userId);
            if (!user) throw new AtrestError("PERMISSION_DENIED", "the upload's user no longer exists");
            if (user.quotaBytes > 0 && delta > 0 && user.usedBytes + delta > user.quotaBytes) {
              throw new QuotaExceededError(`quota exceeded: ${user.quotaBytes} bytes`);
            }
            if (delta !== 0) await tx.addUsage(rec.userId, delta, 0);
          }
          await this.#write(tx, partKey(rec.id, n), part);
          if (!current.parts.includes(n)) {
            current.parts.push(n);
            current.parts.sort((a, b) => a - b);
            await this.#write(tx, uploadKey(rec.id), current);
          }
          if (old) await tx.removePendingBlob(old.blobId);
          return old?.blobId;
        });
        if (replaced && replaced !== blob.id) await this.#removeBlob(replaced);
        return { partNumber: n, size, etag, mtime, ...(checksum ? { checksum } : {}) };
      },
    });
    let done = false;
    const drop = async () => {
      await this.#d.store.transaction((tx) => tx.removePendingBlob(blob.id)).catch(() => undefined);
      await this.#d.blobs.remove(blob.id).catch(() => undefined);
    };
    const upload = this.info(rec);
    return {
      upload,
      get size() {
        return writer.size;
      },
      write: (data) => writer.write(writer.size, data),
      close: async (tag, sum) => {
        if (done) throw new AtrestError("HANDLE_CLOSED", "part already closed");
        done = true;
        etag = tag;
        checksum = sum;
        try {
          return await writer.close();
        } catch (err) {
          await writer.abort(false).catch(() => undefined);
          await drop();
          throw err;
        }
      },
      abort: async () => {
        if (done) return;
        done = true;
        await writer.abort(false).catch(() => undefined);
        await drop();
      },
    };
  }

  /**
   * Parts `numbers` of `rec` as the pieces of the object a Complete makes (each its own container, taken over as it
   * is), with the key ref the object records: the oldest KEK version among them, so a rewrap of that version visits it.
   * `mixed`: the parts are not all under one key ref (a rotation during the upload).
   */
  async pieces(
    rec: UploadRecord,
    numbers: number[],
  ): Promise<{ pieces: StagedPiece[]; keyRef: string; checksums: (string | undefined)[]; mixed: boolean }> {
    const pieces: StagedPiece[] = [];
    const checksums: (string | undefined)[] = [];
    const refs = new Set<string>();
    let keyRef = "";
    let oldest = Number.POSITIVE_INFINITY;
    for (const n of numbers) {
      const p = await this.#read<PartRecord>(this.#d.store, partKey(rec.id, n));
      if (!p) throw new AtrestError("INVALID_INPUT", `part ${n} was not uploaded`);
      pieces.push({ blobId: p.blobId, contentId: p.contentId, size: p.size });
      checksums.push(p.checksum);
      refs.add(p.keyRef);
      const version = Number(/:v(\d+)$/.exec(p.keyRef)?.[1] ?? Number.NaN);
      if (keyRef === "" || version < oldest) {
        keyRef = p.keyRef;
        if (!Number.isNaN(version)) oldest = version;
      }
    }
    return { pieces, keyRef, checksums, mixed: refs.size > 1 };
  }

  /** A reader of part `n` (Complete streams the parts into the object); the caller closes it. */
  async readPart(rec: UploadRecord, n: number, customerKey: Buffer | undefined): Promise<EncryptedReader> {
    const p = await this.#read<PartRecord>(this.#d.store, partKey(rec.id, n));
    if (!p) throw new AtrestError("INVALID_INPUT", `part ${n} was not uploaded`);
    verifyCustomerKey(rec.ssec, customerKey);
    const blob = await this.#d.blobs.open(p.blobId);
    try {
      const { header, count } = await readHeader(blob);
      const dataKey = await this.#d.keys.unwrap(header.wrappedDek, fileContext(p.contentId));
      let dek = dataKey;
      if (rec.ssec && customerKey) {
        try {
          dek = customerDek(dataKey, customerKey, p.contentId);
        } finally {
          zero(dataKey);
        }
      }
      try {
        const keys = openContainer(header, dek, p.contentId);
        return new EncryptedReader(blob, keys, header.layout, count, p.size, () => undefined, this.#d.seal);
      } finally {
        zero(dek);
      }
    } catch (err) {
      await blob.close();
      throw err;
    }
  }

  /**
   * Runs `fn` (Complete's copy, or nothing for Abort) with the upload held against a concurrent Complete or Abort in
   * this process, then removes the upload, its parts and their blobs. NOT_FOUND when it is already gone.
   */
  async finish<T>(
    rec: UploadRecord,
    fn: () => Promise<T>,
    etag?: string,
    checksum?: ObjectMeta["checksum"],
  ): Promise<T> {
    if (this.#busy.has(rec.id)) throw new AtrestError("CONFLICT", "the upload is being completed or aborted");
    this.#busy.add(rec.id);
    try {
      const result = await fn();
      await this.#drop(
        rec.id,
        etag === undefined
          ? undefined
          : { userId: rec.userId, path: rec.path, etag, ...(checksum ? { checksum } : {}) },
      );
      return result;
    } finally {
      this.#busy.delete(rec.id);
    }
  }

  /** The ETag and checksum of upload `id` if `userId` completed it at `path` (and it has not expired since). */
  async completed(userId: string, id: string, path: string): Promise<CompletedMultipart | undefined> {
    const done = UPLOAD_ID.test(id) ? await this.#read<DoneRecord>(this.#d.store, doneKey(id)) : undefined;
    if (!done || done.userId !== userId || done.path !== path) return undefined;
    return { etag: done.etag, ...(done.checksum ? { checksum: done.checksum } : {}) };
  }

  async #drop(id: string, done?: DoneRecord): Promise<void> {
    const blobs = await this.#d.store.transaction(async (tx) => {
      const rec = await this.#read<UploadRecord>(tx, uploadKey(id));
      const pending = await tx.pendingBlobs(jobOf(id));
      const staged = rec?.charged && !rec.released ? await this.#stagedBytes(tx, rec) : 0;
      if (rec && staged > 0 && (await tx.getUserById(rec.userId))) await tx.addUsage(rec.userId, -staged, 0);
      for (const n of rec?.parts ?? []) await tx.deleteSetting(partKey(id, n));
      await tx.deleteSetting(uploadKey(id));
      await tx.deleteSetting(doneKey(id));
      const index = (await this.#read<IndexEntry[]>(tx, INDEX)) ?? [];
      const kept = index.filter((e) => e.id !== id);
      if (done) {
        await this.#write(tx, doneKey(id), done);
        kept.push({ id, userId: done.userId, initiated: Date.now(), done: true });
      }
      if (kept.length !== index.length || done) await this.#write(tx, INDEX, kept);
      for (const b of pending) await tx.removePendingBlob(b);
      return pending;
    });
    for (const b of blobs) await this.#d.blobs.remove(b).catch(() => undefined);
  }

  /** Bytes of the parts of `rec` as stored now. */
  async #stagedBytes(reads: Pick<MetaTx, "getSetting">, rec: UploadRecord): Promise<number> {
    let total = 0;
    for (const n of rec.parts) total += (await this.#read<PartRecord>(reads, partKey(rec.id, n)))?.size ?? 0;
    return total;
  }

  /** Bytes the parts of upload `rec` hold now (charged to its owner's usage). */
  async stagedBytes(rec: UploadRecord): Promise<number> {
    return rec.charged ? this.#stagedBytes(this.#d.store, rec) : 0;
  }

  /**
   * In the transaction that commits the completed object: takes the parts' bytes off the owner's usage (the object's
   * size is charged by the same commit) and marks the upload so that dropping it does not credit them again.
   * NOT_FOUND when the upload was aborted or expired meanwhile: the object does not commit.
   */
  async release(tx: MetaTx, id: string): Promise<void> {
    const rec = await this.#read<UploadRecord>(tx, uploadKey(id));
    if (!rec || rec.released) throw new NotFoundError("no such multipart upload");
    const staged = rec.charged ? await this.#stagedBytes(tx, rec) : 0;
    if (staged > 0) await tx.addUsage(rec.userId, -staged, 0);
    await this.#write(tx, uploadKey(id), { ...rec, released: true });
  }

  async #removeBlob(blobId: string): Promise<void> {
    await this.#d.store.durable?.();
    await this.#d.blobs.remove(blobId).catch((err) => this.#d.logger.warn({ err }, "removing a replaced part failed"));
  }

  /**
   * Aborts every upload initiated before `before` (ms since the epoch) and forgets completed ones older than that;
   * returns how many uploads went.
   */
  async expire(before: number): Promise<number> {
    const index = (await this.#read<IndexEntry[]>(this.#d.store, INDEX)) ?? [];
    let n = 0;
    for (const e of index) {
      if (e.initiated >= before || this.#busy.has(e.id)) continue;
      await this.#drop(e.id);
      if (!e.done) n++;
    }
    return n;
  }

  info(rec: UploadRecord): MultipartUploadInfo {
    return {
      id: rec.id,
      path: rec.path,
      initiated: rec.initiated,
      customerKey: rec.ssec !== undefined,
      ...(rec.requested ? { requestedKey: rec.requested } : {}),
      ...(rec.checksum ? { checksum: rec.checksum } : {}),
      ...(rec.initiator ? { initiator: rec.initiator } : {}),
    };
  }
}
