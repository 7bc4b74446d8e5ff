// Virtual folders: subtrees of the global tree with options (KEK rule, OpenPGP settings). The longest matching
// folder applies to a path. Folder paths are global (`/shared/outbox`), not a user's view: a user whose home is
// `/alice` writes `/docs/x` at the global path `/alice/docs/x`.
import { AtrestError } from "../errors.ts";
import { assertKeyName } from "../kms/api/key-ref.ts";
import type { FolderOptions, FolderRow, MetaStore } from "../store/types.ts";
import { isWithin, normalize } from "./paths.ts";

/** How long a cached folder list is trusted: `atrest folder add` from another process is seen within this time. */
export const FOLDER_CACHE_MS = 1000;

/** The global path of a user-view path (the user's home is their `/`). */
export function globalPath(home: string, userPath: string): string {
  const p = normalize(userPath);
  const h = normalize(home);
  if (h === "/") return p;
  return p === "/" ? h : `${h}${p}`;
}

export function normalizeFolderPath(path: string): string {
  if (!path.startsWith("/")) throw new AtrestError("INVALID_INPUT", `folder path must be absolute: ${path}`);
  const p = normalize(path);
  if (p === "/") throw new AtrestError("INVALID_INPUT", "the root cannot be a folder: set a server default instead");
  return p;
}

export function validateFolderOptions(options: FolderOptions): void {
  if (options.key !== undefined) assertKeyName(options.key);
  for (const k of options.allowKeys ?? []) assertKeyName(k);
}

export class Folders {
  readonly #store: MetaStore;
  readonly #now: () => number;
  #cache: FolderRow[] | undefined;
  #loadedAt = 0;

  constructor(store: MetaStore, now: () => number = Date.now) {
    this.#store = store;
    this.#now = now;
  }

  async list(): Promise<FolderRow[]> {
    if (!this.#cache || this.#now() - this.#loadedAt > FOLDER_CACHE_MS) {
      const rows = await this.#store.listFolders();
      // Longest first, so the first match is the most specific folder.
      this.#cache = rows.sort((a, b) => b.path.length - a.path.length);
      this.#loadedAt = this.#now();
    }
    return this.#cache;
  }

  /** The most specific folder containing `path` (a global path), if any. */
  async match(path: string): Promise<FolderRow | undefined> {
    for (const folder of await this.list()) {
      if (isWithin(path, folder.path)) return folder;
    }
    return undefined;
  }

  /** Creates the folder, or replaces its options when it exists. */
  async put(path: string, options: FolderOptions): Promise<FolderRow> {
    const p = normalizeFolderPath(path);
    validateFolderOptions(options);
    const existing = await this.#store.getFolder(p);
    const row: FolderRow = { path: p, options, createdAt: existing?.createdAt ?? new Date().toISOString() };
    await this.#store.transaction((tx) => tx.putFolder(row));
    this.#cache = undefined;
    return row;
  }

  async remove(path: string): Promise<void> {
    const p = normalizeFolderPath(path);
    const removed = await this.#store.transaction((tx) => tx.deleteFolder(p));
    this.#cache = undefined;
    if (!removed) throw new AtrestError("NOT_FOUND", `no such folder: ${p}`);
  }
}
