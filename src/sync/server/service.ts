// The server's side of E2EE sync (docs/sync-protocol.md §3, §6, §7, §10): it stores public device certificates and
// chains, signed manifests, key envelopes and opaque blobs per region, and checks what it can without any key that
// decrypts: chain rules, manifest signatures against registered device keys, monotonic versions, membership and owner
// rules, blob hashes, quotas and retention. Every region operation is audited by user, device and region, never a name.
import { createHash } from "node:crypto";
import type { AuditAction, AuditSink } from "../../audit/types.ts";
import { AtrestError, IntegrityError } from "../../errors.ts";
import type { BlobReader, BlobStore } from "../../store/blobs.ts";
import type {
  MetaStore,
  MetaTx,
  SyncDeviceRow,
  SyncEnvelopeRow,
  SyncLinkRow,
  SyncRegionRow,
} from "../../store/types.ts";
import { canonical, parseCanonical, sha256Hex } from "../core/canonical.ts";
import { applyLink, type ChainLink, type ChainState, checkDeviceCert, type DeviceCert } from "../core/chain.ts";
import { fingerprintOf, PROTOCOL_VERSION, verifyObject } from "../core/keys.ts";
import { LINK_ID } from "../core/links.ts";
import {
  checkManifestShape,
  type Entry,
  MANIFEST_V2,
  MAX_DELTA_RUN,
  type Manifest,
  nextState,
} from "../core/manifest.ts";
import { type Envelope, REGION_ID } from "../core/region.ts";
import { SyncRefusal } from "./errors.ts";

export interface SyncActor {
  user: string;
  /** The API token of the request (a device talks with its own token); undefined for a browser session. */
  tokenId: string | undefined;
  sourceIp?: string;
  sessionId?: string;
}

export interface SyncServerOptions {
  store: MetaStore;
  blobs: BlobStore;
  audit: AuditSink;
  /** Manifests kept per region unless the owner sets otherwise (default 20). */
  keepVersions?: number;
  /** Largest manifest accepted, bytes (default 64 MiB). */
  maxManifestBytes?: number;
  now?: () => number;
  /** A user's byte quota (0 = unlimited): blobs count against the region owner's. */
  quotaOf?: (user: string) => Promise<number>;
  /** A blob no kept manifest names survives the sweep this long after its upload (a publish in flight), ms. */
  blobGraceMs?: number;
  /** How often startSweeps() applies every region's retention and sweeps its blobs, ms (0: never; default 1 h). */
  sweepEveryMs?: number;
}

export const DEFAULT_KEEP_VERSIONS = 20;
export const DEFAULT_BLOB_GRACE_MS = 24 * 3_600_000;
export const DEFAULT_SWEEP_EVERY_MS = 3_600_000;
/** The actor of the server's own timed sweep in the audit log. */
const SWEEPER = "atrest";

/** The whole tree of a region at its current version, as the server last verified it (one per region, cached). */
interface RegionTree {
  version: number;
  hash: string;
  /** The signed object of that version (its entries: the whole tree). */
  head: Manifest;
  /** The checkpoint the version builds on; undefined for a version 1 manifest. */
  ckpt: number | undefined;
}

/**
 * The `ckpt` of a stored manifest without parsing it (a full one is megabytes): canonical keys are sorted, so the
 * first `"ckpt":` is the top-level field (only "at" and "author", whose values hold no quote-free digits run, come
 * before it); a version 1 manifest has none.
 */
export function ckptOfBody(body: string): number | undefined {
  const m = /"ckpt":(\d+)/.exec(body.slice(0, 512));
  return m ? Number(m[1]) : undefined;
}

export interface ManifestLines {
  /** Canonical signed manifests, oldest first. */
  lines: Buffer[];
  head: { version: number; hash: string };
  retention: { keepVersions: number; keepDays: number; legalHold: boolean };
}
const HASH = /^[0-9a-f]{64}$/;

export interface DeviceInfo {
  id: string;
  name: string;
  state: SyncDeviceRow["state"];
  fingerprint: string;
  cert: DeviceCert;
}

export interface RegionInfo {
  id: string;
  owner: string;
  version: number;
  keepVersions: number;
  keepDays: number;
  legalHold: boolean;
  usedBytes: number;
}

function parseObject(bytes: Buffer): unknown {
  try {
    return parseCanonical(bytes);
  } catch (err) {
    throw new SyncRefusal("BAD_OBJECT", (err as Error).message);
  }
}

const refuseIntegrity = <T>(fn: () => T, slug: "BAD_OBJECT" | "BAD_SIGNATURE" = "BAD_OBJECT"): T => {
  try {
    return fn();
  } catch (err) {
    if (err instanceof IntegrityError)
      throw new SyncRefusal(/signature/.test(err.message) ? "BAD_SIGNATURE" : slug, err.message);
    throw err;
  }
};

export interface LinkInfo {
  id: string;
  blobHash: string;
  expiresAt: string;
  revoked: boolean;
  uses: number;
  createdBy: string;
}

const linkInfo = (l: SyncLinkRow): LinkInfo => ({
  id: l.id,
  blobHash: l.blobHash,
  expiresAt: new Date(l.expiresAt).toISOString(),
  revoked: l.revoked,
  uses: l.uses,
  createdBy: l.createdBy,
});

const regionInfo = (r: SyncRegionRow): RegionInfo => ({
  id: r.id,
  owner: r.owner,
  version: r.version,
  keepVersions: r.keepVersions,
  keepDays: r.keepDays,
  legalHold: r.legalHold,
  usedBytes: r.usedBytes,
});

export class SyncServer {
  readonly #store: MetaStore;
  readonly #blobs: BlobStore;
  readonly #audit: AuditSink;
  readonly #keep: number;
  readonly #maxManifest: number;
  readonly #now: () => number;
  readonly #quotaOf: (user: string) => Promise<number>;
  readonly #grace: number;
  readonly #sweepEvery: number;
  /** Current trees by region (a delta is checked against it); checked against the store's version and hash. */
  readonly #trees = new Map<string, RegionTree>();

  constructor(o: SyncServerOptions) {
    this.#store = o.store;
    this.#blobs = o.blobs;
    this.#audit = o.audit;
    this.#keep = o.keepVersions ?? DEFAULT_KEEP_VERSIONS;
    this.#maxManifest = o.maxManifestBytes ?? 64 << 20;
    this.#now = o.now ?? Date.now;
    this.#quotaOf = o.quotaOf ?? (async () => 0);
    this.#grace = o.blobGraceMs ?? DEFAULT_BLOB_GRACE_MS;
    this.#sweepEvery = o.sweepEveryMs ?? DEFAULT_SWEEP_EVERY_MS;
  }

  /** The region's tree at `version` (its current one): from the cache, or replayed from its checkpoint. */
  async #tree(tx: Pick<MetaTx, "getSyncManifest">, regionId: string, version: number): Promise<RegionTree> {
    const row = await tx.getSyncManifest(regionId, version);
    if (!row) throw new AtrestError("INTEGRITY", "current manifest missing");
    const cached = this.#trees.get(regionId);
    if (cached && cached.version === version && cached.hash === row.hash) return cached;
    const ckpt = ckptOfBody(row.body);
    let tree: Entry[] | undefined;
    let head: Manifest | undefined;
    for (let v = ckpt ?? version; v <= version; v++) {
      const r = v === version ? row : await tx.getSyncManifest(regionId, v);
      if (!r) throw new AtrestError("INTEGRITY", `manifest ${v} missing under version ${version}`);
      const m = JSON.parse(r.body) as Manifest;
      tree = refuseIntegrity(() => nextState(tree, m));
      head = tree === m.entries ? m : { ...m, entries: tree };
    }
    const t: RegionTree = { version, hash: row.hash, head: head as Manifest, ckpt };
    this.#keepTree(regionId, t);
    return t;
  }

  #keepTree(regionId: string, t: RegionTree): void {
    this.#trees.delete(regionId);
    this.#trees.set(regionId, t);
    // the most recently used regions only (each tree is about 400 bytes an entry)
    for (const k of this.#trees.keys()) {
      if (this.#trees.size <= 64) break;
      this.#trees.delete(k);
    }
  }

  get maxManifestBytes(): number {
    return this.#maxManifest;
  }

  #record(
    actor: SyncActor,
    action: AuditAction,
    outcome: "success" | "failure",
    e: { target?: string; detail?: string; size?: number; reason?: string },
  ): void {
    this.#audit.record({
      action,
      outcome,
      user: actor.user,
      protocol: "sync",
      ...(actor.sourceIp ? { sourceIp: actor.sourceIp } : {}),
      ...(actor.sessionId ? { sessionId: actor.sessionId } : {}),
      ...e,
    });
  }

  /** Runs `fn`, auditing a refusal (slug and message only: never a name, which the server does not have anyway). */
  async #audited<T>(
    actor: SyncActor,
    action: AuditAction,
    target: string | undefined,
    fn: () => Promise<T>,
  ): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof AtrestError) {
        const reason = err instanceof SyncRefusal ? `${err.slug}: ${err.message}` : err.message;
        this.#record(actor, action, "failure", { ...(target ? { target } : {}), reason: reason.slice(0, 200) });
      }
      throw err;
    }
  }

  /** The calling device: bound to the request's token, of the calling user, active. */
  async #device(
    actor: SyncActor,
    tx: Pick<MetaTx, "getSyncDeviceByToken"> = this.#store,
    allowPending = false,
  ): Promise<SyncDeviceRow> {
    if (!actor.tokenId) throw new SyncRefusal("DEVICE_UNKNOWN", "sync requests come from a device's API token");
    const d = await tx.getSyncDeviceByToken(actor.tokenId);
    if (!d || d.user !== actor.user) throw new SyncRefusal("DEVICE_UNKNOWN", "this token belongs to no sync device");
    if (d.state === "revoked") throw new SyncRefusal("DEVICE_REVOKED", `device ${d.id} was revoked`);
    if (d.state === "pending" && !allowPending)
      throw new SyncRefusal("DEVICE_UNKNOWN", `device ${d.id} is not approved yet`);
    return d;
  }

  async #chainState(user: string, tx: Pick<MetaTx, "listSyncChain"> = this.#store): Promise<ChainState | undefined> {
    let state: ChainState | undefined;
    for (const row of await tx.listSyncChain(user)) state = applyLink(state, JSON.parse(row.link), user);
    return state;
  }

  // ---- devices and chains ----

  async registerDevice(actor: SyncActor, raw: unknown): Promise<DeviceInfo> {
    return this.#audited(actor, "sync.device", undefined, async () => {
      if (!actor.tokenId) throw new SyncRefusal("BAD_OBJECT", "register a device with the API token it will use");
      const cert = refuseIntegrity(() => checkDeviceCert(raw, actor.user));
      const row = await this.#store.transaction(async (tx) => {
        const byToken = await tx.getSyncDeviceByToken(actor.tokenId as string);
        const existing = await tx.getSyncDevice(cert.id);
        if (existing && existing.tokenId === actor.tokenId) return existing;
        if (existing) throw new SyncRefusal("CHAIN_CONFLICT", `device ${cert.id} is registered already`);
        if (byToken) throw new SyncRefusal("CHAIN_CONFLICT", "this token belongs to another device");
        const r: SyncDeviceRow = {
          id: cert.id,
          user: actor.user,
          cert: canonical(cert).toString("utf8"),
          state: "pending",
          tokenId: actor.tokenId as string,
          createdAt: this.#now(),
        };
        await tx.putSyncDevice(r);
        return r;
      });
      this.#record(actor, "sync.device", "success", { target: cert.id, detail: "register (pending)" });
      return this.#deviceInfo(row);
    });
  }

  #deviceInfo(r: SyncDeviceRow): DeviceInfo {
    const cert = JSON.parse(r.cert) as DeviceCert;
    return { id: r.id, name: cert.name, state: r.state, fingerprint: fingerprintOf(cert), cert };
  }

  async listDevices(actor: SyncActor): Promise<DeviceInfo[]> {
    return (await this.#store.listSyncDevices(actor.user)).map((r) => this.#deviceInfo(r));
  }

  async chain(user: string): Promise<ChainLink[]> {
    return (await this.#store.listSyncChain(user)).map((r) => JSON.parse(r.link) as ChainLink);
  }

  /** Appends a link signed by the calling device (for link 0: the device it adds, which must be the caller). */
  async appendLink(actor: SyncActor, raw: unknown): Promise<{ seq: number }> {
    return this.#audited(actor, "sync.chain", undefined, async () => {
      const link = raw as ChainLink;
      const result = await this.#store.transaction(async (tx) => {
        const me = await this.#device(actor, tx, true);
        const state = await this.#chainState(actor.user, tx);
        const next = refuseIntegrity(() => applyLink(state, link, actor.user), "BAD_OBJECT");
        if (link.signer !== me.id)
          throw new SyncRefusal("BAD_SIGNATURE", "a link is signed by the device that sends it");
        if (me.state === "pending" && !(state === undefined && link.device?.id === me.id)) {
          throw new SyncRefusal("DEVICE_UNKNOWN", `device ${me.id} is not approved yet`);
        }
        if (link.op === "add") {
          const cert = link.device as DeviceCert;
          const added = await tx.getSyncDevice(cert.id);
          if (!added || added.user !== actor.user || added.state !== "pending") {
            throw new SyncRefusal("CHAIN_CONFLICT", `device ${cert.id} is not waiting for approval`);
          }
          if (added.cert !== canonical(cert).toString("utf8"))
            throw new SyncRefusal("CHAIN_CONFLICT", "certificate differs from the registered one");
          await tx.putSyncDevice({ ...added, state: "active" });
        } else {
          const target = await tx.getSyncDevice(link.target as string);
          if (target) await tx.putSyncDevice({ ...target, state: "revoked" });
        }
        await tx.insertSyncChainLink({ user: actor.user, seq: next.seq, link: canonical(link).toString("utf8") });
        return {
          seq: next.seq,
          op: link.op,
          target: link.op === "add" ? (link.device as DeviceCert).id : (link.target as string),
        };
      });
      this.#record(actor, "sync.chain", "success", {
        target: result.target,
        detail: `${result.op} at seq ${result.seq}`,
      });
      return { seq: result.seq };
    });
  }

  // ---- regions ----

  async #access(
    actor: SyncActor,
    regionId: string,
    tx: Pick<MetaTx, "getSyncRegion" | "listSyncMembers" | "getSyncDeviceByToken"> = this.#store,
  ) {
    if (!REGION_ID.test(regionId)) throw new SyncRefusal("NO_SUCH_REGION", "no such region");
    const device = await this.#device(actor, tx);
    const region = await tx.getSyncRegion(regionId);
    if (!region) throw new SyncRefusal("NO_SUCH_REGION", "no such region");
    const members = await tx.listSyncMembers(regionId);
    if (region.owner !== actor.user && !members.includes(actor.user))
      throw new SyncRefusal("NOT_MEMBER", "no such region");
    return { device, region, members };
  }

  #checkSigned(m: Manifest, actor: SyncActor, device: SyncDeviceRow): void {
    if (m.author.user !== actor.user || m.author.device !== device.id) {
      throw new SyncRefusal("BAD_SIGNATURE", "a manifest is signed by the device that sends it");
    }
    const cert = JSON.parse(device.cert) as DeviceCert;
    if (!verifyObject("manifest", m, cert.signPub))
      throw new SyncRefusal("BAD_SIGNATURE", "manifest signature invalid");
  }

  /** A new region with its first manifest (version 1, no entries), owned by the caller. */
  async createRegion(actor: SyncActor, bytes: Buffer): Promise<RegionInfo> {
    return this.#audited(actor, "sync.region", undefined, async () => {
      const m = refuseIntegrity(() => checkManifestShape(parseObject(bytes)));
      const region = await this.#store.transaction(async (tx) => {
        const device = await this.#device(actor, tx);
        this.#checkSigned(m, actor, device);
        if (m.version !== 1 || m.entries.length > 0)
          throw new SyncRefusal("BAD_OBJECT", "a region starts at version 1 with no entries");
        refuseIntegrity(() => nextState(undefined, m));
        if (m.owner.user !== actor.user) throw new SyncRefusal("NOT_OWNER", "the creator owns the region");
        const chain = await this.#chainState(actor.user, tx);
        if (chain?.root !== m.owner.root)
          throw new SyncRefusal("BAD_OBJECT", "owner fingerprint is not the owner's chain root");
        if (await tx.getSyncRegion(m.regionId)) throw new SyncRefusal("REGION_EXISTS", "region exists");
        const row: SyncRegionRow = {
          id: m.regionId,
          owner: actor.user,
          version: 1,
          keepVersions: this.#keep,
          keepDays: 0,
          legalHold: false,
          usedBytes: 0,
          createdAt: this.#now(),
        };
        await tx.putSyncRegion(row);
        await tx.setSyncMembers(
          m.regionId,
          m.members.map((x) => x.user),
        );
        await tx.insertSyncManifest({
          regionId: m.regionId,
          version: 1,
          hash: sha256Hex(bytes),
          body: bytes.toString("utf8"),
          author: device.id,
          createdAt: this.#now(),
        });
        return row;
      });
      this.#record(actor, "sync.region", "success", {
        target: m.regionId,
        detail: `create by device ${m.author.device}`,
      });
      return regionInfo(region);
    });
  }

  async listRegions(actor: SyncActor): Promise<RegionInfo[]> {
    await this.#device(actor);
    return (await this.#store.listSyncRegions(actor.user)).map(regionInfo);
  }

  /** The latest manifest, or version `version` if still kept: the canonical bytes as signed. */
  async manifest(actor: SyncActor, regionId: string, version?: number): Promise<Buffer> {
    return this.#audited(actor, "sync.manifest", regionId, async () => {
      const { region } = await this.#access(actor, regionId);
      const row = await this.#store.getSyncManifest(regionId, version ?? region.version);
      if (!row) throw new SyncRefusal("NO_SUCH_VERSION", `version ${version} is not kept`);
      this.#record(actor, "sync.manifest", "success", { target: regionId, detail: `read version ${row.version}` });
      return Buffer.from(row.body, "utf8");
    });
  }

  /**
   * The signed manifests a client replays (§7a): `since` P → versions P+1 … current (none when P ≥ current); `from` F
   * → F … current; neither → from the checkpoint the version `to` (default current) builds on, up to `to`. Every
   * version asked for must still be kept (else NO_SUCH_VERSION). The head (current version and hash) and the
   * retention come along, so a client with nothing new learns that from one small answer.
   */
  async manifests(
    actor: SyncActor,
    regionId: string,
    q: { since?: number; from?: number; to?: number },
  ): Promise<ManifestLines> {
    return this.#audited(actor, "sync.manifest", regionId, async () => {
      const { region } = await this.#access(actor, regionId);
      const headRow = await this.#store.getSyncManifest(regionId, region.version);
      if (!headRow) throw new AtrestError("INTEGRITY", "current manifest missing");
      const to = Math.min(q.to ?? region.version, region.version);
      let from: number;
      if (q.since !== undefined) from = q.since + 1;
      else if (q.from !== undefined) from = q.from;
      else {
        const row = to === region.version ? headRow : await this.#store.getSyncManifest(regionId, to);
        if (!row) throw new SyncRefusal("NO_SUCH_VERSION", `version ${to} is not kept`);
        from = ckptOfBody(row.body) ?? to;
      }
      const lines: Buffer[] = [];
      for (let v = from; v <= to; v++) {
        const row = v === region.version ? headRow : await this.#store.getSyncManifest(regionId, v);
        if (!row) throw new SyncRefusal("NO_SUCH_VERSION", `version ${v} is not kept`);
        lines.push(Buffer.from(row.body, "utf8"));
      }
      this.#record(actor, "sync.manifest", "success", {
        target: regionId,
        detail: lines.length ? `read versions ${from}-${to}` : `read head ${region.version}`,
      });
      return {
        lines,
        head: { version: region.version, hash: headRow.hash },
        retention: { keepVersions: region.keepVersions, keepDays: region.keepDays, legalHold: region.legalHold },
      };
    });
  }

  async versions(actor: SyncActor, regionId: string): Promise<number[]> {
    await this.#access(actor, regionId);
    return this.#store.listSyncManifestVersions(regionId);
  }

  /**
   * The next manifest: the caller's device signed it, `version = current + 1`, `prev = hash(current)`; only the owner
   * changes membership or epochs; every blob it names is in the region. Then retention drops what is no longer kept.
   */
  async putManifest(actor: SyncActor, regionId: string, bytes: Buffer): Promise<{ version: number }> {
    return this.#audited(actor, "sync.manifest", regionId, async () => {
      if (bytes.length > this.#maxManifest) throw new SyncRefusal("BAD_OBJECT", "manifest too large");
      const m = refuseIntegrity(() => checkManifestShape(parseObject(bytes)));
      if (m.regionId !== regionId) throw new SyncRefusal("BAD_OBJECT", "manifest of another region");
      const drop: string[] = [];
      let tree: RegionTree | undefined;
      await this.#store.transaction(async (tx) => {
        const { device, region } = await this.#access(actor, regionId, tx);
        this.#checkSigned(m, actor, device);
        const current = await this.#tree(tx, regionId, region.version);
        if (m.version !== region.version + 1 || m.prev !== current.hash) {
          throw new SyncRefusal("STALE_MANIFEST", `version ${m.version} does not follow the current ${region.version}`);
        }
        const cur = current.head;
        if (cur.v === MANIFEST_V2 && m.v !== MANIFEST_V2)
          throw new SyncRefusal("BAD_OBJECT", `protocol version ${m.v} after version ${MANIFEST_V2} (downgrade)`);
        const isOwner = actor.user === region.owner;
        if (canonical(m.owner).toString() !== canonical(cur.owner).toString())
          throw new SyncRefusal("NOT_OWNER", "the owner cannot change");
        const changed = canonical(m.members).toString() !== canonical(cur.members).toString() || m.epoch !== cur.epoch;
        if (changed && !isOwner) throw new SyncRefusal("NOT_OWNER", "only the owner changes members or epochs");
        if (m.epoch < cur.epoch || cur.keys.some((k, i) => m.keys[i]?.commit !== k.commit)) {
          throw new SyncRefusal("BAD_OBJECT", "epochs only move forward and keep their commitments");
        }
        if (m.form === "delta" && (current.ckpt === undefined || m.ckpt !== current.ckpt))
          throw new SyncRefusal("BAD_OBJECT", "a delta builds on the checkpoint of the version it follows");
        if (m.form === "delta" && m.version - (m.ckpt as number) > MAX_DELTA_RUN)
          throw new SyncRefusal("BAD_OBJECT", `at most ${MAX_DELTA_RUN} deltas follow a full manifest`);
        const entries = refuseIntegrity(() => nextState(cur.entries, m));
        // a blob the current tree names exists (the sweep keeps it): check only what is new
        const have = new Set<string>();
        for (const e of cur.entries) if (e.kind === "file") have.add(e.hash);
        for (const e of m.entries) {
          if (e.kind === "file" && !have.has(e.hash) && !(await tx.getSyncBlob(regionId, e.hash))) {
            throw new SyncRefusal("MISSING_BLOB", `blob ${e.hash} is not in the region`);
          }
        }
        const hash = sha256Hex(bytes);
        await tx.insertSyncManifest({
          regionId,
          version: m.version,
          hash,
          body: bytes.toString("utf8"),
          author: device.id,
          createdAt: this.#now(),
        });
        await tx.setSyncMembers(
          regionId,
          m.members.map((x) => x.user),
        );
        const next = { ...region, version: m.version };
        const gone = await this.#retain(tx, next);
        if (gone.size > 0 || m.form !== "delta") drop.push(...(await this.#sweep(tx, next, gone)));
        await tx.putSyncRegion(next);
        tree = {
          version: m.version,
          hash,
          head: entries === m.entries ? m : { ...m, entries },
          ckpt: m.v === MANIFEST_V2 ? (m.form === "full" ? m.version : m.ckpt) : undefined,
        };
      });
      if (tree) this.#keepTree(regionId, tree);
      for (const id of drop) await this.#blobs.remove(id).catch(() => undefined);
      this.#record(actor, "sync.manifest", "success", {
        target: regionId,
        detail: `version ${m.version} (${m.form ?? "full"}), ${m.entries.length} entries, epoch ${m.epoch}, device ${m.author.device}`,
      });
      return { version: m.version };
    });
  }

  /**
   * Drops manifests that are neither among the last keepVersions nor younger than keepDays (unless on legal hold),
   * except those the oldest kept version builds on (from its checkpoint on: a delta is only readable from there).
   * Returns the blob hashes the dropped versions named (for the sweep right after).
   */
  async #retain(tx: MetaTx, region: SyncRegionRow): Promise<Set<string>> {
    const gone = new Set<string>();
    if (region.legalHold) return gone;
    const versions = await tx.listSyncManifestVersions(region.id);
    const older = versions.length - region.keepVersions;
    const before = this.#now() - region.keepDays * 86_400_000;
    let cut = 0;
    while (cut < older) {
      const row = await tx.getSyncManifest(region.id, versions[cut] as number);
      if (row && row.createdAt >= before) break;
      cut++;
    }
    if (cut <= 0) return gone;
    const oldest = await tx.getSyncManifest(region.id, versions[cut] as number);
    const from = (oldest && ckptOfBody(oldest.body)) ?? (versions[cut] as number);
    for (const v of versions) {
      if (v >= from) break;
      const row = await tx.getSyncManifest(region.id, v);
      if (row) for (const e of (JSON.parse(row.body) as Manifest).entries) if (e.kind === "file") gone.add(e.hash);
      await tx.deleteSyncManifest(region.id, v);
    }
    return gone;
  }

  /**
   * The blob sweep: deletes the region's blobs that no kept manifest's tree names (trash included) and no live share
   * link serves, and releases their bytes from the quota: at once those a version just dropped named (`gone`), the
   * others once older than the grace period (a blob uploaded for a publish still in flight is named by no manifest
   * yet; a publish only names blobs of the current tree, which is kept, or blobs it uploaded). Kept versions start at a full manifest, and every tree
   * after it is that one's entries changed by the deltas since, so the union of the entries of the kept rows is
   * exactly the union of the kept trees. Returns the blob store ids to remove once committed.
   */
  async #sweep(tx: MetaTx, region: SyncRegionRow, gone: Set<string> = new Set()): Promise<string[]> {
    if (region.legalHold) return [];
    const kept = new Set<string>();
    for (const v of await tx.listSyncManifestVersions(region.id)) {
      const row = await tx.getSyncManifest(region.id, v);
      if (!row) continue;
      for (const e of (JSON.parse(row.body) as Manifest).entries) if (e.kind === "file") kept.add(e.hash);
    }
    const now = this.#now();
    for (const l of await tx.listSyncLinks(region.id)) if (!l.revoked && l.expiresAt > now) kept.add(l.blobHash);
    const ids: string[] = [];
    for (const b of await tx.listSyncBlobs(region.id)) {
      if (kept.has(b.hash) || (!gone.has(b.hash) && b.createdAt > now - this.#grace)) continue;
      await tx.deleteSyncBlob(region.id, b.hash);
      region.usedBytes = Math.max(0, region.usedBytes - b.size);
      ids.push(b.blobId);
    }
    return ids;
  }

  /** Runs the blob sweep of one region now (also run after each full manifest and each retention change). */
  async sweep(actor: SyncActor, regionId: string): Promise<{ removed: number; usedBytes: number }> {
    return this.#audited(actor, "sync.region", regionId, async () => {
      const drop: string[] = [];
      const row = await this.#store.transaction(async (tx) => {
        const { region } = await this.#access(actor, regionId, tx);
        const next = { ...region };
        drop.push(...(await this.#sweep(tx, next)));
        await tx.putSyncRegion(next);
        return next;
      });
      for (const id of drop) await this.#blobs.remove(id).catch(() => undefined);
      this.#record(actor, "sync.region", "success", { target: regionId, detail: `sweep removed ${drop.length} blobs` });
      return { removed: drop.length, usedBytes: row.usedBytes };
    });
  }

  /**
   * The timed sweep (§10): for every region, what a publish or a retention change would do, without either: versions
   * that aged out of `keepDays` are dropped, blobs that only they named go, and so do blobs named by nothing once past
   * their grace (a step that died after uploading, in a region that never publishes again). Each region in its own
   * transaction; every region that lost something is audited (as "atrest", with counts, never a name), and so is a
   * failure.
   */
  async sweepAll(): Promise<{ regions: number; versions: number; blobs: number }> {
    const seen = new Set<string>();
    const total = { regions: 0, versions: 0, blobs: 0 };
    for (const u of await this.#store.listUsers()) {
      for (const listed of await this.#store.listSyncRegions(u.name)) {
        if (seen.has(listed.id)) continue;
        seen.add(listed.id);
        total.regions++;
        try {
          const drop: string[] = [];
          let versions = 0;
          await this.#store.transaction(async (tx) => {
            const region = await tx.getSyncRegion(listed.id);
            if (!region || region.legalHold) return;
            const next = { ...region };
            const before = (await tx.listSyncManifestVersions(region.id)).length;
            const gone = await this.#retain(tx, next);
            versions = before - (await tx.listSyncManifestVersions(region.id)).length;
            drop.push(...(await this.#sweep(tx, next, gone)));
            if (versions > 0 || drop.length > 0) await tx.putSyncRegion(next);
          });
          for (const id of drop) await this.#blobs.remove(id).catch(() => undefined);
          total.versions += versions;
          total.blobs += drop.length;
          if (versions > 0 || drop.length > 0)
            this.#record({ user: SWEEPER, tokenId: undefined }, "sync.region", "success", {
              target: listed.id,
              detail: `timed sweep: ${versions} versions dropped, ${drop.length} blobs removed`,
            });
        } catch (err) {
          this.#record({ user: SWEEPER, tokenId: undefined }, "sync.region", "failure", {
            target: listed.id,
            reason: `timed sweep: ${err instanceof Error ? err.message : String(err)}`.slice(0, 200),
          });
        }
      }
    }
    return total;
  }

  /**
   * Runs sweepAll every `sweepEveryMs` (never two at once); returns the stop, which waits for a sweep in progress.
   * The timer does not keep the process alive.
   */
  startSweeps(onError: (err: unknown) => void = () => {}): () => Promise<void> {
    if (this.#sweepEvery <= 0) return async () => {};
    let running: Promise<unknown> | undefined;
    const timer = setInterval(() => {
      if (running) return;
      running = this.sweepAll()
        .catch(onError)
        .finally(() => {
          running = undefined;
        });
    }, this.#sweepEvery);
    timer.unref();
    return async () => {
      clearInterval(timer);
      await running;
    };
  }

  async setRetention(
    actor: SyncActor,
    regionId: string,
    r: { keepVersions: number; keepDays: number; legalHold: boolean },
  ): Promise<RegionInfo> {
    return this.#audited(actor, "sync.region", regionId, async () => {
      const drop: string[] = [];
      const row = await this.#store.transaction(async (tx) => {
        const { region } = await this.#access(actor, regionId, tx);
        if (region.owner !== actor.user) throw new SyncRefusal("NOT_OWNER", "only the owner sets retention");
        const next = { ...region, keepVersions: r.keepVersions, keepDays: r.keepDays, legalHold: r.legalHold };
        drop.push(...(await this.#sweep(tx, next, await this.#retain(tx, next))));
        await tx.putSyncRegion(next);
        return next;
      });
      for (const id of drop) await this.#blobs.remove(id).catch(() => undefined);
      this.#record(actor, "sync.region", "success", {
        target: regionId,
        detail: `retention keep ${r.keepVersions} versions or ${r.keepDays} days, legal hold ${r.legalHold ? "on" : "off"}`,
      });
      return regionInfo(row);
    });
  }

  // ---- key envelopes ----

  async putEnvelopes(actor: SyncActor, regionId: string, list: unknown[]): Promise<{ stored: number }> {
    return this.#audited(actor, "sync.envelope", regionId, async () => {
      const { device } = await this.#access(actor, regionId);
      const cert = JSON.parse(device.cert) as DeviceCert;
      const rows: SyncEnvelopeRow[] = [];
      for (const raw of list) {
        const e = raw as Envelope;
        if (typeof e !== "object" || e === null || e.type !== "envelope" || e.v !== PROTOCOL_VERSION)
          throw new SyncRefusal("BAD_OBJECT", "not a v1 envelope");
        if (e.regionId !== regionId) throw new SyncRefusal("BAD_OBJECT", "envelope of another region");
        if (!Number.isSafeInteger(e.epoch) || e.epoch < 1) throw new SyncRefusal("BAD_OBJECT", "bad epoch");
        if (e.sender !== device.id || !verifyObject("envelope", e, cert.signPub))
          throw new SyncRefusal("BAD_SIGNATURE", "envelope not signed by the sending device");
        const to = await this.#store.getSyncDevice(e.recipient);
        if (to?.state !== "active")
          throw new SyncRefusal("DEVICE_UNKNOWN", `recipient ${e.recipient} is no active device`);
        rows.push({
          regionId,
          epoch: e.epoch,
          recipient: e.recipient,
          body: canonical(e).toString("utf8"),
          createdAt: this.#now(),
        });
      }
      await this.#store.transaction(async (tx) => {
        for (const r of rows) await tx.putSyncEnvelope(r);
      });
      this.#record(actor, "sync.envelope", "success", {
        target: regionId,
        detail: `${rows.length} envelopes from device ${device.id}`,
      });
      return { stored: rows.length };
    });
  }

  async envelopes(actor: SyncActor, regionId: string): Promise<Envelope[]> {
    const { device } = await this.#access(actor, regionId);
    return (await this.#store.listSyncEnvelopes(regionId, device.id)).map((r) => JSON.parse(r.body) as Envelope);
  }

  // ---- share links ----

  async createLink(
    actor: SyncActor,
    regionId: string,
    l: { id: string; blobHash: string; payload: string; expiresAt: number },
  ): Promise<LinkInfo> {
    return this.#audited(actor, "sync.link", regionId, async () => {
      const now = this.#now();
      if (!LINK_ID.test(l.id) || !HASH.test(l.blobHash) || !/^[A-Za-z0-9_-]{40,8192}$/.test(l.payload)) {
        throw new SyncRefusal("BAD_OBJECT", "bad link");
      }
      if (!(l.expiresAt > now && l.expiresAt <= now + 366 * 86_400_000)) {
        throw new SyncRefusal("BAD_OBJECT", "a link expires within 366 days");
      }
      const row = await this.#store.transaction(async (tx) => {
        const { device } = await this.#access(actor, regionId, tx);
        if (!(await tx.getSyncBlob(regionId, l.blobHash)))
          throw new SyncRefusal("MISSING_BLOB", "no such blob in the region");
        if (await tx.getSyncLink(l.id)) throw new SyncRefusal("CHAIN_CONFLICT", "link id taken");
        const r = { ...l, regionId, revoked: false, createdBy: device.id, createdAt: now, uses: 0 };
        await tx.putSyncLink(r);
        return r;
      });
      this.#record(actor, "sync.link", "success", {
        target: l.id,
        detail: `create in region ${regionId}, expires ${new Date(l.expiresAt).toISOString()}`,
      });
      return linkInfo(row);
    });
  }

  async listLinks(actor: SyncActor, regionId: string): Promise<LinkInfo[]> {
    await this.#access(actor, regionId);
    return (await this.#store.listSyncLinks(regionId)).map(linkInfo);
  }

  async revokeLink(actor: SyncActor, regionId: string, id: string): Promise<void> {
    return this.#audited(actor, "sync.link", regionId, async () => {
      await this.#store.transaction(async (tx) => {
        await this.#access(actor, regionId, tx);
        const row = await tx.getSyncLink(id);
        if (row?.regionId !== regionId) throw new SyncRefusal("NO_SUCH_LINK", "no such link");
        await tx.putSyncLink({ ...row, revoked: true });
      });
      this.#record(actor, "sync.link", "success", { target: id, detail: `revoke in region ${regionId}` });
    });
  }

  /** A link's sealed payload, for anyone holding its URL (expiry and revocation enforced here). */
  async openLink(
    id: string,
    sourceIp: string,
    blob: boolean,
  ): Promise<{ payload: string; blobHash: string; blobSize: number; expiresAt: number; reader?: BlobReader }> {
    const anon: SyncActor = { user: "-", tokenId: undefined, sourceIp };
    try {
      const row = LINK_ID.test(id) ? await this.#store.getSyncLink(id) : undefined;
      if (!row) throw new SyncRefusal("NO_SUCH_LINK", "no such link");
      if (row.revoked) throw new SyncRefusal("LINK_GONE", "the link was revoked");
      if (row.expiresAt <= this.#now()) throw new SyncRefusal("LINK_GONE", "the link expired");
      const b = await this.#store.getSyncBlob(row.regionId, row.blobHash);
      if (!b) throw new SyncRefusal("LINK_GONE", "the file version is no longer kept");
      const reader = blob ? await this.#blobs.open(b.blobId) : undefined;
      try {
        if (blob) await this.#store.transaction(async (tx) => tx.putSyncLink({ ...row, uses: row.uses + 1 }));
      } catch (err) {
        // the caller never sees the reader: its descriptor would stay open
        await reader?.close().catch(() => undefined);
        throw err;
      }
      this.#record(anon, "share.use", "success", {
        target: id,
        detail: blob ? "sync link download" : "sync link open",
        ...(blob ? { size: b.size } : {}),
      });
      return {
        payload: row.payload,
        blobHash: row.blobHash,
        blobSize: b.size,
        expiresAt: row.expiresAt,
        ...(reader ? { reader } : {}),
      };
    } catch (err) {
      if (err instanceof SyncRefusal)
        this.#record(anon, "share.use", "failure", { target: id.slice(0, 64), reason: err.slug });
      throw err;
    }
  }

  // ---- blobs ----

  async hasBlob(actor: SyncActor, regionId: string, hash: string): Promise<number | undefined> {
    await this.#access(actor, regionId);
    return (await this.#store.getSyncBlob(regionId, hash))?.size;
  }

  /** Streams an upload into the blob store, hashing it; refused unless its SHA-256 is `hash` and it fits the quota. */
  async putBlob(
    actor: SyncActor,
    regionId: string,
    hash: string,
    body: AsyncIterable<Buffer | Uint8Array>,
    declared: number | undefined,
  ): Promise<{ created: boolean; size: number }> {
    return this.#audited(actor, "sync.blob", regionId, async () => {
      if (!HASH.test(hash)) throw new SyncRefusal("BAD_OBJECT", "a blob is named by its hex SHA-256");
      const { region } = await this.#access(actor, regionId);
      const have = await this.#store.getSyncBlob(regionId, hash);
      if (have) {
        // sent again for a publish to come: its grace period starts over, so the sweep cannot take it meanwhile
        await this.#store.transaction((tx) => tx.touchSyncBlob(regionId, hash, this.#now()));
        return { created: false, size: have.size };
      }
      const quotaBytes = await this.#quotaOf(region.owner);
      const used = quotaBytes > 0 ? await this.#store.syncBytesOwnedBy(region.owner) : 0;
      const room = quotaBytes > 0 ? quotaBytes - used : Number.POSITIVE_INFINITY;
      if (declared !== undefined && declared > room)
        throw new SyncRefusal("QUOTA_EXCEEDED", "the region owner's quota is reached");
      const w = await this.#blobs.create();
      const h = createHash("sha256");
      let size = 0;
      try {
        for await (const chunk of body) {
          const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
          size += b.length;
          if (size > room) throw new SyncRefusal("QUOTA_EXCEEDED", "the region owner's quota is reached");
          h.update(b);
          await w.write([b]);
        }
        if (declared !== undefined && size !== declared)
          throw new SyncRefusal("BAD_OBJECT", "body shorter than its Content-Length");
        if (h.digest("hex") !== hash) throw new SyncRefusal("HASH_MISMATCH", "the blob's SHA-256 is not its name");
        await w.commit();
      } catch (err) {
        await w.abort();
        throw err;
      }
      const created = await this.#store.transaction(async (tx) => {
        if (await tx.getSyncBlob(regionId, hash)) return false;
        const r = await tx.getSyncRegion(regionId);
        if (!r) throw new SyncRefusal("NO_SUCH_REGION", "no such region");
        await tx.insertSyncBlob({ regionId, hash, blobId: w.id, size, createdAt: this.#now() });
        await tx.putSyncRegion({ ...r, usedBytes: r.usedBytes + size });
        return true;
      });
      if (!created) await this.#blobs.remove(w.id).catch(() => undefined);
      this.#record(actor, "sync.blob", "success", { target: regionId, size, detail: `upload ${hash.slice(0, 16)}` });
      return { created, size };
    });
  }

  async openBlob(actor: SyncActor, regionId: string, hash: string): Promise<BlobReader> {
    return this.#audited(actor, "sync.blob", regionId, async () => {
      await this.#access(actor, regionId);
      const row = HASH.test(hash) ? await this.#store.getSyncBlob(regionId, hash) : undefined;
      if (!row) throw new SyncRefusal("NO_SUCH_BLOB", "no such blob");
      const reader = await this.#blobs.open(row.blobId);
      this.#record(actor, "sync.blob", "success", {
        target: regionId,
        size: row.size,
        detail: `download ${hash.slice(0, 16)}`,
      });
      return reader;
    });
  }
}
