// The OpenPGP public key store: users' and groups' keys, trusted organisation keys, and recipient resolution with
// the use-time checks (expiry, revocation, certification) every encryption goes through.
import type * as openpgp from "openpgp";
import type { AuditActor, AuditSink } from "../audit/types.ts";
import { AtrestError } from "../errors.ts";
import type { KeyProvider } from "../kms/api/types.ts";
import type { MetaStore } from "../store/types.ts";
import { certifiers, keyFacts, parseFingerprint, readPublicKey, readPublicKeys, unusableReason } from "./keys.ts";
import { openpgpLib } from "./lib.ts";
import { OrgKey } from "./org-key.ts";
import type { PgpKeyRow, PgpOwnerKind } from "./types.ts";

const TRUST_SETTING = "pgp.trust";

export interface ResolveOptions {
  /** Every key must carry a valid certification by a trusted organisation key. */
  requireCertified?: boolean;
  /** Check validity at this time (tests); default now. */
  date?: Date;
}

export interface Owner {
  kind: PgpOwnerKind;
  name: string;
}

/** `alice` → user alice, `@finance` → group finance. */
export function parseOwner(spec: string): Owner {
  const group = spec.startsWith("@");
  const name = group ? spec.slice(1) : spec;
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name)) {
    throw new AtrestError("INVALID_INPUT", `not a user or @group name: ${spec}`);
  }
  return { kind: group ? "group" : "user", name };
}

export function ownerLabel(row: Pick<PgpKeyRow, "ownerKind" | "ownerName">): string {
  return row.ownerKind === "group" ? `@${row.ownerName}` : row.ownerName;
}

/** Who changes the key store, as the audit names them (the service's actor: job user, role, protocol, source). */
export type PgpActor = AuditActor;

/** Changes made without `actingAs` (in-process use by tests and tools). */
const DEFAULT_ACTOR: PgpActor = { user: "admin", role: "admin", protocol: "cli" };

export class PgpKeyStore {
  readonly #store: MetaStore;
  readonly #keys: KeyProvider;
  readonly #audit: AuditSink | undefined;
  readonly #by: PgpActor;
  readonly org: OrgKey;
  // Parsing an armored key costs ~1 ms; uploads into a PGP folder resolve the same few keys again and again.
  readonly #parsed = new Map<string, openpgp.PublicKey>();

  constructor(store: MetaStore, keys: KeyProvider, audit?: AuditSink, by: PgpActor = DEFAULT_ACTOR) {
    this.#store = store;
    this.#keys = keys;
    this.#audit = audit;
    this.#by = by;
    this.org = new OrgKey(store, keys);
  }

  /** The same key store, its changes audited as done by `by`. */
  actingAs(by: PgpActor): PgpKeyStore {
    return new PgpKeyStore(this.#store, this.#keys, this.#audit, by);
  }

  async #parse(armored: string): Promise<openpgp.PublicKey> {
    let key = this.#parsed.get(armored);
    if (!key) {
      key = await readPublicKey(armored);
      if (this.#parsed.size > 1000) this.#parsed.clear();
      this.#parsed.set(armored, key);
    }
    return key;
  }

  async #requireOwner(owner: Owner): Promise<void> {
    if (owner.kind === "user") {
      if (!(await this.#store.getUser(owner.name))) throw new AtrestError("NOT_FOUND", `no such user: ${owner.name}`);
      return;
    }
    if (!(await this.groupExists(owner.name))) throw new AtrestError("NOT_FOUND", `no such group: @${owner.name}`);
  }

  /** A group exists when it is registered or some user is a member. */
  async groupExists(name: string): Promise<boolean> {
    if (await this.#store.getGroup(name)) return true;
    const users = await this.#store.listUsers();
    return users.some((u) => u.groups.includes(name));
  }

  /** Trusted organisation keys: the server's own (if created) and the ones an admin added. */
  async trustedKeys(): Promise<openpgp.PublicKey[]> {
    const out: openpgp.PublicKey[] = [];
    const own = await this.org.publicKey();
    if (own) out.push(own);
    for (const armored of await this.#trustList()) {
      const key = await this.#parse(armored);
      if (!out.some((k) => k.getFingerprint() === key.getFingerprint())) out.push(key);
    }
    return out;
  }

  async #trustList(): Promise<string[]> {
    const raw = await this.#store.getSetting(TRUST_SETTING);
    return raw ? (JSON.parse(raw.toString("utf8")) as string[]) : [];
  }

  async #saveTrust(list: string[]): Promise<void> {
    await this.#store.transaction((tx) => tx.setSetting(TRUST_SETTING, Buffer.from(JSON.stringify(list))));
  }

  /** Trusts an organisation key (public part) as a certifier; returns its fingerprint. Stored keys are rechecked. */
  async addTrust(armored: string): Promise<string> {
    const key = await readPublicKey(armored);
    const reason = await unusableReason(key).then((r) => (r === "revoked" || r?.startsWith("expired") ? r : undefined));
    if (reason) throw new AtrestError("INVALID_INPUT", `organisation key ${key.getFingerprint()} is ${reason}`);
    const kept: string[] = [];
    for (const a of await this.#trustList())
      if ((await this.#parse(a)).getFingerprint() !== key.getFingerprint()) kept.push(a);
    kept.push(key.armor());
    await this.#saveTrust(kept);
    await this.recheckCertifications();
    this.#trustEvent(key.getFingerprint(), "trusted as certifier");
    return key.getFingerprint();
  }

  async removeTrust(fingerprintSpec: string): Promise<void> {
    const fpr = requireFingerprint(fingerprintSpec);
    const list = await this.#trustList();
    const kept: string[] = [];
    for (const a of list) if ((await this.#parse(a)).getFingerprint() !== fpr) kept.push(a);
    if (kept.length === list.length) throw new AtrestError("NOT_FOUND", `not a trusted organisation key: ${fpr}`);
    await this.#saveTrust(kept);
    await this.recheckCertifications();
    this.#trustEvent(fpr, "no longer trusted");
  }

  #trustEvent(fpr: string, detail: string): void {
    this.#audit?.record({
      action: "pgp.trust.change",
      outcome: "success",
      ...this.#by,
      target: fpr,
      detail,
    });
  }

  /** Creates the organisation key (see OrgKey.create) and records it in the audit. */
  async createOrgKey(userId: { name: string; email?: string }): Promise<openpgp.PublicKey> {
    const key = await this.org.create(userId);
    this.#audit?.record({
      action: "pgp.orgkey.create",
      outcome: "success",
      ...this.#by,
      target: key.getFingerprint(),
      detail: key.getUserIDs().join(", "),
    });
    return key;
  }

  /** Imported trust anchors (not the server's own org key), for listing. */
  async listTrust(): Promise<{ fingerprint: string; userIds: string[] }[]> {
    const out = [];
    for (const a of await this.#trustList()) {
      const k = await this.#parse(a);
      out.push({ fingerprint: k.getFingerprint(), userIds: k.getUserIDs() });
    }
    return out;
  }

  /**
   * Imports one armored or binary public key for a user or group. Importing a key that is already stored merges
   * it (new user ids, certifications, a revocation, a new expiry); it must keep its owner.
   */
  async import(
    ownerSpec: string,
    input: string | Uint8Array,
    source: PgpKeyRow["source"] = "import",
  ): Promise<PgpKeyRow> {
    const owner = parseOwner(ownerSpec);
    await this.#requireOwner(owner);
    const keys = await readPublicKeys(input);
    if (keys.length !== 1) {
      throw new AtrestError(
        "INVALID_INPUT",
        `expected one key per import, found ${keys.length}: import them one by one`,
      );
    }
    let key = keys[0];
    const fpr = key.getFingerprint();
    const existing = await this.#store.getPgpKey(fpr);
    if (existing && (existing.ownerKind !== owner.kind || existing.ownerName !== owner.name)) {
      throw new AtrestError("EXISTS", `key ${fpr} already belongs to ${ownerLabel(existing)}`);
    }
    if (existing) key = await (await readPublicKey(existing.armored)).update(key);
    // A key without a valid self-signed user id cannot be used by openpgp (or gpg) at all.
    try {
      await key.getPrimaryUser();
    } catch (err) {
      throw new AtrestError("INVALID_INPUT", `key ${fpr} has no valid self-signed user id: ${(err as Error).message}`);
    }
    const row = await this.#row(key, owner, existing?.source ?? source, existing?.importedAt);
    await this.#store.transaction((tx) => tx.putPgpKey(row));
    const generated = source === "generated" && !existing;
    this.#audit?.record({
      action: generated ? "pgp.key.generate" : "pgp.key.import",
      outcome: "success",
      ...this.#by,
      effectiveUser: owner.kind === "user" ? owner.name : undefined,
      target: fpr,
      detail: generated
        ? `generated for ${ownerLabel(row)}; private key handed out once, not kept`
        : `${existing ? "updated" : "imported"} for ${ownerLabel(row)}${row.revoked ? " (revoked)" : ""}`,
    });
    return row;
  }

  async #row(key: openpgp.PublicKey, owner: Owner, source: PgpKeyRow["source"], importedAt?: string) {
    const facts = await keyFacts(key);
    const row: PgpKeyRow = {
      ...facts,
      ownerKind: owner.kind,
      ownerName: owner.name,
      armored: key.armor(),
      certifiedBy: await certifiers(key, await this.trustedKeys()),
      source,
      importedAt: importedAt ?? new Date().toISOString(),
    };
    return row;
  }

  /** Recomputes every stored key's `certifiedBy` (after the trusted set changed or a key was certified). */
  async recheckCertifications(): Promise<void> {
    const trusted = await this.trustedKeys();
    for (const row of await this.#store.listPgpKeys()) {
      const certifiedBy = await certifiers(await this.#parse(row.armored), trusted);
      if (certifiedBy.join() !== row.certifiedBy.join()) {
        await this.#store.transaction((tx) => tx.putPgpKey({ ...row, certifiedBy }));
      }
    }
  }

  list(): Promise<PgpKeyRow[]> {
    return this.#store.listPgpKeys();
  }

  async get(fingerprintSpec: string): Promise<PgpKeyRow> {
    const fpr = requireFingerprint(fingerprintSpec);
    const row = await this.#store.getPgpKey(fpr);
    if (!row) throw new AtrestError("NOT_FOUND", `no such OpenPGP key: ${fpr}`);
    return row;
  }

  async remove(fingerprintSpec: string): Promise<void> {
    const row = await this.get(fingerprintSpec);
    await this.#store.transaction((tx) => tx.deletePgpKey(row.fingerprint));
    this.#audit?.record({
      action: "pgp.key.remove",
      outcome: "success",
      ...this.#by,
      target: row.fingerprint,
      detail: `removed from ${ownerLabel(row)}`,
    });
  }

  /**
   * Applies a revocation certificate (as gpg writes it to openpgp-revocs.d/<FPR>.rev when it makes a key; the ":"
   * gpg puts before its BEGIN line is accepted) to a stored key. From then on the key is refused as a recipient.
   */
  async revoke(fingerprintSpec: string, certificate: string): Promise<PgpKeyRow> {
    const row = await this.get(fingerprintSpec);
    const text = certificate.replace(/^:(-----BEGIN)/m, "$1");
    let revoked: openpgp.PublicKey;
    try {
      ({ publicKey: revoked } = await (await openpgpLib()).revokeKey({
        key: await readPublicKey(row.armored),
        revocationCertificate: text,
        format: "object",
      }));
    } catch (err) {
      throw new AtrestError(
        "INVALID_INPUT",
        `not a revocation certificate for ${row.fingerprint}: ${(err as Error).message}`,
      );
    }
    const next = await this.replace(row, revoked);
    this.#audit?.record({
      action: "pgp.key.import",
      outcome: "success",
      ...this.#by,
      target: row.fingerprint,
      detail: `revocation certificate applied for ${ownerLabel(row)}`,
    });
    return next;
  }

  /** Stores an updated version of a key (e.g. with a new certification), keeping owner and source. */
  async replace(row: PgpKeyRow, key: openpgp.PublicKey): Promise<PgpKeyRow> {
    const next = await this.#row(key, { kind: row.ownerKind, name: row.ownerName }, row.source, row.importedAt);
    await this.#store.transaction((tx) => tx.putPgpKey(next));
    return next;
  }

  /** Parsed public key of a stored row. */
  parsed(row: PgpKeyRow): Promise<openpgp.PublicKey> {
    return this.#parse(row.armored);
  }

  /** Certifies a stored key with the server's organisation key (a "signed public key") and stores the result. */
  async certify(fingerprintSpec: string): Promise<PgpKeyRow> {
    const row = await this.get(fingerprintSpec);
    const signed = await this.org.certify(await this.#parse(row.armored));
    const next = await this.replace(row, signed);
    this.#audit?.record({
      action: "pgp.key.certify",
      outcome: "success",
      ...this.#by,
      target: row.fingerprint,
      detail: `certified by ${(await this.org.requirePublicKey()).getFingerprint()}`,
    });
    return next;
  }

  /** Stored keys of a user, or of a group itself (not its members). */
  async keysOf(owner: Owner): Promise<PgpKeyRow[]> {
    return (await this.#store.listPgpKeys()).filter((k) => k.ownerKind === owner.kind && k.ownerName === owner.name);
  }

  /**
   * Resolves recipient specs to public keys, checked for use now: `alice` (the user's usable keys), `@group` (the
   * group's own keys and every member's), or a fingerprint of a stored key. Refuses with one clear message naming
   * each fingerprint and why when: a spec names nothing known, a fingerprint's key is expired, revoked or (with
   * `requireCertified`) not certified by a trusted organisation key, or a user (or group member) has no usable key.
   * A user's unusable keys are skipped when the user has another usable one (key rollover).
   */
  async resolveRecipients(specs: string[], opts: ResolveOptions = {}): Promise<openpgp.PublicKey[]> {
    if (specs.length === 0) throw new AtrestError("INVALID_INPUT", "no OpenPGP recipients given");
    const date = opts.date ?? new Date();
    const trusted = opts.requireCertified ? await this.trustedKeys() : [];
    const all = await this.#store.listPgpKeys();
    const users = await this.#store.listUsers();
    const out = new Map<string, openpgp.PublicKey>();
    const problems: string[] = [];

    const check = async (row: PgpKeyRow): Promise<string | undefined> => {
      const key = await this.#parse(row.armored);
      const reason = await unusableReason(key, date);
      if (reason) return reason;
      if (opts.requireCertified && (await certifiers(key, trusted, date)).length === 0) {
        return "not certified by a trusted organisation key";
      }
      return undefined;
    };
    // Every usable key of one owner; a problem when there is none.
    const ownerKeys = async (kind: PgpOwnerKind, name: string, label: string): Promise<void> => {
      const rows = all.filter((k) => k.ownerKind === kind && k.ownerName === name);
      const why: string[] = [];
      let usable = 0;
      for (const row of rows) {
        const reason = await check(row);
        if (reason) why.push(`${row.fingerprint} ${reason}`);
        else {
          usable++;
          out.set(row.fingerprint, await this.#parse(row.armored));
        }
      }
      if (usable === 0) problems.push(rows.length ? `${label}: ${why.join("; ")}` : `${label} has no OpenPGP key`);
    };

    for (const spec of specs) {
      const fpr = parseFingerprint(spec);
      if (fpr) {
        const row = all.find((k) => k.fingerprint === fpr);
        if (!row) {
          problems.push(`no stored OpenPGP key ${fpr}`);
          continue;
        }
        const reason = await check(row);
        if (reason) problems.push(`key ${fpr} (${ownerLabel(row)}) is ${reason}`);
        else out.set(fpr, await this.#parse(row.armored));
        continue;
      }
      let owner: Owner;
      try {
        owner = parseOwner(spec);
      } catch (err) {
        problems.push((err as Error).message);
        continue;
      }
      if (owner.kind === "user") {
        if (!users.some((u) => u.name === owner.name)) problems.push(`no such user: ${owner.name}`);
        else await ownerKeys("user", owner.name, `user ${owner.name}`);
        continue;
      }
      const members = users.filter((u) => u.groups.includes(owner.name));
      const groupKeys = all.filter((k) => k.ownerKind === "group" && k.ownerName === owner.name);
      if (members.length === 0 && groupKeys.length === 0) {
        problems.push(`no such group (or no members and no key): @${owner.name}`);
        continue;
      }
      if (groupKeys.length > 0) await ownerKeys("group", owner.name, `group @${owner.name}`);
      for (const m of members) await ownerKeys("user", m.name, `user ${m.name} (member of @${owner.name})`);
    }
    if (problems.length > 0) {
      throw new AtrestError("REFUSED", `OpenPGP recipients refused: ${problems.join("; ")}`);
    }
    return [...out.values()];
  }
}

export function requireFingerprint(spec: string): string {
  const fpr = parseFingerprint(spec);
  if (!fpr) throw new AtrestError("INVALID_INPUT", `not an OpenPGP fingerprint (40 or 64 hex digits): ${spec}`);
  return fpr;
}
