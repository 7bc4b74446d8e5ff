import { type AuditAction, type AuditEvent, commitEvent } from "../audit/types.ts";
import { AtrestError, NotFoundError } from "../errors.ts";
import { parseKeyRef } from "../kms/api/key-ref.ts";
import type { MetaTx, NodeRow, UserRow, VersioningState } from "../store/types.ts";
import { globalPath } from "./folders.ts";
import { normalize, parentAndName } from "./paths.ts";
import { Permissions } from "./permissions.ts";
import { verifyCustomerKey } from "./sse-c.ts";
import type { SortedChildren } from "./tree.ts";
import type {
  CompletedMultipart,
  DirEncryption,
  DirEntry,
  DirPage,
  FileKey,
  FileStat,
  MultipartOptions,
  MultipartPart,
  MultipartUploadInfo,
  ObjectMeta,
  OpenReadOptions,
  OpenWriteOptions,
  PartHandle,
  Precondition,
  QuotaInfo,
  ReadHandle,
  RemovedVersion,
  SessionInfo,
  SetAttrs,
  VersionEntry,
  VfsSession,
  WriteHandle,
} from "./types.ts";
import { DIR_RECORD_KINDS, type DirRecordKind, type Vfs, type Writer } from "./vfs.ts";

/** Settings key of a directory's default encryption: by node id, so no name is stored in the clear. */
function encryptionSetting(dirId: string): string {
  return `dir.encryption:${dirId}`;
}

function parseDirEncryption(raw: Buffer): DirEncryption | undefined {
  const v = JSON.parse(raw.toString("utf8")) as DirEncryption;
  return v.algorithm === "AES256" || v.algorithm === "aws:kms" ? v : undefined;
}

/** [size, count] runs of a list of part sizes (awscli's parts are all one size but the last: two runs). */
function runLength(sizes: number[]): [number, number][] {
  const out: [number, number][] = [];
  for (const s of sizes) {
    const last = out.at(-1);
    if (last && last[0] === s) last[1]++;
    else out.push([s, 1]);
  }
  return out;
}

/** One user's view: their home is `/`, every operation checks that user's per-path permissions. */
export class Session implements VfsSession {
  readonly username: string;
  readonly #vfs: Vfs;
  readonly #user: UserRow;
  readonly #rootId: string;
  readonly #perms: Permissions;
  readonly #info: SessionInfo;
  readonly #writers = new Set<WriteHandle>();
  readonly #readers = new Set<ReadHandle>();

  constructor(vfs: Vfs, user: UserRow, rootId: string, info: SessionInfo) {
    this.#vfs = vfs;
    this.#user = user;
    this.username = user.name;
    this.#rootId = rootId;
    this.#perms = new Permissions(user.permissions);
    this.#info = info;
  }

  /** The global path (folder rules, triggers) of a path in this user's view. */
  globalPath(path: string): string {
    return globalPath(this.#user.home, path);
  }

  #event(path: string): Omit<AuditEvent, "action" | "outcome"> {
    return {
      user: this.#info.jobUser ?? this.#user.name,
      effectiveUser: this.#user.name,
      protocol: this.#info.protocol,
      sourceIp: this.#info.sourceIp,
      sessionId: this.#info.sessionId,
      path,
    };
  }

  /** Records a failed operation (reason = error code, never the message) and returns the error to rethrow. */
  #failed(action: AuditAction, path: string, err: unknown, extra?: Partial<AuditEvent>): unknown {
    const reason = err instanceof AtrestError ? err.code : "INTERNAL";
    this.#vfs.audit.record({ ...this.#event(path), ...extra, action, outcome: "failure", reason });
    return err;
  }

  /** Refuses every operation once the user is removed (by id: a new user of the same name is someone else). */
  async #live(): Promise<void> {
    if (!(await this.#vfs.store.getUserById(this.#user.id))) {
      throw new AtrestError("PERMISSION_DENIED", `user ${this.#user.name} no longer exists`);
    }
  }

  /**
   * Runs an operation and records its audit event, with the failure reason when it fails. With fail-closed audit the
   * operation starts only when the log can take records (admit) and returns only once its record is durable (commit);
   * if that last step fails the change is made and its record stays queued for retry, and the caller is refused.
   */
  async #audited<T>(action: AuditAction, path: string, fn: () => Promise<T>, extra?: Partial<AuditEvent>): Promise<T> {
    let result: T;
    try {
      await this.#vfs.audit.admit?.();
      await this.#live();
      result = await fn();
    } catch (err) {
      throw this.#failed(action, path, err, extra);
    }
    await commitEvent(this.#vfs.audit, { ...this.#event(path), ...extra, action, outcome: "success" });
    return result;
  }

  #resolve(path: string): Promise<NodeRow> {
    return this.#vfs.tree.resolve(this.#rootId, path);
  }

  #stat(node: NodeRow): FileStat {
    return this.#vfs.tree.stat(node);
  }

  async stat(path: string): Promise<FileStat> {
    const p = normalize(path);
    await this.#live();
    // Stat of a directory's entries is part of listing its parent; the home itself is always visible.
    if (p !== "/") this.#perms.require(parentAndName(p).parent, "list");
    return this.#stat(await this.#resolve(p));
  }

  /**
   * Version `versionId` of the file at `p` (versioned folders) as a node to read: the current file when it is that
   * version, else the noncurrent row. NOT_FOUND for none, and for a delete marker (#versionRow tells markers apart).
   */
  async #version(p: string, versionId: string): Promise<NodeRow> {
    const found = await this.#versionRow(p, versionId);
    if (found === "marker") throw new NotFoundError("the version is a delete marker");
    return found;
  }

  async #versionRow(p: string, versionId: string): Promise<NodeRow | "marker"> {
    const found = await this.#vfs.versions.scopeOfPath(this.#rootId, p);
    const scope = found.scope;
    // outside a versioned folder the lookup stops early: the file itself is the version "null"
    const node = found.node ?? (await this.#resolve(p).catch(() => undefined));
    if (node?.kind === "file" && (this.#vfs.tree.attrs(node).versionId ?? "null") === versionId) return node;
    const row = scope ? await this.#vfs.store.getVersion(scope.dirId, scope.keyMac, versionId) : undefined;
    if (!row) throw new NotFoundError("no such version");
    return row.marker ? "marker" : this.#vfs.versions.asNode(row);
  }

  async statVersion(path: string, versionId: string): Promise<{ stat: FileStat; deleteMarker: boolean }> {
    const p = normalize(path);
    await this.#live();
    this.#perms.require(parentAndName(p).parent, "list");
    const found = await this.#versionRow(p, versionId);
    if (found === "marker")
      return { stat: { kind: "file", size: 0, mtime: 0, mode: 0, versionId }, deleteMarker: true };
    return { stat: this.#stat(found), deleteMarker: false };
  }

  async getDirRecord<T>(path: string, kind: DirRecordKind): Promise<T | undefined> {
    const p = normalize(path);
    await this.#live();
    this.#perms.require(p, "list");
    const dir = await this.#vfs.tree.resolveDir(this.#rootId, p);
    return this.#vfs.dirRecord<T>(dir.id, kind);
  }

  async setDirRecord(path: string, kind: DirRecordKind, value: unknown, detail: string): Promise<void> {
    const p = normalize(path);
    await this.#audited(
      "attrs.change",
      p,
      async () => {
        this.#perms.require(p, "mkdir");
        const dir = await this.#vfs.tree.resolveDir(this.#rootId, p);
        await this.#vfs.setDirRecord(dir.id, kind, value);
      },
      { detail },
    );
  }

  async getVersioning(path: string): Promise<VersioningState | undefined> {
    const p = normalize(path);
    await this.#live();
    this.#perms.require(p, "list");
    const dir = await this.#vfs.tree.resolveDir(this.#rootId, p);
    return this.#vfs.store.getVersioning(dir.id);
  }

  async setVersioning(path: string, state: VersioningState): Promise<void> {
    const p = normalize(path);
    await this.#audited(
      "attrs.change",
      p,
      async () => {
        this.#perms.require(p, "mkdir");
        if (state !== "Enabled" && state !== "Suspended") {
          throw new AtrestError("INVALID_INPUT", "versioning is Enabled or Suspended");
        }
        const dir = await this.#vfs.tree.resolveDir(this.#rootId, p);
        await this.#vfs.store.transaction((tx) => tx.setVersioning(dir.id, state));
        this.#vfs.versions.invalidate();
      },
      { detail: `versioning ${state}` },
    );
  }

  async listVersions(path: string, prefix: string): Promise<VersionEntry[]> {
    const p = normalize(path);
    await this.#live();
    this.#perms.require(p, "list");
    const dir = await this.#vfs.tree.resolveDir(this.#rootId, p);
    const out: VersionEntry[] = [];
    for (const row of await this.#vfs.store.listVersions(dir.id)) {
      const key = this.#vfs.versions.key(row);
      if (!key.startsWith(prefix)) continue;
      const stat = row.marker
        ? { kind: "file" as const, ...this.#vfs.tree.attrs(this.#vfs.versions.asNode(row)), versionId: row.versionId }
        : { ...this.#stat(this.#vfs.versions.asNode(row)), versionId: row.versionId };
      out.push({ key, versionId: row.versionId, deleteMarker: row.marker, seq: row.seq, stat });
    }
    return out;
  }

  async deleteMarkerOf(path: string): Promise<string | undefined> {
    const p = normalize(path);
    await this.#live();
    this.#perms.require(parentAndName(p).parent, "list");
    const { scope, node } = await this.#vfs.versions.scopeOfPath(this.#rootId, p);
    if (!scope || node) return undefined;
    const newest = (await this.#vfs.store.listVersions(scope.dirId, scope.keyMac))[0];
    return newest?.marker ? newest.versionId : undefined;
  }

  async deleteVersioned(path: string): Promise<RemovedVersion | undefined> {
    const p = normalize(path);
    // outside a versioned folder nothing happens here (and nothing is audited): the caller deletes as usual
    await this.#live();
    if (!(await this.#vfs.versions.scopeOfPath(this.#rootId, p)).scope) return undefined;
    let result: RemovedVersion | undefined;
    await this.#audited("delete", p, async () => {
      this.#perms.require(p, "delete");
      const { scope, node } = await this.#vfs.versions.scopeOfPath(this.#rootId, p);
      if (!scope) throw new NotFoundError(p);
      if (node?.kind === "dir") throw new AtrestError("IS_A_DIRECTORY", `is a directory: ${p}`);
      result = node ? await this.#vfs.removeFile(node) : await this.#vfs.addDeleteMarker(scope, this.#user.id);
    });
    return result;
  }

  async removeVersion(path: string, versionId: string): Promise<RemovedVersion> {
    const p = normalize(path);
    let result: RemovedVersion = { versionId, deleteMarker: false };
    await this.#audited(
      "delete",
      p,
      async () => {
        this.#perms.require(p, "delete");
        const { scope } = await this.#vfs.versions.scopeOfPath(this.#rootId, p);
        if (!scope) {
          const node = await this.#resolve(p).catch(() => undefined);
          // an unversioned folder: its files are the version "null"
          if (versionId !== "null" || node?.kind !== "file") throw new NotFoundError("no such version");
          await this.#vfs.removeFile(node);
          return;
        }
        result = await this.#vfs.removeVersion(scope, versionId);
      },
      { detail: `version ${versionId}` },
    );
    return result;
  }

  async nodeId(path: string): Promise<string> {
    const p = normalize(path);
    await this.#live();
    if (p !== "/") this.#perms.require(parentAndName(p).parent, "list");
    return (await this.#resolve(p)).id;
  }

  async pathOf(id: string): Promise<string | undefined> {
    await this.#live();
    return this.#vfs.tree.pathOf(this.#rootId, id);
  }

  async getEncryption(path: string): Promise<DirEncryption | undefined> {
    const p = normalize(path);
    await this.#live();
    this.#perms.require(p, "list");
    const dir = await this.#vfs.tree.resolveDir(this.#rootId, p);
    const raw = await this.#vfs.store.getSetting(encryptionSetting(dir.id));
    return raw ? parseDirEncryption(raw) : undefined;
  }

  async setEncryption(path: string, value: DirEncryption | undefined): Promise<void> {
    const p = normalize(path);
    const detail = value
      ? `encryption ${value.algorithm}${value.key ? ` key ${value.key}` : ""}`
      : "encryption removed";
    await this.#audited(
      "attrs.change",
      p,
      async () => {
        this.#perms.require(p, "mkdir");
        const dir = await this.#vfs.tree.resolveDir(this.#rootId, p);
        if (!value) {
          await this.#vfs.store.transaction((tx) => tx.deleteSetting(encryptionSetting(dir.id)));
          return;
        }
        if (value.algorithm !== "AES256" && value.algorithm !== "aws:kms") {
          throw new AtrestError("INVALID_INPUT", "encryption algorithm must be AES256 or aws:kms");
        }
        if (value.key !== undefined) {
          if (value.algorithm !== "aws:kms") throw new AtrestError("INVALID_INPUT", "a key goes with aws:kms only");
          await this.#vfs.kek.chooseRequested(this.#user, this.globalPath(`${p === "/" ? "" : p}/x`), value.key);
        }
        const stored: DirEncryption = { algorithm: value.algorithm, ...(value.key ? { key: value.key } : {}) };
        const raw = Buffer.from(JSON.stringify(stored));
        await this.#vfs.store.transaction((tx) => tx.setSetting(encryptionSetting(dir.id), raw));
      },
      { detail },
    );
  }

  async keyOf(path: string, customerKey?: Buffer, versionId?: string): Promise<FileKey | undefined> {
    const p = normalize(path);
    await this.#live();
    if (p !== "/") this.#perms.require(parentAndName(p).parent, "list");
    const node = versionId === undefined ? await this.#resolve(p) : await this.#version(p, versionId);
    const kek = node.keyRef ? parseKeyRef(node.keyRef)?.name : undefined;
    if (node.kind !== "file" || !kek) return undefined;
    const { ssec } = this.#vfs.tree.attrs(node);
    verifyCustomerKey(ssec, customerKey);
    // Named by its writer (S3 SSE-KMS) when it is not the key the rule gives the owner here.
    const owner = node.ownerId ? await this.#vfs.store.getUserById(node.ownerId) : undefined;
    const rule = await this.#vfs.kek.choose(owner, this.globalPath(p));
    return { kek, requested: rule.key !== kek, customerKey: ssec !== undefined };
  }

  async list(path: string): Promise<DirEntry[]> {
    const p = normalize(path);
    await this.#live();
    this.#perms.require(p, "list");
    const dir = await this.#vfs.tree.resolveDir(this.#rootId, p);
    const rows = await this.#vfs.store.listChildren(dir.id);
    return rows
      .map((row) => ({ name: this.#vfs.tree.name(row), stat: this.#stat(row) }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async listSorted(path: string, after: string | undefined, limit: number) {
    const p = normalize(path);
    await this.#live();
    this.#perms.require(p, "list");
    const dir = await this.#vfs.tree.resolveDir(this.#rootId, p);
    const tree = this.#vfs.tree;
    for (let attempt = 0; ; attempt++) {
      // The folder sorted by name: reused while the store's digest of its children's names is unchanged (one
      // index-only aggregate instead of reading, opening and sorting every sealed name per page: 10,000 entries
      // took 90 ms per 1,000-entry page). The digest is read before the names, so a change between the two
      // reads leaves a cache entry older than its digest says, which the next page just rebuilds.
      const digest = await this.#vfs.store.childNamesDigest(dir.id);
      let sorted = attempt === 0 ? tree.sortedChildren(dir.id, digest) : undefined;
      const cached = sorted !== undefined;
      if (!sorted) {
        sorted = (await this.#vfs.store.listChildNames(dir.id))
          .map((row) => ({ name: tree.name(row), id: row.id }))
          .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
        tree.keepSorted(dir.id, digest, sorted);
      }
      const from = after === undefined ? 0 : firstAfter(sorted, after);
      const page = sorted.slice(from, from + limit);
      const entries: DirEntry[] = [];
      let stale = false;
      for (let i = 0; i < page.length; i += 1000) {
        const part = page.slice(i, i + 1000);
        const rows = new Map(
          (
            await this.#vfs.store.getChildren(
              dir.id,
              part.map((e) => e.id),
            )
          ).map((r) => [r.id, r]),
        );
        for (const e of part) {
          const row = rows.get(e.id);
          if (row && tree.name(row) === e.name) entries.push({ name: e.name, stat: this.#stat(row) });
          // removed (or renamed) between the two reads: left out, as if listed a moment later; from the cache it may
          // also be a child replaced by another of the same name (same digest, new id): sorted again
          else if (cached) stale = true;
        }
      }
      if (stale) {
        tree.forgetSorted(dir.id);
        continue;
      }
      return { entries, more: sorted.length - from > limit };
    }
  }

  /**
   * One page of a directory in store order (name-MAC order: stable, not alphabetical): only that page's rows are read
   * and decrypted. `after` is the previous page's `next`; `next` is undefined on the last page.
   */
  async listPage(path: string, after: Buffer | undefined, limit: number): Promise<DirPage> {
    const p = normalize(path);
    await this.#live();
    this.#perms.require(p, "list");
    const dir = await this.#vfs.tree.resolveDir(this.#rootId, p);
    // one row more than asked tells whether another page follows
    const rows = await this.#vfs.store.listChildrenAfter(dir.id, after, limit + 1);
    const more = rows.length > limit;
    const page = more ? rows.slice(0, limit) : rows;
    return {
      entries: page.map((row) => ({ name: this.#vfs.tree.name(row), stat: this.#stat(row) })),
      next: more ? page[page.length - 1].nameMac : undefined,
    };
  }

  async mkdir(path: string): Promise<void> {
    const p = normalize(path);
    await this.#audited("mkdir", p, async () => {
      this.#perms.require(p, "mkdir");
      const { parent, name } = parentAndName(p);
      await this.#vfs.mkdir(await this.#vfs.tree.resolveDir(this.#rootId, parent), name);
    });
  }

  async rmdir(path: string): Promise<void> {
    const p = normalize(path);
    await this.#audited("rmdir", p, async () => {
      this.#perms.require(p, "delete");
      if (p === "/") throw new AtrestError("PERMISSION_DENIED", "cannot remove the home directory");
      const node = await this.#resolve(p);
      if (node.kind !== "dir") throw new AtrestError("NOT_A_DIRECTORY", `not a directory: ${p}`);
      await this.#vfs.removeDir(node);
      // its default encryption (S3 bucket encryption), if it had one: a new directory of that name starts without
      await this.#vfs.store.transaction((tx) => tx.deleteSetting(encryptionSetting(node.id))).catch(() => false);
      for (const kind of DIR_RECORD_KINDS) await this.#vfs.setDirRecord(node.id, kind, undefined).catch(() => false);
    });
  }

  async remove(path: string): Promise<void> {
    const p = normalize(path);
    await this.#audited("delete", p, async () => {
      this.#perms.require(p, "delete");
      const node = await this.#resolve(p);
      if (node.kind !== "file") throw new AtrestError("IS_A_DIRECTORY", `is a directory: ${p}`);
      await this.#vfs.removeFile(node);
    });
  }

  async rename(from: string, to: string, overwrite: boolean): Promise<void> {
    const src = normalize(from);
    const dst = normalize(to);
    await this.#audited(
      "rename",
      src,
      async () => {
        this.#perms.require(src, "rename");
        this.#perms.require(dst, "rename");
        const [from, to] = await Promise.all([src, dst].map((x) => this.#vfs.folders.match(this.globalPath(x))));
        this.#vfs.writeFilters.checkMove(from, to);
        if (src === "/" || dst === "/") throw new AtrestError("PERMISSION_DENIED", "cannot rename the home directory");
        const node = await this.#resolve(src);
        const { parent, name } = parentAndName(dst);
        const target = await this.#vfs.tree.resolveDir(this.#rootId, parent);
        if (overwrite && (await this.#vfs.tree.child(target.id, name))) this.#perms.require(dst, "overwrite");
        await this.#vfs.rename(node, target, name, overwrite);
      },
      { targetPath: dst },
    );
  }

  setMtime(path: string, mtime: number): Promise<void> {
    return this.setAttrs(path, { mtime });
  }

  async setAttrs(path: string, attrs: SetAttrs): Promise<void> {
    const p = normalize(path);
    const detail = [
      attrs.mtime !== undefined ? `mtime ${new Date(attrs.mtime).toISOString()}` : "",
      attrs.mode !== undefined ? `mode ${(attrs.mode & 0o7777).toString(8).padStart(4, "0")}` : "",
    ]
      .filter(Boolean)
      .join(", ");
    await this.#audited(
      "attrs.change",
      p,
      async () => {
        const node = await this.#resolve(p);
        // Changing a file's attributes changes the file: the same right as replacing it.
        this.#perms.require(p, node.kind === "dir" ? "mkdir" : "overwrite");
        await this.#vfs.setAttrs(node, attrs);
      },
      { detail },
    );
  }

  async setObjectTags(path: string, tags: [string, string][], versionId?: string): Promise<void> {
    const p = normalize(path);
    await this.#audited(
      "attrs.change",
      p,
      async () => {
        // tagging a file changes the file: the same right as replacing it
        this.#perms.require(p, "overwrite");
        if (versionId !== undefined) {
          const node = await this.#version(p, versionId);
          // a kept version is a row of its versioned folder (no parent); the current one is the file's node
          if (node.parentId === null) {
            const { scope } = await this.#vfs.versions.scopeOfPath(this.#rootId, p);
            if (!scope) throw new NotFoundError("no such version");
            return this.#vfs.setVersionTags(scope, versionId, tags);
          }
          return this.#vfs.setObjectTags(node, tags);
        }
        const node = await this.#resolve(p);
        if (node.kind !== "file") throw new AtrestError("IS_A_DIRECTORY", "tags go on files");
        await this.#vfs.setObjectTags(node, tags);
      },
      { detail: tags.length > 0 ? `tags ${tags.length}` : "tags removed" },
    );
  }

  async setObjectAcl(path: string, grants: [string, string][] | undefined): Promise<void> {
    const p = normalize(path);
    await this.#audited(
      "attrs.change",
      p,
      async () => {
        const node = await this.#resolve(p);
        // an ACL is part of the file (the right to replace it) or of the folder (the right to make folders in it)
        this.#perms.require(p, node.kind === "dir" ? "mkdir" : "overwrite");
        await this.#vfs.setObjectAcl(node, grants);
      },
      { detail: grants && grants.length > 0 ? `acl ${grants.length} grants` : "acl private" },
    );
  }

  async setBucketPolicy(path: string, policy: string | undefined): Promise<void> {
    const p = normalize(path);
    await this.#audited(
      "attrs.change",
      p,
      async () => {
        const node = await this.#resolve(p);
        if (node.kind !== "dir") throw new AtrestError("NOT_A_DIRECTORY", "a bucket policy goes on a bucket folder");
        this.#perms.require(p, "mkdir");
        await this.#vfs.setBucketPolicy(node, policy);
      },
      { detail: policy === undefined ? "bucket policy removed" : "bucket policy set" },
    );
  }

  async symlink(target: string, link: string): Promise<void> {
    const p = normalize(link);
    await this.#audited(
      "symlink",
      p,
      async () => {
        throw new AtrestError("UNSUPPORTED", "symbolic links are not supported");
      },
      { targetPath: target },
    );
  }

  async openRead(path: string, options: OpenReadOptions = {}): Promise<ReadHandle> {
    const p = normalize(path);
    try {
      await this.#vfs.audit.admit?.();
      await this.#live();
      this.#perms.require(p, "download");
      const node = options.versionId === undefined ? await this.#resolve(p) : await this.#version(p, options.versionId);
      if (node.kind !== "file") throw new AtrestError("IS_A_DIRECTORY", `is a directory: ${p}`);
      let refused = false;
      const ssec = options.customerKey ? { detail: "sse-c" } : {};
      const reader = await this.#vfs.openRead(
        node,
        (size) => {
          this.#readers.delete(reader);
          if (!refused) {
            const keyRef = node.keyRef ?? undefined;
            this.#vfs.audit.record({
              ...this.#event(p),
              ...ssec,
              keyRef,
              action: "download",
              outcome: "success",
              size,
            });
          }
        },
        options.customerKey,
        options.end,
      );
      if (this.#vfs.audit.failClosed) {
        // A durable "download started" record before the first byte can be served, so a download whose closing
        // record a crash loses is still on record; a handle whose record cannot be made is never returned.
        try {
          await commitEvent(
            this.#vfs.audit,
            { ...this.#event(p), action: "download", outcome: "success", detail: "started" },
            { retract: true },
          );
        } catch (err) {
          refused = true;
          await reader.close().catch(() => {});
          throw err;
        }
      }
      this.#readers.add(reader);
      return reader;
    } catch (err) {
      throw this.#failed("download", p, err);
    }
  }

  openWrite(path: string, options: OpenWriteOptions): Promise<WriteHandle> {
    return this.#openWrite(path, options);
  }

  /** The folder `dir` (a path of this session) inside `tx`, made with the folders above it where they are gone. */
  async #remakeDirs(tx: MetaTx, dir: string): Promise<NodeRow> {
    let node = await tx.getNode(this.#rootId);
    if (!node) throw new NotFoundError("home directory");
    let at = "";
    for (const name of dir.split("/").filter(Boolean)) {
      at += `/${name}`;
      const next = await this.#vfs.tree.child(node.id, name, tx);
      if (next && next.kind !== "dir") throw new AtrestError("NOT_A_DIRECTORY", `not a directory: ${at}`);
      if (next) {
        node = next;
        continue;
      }
      this.#perms.require(at, "mkdir");
      const made = this.#vfs.tree.newDir(node.id, name);
      await tx.insertNode(made);
      node = made;
    }
    return node;
  }

  /** openWrite, with the staged parts a multipart Complete hands over to the new version (Writer.staged/pieces). */
  async #openWrite(
    path: string,
    options: OpenWriteOptions,
    staged?: Writer["staged"],
    pieces?: Writer["pieces"],
  ): Promise<WriteHandle> {
    const p = normalize(path);
    try {
      await this.#vfs.audit.admit?.();
      await this.#live();
      const { parent, name } = parentAndName(p);
      const dir = await this.#vfs.tree.resolveDir(this.#rootId, parent).catch((err: unknown) => {
        // S3: the door made the key's folders; a racing delete of the last object under one may have removed it
        if (options.parents && err instanceof AtrestError && err.code === "NOT_FOUND")
          return this.#vfs.store.transaction((tx) => this.#remakeDirs(tx, parent));
        throw err;
      });
      const existing = await this.#vfs.tree.child(dir.id, name);
      if (existing?.kind === "dir") throw new AtrestError("IS_A_DIRECTORY", `is a directory: ${p}`);
      if (existing && options.exclusive) throw new AtrestError("EXISTS", `already exists: ${p}`);
      this.#perms.require(p, existing ? "overwrite" : "upload");
      // refused early, before any byte is stored; the commit checks it again on what is there then
      options.precondition?.(existing ? this.#stat(existing) : undefined);
      const open = () =>
        this.#vfs.openWrite(dir, name, existing, options.truncate, {
          user: this.#user,
          path: this.globalPath(p),
          exclusive: options.exclusive,
          precondition: options.precondition,
          ...(staged ? { staged } : {}),
          ...(pieces ? { pieces } : {}),
          key: options.key,
          customerKey: options.customerKey,
          ...(options.versionId ? { versionId: options.versionId } : {}),
          ...(options.parents ? { remakeParent: (tx: MetaTx) => this.#remakeDirs(tx, parent) } : {}),
          event: options.encryptionNote ? { ...this.#event(p), detail: options.encryptionNote } : this.#event(p),
          authorize: (op) => this.#perms.require(p, op === "create" ? "upload" : "overwrite"),
        });
      // A folder's write filter (OpenPGP folders: src/pgp/folder.ts) sees what is written as it streams in.
      const folder = await this.#vfs.folders.match(this.globalPath(p));
      const writer = await this.#vfs.writeFilters.open(
        folder,
        { name, resume: !!existing && !options.truncate, audit: this.#vfs.audit, event: this.#event(p) },
        open,
      );
      const handle: WriteHandle = {
        get size() {
          return writer.size;
        },
        write: (offset, data) => writer.write(offset, data),
        ...(writer.writeParts && {
          writeParts: (offset, parts) => writer.writeParts?.(offset, parts) as Promise<void>,
        }),
        ...(writer.writeNow && { writeNow: (offset, parts) => writer.writeNow?.(offset, parts) }),
        close: (attrs, object) => {
          this.#writers.delete(handle);
          return writer.close(attrs, object);
        },
        abort: (keep) => {
          this.#writers.delete(handle);
          return writer.abort(keep);
        },
      };
      this.#writers.add(handle);
      return handle;
    } catch (err) {
      throw this.#failed("upload", p, err);
    }
  }

  async createMultipart(path: string, options: MultipartOptions): Promise<MultipartUploadInfo> {
    const p = normalize(path);
    return this.#audited(
      "upload",
      p,
      async () => {
        this.#perms.require(p, "upload");
        const choice = await this.#vfs.kek.chooseRequested(this.#user, this.globalPath(p), options.key);
        const rec = await this.#vfs.multipart.create(
          {
            userId: this.#user.id,
            path: p,
            kek: choice.key,
            ...(options.key ? { requested: options.key } : {}),
            headers: options.headers ?? {},
            ...(options.tags && options.tags.length > 0 ? { tags: options.tags } : {}),
            ...(options.acl && options.acl.length > 0 ? { acl: options.acl } : {}),
            ...(options.encryptionNote ? { note: options.encryptionNote } : {}),
            ...(options.checksum ? { checksum: options.checksum } : {}),
            ...(this.#info.jobUser ? { initiator: this.#info.jobUser } : {}),
          },
          options.customerKey,
        );
        return this.#vfs.multipart.info(rec);
      },
      { detail: "multipart upload created" },
    );
  }

  async uploadPart(path: string, uploadId: string, partNumber: number, customerKey?: Buffer): Promise<PartHandle> {
    const p = normalize(path);
    const extra = { detail: `multipart part ${partNumber}` };
    let part: PartHandle;
    try {
      await this.#vfs.audit.admit?.();
      await this.#live();
      this.#perms.require(p, "upload");
      const rec = await this.#vfs.multipart.get(this.#user.id, uploadId, p);
      part = await this.#vfs.multipart.openPart(rec, partNumber, customerKey);
    } catch (err) {
      throw this.#failed("upload", p, err, extra);
    }
    return {
      upload: part.upload,
      get size() {
        return part.size;
      },
      write: (data) => part.write(data),
      close: async (etag, checksum) => {
        try {
          const done = await part.close(etag, checksum);
          this.#vfs.audit.record({
            ...this.#event(p),
            ...extra,
            action: "upload",
            outcome: "success",
            size: done.size,
          });
          return done;
        } catch (err) {
          throw this.#failed("upload", p, err, extra);
        }
      },
      abort: async () => {
        await part.abort();
        this.#failed("upload", p, new AtrestError("CONFLICT", "aborted"), { ...extra, size: part.size });
      },
    };
  }

  async listParts(
    path: string,
    uploadId: string,
    customerKey?: Buffer,
  ): Promise<{ upload: MultipartUploadInfo; parts: MultipartPart[] }> {
    const p = normalize(path);
    await this.#live();
    this.#perms.require(p, "upload");
    const rec = await this.#vfs.multipart.get(this.#user.id, uploadId, p);
    if (customerKey) verifyCustomerKey(rec.ssec, customerKey);
    return { upload: this.#vfs.multipart.info(rec), parts: await this.#vfs.multipart.parts(rec) };
  }

  async listMultipart(dir: string): Promise<MultipartUploadInfo[]> {
    const d = normalize(dir);
    await this.#live();
    this.#perms.require(d, "list");
    const prefix = d === "/" ? "/" : `${d}/`;
    return (await this.#vfs.multipart.list(this.#user.id))
      .filter((r) => r.path.startsWith(prefix))
      .map((r) => this.#vfs.multipart.info(r));
  }

  async completedMultipart(path: string, uploadId: string): Promise<CompletedMultipart | undefined> {
    const p = normalize(path);
    await this.#live();
    return this.#vfs.multipart.completed(this.#user.id, uploadId, p);
  }

  async abortMultipart(path: string, uploadId: string): Promise<void> {
    const p = normalize(path);
    await this.#audited(
      "delete",
      p,
      async () => {
        this.#perms.require(p, "upload");
        const rec = await this.#vfs.multipart.get(this.#user.id, uploadId, p);
        await this.#vfs.multipart.finish(rec, async () => undefined);
      },
      { detail: "multipart upload aborted" },
    );
  }

  async completeMultipart(
    path: string,
    uploadId: string,
    partNumbers: number[],
    options: {
      customerKey?: Buffer;
      etag: string;
      partSizes?: number[];
      precondition?: Precondition;
      checksum?: ObjectMeta["checksum"];
      versionId?: string;
    },
  ): Promise<FileStat> {
    const p = normalize(path);
    let rec: Awaited<ReturnType<Vfs["multipart"]["get"]>>;
    try {
      await this.#live();
      rec = await this.#vfs.multipart.get(this.#user.id, uploadId, p);
      if (partNumbers.length === 0)
        throw new AtrestError("INVALID_INPUT", "a multipart upload needs one part at least");
      for (let i = 0; i < partNumbers.length; i++) {
        const n = partNumbers[i] as number;
        if (i > 0 && n <= (partNumbers[i - 1] as number)) throw new AtrestError("INVALID_INPUT", "parts out of order");
        if (!rec.parts.includes(n)) throw new AtrestError("INVALID_INPUT", `part ${n} was not uploaded`);
      }
      verifyCustomerKey(rec.ssec, options.customerKey);
    } catch (err) {
      throw this.#failed("upload", p, err, { detail: "multipart complete" });
    }
    const upload = rec;
    return this.#vfs.multipart.finish(
      upload,
      async () => {
        const note = [`multipart ${partNumbers.length} parts`, upload.note].filter(Boolean).join("; ");
        const multipart = this.#vfs.multipart;
        const staged = {
          bytes: await multipart.stagedBytes(upload),
          release: (tx: MetaTx) => multipart.release(tx, upload.id),
        };
        const object: ObjectMeta = {
          etag: options.etag,
          ...(options.partSizes ? { parts: runLength(options.partSizes) } : {}),
          ...(Object.keys(upload.headers).length > 0 ? { headers: upload.headers } : {}),
          ...(upload.tags ? { tags: upload.tags } : {}),
          ...(upload.acl ? { acl: upload.acl } : {}),
          ...(options.checksum ? { checksum: options.checksum } : {}),
        };
        const writeOptions = {
          truncate: true,
          key: upload.requested,
          customerKey: options.customerKey,
          encryptionNote: note,
          precondition: options.precondition,
          versionId: options.versionId,
          parents: true,
        };
        // The parts become the object's pieces as they are (O(parts): nothing decrypted or sealed again), unless a
        // folder's write filter (OpenPGP folders) must see the bytes, or the parts are under different KEK versions
        // (a rotation during the upload): a file records one key ref, by which the destroy guard counts it and the
        // shred report lists it, so a piece under another version would be lost with "nothing at stake" when that
        // version is destroyed. Then they are streamed into one new version.
        if (!this.#vfs.writeFilters.applies(await this.#vfs.folders.match(this.globalPath(p)))) {
          const { pieces, keyRef, checksums, mixed } = await multipart.pieces(upload, partNumbers);
          if (!mixed) {
            // GET/HEAD ?partNumber with x-amz-checksum-mode answers the part's own checksum
            if (upload.checksum && checksums.every((c) => c !== undefined)) {
              object.partChecksums = checksums as string[];
            }
            const w = await this.#openWrite(p, writeOptions, staged, {
              pieces,
              keyRef,
              ...(upload.ssec ? { ssec: upload.ssec } : {}),
            });
            return w.close(undefined, object);
          }
        }
        const w = await this.#openWrite(p, writeOptions, staged);
        try {
          for (const n of partNumbers) {
            const r = await this.#vfs.multipart.readPart(upload, n, options.customerKey);
            try {
              // the next piece is read (and opened on the seal worker) while this one is written
              const next = (at: number) => (at < r.size ? r.read(at, 1 << 20) : undefined);
              let at = 0;
              let pending = next(at);
              while (pending) {
                const piece = await pending;
                if (piece.length === 0) break;
                at += piece.length;
                pending = next(at);
                try {
                  await w.write(w.size, piece);
                } catch (err) {
                  await pending?.catch(() => undefined);
                  throw err;
                }
              }
            } finally {
              await r.close();
            }
          }
        } catch (err) {
          await w.abort(false).catch(() => undefined);
          throw err;
        }
        return w.close(undefined, object);
      },
      options.etag,
      options.checksum,
    );
  }

  async quota(): Promise<QuotaInfo> {
    const u = (await this.#vfs.store.getUserById(this.#user.id)) ?? this.#user;
    return { usedBytes: u.usedBytes, usedFiles: u.usedFiles, maxBytes: u.quotaBytes, maxFiles: u.quotaFiles };
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.#writers].map((w) => w.abort(true)));
    await Promise.allSettled([...this.#readers].map((r) => r.close()));
  }
}

/** The index of the first entry of `sorted` whose name is greater than `after` (binary search). */
function firstAfter(sorted: SortedChildren, after: string): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid].name > after) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}
