import { randomUUID } from "node:crypto";
import { AtrestError, NotFoundError } from "../errors.ts";
import type { MetaStore, NodeReads, NodeRow } from "../store/types.ts";
import type { FileAttrs, MetaCrypto } from "./meta-crypto.ts";
import { split } from "./paths.ts";
import type { FileStat } from "./types.ts";

export const ROOT_ID = "root";

/** Opened names kept (about 150 bytes each: ~15 MB at most). */
const NAME_CACHE_ENTRIES = 100_000;
/** Names held by the cache of sorted folders (all folders together). */
const SORTED_CACHE_NAMES = 100_000;

/** A folder's children sorted by name: what paging a folder by name reads instead of every child's sealed name. */
export type SortedChildren = readonly { readonly name: string; readonly id: string }[];

/** Path lookups over the encrypted node table: one indexed query per path component. */
export class Tree {
  readonly store: MetaStore;
  readonly crypto: MetaCrypto;
  readonly #names = new Map<string, { ct: Buffer; name: string }>();
  /** dir id → its children sorted by name, valid while the store's childNamesDigest is `digest` */
  readonly #sorted = new Map<string, { digest: string; names: SortedChildren }>();
  #sortedNames = 0;

  constructor(store: MetaStore, crypto: MetaCrypto) {
    this.store = store;
    this.crypto = crypto;
  }

  /** Inside a transaction pass its handle as `reads`: the lookup then runs on the transaction's connection. */
  child(parentId: string, name: string, reads: NodeReads = this.store): Promise<NodeRow | undefined> {
    return reads.findChild(parentId, this.crypto.nameMac(parentId, name));
  }

  /** Resolves `path` below the node `rootId`; NOT_FOUND if any component is missing. */
  async resolve(rootId: string, path: string): Promise<NodeRow> {
    let node = await this.store.getNode(rootId);
    if (!node) throw new NotFoundError(path);
    for (const name of split(path)) {
      if (node.kind !== "dir") throw new AtrestError("NOT_A_DIRECTORY", `not a directory: ${path}`);
      const next = await this.child(node.id, name);
      if (!next) throw new NotFoundError(path);
      node = next;
    }
    return node;
  }

  async resolveDir(rootId: string, path: string): Promise<NodeRow> {
    const node = await this.resolve(rootId, path);
    if (node.kind !== "dir") throw new AtrestError("NOT_A_DIRECTORY", `not a directory: ${path}`);
    return node;
  }

  attrs(node: NodeRow): FileAttrs {
    return this.crypto.openAttrs(node.id, node.blobId, node.contentId, node.attrsCt);
  }

  /** The node as the doors see it: kind, size, times, mode and its S3 metadata. */
  stat(node: NodeRow): FileStat {
    const a = this.attrs(node);
    const st: FileStat = { kind: node.kind, size: a.size, mtime: a.mtime, mode: a.mode };
    if (a.object) st.object = a.object;
    if (a.versionId !== undefined) st.versionId = a.versionId;
    return st;
  }

  /**
   * The node's name, from a bounded cache of opened names when the sealed name is the one opened before (the cache
   * holds each entry's ciphertext, so a rename, a re-seal or another node's change is never served stale): sorting a
   * 10,000-entry folder by name opened every name on every request (72 ms CPU of 230 per page).
   */
  name(node: Pick<NodeRow, "id" | "nameCt">): string {
    const hit = this.#names.get(node.id);
    if (hit?.ct.equals(node.nameCt)) return hit.name;
    const name = this.crypto.openName(node.id, node.nameCt);
    if (hit) this.#names.delete(node.id);
    else if (this.#names.size >= NAME_CACHE_ENTRIES) {
      // oldest first (insertion order): a bound, not an LRU; a folder listed again refills what it lost
      this.#names.delete(this.#names.keys().next().value as string);
    }
    this.#names.set(node.id, { ct: Buffer.from(node.nameCt), name });
    return name;
  }

  /**
   * The folder's children sorted by name when it was sorted last under the same names digest
   * (store.childNamesDigest: its count and MACs, any node's change shows in it), else undefined.
   */
  sortedChildren(dirId: string, digest: string): SortedChildren | undefined {
    const hit = this.#sorted.get(dirId);
    return hit?.digest === digest ? hit.names : undefined;
  }

  keepSorted(dirId: string, digest: string, names: SortedChildren): void {
    this.forgetSorted(dirId);
    if (names.length > SORTED_CACHE_NAMES) return;
    // oldest folder first, as for the names: a bound, not an LRU
    for (const [id, e] of this.#sorted) {
      if (this.#sortedNames + names.length <= SORTED_CACHE_NAMES) break;
      this.#sorted.delete(id);
      this.#sortedNames -= e.names.length;
    }
    this.#sorted.set(dirId, { digest, names });
    this.#sortedNames += names.length;
  }

  forgetSorted(dirId: string): void {
    const e = this.#sorted.get(dirId);
    if (!e) return;
    this.#sorted.delete(dirId);
    this.#sortedNames -= e.names.length;
  }

  newDir(parentId: string, name: string, mtime = Date.now()): NodeRow {
    const id = randomUUID();
    return {
      id,
      parentId,
      nameMac: this.crypto.nameMac(parentId, name),
      nameCt: this.crypto.sealName(id, name),
      kind: "dir",
      attrsCt: this.crypto.sealAttrs(id, null, null, { size: 0, mtime, mode: 0o755 }),
      blobId: null,
      contentId: null,
      keyRef: null,
      ownerId: null,
    };
  }

  /** Creates missing directories along a global path (homes); returns the last one's id. */
  async ensureDirs(path: string): Promise<string> {
    return this.store.transaction(async (tx) => {
      let id = ROOT_ID;
      for (const name of split(path)) {
        const existing = await this.child(id, name, tx);
        if (existing) {
          if (existing.kind !== "dir") throw new AtrestError("NOT_A_DIRECTORY", `not a directory: ${path}`);
          id = existing.id;
          continue;
        }
        const dir = this.newDir(id, name);
        await tx.insertNode(dir);
        id = dir.id;
      }
      return id;
    });
  }

  /**
   * The path of node `nodeId` below `rootId` (`/` for the root itself), or undefined when the node is gone or not
   * below it (moved out, deleted). Names are opened from their ciphertext on the way up.
   */
  async pathOf(rootId: string, nodeId: string): Promise<string | undefined> {
    const names: string[] = [];
    let node = await this.store.getNode(nodeId);
    for (let depth = 0; node && depth < 4096; depth++) {
      if (node.id === rootId) return `/${names.reverse().join("/")}`;
      names.push(this.name(node));
      node = node.parentId ? await this.store.getNode(node.parentId) : undefined;
    }
    return undefined;
  }

  /** True if `ancestorId` is `nodeId` or one of its ancestors (a directory cannot move into itself). */
  async isAncestor(ancestorId: string, nodeId: string): Promise<boolean> {
    let id: string | null = nodeId;
    while (id) {
      if (id === ancestorId) return true;
      id = (await this.store.getNode(id))?.parentId ?? null;
    }
    return false;
  }
}
