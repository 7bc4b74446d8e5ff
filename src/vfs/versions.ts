// Versioned folders (S3 bucket versioning): a folder whose versioning is Enabled keeps every earlier version of the
// files below it, and a delete there leaves a delete marker instead of removing the file's content. The current
// version stays the file's node (what SFTP and HTTPS show); noncurrent versions and markers are rows of
// file_versions, keyed by the folder's node id and a blind index of the file's path below it, the path and the
// attributes sealed like a node's (AAD = the row's id), the blobs as they were (encrypted like any file). Suspended:
// new writes are the version "null", replacing the earlier "null" one. Every door's write and delete goes through the
// vfs commit, so versions are kept whichever door replaced the file. docs/s3.md "Versioning".
import { randomBytes, randomUUID } from "node:crypto";
import type { MetaTx, NodeReads, NodeRow, VersioningState, VersionRow } from "../store/types.ts";
import type { FileAttrs, MetaCrypto } from "./meta-crypto.ts";
import { split } from "./paths.ts";
import type { Tree } from "./tree.ts";

/** How long the list of versioned folders is trusted: a state set by another process is seen within this time. */
export const VERSIONED_CACHE_MS = 1000;

/** Where a file is in its versioned folder. */
export interface VersionScope {
  dirId: string;
  state: VersioningState;
  /** The file's path below the folder (the S3 key). */
  key: string;
  keyMac: Buffer;
}

/**
 * A fresh S3 version id: 128 random bits, hex (base64url ids starting with `-` read as an option to awscli's
 * `--version-id`).
 */
export function newVersionId(): string {
  return randomBytes(16).toString("hex");
}

export class Versions {
  readonly #reads: NodeReads;
  readonly #crypto: MetaCrypto;
  readonly #tree: Tree;
  readonly #now: () => number;
  #cache: Set<string> | undefined;
  #loadedAt = 0;

  constructor(reads: NodeReads, crypto: MetaCrypto, tree: Tree, now: () => number = Date.now) {
    this.#reads = reads;
    this.#crypto = crypto;
    this.#tree = tree;
    this.#now = now;
  }

  invalidate(): void {
    this.#cache = undefined;
  }

  async #dirs(): Promise<Set<string>> {
    if (!this.#cache || this.#now() - this.#loadedAt > VERSIONED_CACHE_MS) {
      this.#cache = new Set((await this.#reads.listVersionedDirs()).map((d) => d.dirId));
      this.#loadedAt = this.#now();
    }
    return this.#cache;
  }

  keyMac(dirId: string, key: string): Buffer {
    return this.#crypto.nameMac(`versions\0${dirId}`, key);
  }

  /**
   * The versioned folder above `parentId` (itself included) and the path of `tail` below it, or undefined (the common
   * case, answered from the cached folder list without a query when no folder is versioned).
   */
  async scope(reads: NodeReads, parentId: string, tail: string[]): Promise<VersionScope | undefined> {
    const dirs = await this.#dirs();
    if (dirs.size === 0) return undefined;
    const names = [...tail].reverse();
    let id: string | null = parentId;
    for (let depth = 0; id && depth < 4096; depth++) {
      if (dirs.has(id)) {
        const state = await reads.getVersioning(id);
        if (!state) return undefined;
        const key = names.reverse().join("/");
        return { dirId: id, state, key, keyMac: this.keyMac(id, key) };
      }
      const node: NodeRow | undefined = await reads.getNode(id);
      if (!node?.parentId) return undefined;
      names.push(this.#tree.name(node));
      id = node.parentId;
    }
    return undefined;
  }

  /** The scope of `path` below `rootId`, whether or not the file (or its folders) exist. */
  async scopeOfPath(rootId: string, path: string): Promise<{ scope?: VersionScope; node?: NodeRow }> {
    // no versioned folder at all (the common case): no lookup
    if ((await this.#dirs()).size === 0) return {};
    const names = split(path);
    let dir = await this.#reads.getNode(rootId);
    let i = 0;
    for (; dir && i < names.length - 1; i++) {
      const next = await this.#tree.child(dir.id, names[i] as string);
      if (next?.kind !== "dir") break;
      dir = next;
    }
    if (!dir) return {};
    const node = i === names.length - 1 ? await this.#tree.child(dir.id, names[names.length - 1] as string) : undefined;
    const scope = await this.scope(this.#reads, dir.id, names.slice(i));
    return { ...(scope ? { scope } : {}), ...(node ? { node } : {}) };
  }

  /** A NodeRow view of a version row: what the vfs reads (attributes sealed with the row's id). */
  asNode(row: VersionRow): NodeRow {
    return {
      id: row.id,
      parentId: null,
      nameMac: row.keyMac,
      nameCt: row.keyCt,
      kind: "file",
      attrsCt: row.attrsCt,
      blobId: row.blobId,
      contentId: row.contentId,
      keyRef: row.keyRef,
      ownerId: row.ownerId,
    };
  }

  key(row: VersionRow): string {
    return this.#crypto.openName(row.id, row.keyCt);
  }

  async #nextSeq(tx: MetaTx, scope: VersionScope): Promise<number> {
    const newest = (await tx.listVersions(scope.dirId, scope.keyMac))[0];
    return (newest?.seq ?? 0) + 1;
  }

  /** Keeps `node`'s current content as a noncurrent version (its blob stays; nothing is credited). */
  async archive(tx: MetaTx, scope: VersionScope, node: NodeRow, attrs: FileAttrs): Promise<void> {
    const id = randomUUID();
    await tx.insertVersion({
      id,
      dirId: scope.dirId,
      keyMac: scope.keyMac,
      keyCt: this.#crypto.sealName(id, scope.key),
      versionId: attrs.versionId ?? "null",
      seq: await this.#nextSeq(tx, scope),
      marker: false,
      attrsCt: this.#crypto.sealAttrs(id, node.blobId, node.contentId, attrs),
      blobId: node.blobId,
      contentId: node.contentId,
      keyRef: node.keyRef,
      ownerId: node.ownerId,
    });
  }

  /** Puts a delete marker on top of the key's versions; returns its version id. */
  async marker(tx: MetaTx, scope: VersionScope, ownerId: string | null): Promise<string> {
    const id = randomUUID();
    const versionId = scope.state === "Enabled" ? newVersionId() : "null";
    await tx.insertVersion({
      id,
      dirId: scope.dirId,
      keyMac: scope.keyMac,
      keyCt: this.#crypto.sealName(id, scope.key),
      versionId,
      seq: await this.#nextSeq(tx, scope),
      marker: true,
      attrsCt: this.#crypto.sealAttrs(id, null, null, { size: 0, mtime: Date.now(), mode: 0 }),
      blobId: null,
      contentId: null,
      keyRef: null,
      ownerId,
    });
    return versionId;
  }

  /**
   * The key's current file inside `tx`, and the deepest existing folder on its way (to restore a version into),
   * found from the versioned folder down.
   */
  async current(tx: MetaTx, scope: VersionScope): Promise<{ node?: NodeRow; dirs: string[]; dirId: string }> {
    const names = split(scope.key);
    let dirId = scope.dirId;
    for (let i = 0; i < names.length - 1; i++) {
      const next = await this.#tree.child(dirId, names[i] as string, tx);
      if (next?.kind !== "dir") return { dirs: names.slice(i, -1), dirId };
      dirId = next.id;
    }
    const node = await this.#tree.child(dirId, names[names.length - 1] as string, tx);
    return { ...(node?.kind === "file" ? { node } : {}), dirs: [], dirId };
  }

  /**
   * Makes version `row` the key's current file again (the newest left after its successor was deleted): its folders
   * made as needed, its attributes sealed for the new node, the row gone. Usage is unchanged (it was counted).
   */
  async restore(tx: MetaTx, scope: VersionScope, row: VersionRow): Promise<void> {
    const names = split(scope.key);
    let dirId = scope.dirId;
    for (const name of names.slice(0, -1)) {
      const next = await this.#tree.child(dirId, name, tx);
      if (next) {
        dirId = next.id;
        continue;
      }
      const dir = this.#tree.newDir(dirId, name);
      await tx.insertNode(dir);
      dirId = dir.id;
    }
    const name = names[names.length - 1] as string;
    const attrs = this.#crypto.openAttrs(row.id, row.blobId, row.contentId, row.attrsCt);
    const id = randomUUID();
    await tx.deleteVersion(row.id);
    await tx.insertNode({
      id,
      parentId: dirId,
      nameMac: this.#crypto.nameMac(dirId, name),
      nameCt: this.#crypto.sealName(id, name),
      kind: "file",
      attrsCt: this.#crypto.sealAttrs(id, row.blobId, row.contentId, attrs),
      blobId: row.blobId,
      contentId: row.contentId,
      keyRef: row.keyRef,
      ownerId: row.ownerId,
    });
  }
}
