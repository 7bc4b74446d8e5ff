// The per-region signed monotonic manifest (docs/sync-protocol.md §7): the whole tree at one version, every entry
// under one Ed25519 signature of a member device, chained to the previous version by hash. Shape checks, signing,
// the client's verification against what it pinned, and the diff between two versions. Pure.
import { IntegrityError } from "../../errors.ts";
import { canonical, objectHash } from "./canonical.ts";
import type { DeviceCert } from "./chain.ts";
import { PROTOCOL_VERSION, signObject, verifyObject } from "./keys.ts";
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
  entries: Entry[];
  sig: string;
}

export type UnsignedManifest = Omit<Manifest, "sig">;

const HEX32 = /^[0-9a-f]{32}$/;
const HEX64 = /^[0-9a-f]{64}$/;
const USER = /^[A-Za-z0-9._@-]{1,64}$/;
const ENTRY_KEYS = "blobSize,by,deleted,epoch,fver,hash,id,kind,name,parent,size";
const MANIFEST_KEYS = "at,author,entries,epoch,keys,members,owner,prev,regionId,sig,type,v,version";

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

/** Structure only (no signature): fields, types, sorted unique entries, a well-formed tree. */
export function checkManifestShape(raw: unknown): Manifest {
  const m = raw as Manifest;
  if (typeof m !== "object" || m === null || m.type !== "manifest") bad("not a manifest");
  if (m.v !== PROTOCOL_VERSION) bad(`unsupported protocol version ${String(m.v)} (downgrade or upgrade refused)`);
  if (Object.keys(m).sort().join(",") !== MANIFEST_KEYS) bad("unexpected fields");
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
  const byId = new Map<string, Entry>();
  let lastId = "";
  for (const e of m.entries) {
    if (typeof e !== "object" || e === null || Object.keys(e).sort().join(",") !== ENTRY_KEYS) bad("bad entry");
    if (!HEX32.test(e.id) || e.id <= lastId) bad("entries not sorted by id or repeated");
    lastId = e.id;
    if (e.parent !== "" && !HEX32.test(e.parent)) bad("bad parent");
    if (e.kind !== "file" && e.kind !== "dir") bad("bad kind");
    if (typeof e.name !== "string" || e.name.length === 0 || e.name.length > 1024) bad("bad name");
    if (!isCount(e.epoch, 1) || e.epoch > m.epoch) bad("entry of an unknown epoch");
    if (!isCount(e.fver, 1) || !isCount(e.size) || !isCount(e.blobSize)) bad("bad entry counters");
    if (e.kind === "dir" ? e.hash !== "" || e.size !== 0 || e.blobSize !== 0 : !HEX64.test(e.hash)) bad("bad hash");
    if (!HEX32.test(e.by) || typeof e.deleted !== "boolean") bad("bad entry");
    byId.set(e.id, e);
  }
  for (const e of m.entries) {
    let p = e.parent;
    let steps = 0;
    while (p !== "") {
      const parent = byId.get(p);
      if (parent?.kind !== "dir") throw new IntegrityError("manifest: entry whose parent is not a directory in it");
      if (!e.deleted && parent.deleted) bad("live entry in a deleted directory");
      if (++steps > m.entries.length) bad("cycle in the tree");
      p = parent.parent;
    }
  }
  return m;
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

/** What a client pinned of a region: the last manifest it verified and acted on. */
export interface RegionPin {
  regionId: string;
  version: number;
  hash: string;
  owner: Member;
  members: Member[];
  epoch: number;
  keys: { epoch: number; commit: string }[];
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
}

const sameMembers = (a: Member[], b: Member[]) => canonical(a).equals(canonical(b));

/** The client's checks (§7): signature by a verified member device, monotonic version, owner-only changes. */
export function verifyManifest(raw: unknown, o: VerifyOptions): Manifest {
  const m = checkManifestShape(raw);
  if (m.regionId !== o.regionId) bad("of another region");
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
      if (dev?.revoked) bad("signed by a revoked device");
      if (m.version === pin.version + 1 && m.prev !== pin.hash) bad("does not follow the verified version (fork)");
      if (!pin.members.some((x) => x.user === m.author.user) && !isOwner) bad("author was not a member");
      const changed = !sameMembers(m.members, pin.members) || m.epoch !== pin.epoch;
      if (changed && !isOwner) bad("membership or epoch changed by someone other than the owner");
      for (const k of pin.keys) {
        if (m.keys[k.epoch - 1]?.commit !== k.commit) bad("an epoch key commitment changed");
      }
      if (m.epoch < pin.epoch) bad("epoch went back");
    }
  } else if (dev?.revoked) bad("signed by a revoked device");
  return m;
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
