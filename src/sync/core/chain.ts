// A user's device chain (docs/sync-protocol.md §3): an append-only, hash-chained list of signed links. Link 0 adds
// the first device and is signed by it; each later link is signed by a device active before it. Pure checks: the
// server runs them on append, every client runs them (from a pinned root fingerprint) before trusting any device key.
import { AtrestError, IntegrityError } from "../../errors.ts";
import { objectHash } from "./canonical.ts";
import { type DevicePublic, deviceIdOf, fingerprintOf, PROTOCOL_VERSION, signObject, verifyObject } from "./keys.ts";

export interface DeviceCert {
  v: number;
  type: "device";
  user: string;
  id: string;
  name: string;
  signPub: string;
  encPub: string;
  sig: string;
}

export interface ChainLink {
  v: number;
  type: "chain";
  user: string;
  seq: number;
  prev: string;
  op: "add" | "revoke";
  signer: string;
  at: string;
  device?: DeviceCert;
  target?: string;
  sig: string;
}

export interface ChainState {
  user: string;
  /** Fingerprint of the root device (seq 0): the user's fingerprint. */
  root: string;
  seq: number;
  head: string;
  /** Every device ever added, by id. */
  devices: Map<string, DeviceCert>;
  active: Set<string>;
  revoked: Set<string>;
}

/** What a client pinned of a user's chain. */
export interface ChainPin {
  root: string;
  seq: number;
  head: string;
}

const USER = /^[A-Za-z0-9._@-]{1,64}$/;
const DEVICE_NAME = /^[^\0/\n\r]{1,64}$/;

export function makeDeviceCert(user: string, name: string, pub: DevicePublic, signKey: Buffer): DeviceCert {
  if (!USER.test(user)) throw new AtrestError("INVALID_INPUT", "bad user name");
  if (!DEVICE_NAME.test(name)) throw new AtrestError("INVALID_INPUT", "bad device name");
  return signObject(
    "device",
    { v: PROTOCOL_VERSION, type: "device" as const, user, id: deviceIdOf(pub), name, ...pub },
    signKey,
  );
}

/** Checks a certificate's shape, id and self-signature. */
export function checkDeviceCert(cert: unknown, user?: string): DeviceCert {
  const c = cert as DeviceCert;
  if (typeof c !== "object" || c === null || c.type !== "device") throw new IntegrityError("not a device certificate");
  if (c.v !== PROTOCOL_VERSION) throw new IntegrityError(`device certificate of unsupported protocol version ${c.v}`);
  if (typeof c.user !== "string" || !USER.test(c.user) || (user !== undefined && c.user !== user)) {
    throw new IntegrityError("device certificate of another user");
  }
  if (typeof c.name !== "string" || !DEVICE_NAME.test(c.name)) throw new IntegrityError("bad device name");
  const keys = Object.keys(c).sort().join(",");
  if (keys !== "encPub,id,name,sig,signPub,type,user,v") throw new IntegrityError("device certificate has odd fields");
  if (c.id !== deviceIdOf(c)) throw new IntegrityError("device id does not match its keys");
  if (!verifyObject("device", c, c.signPub)) throw new IntegrityError("device certificate self-signature invalid");
  return c;
}

export function linkHash(link: ChainLink): string {
  return objectHash(link);
}

export function genesisLink(cert: DeviceCert, signKey: Buffer, at = new Date().toISOString()): ChainLink {
  return signObject(
    "chain",
    {
      v: PROTOCOL_VERSION,
      type: "chain" as const,
      user: cert.user,
      seq: 0,
      prev: "",
      op: "add" as const,
      signer: cert.id,
      at,
      device: cert,
    },
    signKey,
  );
}

/** The next link after `state`, signed by `signer` (an active device whose private key is `signKey`). */
export function nextLink(
  state: ChainState,
  op: { add: DeviceCert } | { revoke: string },
  signer: string,
  signKey: Buffer,
  at = new Date().toISOString(),
): ChainLink {
  const base = {
    v: PROTOCOL_VERSION,
    type: "chain" as const,
    user: state.user,
    seq: state.seq + 1,
    prev: state.head,
    signer,
    at,
  };
  const link =
    "add" in op
      ? { ...base, op: "add" as const, device: op.add }
      : { ...base, op: "revoke" as const, target: op.revoke };
  return signObject("chain", link, signKey);
}

/** Applies one link to `state` (undefined before link 0), checking every rule; returns the new state. */
export function applyLink(state: ChainState | undefined, raw: unknown, user: string): ChainState {
  const l = raw as ChainLink;
  if (typeof l !== "object" || l === null || l.type !== "chain") throw new IntegrityError("not a chain link");
  if (l.v !== PROTOCOL_VERSION) throw new IntegrityError(`chain link of unsupported protocol version ${l.v}`);
  if (l.user !== user) throw new IntegrityError("chain link of another user");
  const seq = state ? state.seq + 1 : 0;
  if (l.seq !== seq) throw new IntegrityError(`chain link seq ${l.seq}, expected ${seq}`);
  if (l.prev !== (state ? state.head : ""))
    throw new IntegrityError(`chain link ${seq} does not follow the previous one`);
  if (typeof l.at !== "string") throw new IntegrityError("chain link without time");
  const next: ChainState = state
    ? { ...state, devices: new Map(state.devices), active: new Set(state.active), revoked: new Set(state.revoked) }
    : { user, root: "", seq: 0, head: "", devices: new Map(), active: new Set(), revoked: new Set() };
  let signerCert: DeviceCert | undefined;
  if (l.op === "add") {
    if (l.target !== undefined) throw new IntegrityError("add link with a target");
    const cert = checkDeviceCert(l.device, user);
    if (next.devices.has(cert.id)) throw new IntegrityError("device added twice");
    if (!state) {
      if (l.signer !== cert.id) throw new IntegrityError("the first link must be signed by the device it adds");
      signerCert = cert;
      next.root = fingerprintOf(cert);
    }
    next.devices.set(cert.id, cert);
    next.active.add(cert.id);
  } else if (l.op === "revoke") {
    if (!state) throw new IntegrityError("a chain starts with an add");
    if (l.device !== undefined || typeof l.target !== "string") throw new IntegrityError("bad revoke link");
    if (!next.active.has(l.target)) throw new IntegrityError("revoke of a device that is not active");
    next.active.delete(l.target);
    next.revoked.add(l.target);
    if (next.active.size === 0) throw new IntegrityError("revoke of the last active device");
  } else {
    throw new IntegrityError("unknown chain operation");
  }
  if (state) {
    if (!state.active.has(l.signer))
      throw new IntegrityError(`chain link ${seq} signed by a device that is not active`);
    signerCert = state.devices.get(l.signer);
  }
  if (!signerCert || !verifyObject("chain", l, signerCert.signPub)) {
    throw new IntegrityError(`chain link ${seq} has an invalid signature`);
  }
  next.seq = seq;
  next.head = linkHash(l);
  return next;
}

/**
 * Verifies a whole chain. With `pin`, the root must be the pinned one and the chain must reach at least the pinned
 * seq with the same link there (no key substitution, no hidden link, no rollback).
 */
export function verifyChain(user: string, links: unknown, pin?: ChainPin): ChainState {
  if (!Array.isArray(links) || links.length === 0) throw new IntegrityError(`no device chain for ${user}`);
  let state: ChainState | undefined;
  let pinnedHeadSeen = false;
  for (const link of links) {
    state = applyLink(state, link, user);
    if (pin && state.seq === 0 && state.root !== pin.root) {
      throw new IntegrityError(
        `the device chain of ${user} has another root key than the one verified (key substitution?)`,
      );
    }
    if (pin && state.seq === pin.seq) {
      if (state.head !== pin.head) throw new IntegrityError(`the device chain of ${user} forked from the pinned one`);
      pinnedHeadSeen = true;
    }
  }
  if (pin && !pinnedHeadSeen)
    throw new IntegrityError(`the device chain of ${user} is shorter than the pinned one (rollback?)`);
  return state as ChainState;
}

export function pinOf(state: ChainState): ChainPin {
  return { root: state.root, seq: state.seq, head: state.head };
}
