// Which KEK wraps a new file's DEK (DESIGN §3): the most specific folder rule on the file's global path, else the
// writing user's own key, else the first of the user's groups (in the user's order) that has a key, else the server
// default. A file keeps its key when it is moved or renamed (its DEK is not rewrapped): `keys reencrypt` moves it.
import { AtrestError } from "../errors.ts";
import { isValidKeyName } from "../kms/api/key-ref.ts";
import type { GroupRow, MetaStore, UserRow } from "../store/types.ts";
import type { Folders } from "./folders.ts";

export interface KekChoice {
  key: string;
  /** Which rule chose it. */
  source: "folder" | "user" | "group" | "default" | "request";
  /** The folder path or group name behind the choice. */
  rule?: string;
}

/** How long the group registry is cached: `atrest group add` from another process is seen within this time. */
export const GROUP_CACHE_MS = 1000;

export class KekSelector {
  readonly #store: MetaStore;
  readonly #folders: Folders;
  readonly #defaultKey: string;
  readonly #now: () => number;
  #groups: Map<string, GroupRow> | undefined;
  #loadedAt = 0;

  constructor(store: MetaStore, folders: Folders, defaultKey: string, now: () => number = Date.now) {
    this.#store = store;
    this.#folders = folders;
    this.#defaultKey = defaultKey;
    this.#now = now;
  }

  get defaultKey(): string {
    return this.#defaultKey;
  }

  async choose(user: Pick<UserRow, "kek" | "groups"> | undefined, globalPath: string): Promise<KekChoice> {
    const folder = await this.#folders.match(globalPath);
    if (folder?.options.key) return { key: folder.options.key, source: "folder", rule: folder.path };
    if (user?.kek) return { key: user.kek, source: "user" };
    if (user && user.groups.length > 0) {
      const groups = await this.#groupMap();
      for (const name of user.groups) {
        const key = groups.get(name)?.options.key;
        if (key) return { key, source: "group", rule: name };
      }
    }
    return { key: this.#defaultKey, source: "default" };
  }

  /**
   * The key for a new file when the writer names one (S3 SSE-KMS): allowed when it is a key this user's writes could
   * get anyway (the folder rule's, the user's, one of the user's groups', the server default) or one the most specific
   * folder lists in `allowKeys`; anything else is PERMISSION_DENIED, before the key manager is asked. Without a
   * requested key, the rule (choose).
   */
  async chooseRequested(
    user: Pick<UserRow, "kek" | "groups"> | undefined,
    globalPath: string,
    requested: string | undefined,
  ): Promise<KekChoice> {
    const rule = await this.choose(user, globalPath);
    if (requested === undefined) return rule;
    if (!isValidKeyName(requested)) throw new AtrestError("INVALID_INPUT", "not a valid KMS key name");
    if (requested === rule.key) return rule;
    const folder = await this.#folders.match(globalPath);
    const allowed = new Set<string>([this.#defaultKey, ...(folder?.options.allowKeys ?? [])]);
    if (folder?.options.key) allowed.add(folder.options.key);
    if (user?.kek) allowed.add(user.kek);
    if (user && user.groups.length > 0) {
      const groups = await this.#groupMap();
      for (const name of user.groups) {
        const key = groups.get(name)?.options.key;
        if (key) allowed.add(key);
      }
    }
    if (!allowed.has(requested)) {
      throw new AtrestError("PERMISSION_DENIED", `KMS key ${requested} is not allowed for this user and folder`);
    }
    return { key: requested, source: "request", rule: folder?.path };
  }

  async #groupMap(): Promise<Map<string, GroupRow>> {
    if (!this.#groups || this.#now() - this.#loadedAt > GROUP_CACHE_MS) {
      this.#groups = new Map((await this.#store.listGroups()).map((g) => [g.name, g]));
      this.#loadedAt = this.#now();
    }
    return this.#groups;
  }
}
