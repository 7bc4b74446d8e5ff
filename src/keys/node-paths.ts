// Global paths of file nodes (names decrypted), for reports. Directory paths are memoised: a report over many files
// in few directories costs one lookup per directory.
import type { NodeRow } from "../store/types.ts";
import type { Tree } from "../vfs/tree.ts";
import { ROOT_ID } from "../vfs/tree.ts";

export class NodePaths {
  readonly #tree: Tree;
  readonly #dirs = new Map<string, string>([[ROOT_ID, ""]]);

  constructor(tree: Tree) {
    this.#tree = tree;
  }

  async of(node: NodeRow): Promise<string> {
    const parent = node.parentId ? await this.#dir(node.parentId) : "";
    return `${parent}/${this.#tree.name(node)}`;
  }

  async #dir(id: string): Promise<string> {
    const known = this.#dirs.get(id);
    if (known !== undefined) return known;
    const node = await this.#tree.store.getNode(id);
    // A parent deleted under us (concurrent rmdir) cannot happen for a live file; show the id rather than fail.
    const path = node ? await this.of(node) : `/?${id}`;
    this.#dirs.set(id, path);
    return path;
  }
}
