import { randomUUID } from "node:crypto";
import type { AuditEvent, AuditSink } from "../audit/types.ts";
import { EncryptedReader, readHeader } from "../container-io/encrypted-reader.ts";
import { EncryptedWriter } from "../container-io/encrypted-writer.ts";
import { ParallelSegmentWriter } from "../container-io/parallel-writer.ts";
import { SealPool } from "../container-io/seal-pool.ts";
import { zero } from "../crypto/bytes.ts";
import { AtrestError, QuotaExceededError } from "../errors.ts";
import { createHeader, openContainer } from "../format/container.ts";
import { segmentOffset } from "../format/layout.ts";
import type { KeyProvider } from "../kms/api/types.ts";
import type { Logger } from "../logger.ts";
import type { BlobStore } from "../store/blobs.ts";
import type { MetaStore, NodeRow, UserRow } from "../store/types.ts";
import { fileContext } from "./file-context.ts";
import { Folders } from "./folders.ts";
import { KekSelector } from "./kek-select.ts";
import { MetaCrypto } from "./meta-crypto.ts";
import { ROOT_ID, Tree } from "./tree.ts";
import type { FileStat } from "./types.ts";
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
}

export const META_KEY_SETTING = "metadata.key";
export const META_CONTEXT = { purpose: "metadata" };

/** Who is writing, for quotas and audit, and where (for folder rules). */
export interface Writer {
  user: UserRow;
  /** Global path of the file being written (the user's home joined with their path). */
  path: string;
  event: Omit<AuditEvent, "action" | "outcome">;
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
  // One worker for all uploads (sealing) and downloads (opening): on two cores a second one competes with the event
  // loop (measured).
  readonly #seal = new SealPool({ threads: 1 });

  private constructor(deps: VfsDeps, crypto: MetaCrypto) {
    this.store = deps.store;
    this.blobs = deps.blobs;
    this.keys = deps.keys;
    this.audit = deps.audit;
    this.logger = deps.logger;
    this.defaultKey = deps.defaultKey ?? "default";
    this.#crypto = crypto;
    this.tree = new Tree(deps.store, crypto);
    this.folders = new Folders(deps.store);
    this.kek = new KekSelector(deps.store, this.folders, this.defaultKey);
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
    if (deps.sweep) {
      const swept = await deps.blobs.sweep(await deps.store.blobIds());
      if (swept.temp + swept.orphans > 0) deps.logger.warn(swept, "removed unfinished uploads and orphan blobs");
    }
    return vfs;
  }

  async close(): Promise<void> {
    this.#crypto.destroy();
    await this.#seal.close();
  }

  /** Opens a file for reading: unwraps its DEK (KMS), verifies the key commitment, returns a random-access reader. */
  async openRead(node: NodeRow, onClose: (bytesRead: number) => void): Promise<EncryptedReader> {
    if (!node.blobId || !node.contentId) throw new AtrestError("IS_A_DIRECTORY", "is a directory");
    const { size } = this.tree.attrs(node);
    const blob = await this.blobs.open(node.blobId);
    try {
      const { header, count } = await readHeader(blob);
      const dek = await this.keys.unwrap(header.wrappedDek, fileContext(node.contentId));
      try {
        const keys = openContainer(header, dek, node.contentId);
        return new EncryptedReader(blob, keys, header.layout, count, size, onClose, this.#seal);
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
   * the new one commits).
   */
  async openWrite(
    parent: NodeRow,
    name: string,
    existing: NodeRow | undefined,
    truncate: boolean,
    who: Writer,
  ): Promise<EncryptedWriter<FileStat>> {
    const user = who.user;
    const fresh = await this.store.getUserById(user.id);
    const used = fresh ?? user;
    if (!existing && user.quotaFiles > 0 && used.usedFiles + 1 > user.quotaFiles) {
      throw new QuotaExceededError(`quota exceeded: ${user.quotaFiles} files`);
    }
    const oldSize = existing ? this.tree.attrs(existing).size : 0;
    const quotaLeft = () =>
      user.quotaBytes > 0 ? user.quotaBytes - used.usedBytes + oldSize : Number.POSITIVE_INFINITY;

    if (existing && !truncate) return this.#resume(parent, name, existing, oldSize, quotaLeft, who);

    const contentId = randomUUID();
    const { key } = await this.kek.choose(used, who.path);
    const dk = await this.keys.generateDataKey(key, fileContext(contentId));
    const { header, keys } = (() => {
      try {
        return createHeader({ dek: dk.plaintext, fileId: contentId, wrappedDek: dk.wrapped });
      } finally {
        zero(dk.plaintext);
      }
    })();
    const blob = await this.blobs.create();
    try {
      await blob.write([header]);
    } catch (err) {
      await blob.abort();
      throw err;
    }
    return new EncryptedWriter({
      blob,
      keys,
      writer: new ParallelSegmentWriter(this.#seal, keys),
      startSize: 0,
      quotaLeft,
      discard: () => blob.abort(),
      commit: ({ size }) => this.#commitFile(parent, name, blob.id, contentId, dk.keyRef, size, who),
    });
  }

  async #resume(
    parent: NodeRow,
    name: string,
    existing: NodeRow,
    oldSize: number,
    quotaLeft: () => number,
    who: Writer,
  ): Promise<EncryptedWriter<FileStat>> {
    const contentId = existing.contentId as string;
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
      quotaLeft: () => quotaLeft() - oldSize,
      discard: () => blob.abort(),
      commit: ({ size }) => this.#commitFile(parent, name, blob.id, contentId, keyRef, size, who),
    });
  }

  /** Points `parent/name` at the new blob in one transaction, charges quotas, then drops the replaced blob. */
  async #commitFile(
    parent: NodeRow,
    name: string,
    blobId: string,
    contentId: string,
    keyRef: string,
    size: number,
    who: Writer,
  ): Promise<FileStat> {
    const stat: FileStat = { kind: "file", size, mtime: Date.now(), mode: 0o644 };
    const replaced = await this.store.transaction(async (tx) => {
      const current = await this.tree.child(parent.id, name, tx);
      if (current?.kind === "dir") throw new AtrestError("IS_A_DIRECTORY", `is a directory: ${name}`);
      const id = current?.id ?? randomUUID();
      const attrsCt = this.#crypto.sealAttrs(id, blobId, contentId, { size, mtime: stat.mtime, mode: stat.mode });
      if (current) {
        const old = this.tree.attrs(current);
        await tx.updateNode(id, { blobId, contentId, keyRef, attrsCt, ownerId: who.user.id });
        if (current.ownerId) await tx.addUsage(current.ownerId, -old.size, -1);
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
          ownerId: who.user.id,
        });
      }
      await tx.addUsage(who.user.id, size, 1);
      return current?.blobId ?? undefined;
    });
    if (replaced && replaced !== blobId) await this.blobs.remove(replaced);
    this.audit.record({ ...who.event, action: "upload", outcome: "success", size, keyRef });
    return stat;
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
          const attrsCt = this.#crypto.sealAttrs(node.id, blob.id, contentId, { ...attrs, size });
          switched = await this.store.transaction(async (tx) => {
            const ok = await tx.updateNodeIfBlob(node.id, oldBlob, {
              blobId: blob.id,
              contentId,
              keyRef: dk.keyRef,
              attrsCt,
            });
            await tx.removePendingBlob(blob.id);
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
    await this.blobs.remove(oldBlob);
    return { outcome: "done", bytes: attrs.size, keyRef };
  }

  async setMtime(node: NodeRow, mtime: number): Promise<void> {
    await this.store.transaction(async (tx) => {
      const current = await tx.getNode(node.id);
      if (!current) return;
      const attrs = this.tree.attrs(current);
      const attrsCt = this.#crypto.sealAttrs(current.id, current.blobId, current.contentId, { ...attrs, mtime });
      await tx.updateNode(current.id, { attrsCt });
    });
  }

  async mkdir(parent: NodeRow, name: string): Promise<void> {
    await this.store.transaction(async (tx) => {
      if (await this.tree.child(parent.id, name, tx)) throw new AtrestError("EXISTS", `already exists: ${name}`);
      await tx.insertNode(this.tree.newDir(parent.id, name));
    });
  }

  async removeDir(node: NodeRow): Promise<void> {
    await this.store.transaction(async (tx) => {
      if (await tx.hasChildren(node.id)) throw new AtrestError("NOT_EMPTY", "directory not empty");
      await tx.deleteNode(node.id);
    });
  }

  async removeFile(node: NodeRow): Promise<void> {
    const { size } = this.tree.attrs(node);
    await this.store.transaction(async (tx) => {
      await tx.deleteNode(node.id);
      if (node.ownerId) await tx.addUsage(node.ownerId, -size, -1);
    });
    if (node.blobId) await this.blobs.remove(node.blobId);
  }

  /** Moves `node` to `newParent/newName`, replacing a file there when `overwrite`. */
  async rename(node: NodeRow, newParent: NodeRow, newName: string, overwrite: boolean): Promise<void> {
    if (node.kind === "dir" && (await this.tree.isAncestor(node.id, newParent.id))) {
      throw new AtrestError("INVALID_INPUT", "cannot move a directory into itself");
    }
    const replaced = await this.store.transaction(async (tx) => {
      const target = await this.tree.child(newParent.id, newName, tx);
      if (target?.id === node.id) return undefined;
      if (target) {
        if (!overwrite) throw new AtrestError("EXISTS", `already exists: ${newName}`);
        if (target.kind === "dir" || node.kind === "dir") {
          throw new AtrestError("EXISTS", `cannot replace ${target.kind === "dir" ? "a directory" : "a file"}`);
        }
        await tx.deleteNode(target.id);
        if (target.ownerId) await tx.addUsage(target.ownerId, -this.tree.attrs(target).size, -1);
      }
      await tx.updateNode(node.id, {
        parentId: newParent.id,
        nameMac: this.#crypto.nameMac(newParent.id, newName),
        nameCt: this.#crypto.sealName(node.id, newName),
      });
      return target?.blobId ?? undefined;
    });
    if (replaced) await this.blobs.remove(replaced);
  }
}
