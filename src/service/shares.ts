// Share links: a user hands a file or a directory to someone without an account. The link is `<id>.<secret>`; the
// store keeps only a SHA-256 of the secret (192 random bits: a slow hash adds nothing), so a stolen database holds no
// working link. Options: a password (argon2id), an expiry, download and upload limits (counted atomically in the
// store: a limit of 3 allows exactly 3 uses however many arrive at once), a source IP / CIDR allow list. The shared
// entry is bound by node id and owner id: the share follows a rename and dies with its file or its owner. Every use
// runs in a file session of the owner whose job user is `share:<id>` (vfs audit: job user share:<id>, effective user
// the owner), and refusals are audited as `share.use` failures; wrong links and passwords are scored by the defender.
import { createHash, randomBytes } from "node:crypto";
import type { AuditSink } from "../audit/types.ts";
import { constantTimeEqual } from "../crypto/bytes.ts";
import { AtrestError } from "../errors.ts";
import type { MetaStore, ShareRow, UserRow } from "../store/types.ts";
import type { VfsSession } from "../vfs/types.ts";
import type { Accounts } from "./accounts.ts";
import { type Actor, actorFields } from "./actor.ts";
import { allowed, allowListOf, type Defender } from "./defender.ts";
import { hashPassword, verifyPassword } from "./passwords.ts";

export const MAX_SHARE_DAYS = 366;
const DAY_MS = 86_400_000;

export interface NewShare {
  /** In the owner's view. */
  path: string;
  password?: string;
  expiresInDays?: number;
  allowDownload?: boolean;
  allowUpload?: boolean;
  maxDownloads?: number;
  maxUploads?: number;
  allowFrom?: string[];
}

/** `<id>.<secret>`, both base64url. */
export function parseShareLink(link: string): { id: string; secret: string } | undefined {
  const m = /^([A-Za-z0-9_-]{16})\.([A-Za-z0-9_-]{32})$/.exec(link);
  return m ? { id: m[1], secret: m[2] } : undefined;
}

const digest = (secret: string) => createHash("sha256").update(secret).digest();

/** A share with its owner's current name (the store keeps only the owner's id). */
export type Share = ShareRow & { ownerName: string };

/** Why a link was refused (the door maps each to its answer). */
export type ShareRefusal = "not-found" | "gone" | "source" | "password-required" | "bad-password" | "banned";

export type ShareOpen = { ok: true; share: Share; owner: UserRow } | { ok: false; why: ShareRefusal };

export interface ShareServiceDeps {
  store: MetaStore;
  accounts: Pick<Accounts, "openSession">;
  audit: AuditSink;
  defender?: Defender;
  now?: () => number;
}

export class ShareService {
  readonly #d: ShareServiceDeps;
  readonly #now: () => number;

  constructor(deps: ShareServiceDeps) {
    this.#d = deps;
    this.#now = deps.now ?? Date.now;
  }

  /** Shares `input.path` of the actor; returns the link (shown once) and the stored row. */
  async create(actor: Actor, input: NewShare): Promise<{ link: string; row: Share }> {
    const days = input.expiresInDays;
    if (days !== undefined && (!Number.isInteger(days) || days < 1 || days > MAX_SHARE_DAYS)) {
      throw new AtrestError("INVALID_INPUT", `expiresInDays: 1-${MAX_SHARE_DAYS}`);
    }
    for (const n of [input.maxDownloads, input.maxUploads]) {
      if (n !== undefined && (!Number.isSafeInteger(n) || n < 0)) {
        throw new AtrestError("INVALID_INPUT", "limits must be non-negative integers (0 = unlimited)");
      }
    }
    const allowFrom = [...new Set(input.allowFrom ?? [])];
    allowListOf(allowFrom); // refuses what is not an IP or CIDR
    const owner = await this.#d.store.getUser(actor.user);
    if (!owner) throw new AtrestError("PERMISSION_DENIED", `user ${actor.user} no longer exists`);
    const allowDownload = input.allowDownload ?? true;
    const allowUpload = input.allowUpload ?? false;
    if (!allowDownload && !allowUpload)
      throw new AtrestError("INVALID_INPUT", "a share allows download, upload or both");
    const vfs = await this.#d.accounts.openSession(owner.name, {
      protocol: actor.protocol === "cli" ? "cli" : "http",
      sessionId: actor.sessionId ?? "share-create",
      sourceIp: actor.sourceIp,
    });
    let nodeId: string;
    let kind: ShareRow["kind"];
    try {
      if (!vfs.nodeId) throw new AtrestError("UNSUPPORTED", "this file system cannot share by link");
      kind = (await vfs.stat(input.path)).kind;
      nodeId = await vfs.nodeId(input.path);
    } finally {
      await vfs.close();
    }
    if (allowUpload && kind !== "dir") throw new AtrestError("INVALID_INPUT", "uploads need a shared directory");
    const id = randomBytes(12).toString("base64url");
    const secret = randomBytes(24).toString("base64url");
    const now = this.#now();
    const row: Share = {
      id,
      secretHash: digest(secret),
      ownerId: owner.id,
      ownerName: owner.name,
      nodeId,
      kind,
      passwordHash: input.password ? await hashPassword(input.password) : null,
      expiresAt: days === undefined ? null : now + days * DAY_MS,
      allowDownload,
      allowUpload,
      maxDownloads: input.maxDownloads ?? 0,
      downloads: 0,
      maxUploads: input.maxUploads ?? 0,
      uploads: 0,
      allowFrom,
      createdAt: now,
      lastUsedAt: null,
    };
    const { ownerName: _, ...stored } = row;
    await this.#d.store.transaction((tx) => tx.insertShare(stored));
    this.#d.audit.record({
      action: "share.create",
      outcome: "success",
      ...actorFields(actor),
      effectiveUser: owner.name,
      target: id,
      path: input.path,
      detail: describe(row),
    });
    return { link: `${id}.${secret}`, row };
  }

  /** The actor's shares (an admin's `all`: everyone's). */
  async list(actor: Actor, all = false): Promise<Share[]> {
    if (all && actor.role !== "admin")
      throw new AtrestError("PERMISSION_DENIED", "listing every share needs role admin");
    const { store } = this.#d;
    const me = await store.getUser(actor.user);
    if (!me) return [];
    const out: Share[] = [];
    const names = new Map<string, string | undefined>([[me.id, me.name]]);
    for (const row of await store.listShares(all ? undefined : me.id)) {
      if (!names.has(row.ownerId)) names.set(row.ownerId, (await store.getUserById(row.ownerId))?.name);
      const ownerName = names.get(row.ownerId);
      if (ownerName !== undefined) out.push({ ...row, ownerName });
    }
    return out;
  }

  /** Revokes one of the actor's shares (an admin may revoke anyone's). */
  async revoke(actor: Actor, id: string): Promise<void> {
    const row = await this.#d.store.getShare(id);
    const owner = row ? await this.#d.store.getUserById(row.ownerId) : undefined;
    if (!row || !owner || (owner.name !== actor.user && actor.role !== "admin")) {
      throw new AtrestError("NOT_FOUND", `no such share: ${id}`);
    }
    await this.#d.store.transaction((tx) => tx.deleteShare(id));
    this.#d.audit.record({
      action: "share.revoke",
      outcome: "success",
      ...actorFields(actor),
      effectiveUser: owner.name,
      target: id,
    });
  }

  /**
   * Checks a link as used from `sourceIp` with `password` (or `unlocked`: the door already checked the password for
   * this share in this browser): the defender's ban first, then the secret, expiry, owner, source and password.
   * Every refusal is audited; a wrong secret or password is scored by the defender.
   */
  async open(link: string, o: { sourceIp: string; password?: string; unlocked?: string }): Promise<ShareOpen> {
    const { store, defender } = this.#d;
    const parsed = parseShareLink(link);
    const refuse = async (why: ShareRefusal, row?: Share, score = false): Promise<ShareOpen> => {
      this.#d.audit.record({
        action: "share.use",
        outcome: "failure",
        user: row ? `share:${row.id}` : "share:-",
        ...(row ? { effectiveUser: row.ownerName, target: row.id } : {}),
        protocol: "http",
        sourceIp: o.sourceIp,
        reason: why,
      });
      if (score) await defender?.failure({ ip: o.sourceIp });
      return { ok: false, why };
    };
    if (await defender?.banned({ ip: o.sourceIp })) return refuse("banned");
    const row = parsed ? await store.getShare(parsed.id) : undefined;
    // hash even when there is no row, so an unknown id takes as long as a wrong secret
    const given = digest(parsed?.secret ?? link);
    if (!row || !constantTimeEqual(given, row.secretHash)) return refuse("not-found", undefined, true);
    const owner = await store.getUserById(row.ownerId);
    if (!owner) {
      await store.transaction((tx) => tx.deleteShare(row.id));
      return refuse("gone", { ...row, ownerName: "-" });
    }
    const share: Share = { ...row, ownerName: owner.name };
    if (row.expiresAt !== null && row.expiresAt <= this.#now()) return refuse("gone", share);
    if (row.allowFrom.length > 0 && !allowed(allowListOf(row.allowFrom), o.sourceIp)) return refuse("source", share);
    if (row.passwordHash !== null && o.unlocked !== row.id) {
      if (o.password === undefined) return refuse("password-required", share);
      if (!(await verifyPassword(row.passwordHash, o.password))) return refuse("bad-password", share, true);
    }
    return { ok: true, share, owner };
  }

  /** The owner's file session acting for the share (audit: job user `share:<id>`, effective user the owner). */
  session(share: Share, sourceIp: string): Promise<VfsSession> {
    return this.#d.accounts.openSession(share.ownerName, {
      protocol: "http",
      sessionId: `share:${share.id}`,
      sourceIp,
      jobUser: `share:${share.id}`,
    });
  }

  /** Takes one download or upload of the limit; false when it is used up. */
  take(share: Share, kind: "download" | "upload"): Promise<boolean> {
    return this.#d.store.transaction((tx) => tx.countShareUse(share.id, kind, 1, this.#now()));
  }

  /** Gives back a use that did not happen (the upload failed). */
  async giveBack(share: Share, kind: "download" | "upload"): Promise<void> {
    await this.#d.store.transaction((tx) => tx.countShareUse(share.id, kind, -1, this.#now()));
  }

  /** The share is dead (its file or directory is gone): forget it. */
  async forget(share: ShareRow): Promise<void> {
    await this.#d.store.transaction((tx) => tx.deleteShare(share.id));
  }

  /** Audits a successful use of a share (what the vfs does not record itself: listings, refused limits). */
  used(share: Share, sourceIp: string, detail: string, outcome: "success" | "failure" = "success", reason?: string) {
    this.#d.audit.record({
      action: "share.use",
      outcome,
      user: `share:${share.id}`,
      effectiveUser: share.ownerName,
      target: share.id,
      protocol: "http",
      sourceIp,
      detail,
      ...(reason ? { reason } : {}),
    });
  }
}

function describe(r: ShareRow): string {
  const parts = [r.kind, r.allowDownload ? "download" : "", r.allowUpload ? "upload" : ""].filter(Boolean);
  if (r.passwordHash) parts.push("password");
  if (r.expiresAt !== null) parts.push(`until ${new Date(r.expiresAt).toISOString()}`);
  if (r.maxDownloads) parts.push(`max downloads ${r.maxDownloads}`);
  if (r.maxUploads) parts.push(`max uploads ${r.maxUploads}`);
  if (r.allowFrom.length) parts.push(`from ${r.allowFrom.join(",")}`);
  return parts.join(" ");
}
