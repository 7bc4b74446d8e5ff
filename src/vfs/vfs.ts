import { randomUUID } from "node:crypto";
import { type AuditEvent, type AuditSink, commitEvent } from "../audit/types.ts";
import { EncryptedReader, readHeader } from "../container-io/encrypted-reader.ts";
import { byteLength, EncryptedWriter } from "../container-io/encrypted-writer.ts";
import { ParallelSegmentWriter } from "../container-io/parallel-writer.ts";
import { PiecedReader } from "../container-io/pieced-reader.ts";
import { SealPool } from "../container-io/seal-pool.ts";
import { zero } from "../crypto/bytes.ts";
import { AtrestError, HandleClosedError, IntegrityError, NotFoundError, QuotaExceededError } from "../errors.ts";
import { createHeader, openContainer } from "../format/container.ts";
import { segmentOffset } from "../format/layout.ts";
import type { KeyProvider } from "../kms/api/types.ts";
import type { Logger } from "../logger.ts";
import type { BlobStore, BlobWriter } from "../store/blobs.ts";
import type { FilePiece, MetaStore, MetaTx, NodeRow, UserRow, VersionRow } from "../store/types.ts";
import { DekPool } from "./dek-pool.ts";
import { fileContext } from "./file-context.ts";
import { Folders } from "./folders.ts";
import { KekSelector } from "./kek-select.ts";
import { MetaCrypto, type PieceAttrs } from "./meta-crypto.ts";
import { Multipart } from "./multipart.ts";
import { type CustomerKeyCheck, customerDek, customerKeyCheck, verifyCustomerKey } from "./sse-c.ts";
import { ROOT_ID, Tree } from "./tree.ts";
import type { FileStat, ObjectMeta, Precondition, ReadHandle, RemovedVersion, SetAttrs, WriteHandle } from "./types.ts";
import { Uploads } from "./uploads.ts";
import { newVersionId, type VersionScope, Versions } from "./versions.ts";
import { WriteFilters } from "./write-filters.ts";

export interface VfsDeps {
  store: MetaStore;
  blobs: BlobStore;
  keys: KeyProvider;
  audit: AuditSink;
  logger: Logger;
  /**
   * The metadata key (setting META_KEY_SETTING, wrapped under META_CONTEXT), unwrapped by the wiring: service keys
   * are a keys-layer job. The vfs takes it over and zeroes it.
   */
  metaKey: Buffer;
  /** KEK for new files (per-folder mapping rules come with the key manager issue). */
  defaultKey?: string;
  /** Remove unfinished uploads and orphan blobs (server start only; see AppOptions.sweep). */
  sweep?: boolean;
  /** New files' data keys made per key manager call (dek-pool.ts); 1 = one call per file. */
  dekPoolBatch?: number;
}

export const META_KEY_SETTING = "metadata.key";
export const META_CONTEXT = { purpose: "metadata" };
/** Set once every node's name and attributes are sealed in the v2 (padded, fixed-width) form. */
export const NODES_V2_SETTING = "metadata.nodes.v2";
const RESEAL_BATCH = 500;

/**
 * Rewrites v1 name and attribute ciphertexts (exact-length name, JSON attrs) in the v2 form, a batch per
 * transaction, each node re-read inside it (a concurrent rename or upload is never undone). Idempotent; records
 * NODES_V2_SETTING when done. Returns how many nodes were rewritten.
 */
export async function resealLegacyNodes(store: MetaStore, crypto: MetaCrypto): Promise<number> {
  let after = "";
  let resealed = 0;
  for (;;) {
    const batch = await store.nodesAfter(after, RESEAL_BATCH);
    if (batch.length === 0) break;
    after = batch[batch.length - 1]?.id ?? after;
    const stale = batch.filter(
      (n) => crypto.isLegacyAttrs(n.id, n.blobId, n.contentId, n.attrsCt) || crypto.isLegacyName(n.id, n.nameCt),
    );
    if (stale.length === 0) continue;
    resealed += await store.transaction(async (tx) => {
      let n = 0;
      for (const old of stale) {
        const node = await tx.getNode(old.id);
        if (!node) continue;
        const patch: Partial<NodeRow> = {};
        if (crypto.isLegacyName(node.id, node.nameCt)) {
          patch.nameCt = crypto.sealName(node.id, crypto.openName(node.id, node.nameCt));
        }
        if (crypto.isLegacyAttrs(node.id, node.blobId, node.contentId, node.attrsCt)) {
          const attrs = crypto.openAttrs(node.id, node.blobId, node.contentId, node.attrsCt);
          patch.attrsCt = crypto.sealAttrs(node.id, node.blobId, node.contentId, attrs);
        }
        if (Object.keys(patch).length === 0) continue;
        await tx.updateNode(node.id, patch);
        n++;
      }
      return n;
    });
  }
  await store.transaction((tx) => tx.setSetting(NODES_V2_SETTING, Buffer.from("1")));
  return resealed;
}

/** The sealed records a directory may have (Vfs.dirRecord): S3 bucket CORS rules and bucket tags. */
export type DirRecordKind = "cors" | "tags";

export const DIR_RECORD_KINDS: DirRecordKind[] = ["cors", "tags"];

function dirRecordKey(dirId: string, kind: DirRecordKind): string {
  return `dir.${kind}:${dirId}`;
}

/** What an upload turns out to be when it commits. */
export type WriteOp = "create" | "overwrite";

/** Who is writing, for quotas and audit, and where (for folder rules). */
export interface Writer {
  user: UserRow;
  /** Global path of the file being written (the user's home joined with their path). */
  path: string;
  event: Omit<AuditEvent, "action" | "outcome">;
  /** Throws unless the writer may do `op` here; called at commit, when it is known which one it is. */
  authorize(op: WriteOp): void;
  /** O_EXCL: the name must be free at open and still free at commit; two exclusive opens of one name never both work. */
  exclusive?: boolean;
  /** Checked on the file the commit replaces, in the commit's transaction (OpenWriteOptions.precondition). */
  precondition?: Precondition;
  /**
   * S3 CompleteMultipartUpload: the staged parts' bytes, already charged to the writer's usage, that the new version
   * takes over: credited against the quota while writing, and handed over by `release` inside the commit's
   * transaction (before the quota is checked there).
   */
  staged?: { bytes: number; release(tx: MetaTx): Promise<void> };
  /**
   * S3 CompleteMultipartUpload: the new version is these containers (staged parts), in order, taken over as they are:
   * nothing is written or re-encrypted, the commit records them as the version's pieces. Nothing is written to the
   * handle (its close commits).
   */
  pieces?: StagedPieces;
  /** KEK the writer names for a new version (S3 SSE-KMS), checked by KekSelector.chooseRequested. */
  key?: string;
  /**
   * S3 SSE-C: the customer's 256-bit key, which takes part in the new version's DEK (sse-c.ts). Used during openWrite
   * only and never kept: the caller owns the buffer and zeroes it.
   */
  customerKey?: Buffer;
  /**
   * OpenWriteOptions.parents: the parent folder as it is in `tx`, made again (with any folder above it) when it was
   * removed since the write opened.
   */
  remakeParent?: (tx: MetaTx) => Promise<NodeRow>;
  /** OpenWriteOptions.versionId: the id of the new version when its folder's versioning is Enabled. */
  versionId?: string;
}

/** Containers already in the blob store that a commit makes a file version of (Writer.pieces). */
export interface StagedPieces {
  pieces: (FilePiece & { size: number })[];
  /** keyRef recorded for the version: its pieces' (rewrap visits every piece's header). */
  keyRef: string;
  /** SSE-C: the check of the key the pieces' DEKs were derived with. */
  ssec?: CustomerKeyCheck;
}

/** What an Upload drives: the encrypting writer, or a version of staged pieces (#piecesVersion). */
type InnerWriter = Pick<EncryptedWriter<Committed>, "size" | "write" | "close" | "abort"> &
  Partial<Pick<EncryptedWriter<Committed>, "writeNow">>;

interface CommitPlan {
  parent: NodeRow;
  name: string;
  /** The version a resumed upload appends to; it must still be the current one at commit. */
  base: NodeRow | undefined;
  who: Writer;
  /** SSE-C: the check of the customer key, sealed with the new version's attributes. */
  ssec?: CustomerKeyCheck;
}

interface UploadState {
  /** Set before a lost connection's partial is offered for commit (abort keeping the partial). */
  partial: boolean;
  /** Attributes the client set on the handle, committed with the version. */
  attrs?: SetAttrs;
  /** S3 metadata given at close, committed with the version. */
  object?: ObjectMeta;
}

/**
 * Whether replacing or deleting the current version `versionId` keeps it as a noncurrent one: always when versioning
 * is Enabled; when Suspended only a version other than "null" (the next "null" version takes the old one's place).
 */
function keepsVersion(scope: VersionScope, versionId: string | undefined): boolean {
  return scope.state === "Enabled" || (versionId !== undefined && versionId !== "null");
}

/** The settable attributes, defined ones only, mode cut to permission bits. */
function cleanAttrs(set: SetAttrs): SetAttrs {
  const out: SetAttrs = {};
  if (set.mtime !== undefined) out.mtime = set.mtime;
  if (set.mode !== undefined) out.mode = set.mode & 0o7777;
  return out;
}

interface Committed {
  stat: FileStat;
  keyRef: string;
}

/**
 * The encrypted filesystem engine, shared by all sessions: node-level operations over the metadata store,
 * the blob store and the key provider. Sessions (session.ts) add users' paths, permissions and quotas.
 */
export class Vfs {
  readonly tree: Tree;
  readonly folders: Folders;
  /** OpenPGP public keys and the organisation key (PGP folders). */
  /** Registered by the wiring (PGP folders). */
  readonly writeFilters = new WriteFilters();
  readonly store: MetaStore;
  readonly blobs: BlobStore;
  readonly keys: KeyProvider;
  readonly audit: AuditSink;
  readonly logger: Logger;
  readonly defaultKey: string;
  /** Chooses each new file's KEK (folder > user > group > default). */
  readonly kek: KekSelector;
  readonly #crypto: MetaCrypto;
  /** Staged S3 multipart uploads. */
  readonly multipart: Multipart;
  /** Versioned folders (S3 bucket versioning): their noncurrent versions and delete markers. */
  readonly versions: Versions;
  // One worker for all uploads (sealing) and downloads (opening): on two cores a second one competes with the event
  // loop (measured). With atrest's GCM binding, sealing and opening run on the event loop instead (SealPoolOptions.inline).
  readonly #seal = new SealPool({ threads: 1, inline: true });
  readonly #uploads = new Uploads();
  /** New files' data keys, made ahead in batches. */
  readonly #fileKeys: DekPool;
  /**
   * Blobs of pieced versions that readers of this process have open, and how many: a pieced reader opens its pieces
   * only as it reaches them, so a version replaced or removed meanwhile keeps its blobs until its last reader closes
   * (as an open file descriptor keeps a one-container version's blob readable). Left behind by a crash, they are
   * orphans the startup sweep removes.
   */
  readonly #pinned = new Map<string, number>();
  /** Retired blobs waiting for their last reader (#pinned). */
  readonly #retired = new Set<string>();

  private constructor(deps: VfsDeps, crypto: MetaCrypto) {
    this.store = deps.store;
    this.blobs = deps.blobs;
    this.keys = deps.keys;
    this.#fileKeys = new DekPool(deps.keys, { batch: deps.dekPoolBatch });
    this.audit = deps.audit;
    this.logger = deps.logger;
    this.defaultKey = deps.defaultKey ?? "default";
    this.#crypto = crypto;
    this.tree = new Tree(deps.store, crypto);
    this.folders = new Folders(deps.store);
    this.kek = new KekSelector(deps.store, this.folders, this.defaultKey);
    this.versions = new Versions(deps.store, crypto, this.tree);
    this.multipart = new Multipart({
      store: deps.store,
      blobs: deps.blobs,
      keys: deps.keys,
      crypto,
      seal: this.#seal,
      logger: deps.logger,
    });
  }

  /** Unwraps (or on first use creates) the metadata key, makes sure the root exists, sweeps crash leftovers. */
  static async open(deps: VfsDeps): Promise<Vfs> {
    const crypto = new MetaCrypto(deps.metaKey);
    zero(deps.metaKey);
    const vfs = new Vfs(deps, crypto);
    if (!(await deps.store.getNode(ROOT_ID))) {
      const root = { ...vfs.tree.newDir(ROOT_ID, ""), id: ROOT_ID, parentId: null };
      root.nameCt = crypto.sealName(ROOT_ID, "");
      root.attrsCt = crypto.sealAttrs(ROOT_ID, null, null, { size: 0, mtime: Date.now(), mode: 0o755 });
      await deps.store.transaction((tx) => tx.insertNode(root));
    }
    if (!(await deps.store.getSetting(NODES_V2_SETTING))) {
      const resealed = await resealLegacyNodes(deps.store, crypto);
      if (resealed > 0) deps.logger.info({ resealed }, "padded the sealed names and attributes of older nodes");
    }
    if (deps.sweep) {
      const swept = await deps.blobs.sweep(await deps.store.blobIds());
      if (swept.temp + swept.orphans > 0) deps.logger.warn(swept, "removed unfinished uploads and orphan blobs");
    }
    return vfs;
  }

  /**
   * A directory's sealed record `kind` (S3 bucket CORS rules and tags): kept in settings under the directory's node id
   * (no name in clear), sealed under the metadata key with the setting's key as AAD. Undefined when none is set.
   */
  async dirRecord<T>(dirId: string, kind: DirRecordKind): Promise<T | undefined> {
    const label = dirRecordKey(dirId, kind);
    const raw = await this.store.getSetting(label);
    return raw ? this.#crypto.openRecord<T>(label, raw) : undefined;
  }

  /** Sets (undefined: removes) a directory's sealed record `kind`. */
  async setDirRecord(dirId: string, kind: DirRecordKind, value: unknown): Promise<void> {
    const label = dirRecordKey(dirId, kind);
    await this.store.transaction(async (tx) => {
      if (value === undefined) await tx.deleteSetting(label);
      else await tx.setSetting(label, this.#crypto.sealRecord(label, value));
    });
  }

  /** The record `kind` of the directory at global path `path`, if the directory exists and has one. */
  async dirRecordAt<T>(path: string, kind: DirRecordKind): Promise<T | undefined> {
    try {
      const dir = await this.tree.resolveDir(ROOT_ID, path);
      return await this.dirRecord<T>(dir.id, kind);
    } catch (err) {
      if (err instanceof AtrestError && (err.code === "NOT_FOUND" || err.code === "NOT_A_DIRECTORY")) return undefined;
      throw err;
    }
  }

  async close(): Promise<void> {
    this.#fileKeys.close();
    this.#crypto.destroy();
    await this.#seal.close();
  }

  /**
   * Opens a file for reading: unwraps its DEK (KMS), verifies the key commitment, returns a random-access reader. A
   * pieced version reads its pieces in turn, each opened (and its DEK unwrapped) only when the read reaches it.
   * `end`: the caller reads nothing at or past it (a Range), so a container's read-ahead stops there and a pieced
   * version opens no piece ahead that starts there.
   */
  async openRead(
    node: NodeRow,
    onClose: (bytesRead: number) => void,
    customerKey?: Buffer,
    end?: number,
  ): Promise<ReadHandle> {
    if (!node.blobId || !node.contentId) throw new AtrestError("IS_A_DIRECTORY", "is a directory");
    const { size, ssec, pieces } = this.tree.attrs(node);
    // SSE-C: no key or a wrong one is refused here, before any data (or the key manager) is touched
    verifyCustomerKey(ssec, customerKey);
    if (!pieces)
      return this.#openContainer(node.blobId, node.contentId, size, ssec !== undefined, customerKey, onClose, end);
    const rows = await this.store.filePieces(node.contentId);
    if (rows.length !== pieces.length || rows.some((r, i) => r.contentId !== pieces[i]?.contentId)) {
      throw new IntegrityError("the pieces of a file do not match its sealed attributes");
    }
    if (pieces.reduce((n, p) => n + p.size, 0) !== size) throw new IntegrityError("pieces do not add up to the size");
    const key = customerKey ? Buffer.from(customerKey) : undefined;
    for (const r of rows) this.#pinned.set(r.blobId, (this.#pinned.get(r.blobId) ?? 0) + 1);
    return new PiecedReader(
      pieces.map((p) => p.size),
      (i, pieceEnd) => {
        const r = rows[i] as FilePiece;
        const pieceSize = (pieces[i] as PieceAttrs).size;
        return this.#openContainer(r.blobId, r.contentId, pieceSize, !!ssec, key, () => undefined, pieceEnd);
      },
      (n) => {
        if (key) zero(key);
        for (const r of rows) this.#unpin(r.blobId);
        onClose(n);
      },
      end,
    );
  }

  /** One container: `blobId` sealed for `contentId`, `size` plaintext bytes. */
  async #openContainer(
    blobId: string,
    contentId: string,
    size: number,
    ssec: boolean,
    customerKey: Buffer | undefined,
    onClose: (bytesRead: number) => void,
    end?: number,
  ): Promise<EncryptedReader> {
    const blob = await this.blobs.open(blobId);
    try {
      const { header, count, whole } = await readHeader(blob);
      const dataKey = await this.keys.unwrap(header.wrappedDek, fileContext(contentId));
      let dek = dataKey;
      if (ssec && customerKey) {
        try {
          dek = customerDek(dataKey, customerKey, contentId);
        } finally {
          zero(dataKey);
        }
      }
      try {
        const keys = openContainer(header, dek, contentId);
        return new EncryptedReader(blob, keys, header.layout, count, size, onClose, this.#seal, whole, end);
      } finally {
        zero(dek);
      }
    } catch (err) {
      await blob.close();
      throw err;
    }
  }

  /**
   * Starts a new version of file `name` in `parent` (truncate, or `existing` is undefined), or resumes `existing`
   * (appending: only its last partial segment is re-encrypted, into a copy, so the old version stays intact until
   * the new one commits). Nothing is visible under the name before close() commits; what the upload turns out to be
   * (create or overwrite), the permission for that and the quotas are decided again at commit, in one transaction.
   */
  async openWrite(
    parent: NodeRow,
    name: string,
    existing: NodeRow | undefined,
    truncate: boolean,
    who: Writer,
  ): Promise<WriteHandle> {
    const release = who.exclusive ? this.#uploads.claim(parent.id, name) : () => undefined;
    try {
      const user = await this.store.getUserById(who.user.id);
      if (!user) throw new AtrestError("PERMISSION_DENIED", `user ${who.user.name} no longer exists`);
      const base = existing && !truncate ? existing : undefined;
      if (base && this.tree.attrs(base).pieces) {
        throw new AtrestError(
          "UNSUPPORTED",
          "a file stored as its S3 multipart parts cannot be appended to: write it anew (or copy it first)",
        );
      }
      if (base && (who.customerKey || this.tree.attrs(base).ssec)) {
        throw new AtrestError(
          base && this.tree.attrs(base).ssec ? "KEY_REQUIRED" : "INVALID_INPUT",
          "an object encrypted with a customer-provided key (S3 SSE-C) cannot be appended to: write it anew",
        );
      }
      // What this upload may add to the user's usage: the replaced version is credited when it is the user's own.
      const sameOwner = existing !== undefined && existing.ownerId === user.id;
      const credit = (sameOwner ? this.tree.attrs(existing).size : 0) + (who.staged?.bytes ?? 0);
      const newFiles = sameOwner ? 0 : 1;
      if (
        newFiles > 0 &&
        user.quotaFiles > 0 &&
        user.usedFiles + this.#uploads.reserved(user.id).files + newFiles > user.quotaFiles
      ) {
        throw new QuotaExceededError(`quota exceeded: ${user.quotaFiles} files`);
      }
      const state = { partial: false };
      const plan: CommitPlan = {
        parent,
        name,
        base,
        who,
        ssec: who.pieces ? who.pieces.ssec : who.customerKey ? customerKeyCheck(who.customerKey) : undefined,
      };
      const inner = who.pieces
        ? this.#piecesVersion(plan, state, who.pieces)
        : base
          ? await this.#resume(plan, state)
          : await this.#newVersion(plan, state, await this.kek.chooseRequested(user, who.path, who.key));
      return new Upload(inner, {
        vfs: this,
        uploads: this.#uploads,
        who,
        user,
        credit,
        newFiles,
        state,
        release,
      });
    } catch (err) {
      release();
      throw err;
    }
  }

  /** A version made of staged containers: nothing to write, close() commits them (Writer.pieces). */
  #piecesVersion(plan: CommitPlan, state: UploadState, staged: StagedPieces): InnerWriter {
    const size = staged.pieces.reduce((n, p) => n + p.size, 0);
    let done = false;
    return {
      size,
      write: async () => {
        throw new AtrestError("UNSUPPORTED", "a version made of staged pieces takes no writes");
      },
      close: async () => {
        if (done) throw new HandleClosedError("upload already closed");
        done = true;
        return this.#commit(plan, state, { pieces: staged.pieces }, randomUUID(), staged.keyRef, size);
      },
      abort: async () => {
        done = true;
      },
    };
  }

  async #newVersion(plan: CommitPlan, state: UploadState, kek: { key: string }): Promise<EncryptedWriter<Committed>> {
    // The blob is created while the key manager makes the data key (one wait less per upload).
    const created = this.blobs.create();
    let contentId: string;
    let dk: Awaited<ReturnType<KeyProvider["generateDataKey"]>>;
    try {
      ({ contentId, dk } = await this.#fileKeys.take(kek.key));
    } catch (err) {
      await created.then(
        (b) => b.abort(),
        () => undefined,
      );
      throw err;
    }
    const customerKey = plan.who.customerKey;
    const { header, keys } = (() => {
      let dek = dk.plaintext;
      try {
        // SSE-C: the container's DEK needs both the key manager's data key and the customer's key (sse-c.ts)
        if (plan.ssec && customerKey) dek = customerDek(dk.plaintext, customerKey, contentId);
        return createHeader({ dek, fileId: contentId, wrappedDek: dk.wrapped });
      } finally {
        zero(dk.plaintext, dek);
      }
    })();
    let blob: BlobWriter;
    try {
      blob = await created;
    } catch (err) {
      keys.destroy();
      throw err;
    }
    return new EncryptedWriter({
      blob,
      keys,
      // written with the first sealed data, in the same vectored write (a small upload's one write)
      head: header,
      writer: new ParallelSegmentWriter(this.#seal, keys),
      startSize: 0,
      quotaLeft: () => Number.POSITIVE_INFINITY,
      discard: () => blob.abort(),
      commit: ({ size }) => this.#commit(plan, state, blob.id, contentId, dk.keyRef, size),
    });
  }

  async #resume(plan: CommitPlan, state: UploadState): Promise<EncryptedWriter<Committed>> {
    const existing = plan.base as NodeRow;
    const contentId = existing.contentId as string;
    const oldSize = this.tree.attrs(existing).size;
    const source = await this.blobs.open(existing.blobId as string);
    let keys: ReturnType<typeof openContainer>;
    let writer: ParallelSegmentWriter;
    let truncateAt: number;
    try {
      const { header, count } = await readHeader(source);
      const dek = await this.keys.unwrap(header.wrappedDek, fileContext(contentId));
      try {
        keys = openContainer(header, dek, contentId);
      } finally {
        zero(dek);
      }
      // Only the final (partial, padded) segment is re-encrypted: its data becomes the writer's pending segment.
      truncateAt = segmentOffset(header.layout, count - 1);
      const pending = keys.open(count - 1, await source.read(truncateAt, source.size - truncateAt), true);
      writer = new ParallelSegmentWriter(this.#seal, keys, { startIndex: count - 1, pending });
    } finally {
      await source.close();
    }
    const blob = await this.blobs.create({ id: existing.blobId as string, length: truncateAt });
    const keyRef = existing.keyRef as string;
    return new EncryptedWriter({
      blob,
      keys,
      writer,
      startSize: oldSize,
      quotaLeft: () => Number.POSITIVE_INFINITY,
      discard: () => blob.abort(),
      commit: ({ size }) => this.#commit(plan, state, blob.id, contentId, keyRef, size),
    });
  }

  /**
   * Points `parent/name` at the new blob in one transaction, after deciding there what the upload is: a create or an
   * overwrite (checked against the writer's permissions now, not at open), within the quotas as they stand now, on
   * the version it appends to (resume). A partial kept after a lost connection never replaces an existing file. On
   * any refusal the new blob goes and the name keeps what it had. Then the replaced blob is dropped.
   */
  async #commit(
    plan: CommitPlan,
    state: UploadState,
    content: string | Pick<StagedPieces, "pieces">,
    contentId: string,
    keyRef: string,
    size: number,
  ): Promise<Committed> {
    const stat: FileStat = { kind: "file", size, mtime: Date.now(), mode: 0o644, ...cleanAttrs(state.attrs ?? {}) };
    let replaced: string[];
    try {
      // A fail-closed audit refuses here, before anything changes.
      await this.audit.admit?.();
      replaced = await this.store.transaction((tx) =>
        this.#commitTx(tx, plan, state, content, contentId, keyRef, stat),
      );
    } catch (err) {
      // The blob was already renamed into place: nothing references it, so it goes now (not at the next start).
      // Staged pieces stay with their upload, which a refused Complete keeps.
      if (typeof content === "string") await this.blobs.remove(content).catch(() => undefined);
      throw err;
    }
    // Committed: a failure from here on must not touch the new blobs (an old one left behind is swept at start).
    const kept = new Set(typeof content === "string" ? [content] : content.pieces.map((p) => p.blobId));
    const gone = replaced.filter((b) => !kept.has(b));
    if (gone.length > 0) {
      await this.#retire(gone).catch((err) => this.logger.warn({ err }, "removing a replaced blob failed"));
    }
    return { stat, keyRef };
  }

  /**
   * In a transaction that replaces or removes `node`'s version: the blobs it leaves behind (one, or each piece of a
   * pieced version, whose rows go with it), for #retire once the transaction is durable.
   */
  async #versionBlobs(tx: MetaTx, node: NodeRow | undefined): Promise<string[]> {
    if (!node?.blobId) return [];
    if (!node.contentId || !this.tree.attrs(node).pieces) return [node.blobId];
    const pieces = await tx.filePieces(node.contentId);
    await tx.deleteFilePieces(node.contentId);
    return [...new Set([node.blobId, ...pieces.map((p) => p.blobId)])];
  }

  /** The commit's transaction; returns the blobs of the version it replaced, if any. */
  async #commitTx(
    tx: MetaTx,
    plan: CommitPlan,
    state: UploadState,
    content: string | Pick<StagedPieces, "pieces">,
    contentId: string,
    keyRef: string,
    stat: FileStat,
  ): Promise<string[]> {
    const { name, base, who } = plan;
    let parent = plan.parent;
    const pieces = typeof content === "string" ? undefined : content.pieces;
    const blobId = pieces ? (pieces[0] as FilePiece).blobId : (content as string);
    const size = stat.size;
    if (who.staged) await who.staged.release(tx);
    const user = await tx.getUserById(who.user.id);
    if (!user) throw new AtrestError("PERMISSION_DENIED", `user ${who.user.name} no longer exists`);
    if (!(await tx.getNode(parent.id))) {
      if (!who.remakeParent) throw new NotFoundError(`directory of ${name}`);
      parent = await who.remakeParent(tx);
    }
    const current = await this.tree.child(parent.id, name, tx);
    if (current?.kind === "dir") throw new AtrestError("IS_A_DIRECTORY", `is a directory: ${name}`);
    if (current && who.exclusive) throw new AtrestError("EXISTS", `already exists: ${name}`);
    if (who.precondition) who.precondition(current ? this.tree.stat(current) : undefined);
    if (base && current?.blobId !== base.blobId) {
      throw new AtrestError("CONFLICT", `${name} changed while the upload appended to it; upload it again`);
    }
    if (state.partial && current && !base) {
      throw new AtrestError("CONFLICT", `incomplete upload of ${name} not kept: the existing file stays`);
    }
    who.authorize(current ? "overwrite" : "create");
    const old = current ? this.tree.attrs(current) : undefined;
    // a versioned folder keeps the replaced version (but a resume changes the version it appends to), and the
    // version "null" a suspended folder writes replaces the earlier "null" one
    const scope = await this.versions.scope(tx, parent.id, [name]);
    const versionId = base
      ? old?.versionId
      : scope
        ? scope.state === "Enabled"
          ? (who.versionId ?? newVersionId())
          : "null"
        : undefined;
    const keep = !!(scope && current && old && !base && keepsVersion(scope, old.versionId));
    const sameOwner = !keep && current?.ownerId === user.id;
    const addBytes = size - (sameOwner && old ? old.size : 0);
    const addFiles = sameOwner ? 0 : 1;
    if (user.quotaBytes > 0 && addBytes > 0 && user.usedBytes + addBytes > user.quotaBytes) {
      throw new QuotaExceededError(`quota exceeded: ${user.quotaBytes} bytes`);
    }
    if (user.quotaFiles > 0 && addFiles > 0 && user.usedFiles + addFiles > user.quotaFiles) {
      throw new QuotaExceededError(`quota exceeded: ${user.quotaFiles} files`);
    }
    const id = current?.id ?? randomUUID();
    // S3 metadata: what the writer gave at close; a resumed upload keeps the headers of the version it appends to
    // (its ETag no longer holds)
    const baseHeaders = base ? this.tree.attrs(base).object?.headers : undefined;
    const object = state.object ?? (baseHeaders ? { headers: baseHeaders } : undefined);
    if (object) stat.object = object;
    if (versionId !== undefined) stat.versionId = versionId;
    const attrsCt = this.#crypto.sealAttrs(id, blobId, contentId, {
      size,
      mtime: stat.mtime,
      mode: stat.mode,
      ...(plan.ssec ? { ssec: plan.ssec } : {}),
      ...(object ? { object } : {}),
      ...(pieces ? { pieces: pieces.map((p) => ({ contentId: p.contentId, size: p.size })) } : {}),
      ...(versionId !== undefined ? { versionId } : {}),
    });
    const replaced = scope?.state === "Suspended" ? await this.#dropNullVersions(tx, scope) : [];
    if (keep && current && old) await this.versions.archive(tx, scope as VersionScope, current, old);
    else replaced.push(...(await this.#versionBlobs(tx, current)));
    if (pieces) {
      // the staged parts become the version's pieces: no longer pending (their upload's drop must not remove them)
      await tx.insertFilePieces(
        contentId,
        pieces.map((p) => ({ blobId: p.blobId, contentId: p.contentId })),
      );
      for (const p of pieces) await tx.removePendingBlob(p.blobId);
    }
    if (current && old) {
      await tx.updateNode(id, { blobId, contentId, keyRef, attrsCt, ownerId: user.id });
      if (current.ownerId && !keep) await tx.addUsage(current.ownerId, -old.size, -1);
    } else {
      await tx.insertNode({
        id,
        parentId: parent.id,
        nameMac: this.#crypto.nameMac(parent.id, name),
        nameCt: this.#crypto.sealName(id, name),
        kind: "file",
        attrsCt,
        blobId,
        contentId,
        keyRef,
        ownerId: user.id,
      });
    }
    await tx.addUsage(user.id, size, 1);
    return replaced;
  }

  /**
   * `keys reencrypt` of one file: copies its plaintext into a new container under a new DEK wrapped by `key` (new
   * content id, new blob: temp → fsync → rename), then switches the node to it in one transaction, but only if the node
   * still points at the blob that was read. A file replaced or deleted meanwhile keeps the newer state and the copy is
   * dropped ("changed": nothing lost, a later run picks it up if it still needs it). `pending` registers the new blob
   * with the job before it is renamed into place, so a server starting meanwhile does not sweep it as an orphan.
   */
  async reencryptFile(
    node: NodeRow,
    key: string,
    pending: { add(blobId: string): Promise<void>; remove(blobId: string): Promise<void> },
  ): Promise<{ outcome: "done" | "changed"; bytes: number; keyRef: string }> {
    const oldBlob = node.blobId;
    if (!oldBlob || !node.contentId) throw new AtrestError("IS_A_DIRECTORY", "is a directory");
    const attrs = this.tree.attrs(node);
    const reader = await this.openRead(node, () => undefined);
    let writer: EncryptedWriter | undefined;
    let newBlob: string | undefined;
    let switched = false;
    let oldBlobs: string[] = [];
    let keyRef = "";
    try {
      const contentId = randomUUID();
      const dk = await this.keys.generateDataKey(key, fileContext(contentId));
      keyRef = dk.keyRef;
      const { header, keys } = (() => {
        try {
          return createHeader({ dek: dk.plaintext, fileId: contentId, wrappedDek: dk.wrapped });
        } finally {
          zero(dk.plaintext);
        }
      })();
      const blob = await this.blobs.create();
      newBlob = blob.id;
      await pending.add(blob.id);
      try {
        await blob.write([header]);
      } catch (err) {
        keys.destroy();
        await blob.abort();
        throw err;
      }
      writer = new EncryptedWriter({
        blob,
        keys,
        writer: new ParallelSegmentWriter(this.#seal, keys),
        startSize: 0,
        quotaLeft: () => Number.POSITIVE_INFINITY,
        discard: () => blob.abort(),
        commit: async ({ size }) => {
          // a pieced version becomes one container here
          const { pieces: _, ...plain } = attrs;
          const attrsCt = this.#crypto.sealAttrs(node.id, blob.id, contentId, { ...plain, size });
          switched = await this.store.transaction(async (tx) => {
            const ok = await tx.updateNodeIfBlob(node.id, oldBlob, {
              blobId: blob.id,
              contentId,
              keyRef: dk.keyRef,
              attrsCt,
            });
            await tx.removePendingBlob(blob.id);
            if (ok) oldBlobs = await this.#versionBlobs(tx, node);
            return ok;
          });
        },
      });
      const chunk = 1 << 20;
      for (let offset = 0; offset < reader.size; offset += chunk) {
        await writer.write(offset, await reader.read(offset, chunk));
      }
      await writer.close();
    } catch (err) {
      await writer?.abort(false);
      if (newBlob) await pending.remove(newBlob).catch(() => undefined);
      throw err;
    } finally {
      await reader.close();
    }
    if (!switched) {
      if (newBlob) await this.blobs.remove(newBlob);
      return { outcome: "changed", bytes: 0, keyRef };
    }
    await this.#retire(oldBlobs);
    return { outcome: "done", bytes: attrs.size, keyRef };
  }

  async setAttrs(node: NodeRow, set: SetAttrs): Promise<void> {
    await this.store.transaction(async (tx) => {
      const current = await tx.getNode(node.id);
      if (!current) throw new NotFoundError("file");
      const attrs = { ...this.tree.attrs(current), ...cleanAttrs(set) };
      const attrsCt = this.#crypto.sealAttrs(current.id, current.blobId, current.contentId, attrs);
      await tx.updateNode(current.id, { attrsCt });
    });
  }

  /** Replaces the S3 tags of a file's current version (sealed with its attributes; nothing else changes). */
  async setObjectTags(node: NodeRow, tags: [string, string][]): Promise<void> {
    await this.#setObjectField(node, "tags", tags.length > 0 ? tags : undefined);
  }

  /**
   * Replaces the S3 tags of the kept (noncurrent) version `versionId` of a key (sealed with the row's attributes, as
   * archived). NOT_FOUND when there is no such row or it is a delete marker.
   */
  async setVersionTags(scope: VersionScope, versionId: string, tags: [string, string][]): Promise<void> {
    await this.store.transaction(async (tx) => {
      const row = await tx.getVersion(scope.dirId, scope.keyMac, versionId);
      if (!row || row.marker) throw new NotFoundError("no such version");
      const attrs = this.#crypto.openAttrs(row.id, row.blobId, row.contentId, row.attrsCt);
      const { tags: _old, ...rest } = attrs.object ?? {};
      const object: ObjectMeta = tags.length > 0 ? { ...rest, tags } : rest;
      const next = { ...attrs, object: Object.keys(object).length > 0 ? object : undefined };
      if (!next.object) delete next.object;
      await tx.updateVersionAttrs(row.id, this.#crypto.sealAttrs(row.id, row.blobId, row.contentId, next));
    });
  }

  /** Replaces the S3 ACL of a file's current version or a directory (sealed with its attributes). */
  async setObjectAcl(node: NodeRow, grants: [string, string][] | undefined): Promise<void> {
    await this.#setObjectField(node, "acl", grants && grants.length > 0 ? grants : undefined);
  }

  /** Sets or removes a directory's S3 bucket policy (sealed with its attributes). */
  async setBucketPolicy(node: NodeRow, policy: string | undefined): Promise<void> {
    await this.#setObjectField(node, "policy", policy);
  }

  async #setObjectField<K extends "tags" | "acl" | "policy">(
    node: NodeRow,
    field: K,
    value: ObjectMeta[K] | undefined,
  ) {
    await this.store.transaction(async (tx) => {
      const current = await tx.getNode(node.id);
      if (!current) throw new NotFoundError("file");
      const attrs = this.tree.attrs(current);
      const { [field]: _old, ...rest } = attrs.object ?? {};
      const object: ObjectMeta = value !== undefined ? { ...rest, [field]: value } : rest;
      const next = { ...attrs, object: Object.keys(object).length > 0 ? object : undefined };
      if (!next.object) delete next.object;
      const attrsCt = this.#crypto.sealAttrs(current.id, current.blobId, current.contentId, next);
      await tx.updateNode(current.id, { attrsCt });
    });
  }

  async mkdir(parent: NodeRow, name: string): Promise<void> {
    await this.store.transaction(async (tx) => {
      if (await this.tree.child(parent.id, name, tx)) throw new AtrestError("EXISTS", `already exists: ${name}`);
      await tx.insertNode(this.tree.newDir(parent.id, name));
    });
  }

  /**
   * `node` as it is now inside `tx`, if it is still where it was looked up (same parent and name): another session,
   * or another node on a shared store, may have renamed or removed it since. Acting on a node that moved would
   * delete or move a file under its new name.
   */
  async #stillThere(tx: MetaTx, node: NodeRow, path = "file"): Promise<NodeRow> {
    const now = await tx.getNode(node.id);
    if (!now || now.parentId !== node.parentId || !now.nameMac.equals(node.nameMac)) throw new NotFoundError(path);
    return now;
  }

  async removeDir(node: NodeRow): Promise<void> {
    await this.store.transaction(async (tx) => {
      await this.#stillThere(tx, node, "directory");
      if (await tx.hasChildren(node.id)) throw new AtrestError("NOT_EMPTY", "directory not empty");
      // a versioned folder goes only once its last version and delete marker are deleted (S3: BucketNotEmpty)
      if (await tx.hasVersions(node.id)) throw new AtrestError("NOT_EMPTY", "directory keeps object versions");
      await tx.deleteNode(node.id);
      await tx.setVersioning(node.id, undefined);
    });
    this.versions.invalidate();
  }

  /**
   * Removes the noncurrent versions "null" (and a "null" delete marker) of a key in a suspended folder, which a new
   * "null" version replaces: their rows and usage go in `tx`, their blobs are returned for #retire.
   */
  async #dropNullVersions(tx: MetaTx, scope: VersionScope): Promise<string[]> {
    const gone: string[] = [];
    for (const row of await tx.listVersions(scope.dirId, scope.keyMac)) {
      if (row.versionId === "null") gone.push(...(await this.#dropVersionRow(tx, row)));
    }
    return gone;
  }

  /** Deletes one version row (its pieces' rows too) and credits its owner; its blobs are returned for #retire. */
  async #dropVersionRow(tx: MetaTx, row: VersionRow): Promise<string[]> {
    await tx.deleteVersion(row.id);
    if (row.marker) return [];
    const node = this.versions.asNode(row);
    if (row.ownerId) await tx.addUsage(row.ownerId, -this.tree.attrs(node).size, -1);
    return this.#versionBlobs(tx, node);
  }

  /**
   * Deletes a file. In a versioned folder its content is kept as a noncurrent version (Enabled, or a version other
   * than "null") under a delete marker, which is what the answer names.
   */
  async removeFile(node: NodeRow): Promise<RemovedVersion | undefined> {
    let marker: RemovedVersion | undefined;
    // the version in the store now (an overwrite may have committed since the lookup): its size and blob go
    const removed = await this.store.transaction(async (tx) => {
      const now = await this.#stillThere(tx, node);
      const attrs = this.tree.attrs(now);
      const scope = now.parentId ? await this.versions.scope(tx, now.parentId, [this.tree.name(now)]) : undefined;
      await tx.deleteNode(now.id);
      const gone = scope?.state === "Suspended" ? await this.#dropNullVersions(tx, scope) : [];
      if (scope && keepsVersion(scope, attrs.versionId)) await this.versions.archive(tx, scope, now, attrs);
      else {
        if (now.ownerId) await tx.addUsage(now.ownerId, -attrs.size, -1);
        gone.push(...(await this.#versionBlobs(tx, now)));
      }
      if (scope) marker = { versionId: await this.versions.marker(tx, scope, now.ownerId), deleteMarker: true };
      return gone;
    });
    if (removed.length > 0) await this.#retire(removed);
    return marker;
  }

  /** A delete where there is no current file, in a versioned folder: one more delete marker (S3 puts one). */
  async addDeleteMarker(scope: VersionScope, ownerId: string): Promise<RemovedVersion> {
    const removed = await this.store.transaction(async (tx) => {
      const gone = scope.state === "Suspended" ? await this.#dropNullVersions(tx, scope) : [];
      const versionId = await this.versions.marker(tx, scope, ownerId);
      return { gone, versionId };
    });
    if (removed.gone.length > 0) await this.#retire(removed.gone);
    return { versionId: removed.versionId, deleteMarker: true };
  }

  /**
   * Deletes version `versionId` of a key for good (its blob, once durable): the current file or a noncurrent version
   * or marker. When that leaves the key without a current file, the newest version left becomes it (a marker on top
   * keeps the key deleted). NOT_FOUND when there is no such version.
   */
  async removeVersion(scope: VersionScope, versionId: string): Promise<RemovedVersion> {
    const result = await this.store.transaction(async (tx) => {
      const { node } = await this.versions.current(tx, scope);
      const attrs = node ? this.tree.attrs(node) : undefined;
      let gone: string[];
      let deleteMarker = false;
      if (node && attrs && (attrs.versionId ?? "null") === versionId) {
        await tx.deleteNode(node.id);
        if (node.ownerId) await tx.addUsage(node.ownerId, -attrs.size, -1);
        gone = await this.#versionBlobs(tx, node);
      } else {
        const row = await tx.getVersion(scope.dirId, scope.keyMac, versionId);
        if (!row) throw new NotFoundError("no such version");
        deleteMarker = row.marker;
        gone = await this.#dropVersionRow(tx, row);
        if (node) return { gone, deleteMarker };
      }
      const newest = (await tx.listVersions(scope.dirId, scope.keyMac))[0];
      if (newest && !newest.marker) await this.versions.restore(tx, scope, newest);
      return { gone, deleteMarker };
    });
    if (result.gone.length > 0) await this.#retire(result.gone);
    return { versionId, deleteMarker: result.deleteMarker };
  }

  /** Moves `node` to `newParent/newName`, replacing a file there when `overwrite`. */
  async rename(node: NodeRow, newParent: NodeRow, newName: string, overwrite: boolean): Promise<void> {
    if (node.kind === "dir" && (await this.tree.isAncestor(node.id, newParent.id))) {
      throw new AtrestError("INVALID_INPUT", "cannot move a directory into itself");
    }
    const replaced = await this.store.transaction(async (tx) => {
      let kept = false;
      await this.#stillThere(tx, node);
      const target = await this.tree.child(newParent.id, newName, tx);
      if (target?.id === node.id) return [];
      if (target) {
        if (!overwrite) throw new AtrestError("EXISTS", `already exists: ${newName}`);
        if (target.kind === "dir" || node.kind === "dir") {
          throw new AtrestError("EXISTS", `cannot replace ${target.kind === "dir" ? "a directory" : "a file"}`);
        }
        await tx.deleteNode(target.id);
        // in a versioned folder the file replaced by the move is kept as a noncurrent version, as an overwrite keeps it
        const attrs = this.tree.attrs(target);
        const scope = await this.versions.scope(tx, newParent.id, [newName]);
        if (scope && keepsVersion(scope, attrs.versionId)) {
          await this.versions.archive(tx, scope, target, attrs);
          kept = true;
        } else if (target.ownerId) await tx.addUsage(target.ownerId, -attrs.size, -1);
      }
      const replaced = kept ? [] : await this.#versionBlobs(tx, target);
      await tx.updateNode(node.id, {
        parentId: newParent.id,
        nameMac: this.#crypto.nameMac(newParent.id, newName),
        nameCt: this.#crypto.sealName(node.id, newName),
      });
      return replaced;
    });
    if (replaced.length > 0) await this.#retire(replaced);
  }

  /**
   * Deletes the blob of a version a commit just replaced or removed, once that commit is durable: after a power loss
   * that rolled the commit back, the name points at this blob again, so it must still exist (an orphan left by a crash
   * here is swept at the next start).
   */
  async #retire(blobIds: string[]): Promise<void> {
    await this.store.durable?.();
    for (const b of blobIds) {
      if (this.#pinned.has(b)) this.#retired.add(b);
      else await this.blobs.remove(b);
    }
  }

  #unpin(blobId: string): void {
    const n = (this.#pinned.get(blobId) ?? 1) - 1;
    if (n > 0) {
      this.#pinned.set(blobId, n);
      return;
    }
    this.#pinned.delete(blobId);
    if (this.#retired.delete(blobId)) {
      this.blobs.remove(blobId).catch((err) => this.logger.warn({ err }, "removing a replaced piece failed"));
    }
  }
}

interface UploadOptions {
  vfs: Vfs;
  uploads: Uploads;
  who: Writer;
  /** The user row read at open (quota limits and usage then; refreshed before a write is refused). */
  user: UserRow;
  /** Bytes of the replaced version the user is charged for now (their own file), 0 otherwise. */
  credit: number;
  /** Files this upload adds to the user's count (0 when it replaces their own file). */
  newFiles: number;
  state: UploadState;
  /** Releases the O_EXCL claim on the name. */
  release: () => void;
}

/**
 * One upload as the doors see it: checks and reserves quota as bytes arrive (so parallel uploads of one user cannot
 * all pass a check that each alone would pass), never commits after a failed write, and records the upload's audit
 * event: success only once the new version is committed, failure (with the reason) otherwise.
 */
class Upload implements WriteHandle {
  readonly #inner: InnerWriter;
  readonly #o: UploadOptions;
  #user: UserRow;
  #reservedBytes = 0;
  #error: unknown;
  #finished = false;

  constructor(inner: InnerWriter, options: UploadOptions) {
    this.#inner = inner;
    this.#o = options;
    this.#user = options.user;
    if (options.newFiles > 0) options.uploads.reserve(options.user.id, 0, options.newFiles);
  }

  get size(): number {
    return this.#inner.size;
  }

  write(offset: number, data: Buffer): Promise<void> {
    return this.writeParts(offset, data);
  }

  async writeParts(offset: number, data: Buffer | readonly Buffer[]): Promise<void> {
    if (this.#error) throw this.#error;
    if (offset !== this.#inner.size) {
      // Refused before anything is stored: the upload stays usable.
      throw new AtrestError(
        "UNSUPPORTED",
        `non-sequential write at ${offset} (file length ${this.#inner.size}); encrypted storage accepts appends only`,
      );
    }
    try {
      await this.#reserve(offset + byteLength(data));
      await this.#inner.write(offset, data);
    } catch (err) {
      // What is stored is no longer what the client sent: this upload can only be abandoned.
      this.#error ??= err;
      throw err;
    }
  }

  /** WriteHandle.writeNow: writeParts without a promise while neither the quota check nor the writer must wait. */
  writeNow(offset: number, data: readonly Buffer[]): Promise<void> | undefined {
    const inner = this.#inner;
    if (this.#error || offset !== inner.size || !inner.writeNow || !this.#reserveNow(offset + byteLength(data))) {
      return this.writeParts(offset, data);
    }
    try {
      const wait = inner.writeNow(offset, data);
      return wait?.catch((err: unknown) => {
        this.#error ??= err;
        throw err;
      });
    } catch (err) {
      this.#error ??= err;
      throw err;
    }
  }

  /** Grows the reservation to `size` bytes when that needs no store read: true when done (or not needed). */
  #reserveNow(size: number): boolean {
    const charge = size - this.#o.credit;
    if (charge <= this.#reservedBytes || this.#user.quotaBytes === 0) return true;
    const uploads = this.#o.uploads;
    const id = this.#user.id;
    if (this.#user.usedBytes + uploads.reserved(id).bytes - this.#reservedBytes + charge > this.#user.quotaBytes) {
      return false;
    }
    uploads.reserve(id, charge - this.#reservedBytes, 0);
    this.#reservedBytes = charge;
    return true;
  }

  /** Grows this upload's reservation to a version of `size` bytes, or refuses when the quota does not hold it. */
  async #reserve(size: number): Promise<void> {
    if (this.#reserveNow(size)) return;
    const charge = size - this.#o.credit;
    const uploads = this.#o.uploads;
    const id = this.#user.id;
    const fits = () =>
      this.#user.usedBytes + uploads.reserved(id).bytes - this.#reservedBytes + charge <= this.#user.quotaBytes;
    // Usage read at open may be stale (files deleted, other uploads committed): look again before refusing.
    this.#user = (await this.#o.vfs.store.getUserById(id)) ?? this.#user;
    if (this.#user.quotaBytes > 0 && !fits()) {
      throw new QuotaExceededError(`quota exceeded: ${this.#user.quotaBytes} bytes`);
    }
    uploads.reserve(id, charge - this.#reservedBytes, 0);
    this.#reservedBytes = charge;
  }

  async close(attrs?: SetAttrs, object?: ObjectMeta): Promise<FileStat> {
    if (this.#finished) throw new HandleClosedError("upload already closed");
    this.#o.state.attrs = attrs;
    this.#o.state.object = object;
    let committed = false;
    try {
      if (this.#error) {
        await this.#inner.abort(false);
        throw this.#error;
      }
      const { stat, keyRef } = await this.#inner.close();
      committed = true;
      // fail-closed audit: CLOSE is acknowledged only once the upload's record is durable (if that fails the file is
      // committed, its record stays queued for retry, and the client is refused: never a failure record for it)
      await commitEvent(this.#o.vfs.audit, {
        ...this.#o.who.event,
        size: stat.size,
        keyRef,
        action: "upload",
        outcome: "success",
      });
      return stat;
    } catch (err) {
      if (!committed) this.#record("failure", { reason: reasonOf(err) });
      throw err;
    } finally {
      this.#finish();
    }
  }

  /**
   * Connection lost or upload abandoned. With `keepPartial` what arrived is committed as a shorter file (so the
   * client can resume) only where that replaces nothing: a new name, or the version a resumed upload appended to.
   */
  async abort(keepPartial: boolean): Promise<void> {
    if (this.#finished) return;
    try {
      let kept: Committed | undefined;
      if (keepPartial && !this.#error) {
        this.#o.state.partial = true;
        await this.#inner.abort(true);
        kept = await this.#inner.close().catch(() => undefined);
      } else await this.#inner.abort(false);
      this.#record("failure", {
        reason: this.#error ? reasonOf(this.#error) : "ABORTED",
        ...(kept
          ? { size: kept.stat.size, keyRef: kept.keyRef, detail: "incomplete: partial kept for resume" }
          : { detail: "incomplete: nothing stored, the previous version stays" }),
      });
    } finally {
      this.#finish();
    }
  }

  #record(outcome: "success" | "failure", extra: Partial<AuditEvent>): void {
    this.#o.vfs.audit.record({ ...this.#o.who.event, ...extra, action: "upload", outcome });
  }

  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#o.uploads.reserve(this.#user.id, -this.#reservedBytes, -this.#o.newFiles);
    this.#reservedBytes = 0;
    this.#o.release();
  }
}

function reasonOf(err: unknown): string {
  return err instanceof AtrestError ? err.code : "INTERNAL";
}
