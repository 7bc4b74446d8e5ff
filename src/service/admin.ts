// Admin use-cases every door calls (the CLI today; the HTTPS API and web app next): each takes the acting user, checks
// the role (DESIGN §2: admin manages users, groups and folders; auditor may read them), makes the change and audits it
// with the actor as job user and the target user, where there is one, as effective user.
import type { AuditSink } from "../audit/types.ts";
import { AtrestError } from "../errors.ts";
import { assertKeyName } from "../kms/api/key-ref.ts";
import type { PgpKeyStore } from "../pgp/keystore.ts";
import type { BanRow, FolderOptions, FolderRow, GroupOptions, GroupRow, MetaStore, UserRow } from "../store/types.ts";
import { ROOT_ID } from "../vfs/tree.ts";
import type { Permission } from "../vfs/types.ts";
import type { Vfs } from "../vfs/vfs.ts";
import { type Actor, actorFields, requireRole } from "./actor.ts";
import { liftBans } from "./defender.ts";
import type { LiveSession } from "./login.ts";
import {
  buildUser,
  type NewUser,
  validateGroupName,
  validateHome,
  validatePermissions,
  validateQuotas,
} from "./users.ts";

/** What an admin may change of a user; absent fields stay as they are. */
export interface UserChange {
  home?: string;
  permissions?: Record<string, Permission[]>;
  groups?: string[];
  quotaBytes?: number;
  quotaFiles?: number;
  requireTotp?: boolean;
  disabled?: boolean;
}

/** The live connections of this process (service/login.ts), for the use-cases that end them. */
export interface LiveSessions {
  endUser(username: string, why?: string, which?: (live: LiveSession) => boolean): number;
}

export interface AdminDeps {
  store: MetaStore;
  vfs: Pick<Vfs, "tree" | "folders">;
  audit: AuditSink;
  pgp: PgpKeyStore;
}

const MANAGE = ["admin"] as const;
const READ = ["admin", "auditor"] as const;

export class Admin {
  readonly #d: AdminDeps;

  constructor(deps: AdminDeps) {
    this.#d = deps;
  }

  async addUser(actor: Actor, input: NewUser): Promise<UserRow> {
    requireRole(actor, MANAGE, "adding a user");
    const user = await buildUser(input);
    if (await this.#holdsFilesOfRemovedUsers(user.home)) {
      // Files belong to user ids, not names: a new user of an old name must not inherit the old user's files.
      throw new AtrestError(
        "EXISTS",
        `home ${user.home} holds files of a removed user: give the new user another home (--home), or move or remove those files first`,
      );
    }
    await this.#d.store.transaction(async (tx) => {
      if (await tx.getUser(user.name)) throw new AtrestError("EXISTS", `user ${user.name} already exists`);
      await tx.insertUser(user);
    });
    await this.#d.vfs.tree.ensureDirs(user.home);
    this.#d.audit.record({ action: "user.add", outcome: "success", ...actorFields(actor), effectiveUser: user.name });
    return user;
  }

  /** True when a file under the global path `home` is charged to a user id that no longer exists. */
  async #holdsFilesOfRemovedUsers(home: string): Promise<boolean> {
    const { store, vfs } = this.#d;
    const top = await vfs.tree.resolve(ROOT_ID, home).catch(() => undefined);
    if (!top) return false;
    const ids = new Set((await store.listUsers()).map((u) => u.id));
    const pending = [top];
    for (let node = pending.pop(); node; node = pending.pop()) {
      if (node.kind === "file") {
        if (node.ownerId && !ids.has(node.ownerId)) return true;
      } else pending.push(...(await store.listChildren(node.id)));
    }
    return false;
  }

  async removeUser(actor: Actor, name: string): Promise<void> {
    requireRole(actor, MANAGE, "removing a user");
    const removed = await this.#d.store.transaction(async (tx) => {
      const user = await tx.getUser(name);
      // the user's share links die with them
      if (user) await tx.deleteSharesOf(user.id);
      return tx.deleteUser(name);
    });
    if (!removed) throw new AtrestError("NOT_FOUND", `no such user: ${name}`);
    this.#d.audit.record({ action: "user.remove", outcome: "success", ...actorFields(actor), effectiveUser: name });
  }

  /** Requires (or stops requiring) a TOTP code at this user's password logins; audited as user.change. */
  setUserRequireTotp(actor: Actor, name: string, required: boolean): Promise<UserRow> {
    return this.changeUser(actor, name, { requireTotp: required });
  }

  /**
   * Changes what `change` names of a user (the rest stays), audited as one user.change saying what changed. A
   * disabled user's connections end (`live`: this process's at once; other processes' sweeps within seconds); a new
   * home or permissions end their live connections but HTTPS ones (which read the user at each request), so no SFTP
   * or S3 connection keeps working under the old rules. Files stay where they are: a new home does not move them.
   */
  async changeUser(actor: Actor, name: string, change: UserChange, live?: LiveSessions): Promise<UserRow> {
    requireRole(actor, MANAGE, "changing a user");
    if (change.home !== undefined) validateHome(change.home);
    if (change.permissions !== undefined) validatePermissions(change.permissions);
    for (const g of change.groups ?? []) validateGroupName(g);
    validateQuotas(change.quotaBytes, change.quotaFiles);
    if (change.disabled && actor.user === name) {
      throw new AtrestError("REFUSED", "an admin cannot disable their own account (another admin can)");
    }
    if (change.home !== undefined && (await this.#holdsFilesOfRemovedUsers(change.home))) {
      throw new AtrestError("EXISTS", `home ${change.home} holds files of a removed user: choose another home`);
    }
    const said: string[] = [];
    const user = await this.#d.store.transaction(async (tx) => {
      const u = await tx.getUser(name);
      if (!u) throw new AtrestError("NOT_FOUND", `no such user: ${name}`);
      const { requireTotp: _t, disabled: _d, ...rest } = u;
      const next: UserRow = { ...rest };
      const flag = (f: "requireTotp" | "disabled", v: boolean | undefined) => {
        if (v ?? u[f]) next[f] = true;
        if (v !== undefined) said.push(`${f} ${v}`);
      };
      if (change.home !== undefined) {
        next.home = change.home;
        said.push(`home ${change.home}`);
      }
      if (change.permissions !== undefined) {
        next.permissions = change.permissions;
        said.push(`permissions ${JSON.stringify(change.permissions)}`);
      }
      if (change.groups !== undefined) {
        next.groups = [...new Set(change.groups)].sort();
        said.push(`groups ${next.groups.join(",") || "(none)"}`);
      }
      for (const q of ["quotaBytes", "quotaFiles"] as const) {
        const v = change[q];
        if (v === undefined) continue;
        next[q] = v;
        said.push(`${q} ${v}`);
      }
      flag("requireTotp", change.requireTotp);
      flag("disabled", change.disabled);
      await tx.updateUser(next);
      return next;
    });
    if (change.home !== undefined) await this.#d.vfs.tree.ensureDirs(user.home);
    this.#d.audit.record({
      action: "user.change",
      outcome: "success",
      ...actorFields(actor),
      effectiveUser: name,
      detail: said.join("; ") || "nothing",
    });
    if (user.disabled) live?.endUser(name, "user disabled");
    else if (change.home !== undefined || change.permissions !== undefined) {
      live?.endUser(name, "home or permissions changed", (s) => s.protocol !== "http");
    }
    return user;
  }

  /**
   * Ends every live connection of `name` in this process, through every door (browser sessions, SFTP connections,
   * S3 requests in flight), as `user rm` ends them; audited as user.change. Returns how many ended.
   */
  async endSessions(actor: Actor, name: string, live: LiveSessions): Promise<number> {
    requireRole(actor, MANAGE, "ending a user's sessions");
    if (!(await this.#d.store.getUser(name))) throw new AtrestError("NOT_FOUND", `no such user: ${name}`);
    const ended = live.endUser(name, `sessions ended by ${actor.user}`);
    this.#d.audit.record({
      action: "user.change",
      outcome: "success",
      ...actorFields(actor),
      effectiveUser: name,
      detail: `sessions ended (${ended})`,
    });
    return ended;
  }

  /** Replaces a user's groups (an identity provider's group claim at login), audited as user.change. */
  async setUserGroups(actor: Actor, name: string, groups: string[]): Promise<UserRow> {
    requireRole(actor, MANAGE, "changing a user");
    for (const g of groups) validateGroupName(g);
    const user = await this.#d.store.transaction(async (tx) => {
      const u = await tx.getUser(name);
      if (!u) throw new AtrestError("NOT_FOUND", `no such user: ${name}`);
      const next = { ...u, groups: [...new Set(groups)].sort() };
      await tx.updateUser(next);
      return next;
    });
    this.#d.audit.record({
      action: "user.change",
      outcome: "success",
      ...actorFields(actor),
      effectiveUser: name,
      detail: `groups ${user.groups.join(",") || "(none)"}`,
    });
    return user;
  }

  async listUsers(actor: Actor): Promise<UserRow[]> {
    requireRole(actor, READ, "listing users");
    return this.#d.store.listUsers();
  }

  /** Creates a group or replaces its options. */
  async putGroup(actor: Actor, name: string, options: GroupOptions): Promise<GroupRow> {
    requireRole(actor, MANAGE, "changing a group");
    validateGroupName(name);
    if (options.key !== undefined) assertKeyName(options.key);
    const existing = await this.#d.store.getGroup(name);
    const row: GroupRow = { name, options, createdAt: existing?.createdAt ?? new Date().toISOString() };
    await this.#d.store.transaction((tx) => tx.putGroup(row));
    this.#event(actor, "group.change", name, existing ? `options ${JSON.stringify(options)}` : "created");
    return row;
  }

  /** Removes a group from the registry; members keep the name in their group list until changed. */
  async removeGroup(actor: Actor, name: string): Promise<void> {
    requireRole(actor, MANAGE, "removing a group");
    const removed = await this.#d.store.transaction((tx) => tx.deleteGroup(name));
    if (!removed) throw new AtrestError("NOT_FOUND", `no such group: ${name}`);
    this.#event(actor, "group.change", name, "removed");
  }

  async listGroups(actor: Actor): Promise<GroupRow[]> {
    requireRole(actor, READ, "listing groups");
    return this.#d.store.listGroups();
  }

  /** Creates a folder (and its directory in the tree) or replaces its options. */
  async putFolder(actor: Actor, path: string, options: FolderOptions): Promise<FolderRow> {
    requireRole(actor, MANAGE, "changing a folder");
    const row = await this.#d.vfs.folders.put(path, options);
    await this.#d.vfs.tree.ensureDirs(row.path);
    this.#event(actor, "folder.change", row.path, `options ${JSON.stringify(options)}`);
    return row;
  }

  /** Removes the folder rule; the directory and its files stay. */
  async removeFolder(actor: Actor, path: string): Promise<void> {
    requireRole(actor, MANAGE, "removing a folder");
    await this.#d.vfs.folders.remove(path);
    this.#event(actor, "folder.change", path, "removed");
  }

  async listFolders(actor: Actor): Promise<FolderRow[]> {
    requireRole(actor, READ, "listing folders");
    return this.#d.store.listFolders();
  }

  /** The OpenPGP key store (keys of users and groups, organisation key, trust), its changes audited as `actor`. */
  pgp(actor: Actor): PgpKeyStore {
    requireRole(actor, MANAGE, "managing OpenPGP keys");
    return this.#d.pgp.actingAs(actorFields(actor));
  }

  /** The brute-force defender's bans (ended ones included: they set the next ban's length). */
  async listBans(actor: Actor): Promise<BanRow[]> {
    requireRole(actor, READ, "listing bans");
    return this.#d.store.listBans();
  }

  /** Lifts the bans on an IP or user name (audited as `actor`); a running server sees it at the next attempt. */
  unban(actor: Actor, subject: string): Promise<BanRow[]> {
    requireRole(actor, MANAGE, "lifting a ban");
    return liftBans(this.#d.store, this.#d.audit, actor, subject);
  }

  #event(actor: Actor, action: "group.change" | "folder.change", target: string, detail: string): void {
    this.#d.audit.record({ action, outcome: "success", ...actorFields(actor), target, detail });
  }
}
