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
  type Manifest,
  type Member,
  manifestHash,
  pinOfManifest,
  type RegionPin,
  rememberManifestHash,
  signManifest,
  type UnsignedManifest,
  verifyManifest,
} from "../core/manifest.ts";
import { type Envelope, keyCommitment, newRegionId, newRegionKey, openEnvelope, sealEnvelope } from "../core/region.ts";
import { issueDeviceToken, SyncApi, SyncApiError } from "./api.ts";
import {
  type DeviceFile,
  type RegionState,
  type Secrets,
  StateDir,
  type TrustPin,
  type Unlocked,
  unlockState,
} from "./state.ts";

export interface RegionCtx {
  state: RegionState;
  manifest: Manifest;
  /** Region keys by epoch (zero them with close()). */
  keys: Map<number, Buffer>;
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
    this.trust[user] = { ...pinOf(s), verified: (pin?.verified ?? false) || (o.verified ?? false) };
    await this.state.writeTrust(this.trust);
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
  async region(id: string, o: { version?: number; trustOwner?: boolean } = {}): Promise<RegionCtx> {
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
    const verifyAt = async (raw: Partial<Manifest>, pin: RegionPin | undefined): Promise<Manifest> => {
      // load the chains of the pinned owner and of the members the manifest names (each only if its root is the one
      // written there); verifyManifest then decides whether the author may sign at all
      const people: Member[] = [owner, ...(Array.isArray(raw.members) ? raw.members : [])];
      for (const p of people) {
        if (typeof p?.user !== "string" || typeof p.root !== "string") continue;
        const c = await this.chain(p.user, { expectRoot: p.root }).catch(() => undefined);
        if (!c) continue;
        for (const [devId, cert] of c.devices)
          devices.set(`${p.user}/${devId}`, { cert, revoked: c.revoked.has(devId) });
      }
      return verifyManifest(raw, {
        regionId: id,
        ...(pin ? { pin } : { owner }),
        allowOlder: o.version !== undefined,
        authorDevice: (user, device) => devices.get(`${user}/${device}`),
      });
    };
    const fetch = async (v?: number) => {
      const bytes = await this.api.manifest(id, v);
      const parsed = parseCanonical(bytes) as Manifest;
      // the bytes are canonical (parseCanonical checked): their hash is the manifest's
      rememberManifestHash(parsed, sha256Hex(bytes));
      return parsed as Partial<Manifest>;
    };
    /** Verifies every version after `pin` and before `latest`, each against the one before; undefined if one is gone. */
    const walk = async (pin: RegionPin, latest: number): Promise<RegionPin | undefined> => {
      const kept = (await this.api.versions(id)).filter((v) => v > pin.version && v < latest);
      if (kept.length !== latest - pin.version - 1) return undefined;
      let rolling = pin;
      for (const v of kept) rolling = pinOfManifest(await verifyAt(await fetch(v), rolling));
      return rolling;
    };
    const raw = await fetch(o.version);
    const latest = typeof raw.version === "number" ? raw.version : 0;
    let m: Manifest;
    try {
      m = await verifyAt(raw, state.pin);
      // Fork detection (SUNDR's fork consistency): a server that showed this device one history and other devices
      // another cannot join them again unnoticed, because the versions between the pinned one and this one must
      // chain from the pinned hash (§7). Only as far as retention keeps those versions.
      if (state.pin && o.version === undefined && m.version > state.pin.version + 1) {
        const rolling = await walk(state.pin, m.version);
        if (rolling) m = await verifyAt(raw, rolling);
      }
    } catch (err) {
      // membership changed in versions this device has not seen: walk them, each verified against the one before
      const pin = state.pin;
      if (!(err instanceof IntegrityError) || !pin || o.version !== undefined || !/member|owner/.test(err.message))
        throw err;
      const rolling = await walk(pin, latest);
      if (!rolling) {
        throw new IntegrityError(
          `${err.message}; the versions in between are no longer kept, so the change cannot be checked`,
        );
      }
      m = await verifyAt(raw, rolling);
    }
    const keys = new Map<number, Buffer>();
    const ctx: RegionCtx = {
      state,
      manifest: m,
      keys,
      close: () => {
        for (const k of keys.values()) zero(k);
        keys.clear();
      },
    };
    try {
      for (const raw of await this.api.envelopes(id)) {
        const env = raw as Envelope;
        const commit = m.keys[env.epoch - 1]?.commit;
        if (!commit || keys.has(env.epoch)) continue;
        let sender: DeviceCert | undefined;
        for (const p of [m.owner, ...m.members]) {
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

  /** Signs and sends the next manifest built from `ctx.manifest`; returns it (STALE_MANIFEST → SyncApiError 409). */
  async publish(ctx: RegionCtx, change: Partial<UnsignedManifest>): Promise<Manifest> {
    const cur = ctx.manifest;
    const { sig: _sig, ...base } = cur;
    const next = signManifest(
      {
        ...base,
        ...change,
        version: cur.version + 1,
        prev: manifestHash(cur),
        author: { user: this.user, device: this.me.id },
        at: new Date().toISOString(),
      },
      this.#secrets.sign,
    );
    const bytes = canonical(next);
    rememberManifestHash(next, sha256Hex(bytes));
    await this.api.putManifest(cur.regionId, bytes);
    ctx.manifest = next;
    return next;
  }

  /** Pins a manifest this device verified and acted on. */
  async pin(ctx: RegionCtx): Promise<void> {
    ctx.state.pin = pinOfManifest(ctx.manifest);
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
          v: 1,
          type: "manifest",
          regionId: id,
          version: 1,
          prev: "",
          owner,
          members: [],
          epoch: 1,
          keys: [{ epoch: 1, commit: keyCommitment(key, id, 1) }],
          author: { user: this.user, device: this.me.id },
          at: new Date().toISOString(),
          entries: [],
        },
        this.#secrets.sign,
      );
      await this.api.createRegion(canonical(m));
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
    const ctx = await this.region(id);
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

export { SyncApiError };
