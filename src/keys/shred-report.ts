// `atrest keys shred-report --key K --version V`: what destroying one key version would make unreadable (crypto-
// shredding is a feature; this says exactly which files it takes before anyone approves the destruction).
import { KEY_CURSOR_START, type KeyCursor, type MetaStore } from "../store/types.ts";
import type { Tree } from "../vfs/tree.ts";
import { keyRange } from "./jobs.ts";
import { NodePaths } from "./node-paths.ts";

export interface ShredFile {
  path: string;
  size: number;
  owner: string | null;
  /** A kept (noncurrent) S3 version of the object at `path`: its version id. */
  versionId?: string;
}

export interface ShredReport {
  keyRef: string;
  files: ShredFile[];
  count: number;
  bytes: number;
}

/**
 * Files whose DEK is wrapped under exactly `kek:<key>:v<version>` (per the key refs recorded at upload and kept
 * current by rewrap), kept S3 versions included (with their version ids), with their global paths (decrypted), sizes
 * and owners, sorted by path.
 */
export async function shredReport(store: MetaStore, tree: Tree, key: string, version: number): Promise<ShredReport> {
  const keyRef = `kek:${key}:v${version}`;
  const range = { ...keyRange(key), from: keyRef, to: `${keyRef}\u0000` };
  const paths = new NodePaths(tree);
  const owners = new Map((await store.listUsers()).map((u) => [u.id, u.name]));
  const files: ShredFile[] = [];
  let cursor: KeyCursor = KEY_CURSOR_START;
  for (;;) {
    const rows = await store.filesByKeyRef(range, cursor, 1000);
    if (rows.length === 0) break;
    for (const { node, version } of rows) {
      const attrs = tree.attrs(node);
      files.push({
        path: await paths.of(node),
        size: attrs.size,
        owner: node.ownerId ? (owners.get(node.ownerId) ?? null) : null,
        ...(version ? { versionId: attrs.versionId ?? "null" } : {}),
      });
    }
    cursor = (rows[rows.length - 1] as (typeof rows)[number]).cursor;
  }
  files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { keyRef, files, count: files.length, bytes: files.reduce((n, f) => n + f.size, 0) };
}
