// The per-region signed monotonic manifest (docs/sync-protocol.md §7, §7a): each version one object under one Ed25519
// signature of a member device, chained to the previous version by hash. Version 1 objects carry the whole tree;
// version 2 ones are either full (a checkpoint) or a delta (the changed entries) and both sign a commitment to the
// whole tree (`root`), so a delta verifies against the state it follows. Shape checks, signing, applying a delta,
// the client's verification against what it pinned, and the diff between two versions. Pure.
import { createHash } from "node:crypto";
import { IntegrityError } from "../../errors.ts";
import { canonical, objectHash } from "./canonical.ts";
import type { DeviceCert } from "./chain.ts";
import { signObject, verifyObject } from "./keys.ts";
import { REGION_ID } from "./region.ts";

export interface Entry {
  id: string;
  /** Parent entry id, "" for the region's root. */
  parent: string;
  kind: "file" | "dir";
  /** Encrypted name and mtime (names.ts), bound to region, id, parent, kind and epoch. */
  name: string;
  /** Epoch of the key that encrypted the name (and the file key). */
  epoch: number;
  /** Content version of the entry: +1 on every content change. */
  fver: number;
  size: number;
  /** hex SHA-256 of the blob; "" for a directory. */
  hash: string;
  blobSize: number;
  /** Device that wrote this version. */
  by: string;
  /** In the trash (restorable); its blob stays referenced. */
  deleted: boolean;
  /** v2: the version that moved it to the trash (0 while live). */
  dv?: number;
  /** v2: when it moved to the trash, epoch ms as the deleting device saw it (0 while live). */
  dt?: number;
}

export interface Member {
  user: string;
  /** The user's root fingerprint as the owner verified it. */
  root: string;
}

export interface Manifest {
  v: number;
  type: "manifest";
  regionId: string;
  version: number;
  prev: string;
  owner: Member;
  members: Member[];
  epoch: number;
  keys: { epoch: number; commit: string }[];
  author: { user: string; device: string };
  at: string;
  /** v1: the whole tree; v2 full: the whole tree; v2 delta: the entries added or changed since `version - 1`. */
  entries: Entry[];
  /** v2: "full" (a checkpoint) or "delta". */
  form?: "full" | "delta";
  /** v2: hex commitment to the whole tree at this version (stateRoot). */
  root?: string;
  /** v2: the version of the full manifest this one builds on (its own version for a full one). */
  ckpt?: number;
  /** v2 delta: ids of trash entries removed from the tree (trash expiry); [] in a full one. */
  drop?: string[];
  sig: string;
}

/** The manifest object versions this code reads (1: whole trees only) and writes (2). */
export const MANIFEST_V1 = 1;
export const MANIFEST_V2 = 2;
/** A client publishes a full manifest once this many versions passed since the last one. */
export const CHECKPOINT_EVERY = 32;
/** Longest run of deltas after a full manifest that a server or client accepts (bounds what a new device replays). */
export const MAX_DELTA_RUN = 64;

export type UnsignedManifest = Omit<Manifest, "sig">;

const HEX32 = /^[0-9a-f]{32}$/;
const HEX64 = /^[0-9a-f]{64}$/;
const USER = /^[A-Za-z0-9._@-]{1,64}$/;
const ENTRY_KEYS = "blobSize,by,deleted,epoch,fver,hash,id,kind,name,parent,size";
const ENTRY_KEYS_V2 = "blobSize,by,deleted,dt,dv,epoch,fver,hash,id,kind,name,parent,size";
const MANIFEST_KEYS = "at,author,entries,epoch,keys,members,owner,prev,regionId,sig,type,v,version";
const MANIFEST_KEYS_V2 =
  "at,author,ckpt,drop,entries,epoch,form,keys,members,owner,prev,regionId,root,sig,type,v,version";

const isCount = (n: unknown, min = 0): n is number => Number.isSafeInteger(n) && (n as number) >= min;
const bad = (what: string): never => {
  throw new IntegrityError(`manifest: ${what}`);
};

function checkMember(m: unknown, what: string): Member {
  const x = m as Member;
  if (typeof x !== "object" || x === null || Object.keys(x).sort().join(",") !== "root,user") bad(`bad ${what}`);
  if (!USER.test(x.user) || !HEX64.test(x.root)) bad(`bad ${what}`);
  return x;
}

function checkEntry(e: Entry, m: Manifest): void {
  const keys = m.v === MANIFEST_V2 ? ENTRY_KEYS_V2 : ENTRY_KEYS;
  if (typeof e !== "object" || e === null || Object.keys(e).sort().join(",") !== keys) bad("bad entry");
  if (!HEX32.test(e.id)) bad("bad entry id");
  if (e.parent !== "" && !HEX32.test(e.parent)) bad("bad parent");
  if (e.kind !== "file" && e.kind !== "dir") bad("bad kind");
  if (typeof e.name !== "string" || e.name.length === 0 || e.name.length > 1024) bad("bad name");
  if (!isCount(e.epoch, 1) || e.epoch > m.epoch) bad("entry of an unknown epoch");
  if (!isCount(e.fver, 1) || !isCount(e.size) || !isCount(e.blobSize)) bad("bad entry counters");
  if (e.kind === "dir" ? e.hash !== "" || e.size !== 0 || e.blobSize !== 0 : !HEX64.test(e.hash)) bad("bad hash");
  if (!HEX32.test(e.by) || typeof e.deleted !== "boolean") bad("bad entry");
  if (m.v === MANIFEST_V2) {
    if (e.deleted ? !isCount(e.dv, 1) || e.dv > m.version || !isCount(e.dt) : e.dv !== 0 || e.dt !== 0)
      bad("bad trash version or time");
  }
}

/** A whole tree: sorted unique ids, parents are directories in it, no live entry in a deleted folder, no cycle. */
export function checkTree(entries: Entry[]): void {
  const byId = new Map<string, Entry>();
  let lastId = "";
  for (const e of entries) {
    if (e.id <= lastId) bad("entries not sorted by id or repeated");
    lastId = e.id;
    byId.set(e.id, e);
  }
  for (const e of entries) {
    let p = e.parent;
    let steps = 0;
    while (p !== "") {
      const parent = byId.get(p);
      if (parent?.kind !== "dir") throw new IntegrityError("manifest: entry whose parent is not a directory in it");
      if (!e.deleted && parent.deleted) bad("live entry in a deleted directory");
      if (++steps > entries.length) bad("cycle in the tree");
      p = parent.parent;
    }
  }
}

/**
 * Structure only (no signature): fields, types, sorted unique entries; for a v1 or a v2 full manifest also a
 * well-formed tree (a delta's tree is checked once applied, nextState).
 */
export function checkManifestShape(raw: unknown): Manifest {
  const m = raw as Manifest;
  if (typeof m !== "object" || m === null || m.type !== "manifest") bad("not a manifest");
  if (m.v !== MANIFEST_V1 && m.v !== MANIFEST_V2)
    bad(`unsupported protocol version ${String(m.v)} (downgrade or upgrade refused)`);
  const v2 = m.v === MANIFEST_V2;
  if (Object.keys(m).sort().join(",") !== (v2 ? MANIFEST_KEYS_V2 : MANIFEST_KEYS)) bad("unexpected fields");
  if (typeof m.regionId !== "string" || !REGION_ID.test(m.regionId)) bad("bad region id");
  if (!isCount(m.version, 1)) bad("bad version");
  if (m.version === 1 ? m.prev !== "" : !HEX64.test(m.prev)) bad("bad prev hash");
  checkMember(m.owner, "owner");
  if (!Array.isArray(m.members)) bad("bad members");
  let last = "";
  for (const x of m.members) {
    checkMember(x, "member");
    if (x.user <= last || x.user === m.owner.user) bad("members not sorted, repeated or the owner");
    last = x.user;
  }
  if (!isCount(m.epoch, 1) || !Array.isArray(m.keys) || m.keys.length !== m.epoch) bad("bad epoch or keys");
  m.keys.forEach((k, i) => {
    if (typeof k !== "object" || k === null || Object.keys(k).sort().join(",") !== "commit,epoch") bad("bad key");
    if (k.epoch !== i + 1 || !HEX64.test(k.commit)) bad("bad key commitment");
  });
  const a = m.author;
  if (typeof a !== "object" || a === null || Object.keys(a).sort().join(",") !== "device,user") bad("bad author");
  if (!USER.test(a.user) || !HEX32.test(a.device)) bad("bad author");
  if (typeof m.at !== "string" || m.at.length > 40) bad("bad time");
  if (!Array.isArray(m.entries)) bad("bad entries");
  let lastId = "";
  for (const e of m.entries) {
    checkEntry(e, m);
    if (e.id <= lastId) bad("entries not sorted by id or repeated");
    lastId = e.id;
  }
  if (v2) {
    if (m.form !== "full" && m.form !== "delta") bad("bad form");
    if (typeof m.root !== "string" || !HEX64.test(m.root)) bad("bad root");
    const drop = m.drop as string[];
    if (!Array.isArray(drop)) bad("bad drop list");
    if (m.form === "full") {
      if (m.ckpt !== m.version || drop.length > 0) bad("a full manifest is its own checkpoint and drops nothing");
    } else {
      const ckpt = m.ckpt as number;
      if (!isCount(ckpt, 1) || ckpt >= m.version) bad("bad checkpoint version");
      if (m.version - ckpt > MAX_DELTA_RUN) bad(`more than ${MAX_DELTA_RUN} deltas since the last full manifest`);
      let lastDrop = "";
      for (const id of drop) {
        if (typeof id !== "string" || !HEX32.test(id) || id <= lastDrop) bad("drop list not sorted ids");
        lastDrop = id;
      }
    }
  }
  if (m.form !== "delta") checkTree(m.entries);
  return m;
}

/** Hash of one entry's canonical form (cached: entries are not changed once signed, parsed or applied). */
const entryHashes = new WeakMap<Entry, Buffer>();
export function entryHash(e: Entry): Buffer {
  let h = entryHashes.get(e);
  if (!h) {
    h = createHash("sha256").update(canonical(e)).digest();
    entryHashes.set(e, h);
  }
  return h;
}

/** Seeds the hash of an entry read back from a store this code wrote (the client's own tree cache). */
export function rememberEntryHash(e: Entry, h: Buffer): void {
  entryHashes.set(e, h);
}

/** Field by field: the same entry (cheaper than hashing both). */
function sameEntry(a: Entry, b: Entry): boolean {
  return (
    a.id === b.id &&
    a.parent === b.parent &&
    a.kind === b.kind &&
    a.name === b.name &&
    a.epoch === b.epoch &&
    a.fver === b.fver &&
    a.size === b.size &&
    a.hash === b.hash &&
    a.blobSize === b.blobSize &&
    a.by === b.by &&
    a.deleted === b.deleted &&
    a.dv === b.dv &&
    a.dt === b.dt
  );
}

/** The v2 commitment to a whole tree: SHA-256 over a context, the region id and every entry's hash in id order. */
export function stateRoot(regionId: string, entries: Entry[]): string {
  const h = createHash("sha256").update(`atrest-sync v2 state\0${regionId}\0`);
  for (const e of entries) h.update(entryHash(e));
  return h.digest("hex");
}

/**
 * The whole tree at `m.version` given the tree at `m.version - 1` (sorted by id; ignored for a full manifest): a
 * delta's entries replace or add, its drop list removes entries that were in the trash; the result must be a
 * well-formed tree whose root is the signed one.
 */
export function nextState(prev: Entry[] | undefined, m: Manifest): Entry[] {
  let out: Entry[];
  if (m.form === "delta") {
    if (!prev) bad("a delta needs the state it follows");
    const before = prev as Entry[];
    const drop = new Set(m.drop);
    out = [];
    let i = 0;
    let j = 0;
    const changes = m.entries;
    while (i < before.length || j < changes.length) {
      const a = before[i];
      const b = changes[j];
      if (b && (!a || b.id <= a.id)) {
        if (a && a.id === b.id) i++;
        if (drop.has(b.id)) bad("an entry is both changed and dropped");
        out.push(b);
        j++;
      } else if (a) {
        if (drop.has(a.id)) {
          if (!a.deleted) bad("drops an entry that is not in the trash");
          drop.delete(a.id);
        } else out.push(a);
        i++;
      }
    }
    if (drop.size > 0) bad("drops an entry that is not there");
    checkTree(out);
  } else out = m.entries;
  if (m.v === MANIFEST_V2 && stateRoot(m.regionId, out) !== m.root)
    bad("the tree does not match the signed root (an entry was dropped, changed or injected)");
  return out;
}

/** hex SHA-256 of the canonical signed manifest: what `prev` and the client's pin name. */
const hashes = new WeakMap<Manifest, string>();

/** Records the hash of a manifest whose canonical bytes the caller already hashed (parsed from, or sent as). */
export function rememberManifestHash(m: Manifest, hash: string): void {
  hashes.set(m, hash);
}

export function manifestHash(m: Manifest): string {
  // manifests are not changed once signed or parsed: the canonical form of thousands of entries is made once
  let h = hashes.get(m);
  if (!h) {
    h = objectHash(m);
    hashes.set(m, h);
  }
  return h;
}

export function signManifest(m: UnsignedManifest, signKey: Buffer): Manifest {
  const sorted = { ...m, entries: [...m.entries].sort((a, b) => (a.id < b.id ? -1 : 1)) };
  return checkManifestShape(signObject("manifest", sorted, signKey));
}

/** What a v2 publish writes besides the header: the tree it leads to and the trash entries it drops. */
export interface NextTree {
  /** The whole tree after this version (any order). */
  entries: Entry[];
  /** Write a full manifest (a checkpoint) instead of a delta. */
  full: boolean;
  /** A full one at the latest this many versions after the last (default CHECKPOINT_EVERY, at most MAX_DELTA_RUN). */
  every?: number;
}

/**
 * Signs the v2 manifest that follows `cur` (whose tree is `cur.entries`, sorted by id): a delta of the entries that
 * differ from the current tree (and the ids that left it), or a full one. Returns the signed object and the tree.
 */
export function signNext(
  cur: Manifest,
  header: Omit<UnsignedManifest, "entries" | "form" | "root" | "ckpt" | "drop" | "v">,
  next: NextTree,
  signKey: Buffer,
): { signed: Manifest; tree: Entry[] } {
  const before = new Map(cur.entries.map((e) => [e.id, e]));
  // an entry that did not change is the very object of the current tree (its hash is known: only changes are hashed)
  const tree = next.entries
    .map((e) => {
      const old = before.get(e.id);
      return old && sameEntry(old, e) ? old : e;
    })
    .sort((a, b) => (a.id < b.id ? -1 : 1));
  const root = stateRoot(header.regionId, tree);
  const curCkpt = cur.v === MANIFEST_V2 ? (cur.form === "full" ? cur.version : (cur.ckpt as number)) : 0;
  const every = Math.min(MAX_DELTA_RUN, Math.max(1, next.every ?? CHECKPOINT_EVERY));
  const full = next.full || curCkpt === 0 || header.version - curCkpt >= every;
  let body: UnsignedManifest;
  if (full) body = { ...header, v: MANIFEST_V2, form: "full", root, ckpt: header.version, drop: [], entries: tree };
  else {
    const changed: Entry[] = [];
    for (const e of tree) {
      if (before.get(e.id) !== e) changed.push(e);
      before.delete(e.id);
    }
    const drop = [...before.keys()].sort();
    body = { ...header, v: MANIFEST_V2, form: "delta", root, ckpt: curCkpt, drop, entries: changed };
  }
  const signed = checkManifestShape(signObject("manifest", body, signKey));
  return { signed, tree };
}

/** What a client pinned of a region: the last manifest it verified and acted on. */
export interface RegionPin {
  regionId: string;
  version: number;
  hash: string;
  owner: Member;
  members: Member[];
  epoch: number;
  keys: { epoch: number; commit: string }[];
  /** The manifest object version pinned (absent: 1): once 2, a version 1 manifest is a downgrade. */
  v?: number;
  /** v2: the signed tree root and the checkpoint this version builds on. */
  root?: string;
  ckpt?: number;
}

export function pinOfManifest(m: Manifest): RegionPin {
  return {
    regionId: m.regionId,
    version: m.version,
    hash: manifestHash(m),
    owner: m.owner,
    members: m.members,
    epoch: m.epoch,
    keys: m.keys,
    ...(m.v === MANIFEST_V2 ? { v: MANIFEST_V2, root: m.root, ckpt: m.form === "full" ? m.version : m.ckpt } : {}),
  };
}

export interface VerifyOptions {
  regionId: string;
  /** The last verified state; undefined on first contact (then `owner` must be given). */
  pin?: RegionPin;
  /** The owner expected on first contact (user and verified root fingerprint). */
  owner?: Member;
  /** The author's device certificate from the author's verified chain, or undefined if not there; revoked flag. */
  authorDevice(user: string, device: string): { cert: DeviceCert; revoked: boolean } | undefined;
  /** Allow a version below the pin (restore of an old version: never as the current state). */
  allowOlder?: boolean;
  /**
   * The tree at `pin` (sorted by id): a delta is applied to it. The returned manifest then holds the whole tree in
   * `entries` (the signed object's hash stays its manifestHash).
   */
  state?: Entry[];
  /** History this device accepted before (versions up to its pin, replayed from a checkpoint): no revoked check. */
  historic?: boolean;
  /**
   * Accept an author device revoked since: the caller accepts such a version only if a later version by an active
   * device builds on it (or it is the owner vouching for it by building on it), and flags it (§7b).
   */
  revokedOk?: boolean;
}

const sameMembers = (a: Member[], b: Member[]) => canonical(a).equals(canonical(b));

/** The client's checks (§7): signature by a verified member device, monotonic version, owner-only changes. */
export function verifyManifest(raw: unknown, o: VerifyOptions): Manifest {
  const m = checkManifestShape(raw);
  if (m.regionId !== o.regionId) bad("of another region");
  if (o.pin?.v === MANIFEST_V2 && m.v !== MANIFEST_V2 && !o.allowOlder)
    bad(`protocol version ${m.v} after version ${MANIFEST_V2} (downgrade refused)`);
  const owner = o.pin?.owner ?? o.owner;
  if (!owner) bad("no pinned owner");
  if (m.owner.user !== owner?.user || m.owner.root !== owner.root) bad("owner differs from the pinned owner");
  const isOwner = m.author.user === m.owner.user;
  if (!isOwner && !m.members.some((x) => x.user === m.author.user)) bad("author is not a member");
  const dev = o.authorDevice(m.author.user, m.author.device);
  if (!dev) bad("author device is not in the author's verified device chain");
  if (!verifyObject("manifest", m, (dev as { cert: DeviceCert }).cert.signPub)) bad("signature invalid (forged)");
  const hash = manifestHash(m);
  const pin = o.pin;
  if (pin) {
    if (m.version < pin.version && !o.allowOlder)
      bad(`version ${m.version} is older than the verified ${pin.version} (rollback)`);
    if (m.version === pin.version && hash !== pin.hash)
      bad(`version ${m.version} differs from the verified one (fork)`);
    if (m.version > pin.version) {
      if (dev?.revoked && !o.revokedOk) bad("signed by a revoked device");
      if (m.version === pin.version + 1 && m.prev !== pin.hash) bad("does not follow the verified version (fork)");
      if (!pin.members.some((x) => x.user === m.author.user) && !isOwner) bad("author was not a member");
      const changed = !sameMembers(m.members, pin.members) || m.epoch !== pin.epoch;
      if (changed && !isOwner) bad("membership or epoch changed by someone other than the owner");
      for (const k of pin.keys) {
        if (m.keys[k.epoch - 1]?.commit !== k.commit) bad("an epoch key commitment changed");
      }
      if (m.epoch < pin.epoch) bad("epoch went back");
    }
  } else if (dev?.revoked && !o.historic && !o.revokedOk) bad("signed by a revoked device");
  if (m.form === "delta") {
    if (!o.pin || !o.state || m.version !== o.pin.version + 1) bad("a delta that does not follow the verified version");
    if (o.pin?.v !== MANIFEST_V2 || m.ckpt !== o.pin.ckpt) bad("a delta on another checkpoint than the verified one");
  }
  if (m.v !== MANIFEST_V2) return m;
  const tree = nextState(o.state, m);
  if (tree === m.entries) return m;
  const whole = { ...m, entries: tree };
  hashes.set(whole, hash);
  return whole;
}

export interface ManifestDiff {
  added: Entry[];
  removed: Entry[];
  changed: { before: Entry; after: Entry }[];
}

/** Entries added, removed and changed (any field) from `a` to `b`. */
export function diffManifests(a: Pick<Manifest, "entries"> | undefined, b: Pick<Manifest, "entries">): ManifestDiff {
  const before = new Map((a?.entries ?? []).map((e) => [e.id, e]));
  const out: ManifestDiff = { added: [], removed: [], changed: [] };
  for (const e of b.entries) {
    const old = before.get(e.id);
    if (!old) out.added.push(e);
    else if (!canonical(old).equals(canonical(e))) out.changed.push({ before: old, after: e });
    before.delete(e.id);
  }
  out.removed.push(...before.values());
  return out;
}
