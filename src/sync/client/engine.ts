// The two-way sync step (docs/sync-protocol.md §11): a three-way merge of the local tree, the verified remote
// manifest and the base (what the last completed step left), where nothing is ever lost. Order of effects: new
// content is encrypted and uploaded first (invisible), then the next manifest is published (a stale one: start over,
// nothing local changed yet), then local changes are applied — each only if the local file is still what the plan saw
// (else it is left for the next step, which sees a conflict), downloads verified before they are renamed into place.
import { createHash, randomUUID } from "node:crypto";
import { createReadStream, readdirSync, statSync } from "node:fs";
import { lstat, mkdir, open, rename, rm, rmdir, stat, unlink, utimes } from "node:fs/promises";
import { dirname, join, posix } from "node:path";
import { randomBytes } from "../../crypto/random.ts";
import { AtrestError, IntegrityError } from "../../errors.ts";
import { FileDecoder, FileEncoder, fileIdOf } from "../core/files.ts";
import type { Entry } from "../core/manifest.ts";
import { decryptName, encryptName, isValidName } from "../core/names.ts";
import { SyncApiError } from "./api.ts";
import type { RegionCtx, Session } from "./session.ts";
import type { BaseEntry, PendingEntry } from "./state.ts";

export interface Transfer {
  direction: "up" | "down";
  files: number;
  filesTotal: number;
  bytes: number;
  bytesTotal: number;
}

export interface StepOptions {
  dir: string;
  trustOwner?: boolean;
  now?: () => Date;
  /** One line per file and event. */
  progress?: (line: string) => void;
  /** Counters after each file of an upload or download batch (for a progress bar). */
  transfer?: (t: Transfer) => void;
  /**
   * Stops the step early with a consistent state: before it publishes, it rejects with the abort reason and nothing
   * was published or changed here; after, it publishes and saves its base, leaving the local changes it did not apply
   * (downloads, moves, deletes) to the next step.
   */
  signal?: AbortSignal;
}

export interface StepReport {
  version: number;
  uploaded: number;
  downloaded: number;
  deletedLocal: number;
  deletedRemote: number;
  renamed: number;
  conflicts: string[];
  skipped: number;
  bytesUp: number;
  bytesDown: number;
  /** Versions this step took in that a device revoked since had signed (kept: an active device built on them, §7b). */
  flagged: string[];
}

interface Local {
  kind: "file" | "dir";
  size: number;
  mtimeMs: number;
  sha?: string;
}

interface Remote {
  entry: Entry;
  path: string;
  name: string;
  mtimeMs: number;
  sha: string;
}

const newId = () => randomBytes(16).toString("hex");

/** Uploads in flight at once: one encrypting while others stream (2 cores here; the server fsyncs each blob). */
const UPLOAD_CONCURRENCY = 4;

async function runPool(jobs: (() => Promise<void>)[], width: number): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async () => {
    while (next < jobs.length && failed === undefined) {
      const job = jobs[next++] as () => Promise<void>;
      try {
        await job();
      } catch (err) {
        failed ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, jobs.length) }, worker));
  if (failed !== undefined) throw failed;
}

/** `name (conflict <device> <YYYY-MM-DD HHMMSS>).ext` */
export function conflictName(name: string, device: string, at: Date, taken: (n: string) => boolean): string {
  const dot = name.lastIndexOf(".");
  const [stem, ext] = dot > 0 ? [name.slice(0, dot), name.slice(dot)] : [name, ""];
  const p = (n: number) => String(n).padStart(2, "0");
  const stamp = `${at.getUTCFullYear()}-${p(at.getUTCMonth() + 1)}-${p(at.getUTCDate())} ${p(at.getUTCHours())}${p(at.getUTCMinutes())}${p(at.getUTCSeconds())}`;
  const safeDevice = device.replace(/[()/\0]/g, "_");
  for (let i = 1; ; i++) {
    const n = `${stem} (conflict ${safeDevice} ${stamp}${i > 1 ? ` ${i}` : ""})${ext}`;
    if (!taken(n)) return n;
  }
}

async function shaOfFile(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const c of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(c as Buffer);
  return h.digest("hex");
}

/** Stats between two yields to the event loop in a scan (a signal or a timer waits no longer than that). */
const SCAN_YIELD_EVERY = 2048;

/**
 * Files and directories under `root` (symlinks and invalid names are left alone), by relative posix path. With
 * synchronous readdir and stat: on the thread pool each of them costs a hand-over to a worker and a wake-up of the
 * loop (4 system calls and two context switches), which for 5,000 files was most of an incremental step's system time
 * (strace: 21,000 futex, 10,000 epoll_wait, 5,000 eventfd reads and writes); one statx each is all a scan needs.
 */
async function scan(
  root: string,
  base: Map<string, BaseEntry>,
  progress?: (l: string) => void,
): Promise<Map<string, Local>> {
  const out = new Map<string, Local>();
  let since = 0;
  const walk = async (rel: string) => {
    // an item that vanishes while the scan runs (ENOENT) restarts the step (syncStep): taken as absent, a file renamed
    // meanwhile would be seen as deleted and its new name missed, a delete and a new upload instead of a rename
    const entries = readdirSync(join(root, rel), { withFileTypes: true });
    for (const d of entries) {
      if (!isValidName(d.name)) {
        progress?.(`skip ${posix.join(rel, d.name)}: not a valid name`);
        continue;
      }
      const p = rel ? `${rel}/${d.name}` : d.name;
      if (d.isDirectory()) {
        out.set(p, { kind: "dir", size: 0, mtimeMs: 0 });
        await walk(p);
      } else if (d.isFile()) {
        if (++since >= SCAN_YIELD_EVERY) {
          since = 0;
          await new Promise((r) => setImmediate(r));
        }
        const st = statSync(join(root, p));
        if (!st.isFile()) continue;
        const b = base.get(p);
        const l: Local = { kind: "file", size: st.size, mtimeMs: Math.trunc(st.mtimeMs) };
        if (b && b.kind === "file" && b.size === l.size && b.mtimeMs === l.mtimeMs) l.sha = b.sha;
        out.set(p, l);
      }
    }
  };
  await walk("");
  return out;
}

/** A local file or folder that went away (or was replaced by a file) between two looks at it. */
function vanished(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === "ENOENT" || code === "ENOTDIR";
}

async function localSha(root: string, path: string, l: Local): Promise<string> {
  l.sha ??= await shaOfFile(join(root, path));
  return l.sha;
}

/** Is the local item still what the scan saw (size and mtime; absent when `l` is undefined)? */
async function unchanged(root: string, path: string, l: Local | undefined): Promise<boolean> {
  const st = await lstat(join(root, path)).catch(() => undefined);
  if (!l) return st === undefined;
  if (!st) return false;
  if (l.kind === "dir") return st.isDirectory();
  return st.isFile() && st.size === l.size && Math.trunc(st.mtimeMs) === l.mtimeMs;
}

export function remoteView(ctx: RegionCtx): {
  byId: Map<string, Remote>;
  byPath: Map<string, Remote>;
  all: Map<string, Remote>;
} {
  const m = ctx.manifest;
  const entries = new Map(m.entries.map((e) => [e.id, e]));
  const all = new Map<string, Remote>();
  for (const e of m.entries) {
    // a name opened before under the same ciphertext and binding (parent, kind, epoch) opens to the same: reused
    const c = ctx.names.get(e.id);
    if (c && c[0] === e.name && c[1] === e.parent && c[2] === e.kind && c[3] === e.epoch) {
      all.set(e.id, { entry: e, path: "", name: c[4], mtimeMs: c[5], sha: c[6] });
      continue;
    }
    const key = ctx.keys.get(e.epoch);
    if (!key)
      throw new AtrestError("KEY_UNAVAILABLE", `no key of epoch ${e.epoch} for this device (not shared with it?)`);
    const n = decryptName(
      key,
      { regionId: m.regionId, entryId: e.id, parent: e.parent, kind: e.kind, epoch: e.epoch },
      e.name,
    );
    ctx.names.set(e.id, [e.name, e.parent, e.kind, e.epoch, n.name, n.mtimeMs, n.sha]);
    all.set(e.id, { entry: e, path: "", name: n.name, mtimeMs: n.mtimeMs, sha: n.sha });
  }
  const pathOf = (id: string, depth = 0): string => {
    const r = all.get(id) as Remote;
    if (r.path) return r.path;
    if (depth > entries.size) throw new IntegrityError("manifest tree has a cycle");
    r.path = r.entry.parent ? `${pathOf(r.entry.parent, depth + 1)}/${r.name}` : r.name;
    return r.path;
  };
  const byId = new Map<string, Remote>();
  const byPath = new Map<string, Remote>();
  for (const [id, r] of all) {
    pathOf(id);
    if (r.entry.deleted) continue;
    if (r.entry.kind === "file" && r.sha === "") throw new IntegrityError("file entry without a content hash");
    if (byPath.has(r.path)) throw new IntegrityError(`two live entries have the same path in the manifest`);
    byId.set(id, r);
    byPath.set(r.path, r);
  }
  return { byId, byPath, all };
}

type LocalOp =
  | { op: "download"; id: string; to: string; expect: Local | undefined }
  | { op: "move"; id: string; from: string; to: string; expect: Local }
  | { op: "delete"; id: string; path: string; expect: Local }
  | { op: "mkdir"; id: string; path: string }
  | { op: "rmdir"; id: string; path: string };

class Plan {
  readonly entries: Map<string, Entry>;
  readonly ops: LocalOp[] = [];
  readonly uploads: { id: string; path: string; local: Local }[] = [];
  readonly conflicts: string[] = [];
  /** Target tree: live path → entry id, after the merge. */
  readonly tree = new Map<string, string>();
  changed = false;
  renamed = 0;
  deletedRemote = 0;

  constructor(entries: Entry[]) {
    this.entries = new Map(entries.map((e) => [e.id, { ...e }]));
  }
}

/** One two-way sync step of `dir` with the region; retried from the start when another device published first. */
export async function syncStep(session: Session, regionId: string, o: StepOptions): Promise<StepReport> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await attemptStep(session, regionId, o);
    } catch (err) {
      if (err instanceof SyncApiError && err.problemCode === "STALE_MANIFEST" && attempt < 8) {
        o.progress?.("another device published first: merging again");
        continue;
      }
      // a local file deleted or moved while the step read or placed it: the plan is stale, not wrong; a new attempt
      // scans again (after publishing, it finds its own publish through the intent, §11)
      if (vanished(err) && attempt < 8) {
        o.progress?.(`${(err as Error).message}: the tree changed meanwhile, merging again`);
        continue;
      }
      throw err;
    }
  }
}

async function attemptStep(session: Session, regionId: string, o: StepOptions): Promise<StepReport> {
  const root = o.dir;
  o.signal?.throwIfAborted();
  await mkdir(root, { recursive: true });
  // what a step killed midway left (uploads and downloads in progress): one client per state directory
  await rm(session.state.tmp, { recursive: true, force: true });
  await mkdir(session.state.tmp, { recursive: true, mode: 0o700 });
  const ctx = await session.region(regionId, { trustOwner: o.trustOwner === true });
  try {
    const m = ctx.manifest;
    const epoch = m.epoch;
    const key = ctx.keys.get(epoch);
    if (!key) throw new AtrestError("KEY_UNAVAILABLE", `no key of the current epoch ${epoch} for this device`);
    const remote = remoteView(ctx);
    const baseById = new Map(Object.entries(ctx.state.base));
    // A step killed between publishing and saving its base: what the server holds with this device's own blobs is
    // this device's content, so it is base, not a remote edit (else the device's own upload would meet its next
    // local edit as a conflict copy, or bring back a file deleted here since).
    let adopted = false;
    for (const [id, p] of Object.entries(ctx.state.pending ?? {})) {
      const r = remote.byId.get(id);
      if (r?.entry.kind !== "file" || r.entry.hash !== p.hash) continue;
      const { hash: _hash, ...b } = p;
      baseById.set(id, b);
      adopted = true;
    }
    // saved at once: this step writes its own intent over the old one before it publishes, so a second kill there
    // would lose what the first step's intent proved (found by kill.test.ts: the device's own edit then met its next
    // edit as a conflict copy, and a file deleted after its edit came back as the "remote" edit)
    if (adopted) {
      ctx.state.base = Object.fromEntries(baseById);
      await session.state.writeRegion(ctx.state);
    }
    const baseByPath = new Map([...baseById.values()].map((b) => [b.path, b]));
    const local = await scan(root, baseByPath, o.progress);
    const plan = new Plan(m.entries);
    const at = o.now?.() ?? new Date();
    const device = session.me.name;
    const claimed = new Set<string>(); // local paths accounted for

    // remote wins every path it holds
    for (const [path, r] of remote.byPath) plan.tree.set(path, r.entry.id);
    const takenName = (dir: string) => (n: string) => {
      const p = dir ? `${dir}/${n}` : n;
      return plan.tree.has(p) || local.has(p);
    };

    const upload = (id: string, path: string, l: Local) => {
      plan.uploads.push({ id, path, local: l });
      plan.changed = true;
    };
    const conflictCopy = (path: string) => {
      const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : "";
      const name = conflictName(posix.basename(path), device, at, takenName(dir));
      const to = dir ? `${dir}/${name}` : name;
      plan.tree.set(to, "");
      plan.conflicts.push(to);
      return to;
    };
    /** A conflict: local content at `path` goes to a conflict copy (new entry), the remote takes `path`. */
    const keepBoth = async (path: string, l: Local) => {
      const sha = await localSha(root, path, l);
      // a conflict copy of this very content may be published already (a step that died after publishing)
      for (const [id, r] of remote.byId) {
        if (
          !baseById.has(id) &&
          r.entry.kind === "file" &&
          r.sha === sha &&
          r.path !== path &&
          r.path.includes("(conflict ")
        ) {
          plan.ops.push({ op: "move", id, from: path, to: r.path, expect: l });
          return;
        }
      }
      const to = conflictCopy(path);
      const id = newId();
      plan.ops.push({ op: "move", id, from: path, to, expect: l });
      upload(id, to, l);
    };

    // 1. every entry the base knows
    for (const [id, b] of baseById) {
      const r = remote.byId.get(id);
      let l = local.get(b.path);
      if (l && l.kind !== b.kind) l = undefined;
      let lpath = b.path;
      let lState: "same" | "modified" | "gone" | "moved" = "gone";
      if (l) {
        lState = b.kind === "dir" || (await localSha(root, b.path, l)) === b.sha ? "same" : "modified";
        claimed.add(b.path);
      } else if (b.kind === "file") {
        // a rename: a new local file with the same content
        for (const [p, x] of local) {
          if (x.kind !== "file" || claimed.has(p) || baseByPath.has(p) || x.size !== b.size) continue;
          if ((await localSha(root, p, x)) === b.sha) {
            l = x;
            lpath = p;
            lState = "moved";
            claimed.add(p);
            break;
          }
        }
      }
      const rState = !r ? "deleted" : r.sha !== b.sha ? "content" : r.path !== b.path ? "moved" : "same";
      if (lState === "same") {
        if (rState === "deleted") {
          plan.ops.push(
            b.kind === "dir"
              ? { op: "rmdir", id, path: b.path }
              : { op: "delete", id, path: b.path, expect: l as Local },
          );
        } else if (rState === "moved" && r) {
          plan.ops.push({ op: "move", id, from: b.path, to: r.path, expect: l as Local });
        } else if (rState === "content" && r) {
          if (r.path !== b.path) plan.ops.push({ op: "move", id, from: b.path, to: r.path, expect: l as Local });
          plan.ops.push({ op: "download", id, to: r.path, expect: l });
        }
        continue;
      }
      if (lState === "modified" && l) {
        const sha = await localSha(root, b.path, l);
        if (rState === "same") upload(id, b.path, l);
        else if (rState === "moved" && r) {
          plan.ops.push({ op: "move", id, from: b.path, to: r.path, expect: l });
          upload(id, r.path, l);
        } else if (rState === "content" && r) {
          if (r.sha === sha && r.path === b.path) continue; // the same edit on both sides
          await keepBoth(b.path, l);
          plan.ops.push({ op: "download", id, to: r.path, expect: undefined });
        } else {
          // deleted remotely, edited here: the edit is kept as a live entry again
          upload(id, b.path, l);
          plan.tree.set(b.path, id);
        }
        continue;
      }
      if (lState === "moved" && l) {
        if (r && r.path === lpath) {
          // moved to the same place on both sides
          if (rState === "content") plan.ops.push({ op: "download", id, to: r.path, expect: l });
        } else if (rState === "same") {
          plan.tree.set(lpath, id);
          const e = plan.entries.get(id) as Entry;
          e.deleted = false;
          plan.renamed++;
          plan.changed = true;
          plan.uploads.push({ id, path: lpath, local: l }); // resolved below: a rename re-encrypts only the name
        } else if (r) {
          // moved or changed remotely too: the remote wins the path; the local copy follows it
          plan.ops.push({ op: "move", id, from: lpath, to: r.path, expect: l });
          if (rState === "content") plan.ops.push({ op: "download", id, to: r.path, expect: undefined });
        } else {
          upload(id, lpath, l);
          plan.tree.set(lpath, id);
        }
        continue;
      }
      // gone locally
      if (rState === "same") {
        (plan.entries.get(id) as Entry).deleted = true;
        plan.deletedRemote++;
        plan.changed = true;
        plan.tree.delete(b.path);
      } else if (r) {
        plan.ops.push(
          r.entry.kind === "dir"
            ? { op: "mkdir", id, path: r.path }
            : { op: "download", id, to: r.path, expect: undefined },
        );
      }
    }

    // 2. entries the remote added
    for (const [id, r] of remote.byId) {
      if (baseById.has(id)) continue;
      const l = local.get(r.path);
      if (!l) {
        plan.ops.push(
          r.entry.kind === "dir"
            ? { op: "mkdir", id, path: r.path }
            : { op: "download", id, to: r.path, expect: undefined },
        );
        continue;
      }
      if (claimed.has(r.path)) {
        // the path is taken by a base entry that moved here locally: keep both
        if (r.entry.kind === "file") {
          const to = conflictCopy(r.path);
          plan.ops.push({ op: "download", id, to, expect: undefined });
        }
        continue;
      }
      claimed.add(r.path);
      if (l.kind === "dir" && r.entry.kind === "dir") continue;
      if (l.kind === "file" && r.entry.kind === "file" && (await localSha(root, r.path, l)) === r.sha) continue;
      if (l.kind === "file") {
        await keepBoth(r.path, l);
        if (r.entry.kind === "file") plan.ops.push({ op: "download", id, to: r.path, expect: undefined });
        else plan.ops.push({ op: "mkdir", id, path: r.path });
      } else {
        // a local directory where the remote has a file: the remote file arrives as a conflict copy
        const to = conflictCopy(r.path);
        plan.ops.push({ op: "download", id, to, expect: undefined });
      }
    }

    // 3. what is new here
    const newLocal = [...local]
      .filter(([p]) => !claimed.has(p) && !plan.tree.has(p))
      .sort(([a], [b]) => a.split("/").length - b.split("/").length || (a < b ? -1 : 1));
    for (const [p, l] of newLocal) {
      const id = newId();
      plan.tree.set(p, id);
      if (l.kind === "dir") {
        plan.entries.set(id, {
          id,
          parent: "",
          kind: "dir",
          name: "",
          epoch,
          fver: 1,
          size: 0,
          hash: "",
          blobSize: 0,
          by: session.me.id,
          deleted: false,
        });
        plan.uploads.push({ id, path: p, local: l });
        plan.changed = true;
      } else upload(id, p, l);
    }

    // 4. encrypt and upload content; place every touched entry (name bound to its parent) in the target tree
    let bytesUp = 0;
    let uploaded = 0;
    const parentOf = (path: string): string => {
      const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : "";
      if (!dir) return "";
      const id = plan.tree.get(dir);
      if (id) {
        const e = plan.entries.get(id);
        if (e?.deleted) {
          e.deleted = false; // a deleted folder that now holds a kept file comes back
          parentOf(dir);
        }
        return id;
      }
      // the folder is not in the target tree: bring back its entry, or create one
      const old = [...remote.all.values()].find((r) => r.path === dir && r.entry.kind === "dir");
      const nid = old?.entry.id ?? newId();
      plan.tree.set(dir, nid);
      const parent = parentOf(dir);
      const name = posix.basename(dir);
      plan.entries.set(nid, {
        id: nid,
        parent,
        kind: "dir",
        name: encryptName(key, { regionId, entryId: nid, parent, kind: "dir", epoch }, { name, mtimeMs: 0, sha: "" }),
        epoch,
        fver: (old?.entry.fver ?? 0) + 1,
        size: 0,
        hash: "",
        blobSize: 0,
        by: session.me.id,
        deleted: false,
      });
      plan.changed = true;
      return nid;
    };
    const jobs: (() => Promise<void>)[] = [];
    const sorted = [...plan.uploads].sort((a, b) => a.path.split("/").length - b.path.split("/").length);
    for (const u of sorted) {
      plan.tree.set(u.path, u.id);
      const e = plan.entries.get(u.id);
      const parent = parentOf(u.path);
      const name = posix.basename(u.path);
      if (u.local.kind === "dir") {
        const d = e as Entry;
        d.parent = parent;
        d.name = encryptName(
          key,
          { regionId, entryId: u.id, parent, kind: "dir", epoch },
          { name, mtimeMs: 0, sha: "" },
        );
        d.epoch = epoch;
        continue;
      }
      // a rename re-encrypts only the name (hash only what may be one: an entry both sides know)
      const known = e && !e.deleted && e.kind === "file" && baseById.has(u.id) && remote.byId.has(u.id);
      const sha = known ? await localSha(root, pathBefore(plan, u), u.local) : undefined;
      const renameOnly = known && remote.byId.get(u.id)?.sha === sha && baseById.get(u.id)?.sha === sha;
      if (renameOnly && e) {
        const r = remote.all.get(u.id) as Remote;
        e.parent = parent;
        e.name = encryptName(
          key,
          { regionId, entryId: u.id, parent, kind: "file", epoch },
          { name, mtimeMs: r.mtimeMs, sha: r.sha },
        );
        e.epoch = epoch;
        // a rename keeps the blob (whose DEK is wrapped under its own epoch): only the name moves to the current one
        o.progress?.(`rename → ${u.path}`);
        continue;
      }
      const fver = (e?.fver ?? 0) + 1;
      const src = join(root, pathBefore(plan, u));
      jobs.push(async () => {
        o.signal?.throwIfAborted();
        const blob = await encryptToTemp(session, src, regionId, u.id, fver, epoch, key, u.local, o.signal);
        try {
          o.progress?.(`↑ ${u.path} (${u.local.size} bytes)`);
          await session.api.putBlob(regionId, blob.hash, createReadStream(blob.path), blob.size, o.signal);
        } finally {
          await unlink(blob.path).catch(() => undefined);
        }
        bytesUp += blob.size;
        uploaded++;
        plan.entries.set(u.id, {
          id: u.id,
          parent,
          kind: "file",
          name: encryptName(
            key,
            { regionId, entryId: u.id, parent, kind: "file", epoch },
            { name, mtimeMs: u.local.mtimeMs, sha: blob.sha },
          ),
          epoch,
          fver,
          size: blob.plainSize,
          hash: blob.hash,
          blobSize: blob.size,
          by: session.me.id,
          deleted: false,
        });
        u.local.sha = blob.sha;
      });
    }
    // uploads run UPLOAD_CONCURRENCY at a time (each: encrypt to a temp file, then stream it)
    const up: Transfer = { direction: "up", files: 0, filesTotal: jobs.length, bytes: 0, bytesTotal: 0 };
    for (const u of plan.uploads) if (u.local.kind === "file") up.bytesTotal += u.local.size;
    await runPool(
      jobs.map((job) => async () => {
        await job();
        up.files++;
        up.bytes = Math.min(up.bytesTotal, bytesUp);
        o.transfer?.({ ...up });
      }),
      UPLOAD_CONCURRENCY,
    );
    // a folder deleted here stays if something live remains in it (and so do its parents) ...
    const all = [...plan.entries.values()];
    for (let changed = true; changed; ) {
      changed = false;
      for (const c of all) {
        const p = c.deleted ? undefined : plan.entries.get(c.parent);
        if (p?.deleted) {
          p.deleted = false;
          changed = true;
        }
      }
    }

    // 5. publish, then apply locally
    let version = m.version;
    if (plan.changed) {
      const pending: Record<string, PendingEntry> = {};
      for (const u of plan.uploads) {
        const e = plan.entries.get(u.id);
        // only new blobs (a rename alone is found again by content), and not a conflict copy: it is still at its
        // old path until the ops run, and the next step finds it by content too
        if (u.local.kind !== "file" || !u.local.sha || e?.kind !== "file" || pathBefore(plan, u) !== u.path) continue;
        if (remote.all.get(u.id)?.entry.hash === e.hash) continue;
        const { size, mtimeMs, sha } = u.local;
        pending[u.id] = { path: u.path, kind: "file", sha, size, mtimeMs, fver: e.fver, hash: e.hash };
      }
      // the last point to stop with nothing published; from here the step finishes (one small request)
      o.signal?.throwIfAborted();
      ctx.state.pending = pending;
      await session.state.writeRegion(ctx.state);
      const next = await session.publish(ctx, { entries: [...plan.entries.values()] });
      version = next.version;
    }
    const report: StepReport = {
      version,
      uploaded,
      downloaded: 0,
      deletedLocal: 0,
      deletedRemote: plan.deletedRemote,
      renamed: plan.renamed,
      conflicts: plan.conflicts,
      skipped: 0,
      bytesUp,
      bytesDown: 0,
      flagged: ctx.flagged,
    };
    const skipped = new Set<string>();
    /** Entries an op of this step put at their final path. */
    const placed = new Set<string>();
    const final = remoteView(ctx);
    const downloads = plan.ops.filter((op) => op.op === "download");
    const down: Transfer = { direction: "down", files: 0, filesTotal: downloads.length, bytes: 0, bytesTotal: 0 };
    for (const op of downloads) down.bytesTotal += final.byId.get(op.id)?.entry.size ?? 0;
    for (const op of plan.ops) {
      // stopping: what is not applied yet stays as it was in the base, so the next step applies it
      const done =
        !o.signal?.aborted &&
        (await applyOp(session, ctx, root, op, final, report, o.progress, o.signal).catch((err) => {
          if (o.signal?.aborted) return false;
          throw err;
        }));
      if (op.op === "download") {
        down.files++;
        down.bytes += final.byId.get(op.id)?.entry.size ?? 0;
        o.transfer?.({ ...down });
      }
      if (!done) {
        skipped.add(op.id);
        report.skipped++;
      } else {
        const to = op.op === "mkdir" ? op.path : op.op === "download" || op.op === "move" ? op.to : undefined;
        if (to !== undefined && final.byId.get(op.id)?.path === to) placed.add(op.id);
      }
    }
    // empty folders the remote deleted
    for (const op of plan.ops) if (op.op === "rmdir") await rmdir(join(root, op.path)).catch(() => undefined);

    // 6. the new base: the final manifest as this device now has it, except what it could not apply
    const base: Record<string, BaseEntry> = {};
    const touched = new Set<string>();
    for (const op of plan.ops) touched.add(op.id);
    for (const u of plan.uploads) touched.add(u.id);
    for (const [id, r] of final.byId) {
      if (skipped.has(id)) {
        const old = baseById.get(id);
        if (old) base[id] = old;
        continue;
      }
      const l = local.get(r.path);
      // untouched by this step and as the scan saw it: what the scan saw is what the step left (a change since is
      // the next step's, which sees another mtime), so no second stat of every file
      if (!touched.has(id) && l?.kind === r.entry.kind && (l.kind === "dir" || l.sha === r.sha)) {
        base[id] =
          l.kind === "dir"
            ? { path: r.path, kind: "dir", sha: "", size: 0, mtimeMs: 0, fver: r.entry.fver }
            : { path: r.path, kind: "file", sha: r.sha, size: l.size, mtimeMs: l.mtimeMs, fver: r.entry.fver };
        continue;
      }
      // this step left the entry's content at its path (placed it, or found it there): if the user deleted or
      // edited it since, the base must still say synced, so the next step sends that change (a file deleted right
      // after its download would else come back, and an edit of it meet the download as a conflict)
      const synced =
        placed.has(id) || (r.entry.kind === "dir" ? l?.kind === "dir" : l?.kind === "file" && l.sha === r.sha);
      const st = await stat(join(root, r.path)).catch(() => undefined);
      if (r.entry.kind === "dir") {
        if (st || synced) base[id] = { path: r.path, kind: "dir", sha: "", size: 0, mtimeMs: 0, fver: r.entry.fver };
        continue;
      }
      const asPlaced: BaseEntry = {
        path: r.path,
        kind: "file",
        sha: r.sha,
        size: r.entry.size,
        mtimeMs: placed.has(id) || !l ? r.mtimeMs : l.mtimeMs,
        fver: r.entry.fver,
      };
      if (!st?.isFile()) {
        if (!st && synced) base[id] = asPlaced;
        continue;
      }
      const known = l?.sha === r.sha && l.size === st.size && l.mtimeMs === Math.trunc(st.mtimeMs);
      const sha = known
        ? r.sha
        : await shaOfFile(join(root, r.path)).catch((err) => {
            if (vanished(err)) return undefined;
            throw err;
          });
      if (sha !== r.sha) {
        const old = baseById.get(id);
        if (synced) base[id] = asPlaced;
        else if (old) base[id] = old;
        continue;
      }
      base[id] = {
        path: r.path,
        kind: "file",
        sha,
        size: st.size,
        mtimeMs: Math.trunc(st.mtimeMs),
        fver: r.entry.fver,
      };
    }
    // a delete not applied (stopped, or the file changed): the base keeps it, so the next step deletes it or, if it
    // was edited here, keeps the edit as a live entry again (else it would come back as a new file)
    for (const id of skipped) {
      const old = baseById.get(id);
      if (old && !final.byId.has(id)) base[id] = old;
    }
    ctx.state.base = base;
    delete ctx.state.pending;
    ctx.state.dir = root;
    await session.pin(ctx);
    return report;
  } finally {
    ctx.close();
  }
}

/** Where an upload's content is on disk now (a conflict copy is still at its old path until the ops run). */
function pathBefore(plan: Plan, u: { id: string; path: string }): string {
  for (const op of plan.ops) if (op.op === "move" && op.id === u.id && op.to === u.path) return op.from;
  return u.path;
}

async function encryptToTemp(
  session: Session,
  src: string,
  regionId: string,
  entryId: string,
  fver: number,
  epoch: number,
  key: Buffer,
  l: Local,
  signal?: AbortSignal,
): Promise<{ path: string; hash: string; size: number; sha: string; plainSize: number }> {
  const tmp = join(session.state.tmp, `up-${randomUUID()}`);
  const enc = new FileEncoder(key, regionId, epoch, fileIdOf(regionId, entryId, fver));
  const out = await open(tmp, "wx", 0o600);
  const ch = createHash("sha256");
  const ph = createHash("sha256");
  let size = 0;
  let plainSize = 0;
  try {
    const put = async (bufs: Buffer[]) => {
      for (const b of bufs) ch.update(b);
      for (const b of bufs) size += b.length;
      if (bufs.length) await out.writev(bufs);
    };
    await put([enc.header]);
    // a read buffer the size of the file (1 MiB at most): a stream allocates a whole highWaterMark for every read, so
    // a 1 MiB one per small file is churn the allocator keeps as RSS
    const highWaterMark = Math.min(256 << 10, Math.max(16 << 10, l.size + 1));
    for await (const c of createReadStream(src, { highWaterMark, ...(signal ? { signal } : {}) })) {
      ph.update(c as Buffer);
      plainSize += (c as Buffer).length;
      await put(enc.push(c as Buffer));
    }
    await put([enc.finish()]);
  } catch (err) {
    await out.close();
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await out.close();
  const st = await stat(src);
  if (st.size !== plainSize || Math.trunc(st.mtimeMs) !== l.mtimeMs) {
    await unlink(tmp).catch(() => undefined);
    throw new SyncApiError(409, "STALE_MANIFEST", "a file changed while it was read: merging again");
  }
  l.size = plainSize;
  return { path: tmp, hash: ch.digest("hex"), size, sha: ph.digest("hex"), plainSize };
}

async function applyOp(
  session: Session,
  ctx: RegionCtx,
  root: string,
  op: LocalOp,
  final: ReturnType<typeof remoteView>,
  report: StepReport,
  progress?: (l: string) => void,
  signal?: AbortSignal,
): Promise<boolean> {
  switch (op.op) {
    case "mkdir":
      await mkdir(join(root, op.path), { recursive: true });
      return true;
    case "rmdir":
      return true;
    case "delete": {
      if (!(await unchanged(root, op.path, op.expect))) return false;
      await unlink(join(root, op.path));
      report.deletedLocal++;
      progress?.(`✗ ${op.path}`);
      return true;
    }
    case "move": {
      // already there (its folder moved with it)
      if (!(await lstat(join(root, op.from)).catch(() => undefined)) && (await unchanged(root, op.to, op.expect)))
        return true;
      if (!(await unchanged(root, op.from, op.expect))) return false;
      if (await lstat(join(root, op.to)).catch(() => undefined)) return false;
      await mkdir(dirname(join(root, op.to)), { recursive: true });
      await rename(join(root, op.from), join(root, op.to));
      progress?.(`→ ${op.from} ⇒ ${op.to}`);
      return true;
    }
    case "download": {
      const r = final.byId.get(op.id);
      if (r?.entry.kind !== "file") return true;
      const tmp = join(session.state.tmp, `down-${randomUUID()}`);
      await downloadVerified(session, ctx, r, tmp, signal);
      try {
        if (!(await unchanged(root, op.to, op.expect))) return false;
        await mkdir(dirname(join(root, op.to)), { recursive: true });
        await rename(tmp, join(root, op.to));
      } finally {
        await rm(tmp, { force: true });
      }
      const t = new Date(r.mtimeMs);
      await utimes(join(root, op.to), t, t).catch(() => undefined);
      report.downloaded++;
      report.bytesDown += r.entry.blobSize;
      progress?.(`↓ ${op.to} (${r.entry.size} bytes)`);
      return true;
    }
  }
}

/** Streams a blob into `tmp`: blob SHA-256 and size as signed, every segment authenticated, plaintext hash as named. */
async function downloadVerified(
  session: Session,
  ctx: RegionCtx,
  r: Remote,
  tmp: string,
  signal?: AbortSignal,
): Promise<void> {
  const e = r.entry;
  const dec = new FileDecoder(
    e.blobSize,
    ctx.manifest.regionId,
    fileIdOf(ctx.manifest.regionId, e.id, e.fver),
    (epoch) => {
      const k = ctx.keys.get(epoch);
      if (!k) throw new AtrestError("KEY_UNAVAILABLE", `no key of epoch ${epoch}`);
      return k;
    },
  );
  const res = await session.api.getBlob(ctx.manifest.regionId, e.hash, signal);
  const out = await open(tmp, "wx", 0o600);
  const ch = createHash("sha256");
  const ph = createHash("sha256");
  let size = 0;
  try {
    for await (const c of res) {
      ch.update(c as Buffer);
      for (const p of dec.push(c as Buffer)) {
        ph.update(p);
        size += p.length;
        await out.write(p);
      }
    }
    dec.finish();
    if (ch.digest("hex") !== e.hash) throw new IntegrityError("blob hash differs from the signed manifest");
    if (size !== e.size || ph.digest("hex") !== r.sha)
      throw new IntegrityError("content differs from the signed manifest");
    await out.sync();
  } catch (err) {
    res.destroy();
    await out.close();
    await rm(tmp, { force: true });
    throw err;
  }
  await out.close();
}

/**
 * Writes `path` as it was in manifest `version` (verified like any manifest, allowed older than the pin) into `dir`:
 * at its path when the local file there is absent or synced, else beside it as `name (restored vN).ext`. The next
 * step uploads it as a new version. Returns where it went.
 */
export async function restoreFile(
  session: Session,
  regionId: string,
  path: string,
  version: number,
  dir: string,
): Promise<string> {
  const ctx = await session.region(regionId, { version });
  try {
    const view = remoteView(ctx);
    const r = [...view.all.values()].find((x) => x.path === path && x.entry.kind === "file");
    if (!r) throw new AtrestError("NOT_FOUND", `no file ${path} in version ${version}`);
    const tmp = join(session.state.tmp, `restore-${randomUUID()}`);
    await downloadVerified(session, ctx, r, tmp);
    try {
      const state = await session.state.readRegion(regionId);
      const synced = Object.values(state?.base ?? {}).find((b) => b.path === path);
      let target = path;
      const st = await stat(join(dir, path)).catch(() => undefined);
      if (st && !(synced && synced.size === st.size && synced.mtimeMs === Math.trunc(st.mtimeMs))) {
        const name = posix.basename(path);
        const dot = name.lastIndexOf(".");
        const renamed =
          dot > 0 ? `${name.slice(0, dot)} (restored v${version})${name.slice(dot)}` : `${name} (restored v${version})`;
        target = posix.join(posix.dirname(path), renamed);
      }
      await mkdir(dirname(join(dir, target)), { recursive: true });
      await rename(tmp, join(dir, target));
      return target;
    } finally {
      await rm(tmp, { force: true });
    }
  } finally {
    ctx.close();
  }
}

/**
 * Remote wipe (docs/sync-protocol.md §6): after DEVICE_REVOKED, and only if this user's verified chain revokes this
 * device, deletes every file and folder the last step synced into `dir` and the device's region state and keys.
 */
export async function wipeIfRevoked(session: Session, regionIds: string[]): Promise<{ wiped: boolean; files: number }> {
  if (!(await session.revokedByChain())) return { wiped: false, files: 0 };
  let files = 0;
  for (const id of regionIds) {
    const state = await session.state.readRegion(id);
    if (!state?.dir) continue;
    const entries = Object.values(state.base).sort((a, b) => b.path.split("/").length - a.path.split("/").length);
    for (const b of entries) {
      const p = join(state.dir, b.path);
      if (b.kind === "file") {
        if (
          await unlink(p).then(
            () => true,
            () => false,
          )
        )
          files++;
      } else await rmdir(p).catch(() => undefined);
    }
  }
  await session.state.wipe();
  return { wiped: true, files };
}
