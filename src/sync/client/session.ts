// One device's view of the sync service: unsealed keys, the API, and every check a client makes before it trusts
// anything the server hands out (docs/sync-protocol.md §3, §6, §7): chains from pinned roots, manifests signed by
// member devices of verified chains, envelopes whose keys match the signed commitments. Also the owner's operations
// (create, share, unshare, new epoch) and device enrolment, approval and revocation.
import type { KeyObject } from "node:crypto";
import { zero } from "../../crypto/bytes.ts";
import { AtrestError, IntegrityError } from "../../errors.ts";
import { canonical, parseCanonical, sha256Hex } from "../core/canonical.ts";
import {
  type ChainState,
  type DeviceCert,
  genesisLink,
  makeDeviceCert,
  nextLink,
  pinOf,
  verifyChain,
} from "../core/chain.ts";
import { fingerprintOf, generateDeviceKeys, privateKey } from "../core/keys.ts";
import {
  CHECKPOINT_EVERY,
  type Entry,
  entryHash,
  MANIFEST_V2,
  type Manifest,
  type Member,
  manifestHash,
  pinOfManifest,
  type RegionPin,
  rememberEntryHash,
  rememberManifestHash,
  signManifest,
  signNext,
  stateRoot,
  type UnsignedManifest,
  verifyManifest,
} from "../core/manifest.ts";
import { type Envelope, keyCommitment, newRegionId, newRegionKey, openEnvelope, sealEnvelope } from "../core/region.ts";
import { issueDeviceToken, SyncApi, SyncApiError } from "./api.ts";
import {
  type DeviceFile,
  type OpenedName,
  type RegionState,
  type Secrets,
  StateDir,
  type TrustPin,
  type Unlocked,
  unlockState,
} from "./state.ts";

export interface Retention {
  keepVersions: number;
  keepDays: number;
  legalHold: boolean;
}

export interface RegionCtx {
  state: RegionState;
  /** The verified manifest of the current version, its `entries` the whole tree (also after a delta). */
  manifest: Manifest;
  /** Names opened at the pin or since, by entry id (remoteView reuses those whose ciphertext and binding match). */
  names: Map<string, OpenedName>;
  /** The region's retention as the server states it (for trash expiry), if it said. */
  retention?: Retention;
  /** Region keys by epoch (zero them with close()). */
  keys: Map<number, Buffer>;
  /** Versions replayed in this load that a device revoked since had signed, kept because an active one built on them (§7b). */
  flagged: string[];
  close(): void;
}

export interface EnrollOptions {
  state: string;
  server: string;
  ca?: string;
  user: string;
  password: string;
  passphrase: string;
  name: string;
  /** Compare the user's root fingerprint (a second device): refuse another one. */
  expectRoot?: string;
  kdf?: { m: number; t: number; p: number };
}

/** Enrols this device: the first one of its user (self-signed chain root), or a pending one to approve elsewhere. */
export async function enroll(
  o: EnrollOptions,
): Promise<{ cert: DeviceCert; fingerprint: string; root: string; pending: boolean }> {
  const state = new StateDir(o.state);
  if (await state.exists()) throw new AtrestError("EXISTS", `${o.state} holds an enrolled device already`);
  await state.init();
  const token = await issueDeviceToken({ server: o.server, ...(o.ca ? { ca: o.ca } : {}) }, o.user, o.password, o.name);
  const { secrets, pub } = generateDeviceKeys();
  const cert = makeDeviceCert(o.user, o.name, pub, secrets.sign);
  const api = new SyncApi({ server: o.server, ...(o.ca ? { ca: o.ca } : {}) }, token);
  try {
    await api.registerDevice(cert);
    const links = await api.chain(o.user);
    let root: string;
    let pending = true;
    const trust: Record<string, TrustPin> = {};
    if (links.length === 0) {
      const l0 = genesisLink(cert, secrets.sign);
      await api.appendLink(l0);
      const s = verifyChain(o.user, [l0]);
      root = s.root;
      pending = false;
      trust[o.user] = { ...pinOf(s), verified: true };
    } else {
      const s = verifyChain(o.user, links);
      root = s.root;
      if (o.expectRoot && o.expectRoot !== root) {
        throw new IntegrityError(
          `the server's chain for ${o.user} has root ${root}, not the expected one (key substitution?)`,
        );
      }
      trust[o.user] = { ...pinOf(s), verified: o.expectRoot !== undefined };
    }
    await state.writeDevice({ v: 1, server: o.server, ...(o.ca ? { ca: o.ca } : {}), user: o.user, cert });
    await state.seal(o.passphrase, cert.id, { ...secrets, token }, o.kdf);
    await state.writeTrust(trust);
    return { cert, fingerprint: fingerprintOf(cert), root, pending };
  } finally {
    zero(secrets.sign, secrets.enc);
    api.close();
  }
}

export class Session {
  readonly state: StateDir;
  readonly device: DeviceFile;
  readonly api: SyncApi;
  readonly #secrets: Secrets;
  readonly #encKey: KeyObject;
  trust: Record<string, TrustPin>;
  readonly #chains = new Map<string, ChainState>();

  private constructor(state: StateDir, device: DeviceFile, secrets: Secrets, trust: Record<string, TrustPin>) {
    this.state = state;
    this.device = device;
    this.#secrets = secrets;
    this.#encKey = privateKey(secrets.enc);
    this.trust = trust;
    this.api = new SyncApi({ server: device.server, ...(device.ca ? { ca: device.ca } : {}) }, secrets.token);
  }

  #release: (() => Promise<void>) | undefined;

  static async open(dir: string, passphrase: string): Promise<Session> {
    return Session.fromUnlocked(await unlockState(dir, passphrase));
  }

  static fromUnlocked(u: Unlocked): Session {
    try {
      const s = new Session(u.state, u.device, u.secrets, u.trust);
      s.#release = u.release;
      return s;
    } catch (err) {
      zero(u.secrets.sign, u.secrets.enc);
      void u.release();
      throw err;
    }
  }

  get me(): DeviceCert {
    return this.device.cert;
  }

  get user(): string {
    return this.device.user;
  }

  async close(): Promise<void> {
    zero(this.#secrets.sign, this.#secrets.enc);
    this.api.close();
    await this.#release?.();
  }

  /**
   * A user's chain, verified against the pin (root, seq, head); on first sight `expectRoot` (an owner's attestation
   * in a signed manifest, or a fingerprint given by the user) must match unless `tofu`. Pins what it verified.
   */
  async chain(user: string, o: { expectRoot?: string; tofu?: boolean; verified?: boolean } = {}): Promise<ChainState> {
    const cached = this.#chains.get(user);
    if (cached && (!o.expectRoot || cached.root === o.expectRoot)) return cached;
    const pin = this.trust[user];
    const s = verifyChain(user, await this.api.chain(user), pin);
    if (o.expectRoot && s.root !== o.expectRoot) {
      throw new IntegrityError(
        `the device chain of ${user} has another root than the verified one (key substitution?)`,
      );
    }
    if (!pin && !o.expectRoot && !o.tofu) {
      throw new AtrestError(
        "REFUSED",
        `${user}'s fingerprint is not verified: compare it and run atrest sync verify ${user} <fingerprint>`,
      );
    }
    const next = { ...pinOf(s), verified: (pin?.verified ?? false) || (o.verified ?? false) };
    // written (and fsynced) only when the pin moved: most steps see the chains they saw before
    if (!pin || canonical(pin).toString() !== canonical(next).toString()) {
      this.trust[user] = next;
      await this.state.writeTrust(this.trust);
    }
    this.#chains.set(user, s);
    return s;
  }

  /** `sync verify <user> <fingerprint>`: pins the user's chain if its root is that fingerprint. */
  async verifyUser(user: string, fingerprint: string): Promise<ChainState> {
    const pin = this.trust[user];
    if (pin && pin.root !== fingerprint) throw new IntegrityError(`${user} is pinned with another root fingerprint`);
    return this.chain(user, { expectRoot: fingerprint, verified: true });
  }

  async #myChain(): Promise<ChainState> {
    this.#chains.delete(this.user);
    return this.chain(this.user, { tofu: true });
  }

  /** Approves a pending device of this user after its fingerprint was compared. */
  async approve(deviceId: string, fingerprint: string): Promise<DeviceCert> {
    const list = await this.api.devices();
    const d = list.devices.find((x) => x.id === deviceId && x.state === "pending");
    if (!d) throw new AtrestError("NOT_FOUND", `no pending device ${deviceId}`);
    const cert = d.cert as DeviceCert;
    if (fingerprintOf(cert) !== fingerprint) {
      throw new IntegrityError("the pending device's fingerprint differs from the one it shows: not approved");
    }
    const s = await this.#myChain();
    await this.api.appendLink(nextLink(s, { add: cert }, this.me.id, this.#secrets.sign));
    await this.#myChain();
    // give the new device every region key this device holds
    for (const r of await this.api.regions()) {
      const ctx = await this.region(r.id).catch(() => undefined);
      if (!ctx) continue;
      try {
        await this.api.putEnvelopes(
          r.id,
          [...ctx.keys].map(([e, k]) =>
            sealEnvelope(k, r.id, e, cert, { id: this.me.id, signKey: this.#secrets.sign }),
          ),
        );
      } finally {
        ctx.close();
      }
    }
    return cert;
  }

  /** Revokes a device of this user; every region this user owns moves to a new epoch without it. */
  async revoke(deviceId: string): Promise<void> {
    const s = await this.#myChain();
    if (!s.active.has(deviceId)) throw new AtrestError("NOT_FOUND", `no active device ${deviceId}`);
    await this.api.appendLink(nextLink(s, { revoke: deviceId }, this.me.id, this.#secrets.sign));
    await this.#myChain();
    for (const r of await this.api.regions()) {
      if (r.owner === this.user) await this.rotate(r.id);
    }
  }

  // ---- regions ----

  /**
   * Fetches the manifest (latest or `version`), verifies it (signature by a device in the author's verified chain,
   * owner pinned, members attested by the owner, monotonic against the pin) and opens this device's region keys.
   */
  async region(
    id: string,
    o: { version?: number; trustOwner?: boolean; acceptRevokedHead?: boolean } = {},
  ): Promise<RegionCtx> {
    let state = await this.state.readRegion(id);
    if (!state) {
      // first contact with a region someone shared: its owner's fingerprint must be verified (no folder injection)
      const listed = (await this.api.regions()).find((r) => r.id === id);
      if (!listed) throw new AtrestError("NOT_FOUND", `no region ${id} shared with ${this.user}`);
      const chain = await this.chain(listed.owner, { tofu: o.trustOwner === true });
      if (!this.trust[listed.owner]?.verified && !o.trustOwner) {
        throw new AtrestError("REFUSED", `region ${id} is owned by ${listed.owner}, whose fingerprint is not verified`);
      }
      state = { id, label: id, owner: { user: listed.owner, root: chain.root }, base: {} };
    }
    const devices = new Map<string, { cert: DeviceCert; revoked: boolean }>();
    const owner = state.owner;
    const restore = o.version !== undefined;
    const loaded = new Set<string>();
    /** Loads the chains of the pinned owner and of `members` (each only if its root is the one written there). */
    const loadPeople = async (members: unknown) => {
      const people: Member[] = [owner, ...(Array.isArray(members) ? (members as Member[]) : [])];
      for (const p of people) {
        if (typeof p?.user !== "string" || typeof p.root !== "string") continue;
        if (loaded.has(`${p.user}/${p.root}`)) continue;
        const c = await this.chain(p.user, { expectRoot: p.root }).catch(() => undefined);
        if (!c) continue;
        loaded.add(`${p.user}/${p.root}`);
        for (const [devId, cert] of c.devices)
          devices.set(`${p.user}/${devId}`, { cert, revoked: c.revoked.has(devId) });
      }
    };
    const verifyAt = async (
      raw: Partial<Manifest>,
      v: { pin?: RegionPin; tree?: Entry[]; historic?: boolean },
    ): Promise<Manifest> => {
      // verifyManifest then decides whether the author may sign at all
      await loadPeople(raw.members);
      return verifyManifest(raw, {
        regionId: id,
        ...(v.pin ? { pin: v.pin } : { owner }),
        ...(v.tree ? { state: v.tree } : {}),
        allowOlder: restore,
        historic: v.historic === true,
        revokedOk: true, // decided below, over the whole replay

        authorDevice: (user, device) => devices.get(`${user}/${device}`),
      });
    };
    const parse = (bytes: Buffer): Partial<Manifest> => {
      const parsed = parseCanonical(bytes) as Manifest;
      // the bytes are canonical (parseCanonical checked): their hash is the manifest's
      rememberManifestHash(parsed, sha256Hex(bytes));
      return parsed;
    };
    // the envelopes do not depend on the manifest: fetched meanwhile (checked against it below)
    const envelopes = this.api.envelopes(id);
    envelopes.catch(() => undefined);
    const pin = state.pin;
    // §7a: with the tree of the pinned version at hand, only what came after it is fetched and replayed
    const cache = !restore && pin?.v === MANIFEST_V2 ? await this.state.readTree(id) : undefined;
    const notKept = (err: unknown) => {
      if (err instanceof SyncApiError && err.problemCode === "NO_SUCH_VERSION") return undefined;
      throw err;
    };
    let cached = cache && cache.version === pin?.version && cache.hash === pin.hash ? cache : undefined;
    // versions after the pin no longer kept (away longer than retention): replayed from a checkpoint instead
    const since = cached && pin ? await this.api.manifests(id, { since: pin.version }).catch(notKept) : undefined;
    if (!since) cached = undefined;
    let m: Manifest | undefined;
    let names = new Map<string, OpenedName>();
    let retention: Retention | undefined;
    let lines: Buffer[] | undefined;
    if (cached && pin && since) {
      const r = since;
      retention = r.retention;
      lines = r.lines;
      const hashes = cached.hashes;
      if (hashes?.length === cached.entries.length)
        for (let i = 0; i < hashes.length; i++)
          rememberEntryHash(cached.entries[i] as Entry, Buffer.from(hashes[i] as string, "base64"));
      m = { ...(cached.head as Manifest), entries: cached.entries };
      rememberManifestHash(m, cached.hash);
      names = new Map(Object.entries(cached.names));
      if (lines.length === 0 && (r.head.version !== pin.version || r.head.hash !== pin.hash)) {
        if (r.head.version < pin.version)
          throw new IntegrityError(
            `manifest: version ${r.head.version} is older than the verified ${pin.version} (rollback)`,
          );
        // another object at the pinned version (or a head it will not show): verify what it serves there
        const there = await this.api.manifests(id, { from: Math.min(pin.version, r.head.version) });
        const first = there.lines[0];
        if (!first) throw new IntegrityError("manifest: the server withholds its current version");
        await verifyAt(parse(first), { pin, tree: cached.entries });
        throw new IntegrityError("manifest: the server's head differs from what it serves");
      }
    } else {
      const from = !restore && pin ? (pin.v === MANIFEST_V2 ? pin.ckpt : pin.version) : undefined;
      let r = from ? await this.api.manifests(id, { from }).catch(notKept) : undefined;
      r ??= await this.api.manifests(id, restore ? { to: o.version } : {});
      retention = r.retention;
      lines = r.lines;
      if (lines.length === 0) throw new IntegrityError("manifest: the server sent no manifest");
    }
    let rolling: RegionPin | undefined = cached ? pin : undefined;
    // §7b: a version signed by a device revoked since is kept (flagged) once a version of an active device builds on
    // it, whose signature covers its hash through `prev`; the last ones of a replay without such a successor are
    // refused (a revoked key may be a stolen one), unless this device is about to build on them itself
    const flagged: string[] = [];
    let unvouched: number | undefined;
    for (const bytes of lines) {
      const raw = parse(bytes);
      if (rolling && raw.version !== rolling.version + 1)
        throw new IntegrityError(`manifest: version ${String(raw.version)} does not follow ${rolling.version}`);
      const historic = pin !== undefined && typeof raw.version === "number" && raw.version <= pin.version;
      if (rolling) m = await verifyAt(raw, { pin: rolling, ...(m ? { tree: m.entries } : {}), historic });
      else if (pin && !restore && typeof raw.version === "number" && raw.version > pin.version)
        m = await verifyAt(raw, { pin }); // versions between are no longer kept: checked against the pin alone
      else m = await verifyAt(raw, { historic: pin !== undefined });
      // replayed from a checkpoint before the pin: the history must pass through the very version pinned (fork)
      if (pin && !restore && m.version === pin.version && manifestHash(m) !== pin.hash)
        throw new IntegrityError(`manifest: version ${m.version} differs from the verified one (fork)`);
      rolling = pinOfManifest(m);
      if (pin && m.version <= pin.version && !restore) continue; // accepted before
      if (devices.get(`${m.author.user}/${m.author.device}`)?.revoked) {
        unvouched ??= m.version;
        flagged.push(`version ${m.version} was signed by ${m.author.user}'s device ${m.author.device}, revoked since`);
      } else unvouched = undefined;
    }
    if (unvouched !== undefined && !o.acceptRevokedHead && !restore)
      throw new IntegrityError(
        `manifest: version ${unvouched} is signed by a revoked device and no active device has built on it`,
      );
    if (!m) throw new IntegrityError("manifest: none");
    if (pin && !restore && m.version < pin.version)
      throw new IntegrityError(`manifest: version ${m.version} is older than the verified ${pin.version} (rollback)`);
    if (pin?.v === MANIFEST_V2 && m.v !== MANIFEST_V2 && !restore)
      throw new IntegrityError(`manifest: protocol version ${m.v} after version ${MANIFEST_V2} (downgrade refused)`);
    const keys = new Map<number, Buffer>();
    const verified = m;
    await loadPeople(verified.members);
    const ctx: RegionCtx = {
      state,
      manifest: verified,
      names,
      ...(retention ? { retention } : {}),
      keys,
      flagged,
      close: () => {
        for (const k of keys.values()) zero(k);
        keys.clear();
      },
    };
    try {
      for (const raw of await envelopes) {
        const env = raw as Envelope;
        const commit = verified.keys[env.epoch - 1]?.commit;
        if (!commit || keys.has(env.epoch)) continue;
        let sender: DeviceCert | undefined;
        for (const p of [verified.owner, ...verified.members]) {
          sender = devices.get(`${p.user}/${env.sender}`)?.cert;
          if (sender) break;
        }
        if (!sender) throw new IntegrityError(`key envelope from device ${env.sender}, which is in no member's chain`);
        keys.set(
          env.epoch,
          openEnvelope(env, { cert: this.me, encKey: this.#encKey }, { regionId: id, senderCert: sender, commit }),
        );
      }
    } catch (err) {
      ctx.close();
      throw err;
    }
    return ctx;
  }

  /**
   * Signs and sends the next manifest built from `ctx.manifest` (a delta of what changed, or a full one every
   * CHECKPOINT_EVERY versions, §7a); returns it with the whole tree in `entries` (STALE_MANIFEST → SyncApiError 409).
   * Trash entries get the version and time they were deleted, and those past the region's retention leave the tree.
   */
  async publish(ctx: RegionCtx, change: Partial<UnsignedManifest>, o: { full?: boolean } = {}): Promise<Manifest> {
    const cur = ctx.manifest;
    const { sig: _sig, entries: _entries, form: _form, root: _root, ckpt: _ckpt, drop: _drop, v: _v, ...head } = cur;
    const { entries: changed, ...fields } = change;
    const version = cur.version + 1;
    const now = Date.now();
    const before = new Map(cur.entries.map((e) => [e.id, e]));
    const tree = (changed ?? cur.entries).map((e): Entry => {
      const was = before.get(e.id);
      const [dv, dt] = !e.deleted ? [0, 0] : was?.deleted && was.dv ? [was.dv, was.dt ?? 0] : [version, now];
      return e.dv === dv && e.dt === dt ? e : { ...e, dv, dt };
    });
    const { signed, tree: whole } = signNext(
      cur,
      {
        ...head,
        ...fields,
        type: "manifest",
        version,
        prev: manifestHash(cur),
        author: { user: this.user, device: this.me.id },
        at: new Date(now).toISOString(),
      },
      {
        entries: expireTrash(tree, version, now, ctx.retention),
        full: o.full === true,
        // a checkpoint at least every keepVersions (4 … 32): versions older than the kept ones, and the blobs only
        // they name, can go only once a later full manifest no longer needs them (§10)
        every: Math.min(CHECKPOINT_EVERY, Math.max(4, ctx.retention?.keepVersions ?? CHECKPOINT_EVERY)),
      },
      this.#secrets.sign,
    );
    const bytes = canonical(signed);
    const hash = sha256Hex(bytes);
    await this.api.putManifest(cur.regionId, bytes);
    const next = signed.form === "full" ? signed : { ...signed, entries: whole };
    rememberManifestHash(next, hash);
    ctx.manifest = next;
    return next;
  }

  /** Pins a manifest this device verified and acted on, with its tree (the next step replays only what follows). */
  async pin(ctx: RegionCtx): Promise<void> {
    const m = ctx.manifest;
    ctx.state.pin = pinOfManifest(m);
    if (m.v === MANIFEST_V2) {
      const { entries, ...head } = m;
      const names: Record<string, OpenedName> = {};
      for (const e of entries) {
        const n = ctx.names.get(e.id);
        if (n && n[0] === e.name) names[e.id] = n;
      }
      const hashes = entries.map((e) => entryHash(e).toString("base64"));
      await this.state.writeTree(ctx.state.id, {
        version: m.version,
        hash: manifestHash(m),
        head,
        entries,
        hashes,
        names,
      });
    }
    await this.state.writeRegion(ctx.state);
  }

  async createRegion(label: string): Promise<string> {
    const chain = await this.#myChain();
    const id = newRegionId();
    const key = newRegionKey();
    try {
      const owner = { user: this.user, root: chain.root };
      const m = signManifest(
        {
          v: MANIFEST_V2,
          type: "manifest",
          form: "full",
          regionId: id,
          version: 1,
          prev: "",
          ckpt: 1,
          root: stateRoot(id, []),
          owner,
          members: [],
          epoch: 1,
          keys: [{ epoch: 1, commit: keyCommitment(key, id, 1) }],
          author: { user: this.user, device: this.me.id },
          at: new Date().toISOString(),
          entries: [],
          drop: [],
        },
        this.#secrets.sign,
      );
      const bytes = canonical(m);
      rememberManifestHash(m, sha256Hex(bytes));
      await this.api.createRegion(bytes);
      const devices = [...chain.active].map((d) => chain.devices.get(d) as DeviceCert);
      await this.api.putEnvelopes(
        id,
        devices.map((c) => sealEnvelope(key, id, 1, c, { id: this.me.id, signKey: this.#secrets.sign })),
      );
      await this.state.writeRegion({ id, label, owner, pin: pinOfManifest(m), base: {} });
      return id;
    } finally {
      zero(key);
    }
  }

  /** Wraps every epoch key to every active device of `user` (verified unless `unverified`), then adds the member. */
  async share(id: string, user: string, o: { unverified?: boolean } = {}): Promise<string[]> {
    if (user === this.user) throw new AtrestError("INVALID_INPUT", "a region is shared with other users");
    const chain = await this.chain(user, { tofu: o.unverified === true });
    if (!this.trust[user]?.verified && !o.unverified) {
      throw new AtrestError(
        "REFUSED",
        `${user}'s fingerprint is not verified (atrest sync verify ${user} <fingerprint>), or pass --unverified`,
      );
    }
    return this.#retrying(() => this.#share(id, user, chain));
  }

  /** Runs `fn` again (from the latest manifest) when another device published first. */
  async #retrying<T>(fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (!(err instanceof SyncApiError && err.problemCode === "STALE_MANIFEST") || attempt >= 6) throw err;
      }
    }
  }

  async #share(id: string, user: string, chain: ChainState): Promise<string[]> {
    const ctx = await this.region(id);
    try {
      if (ctx.manifest.owner.user !== this.user)
        throw new AtrestError("PERMISSION_DENIED", "only the owner shares a region");
      const devices = [...chain.active].map((d) => chain.devices.get(d) as DeviceCert);
      const envs = [];
      for (const [e, k] of ctx.keys) {
        for (const c of devices) envs.push(sealEnvelope(k, id, e, c, { id: this.me.id, signKey: this.#secrets.sign }));
      }
      await this.api.putEnvelopes(id, envs);
      const members = [...ctx.manifest.members.filter((x) => x.user !== user), { user, root: chain.root }].sort(
        (a, b) => (a.user < b.user ? -1 : 1),
      );
      await this.publish(ctx, { members });
      await this.pin(ctx);
      return devices.map((d) => d.id);
    } finally {
      ctx.close();
    }
  }

  /** Removes a member and moves the region to a new epoch. */
  async unshare(id: string, user: string): Promise<void> {
    await this.rotate(id, (members) => members.filter((m) => m.user !== user));
  }

  /** A new epoch: a fresh key wrapped to the active devices of the owner and the (remaining) members only. */
  async rotate(id: string, members?: (m: Member[]) => Member[]): Promise<number> {
    return this.#retrying(() => this.#rotate(id, members));
  }

  async #rotate(id: string, members?: (m: Member[]) => Member[]): Promise<number> {
    // the new epoch builds on the current version, also one that a device revoked since signed: the owner's device
    // vouches for it (§7b), so that the region is never stuck behind it
    const ctx = await this.region(id, { acceptRevokedHead: true });
    const key = newRegionKey();
    try {
      if (ctx.manifest.owner.user !== this.user)
        throw new AtrestError("PERMISSION_DENIED", "only the owner changes epochs");
      const epoch = ctx.manifest.epoch + 1;
      const keep = members ? members(ctx.manifest.members) : ctx.manifest.members;
      const envs = [];
      for (const p of [ctx.manifest.owner, ...keep]) {
        this.#chains.delete(p.user);
        const c = await this.chain(p.user, { expectRoot: p.root });
        for (const d of c.active) {
          const cert = c.devices.get(d) as DeviceCert;
          envs.push(sealEnvelope(key, id, epoch, cert, { id: this.me.id, signKey: this.#secrets.sign }));
          // the older keys too, for a device added since (it reads old files)
          for (const [e, k] of ctx.keys)
            envs.push(sealEnvelope(k, id, e, cert, { id: this.me.id, signKey: this.#secrets.sign }));
        }
      }
      await this.api.putEnvelopes(id, envs);
      await this.publish(ctx, {
        members: keep,
        epoch,
        keys: [...ctx.manifest.keys, { epoch, commit: keyCommitment(key, id, epoch) }],
      });
      await this.pin(ctx);
      return epoch;
    } finally {
      zero(key);
      ctx.close();
    }
  }

  /**
   * After DEVICE_REVOKED: true only if this user's verified chain revokes this device (a server alone cannot make a
   * device wipe itself).
   */
  async revokedByChain(): Promise<boolean> {
    this.#chains.delete(this.user);
    const s = await this.chain(this.user, { tofu: true });
    return s.revoked.has(this.me.id);
  }
}

/**
 * Trash expiry (§10): a deleted entry leaves the tree once the version that deleted it is older than the last
 * `keepVersions` and it was deleted more than `keepDays` ago, unless the region is on legal hold; a deleted folder
 * stays while something in it stays. Without a stated retention nothing expires.
 */
export function expireTrash(tree: Entry[], version: number, now: number, r: Retention | undefined): Entry[] {
  if (!r || r.legalHold || r.keepVersions < 1) return tree;
  const expired = new Set<string>();
  for (const e of tree) {
    if (e.deleted && e.dv && version - e.dv >= r.keepVersions && now - (e.dt ?? now) >= r.keepDays * 86_400_000)
      expired.add(e.id);
  }
  if (expired.size === 0) return tree;
  const byId = new Map(tree.map((e) => [e.id, e]));
  for (const e of tree) {
    if (expired.has(e.id)) continue;
    for (let p = e.parent; p !== "" && expired.delete(p); p = byId.get(p)?.parent ?? "") {}
  }
  return tree.filter((e) => !expired.has(e.id));
}

export { SyncApiError };
