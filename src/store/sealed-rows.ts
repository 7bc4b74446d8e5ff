// The persisted form of the sealed aggregates (users, groups, folders), shared by every driver: a driver stores the
// record's columns as they are and calls these to go to and from the contract's rows. See sealing.ts.
import { constantTimeEqual } from "../crypto/bytes.ts";
import { IntegrityError } from "../errors.ts";
import type { RowSealer } from "./sealing.ts";
import type { FolderRow, GroupRow, PgpKeyRow, UserRow } from "./types.ts";

/** users: id, name_index (unique), sealed (everything but the id and the usage), usage (sealed counters). */
export interface UserRecord {
  id: string;
  nameIndex: Buffer;
  sealed: Buffer;
  usage: Buffer;
}

/** groups and folders: the blind index of the name or path (primary key) and the sealed row. */
export interface NamedRecord {
  index: Buffer;
  sealed: Buffer;
}

type SealedUser = Omit<UserRow, "id" | "usedBytes" | "usedFiles">;

export function userIndex(s: RowSealer, name: string): Buffer {
  return s.index("user", name);
}

export function sealUser(s: RowSealer, u: UserRow): UserRecord {
  const nameIndex = userIndex(s, u.name);
  const body: SealedUser = {
    name: u.name,
    passwordHash: u.passwordHash,
    publicKeys: u.publicKeys,
    home: u.home,
    permissions: u.permissions,
    groups: u.groups,
    role: u.role,
    kek: u.kek,
    ...(u.requireTotp ? { requireTotp: true } : {}),
    ...(u.disabled ? { disabled: true } : {}),
    quotaBytes: u.quotaBytes,
    quotaFiles: u.quotaFiles,
    createdAt: u.createdAt,
  };
  return {
    id: u.id,
    nameIndex,
    sealed: s.seal("user", userAad(u.id, nameIndex), Buffer.from(JSON.stringify(body))),
    usage: sealUsage(s, u.id, u.usedBytes, u.usedFiles),
  };
}

/** A user record as last opened: its stored bytes, and what they opened to (the body as JSON, the usage). */
interface OpenedUser {
  nameIndex: Buffer;
  sealed: Buffer;
  body: string;
  usage: Buffer;
  bytes: number;
  files: number;
}

const OPENED_USERS_MAX = 1024;

/**
 * The row back; IntegrityError when the record does not open or its name does not match its index.
 *
 * Users opened before are kept in the sealer's memo (per store key, dropped with the keys), by id. A lookup still
 * reads the row; only when its stored bytes are the ones opened before are the AEAD opens and the index HMAC skipped
 * (the usage record, rewritten by every upload, is compared on its own). One small upload looks its user up three
 * times (session check, open, commit): 0.15 ms of the server's CPU per upload before. Never stale: any change to a
 * record changes its bytes (fresh nonce), also when another node wrote it.
 */
export function openUser(s: RowSealer, r: UserRecord): UserRow {
  const opened = s.memo as Map<string, OpenedUser>;
  const key = `user\0${r.id}`;
  let known = opened.get(key);
  if (!known?.sealed.equals(r.sealed) || !known.nameIndex.equals(r.nameIndex)) {
    const json = s.open("user", userAad(r.id, r.nameIndex), r.sealed).toString("utf8");
    const body = JSON.parse(json) as SealedUser;
    if (!constantTimeEqual(userIndex(s, body.name), r.nameIndex)) throw new IntegrityError("user row index mismatch");
    const usage = openUsage(s, r.id, r.usage);
    if (opened.size >= OPENED_USERS_MAX) opened.clear();
    known = {
      nameIndex: Buffer.from(r.nameIndex),
      sealed: Buffer.from(r.sealed),
      body: json,
      usage: Buffer.from(r.usage),
      bytes: usage.bytes,
      files: usage.files,
    };
    opened.set(key, known);
    return { id: r.id, ...body, usedBytes: usage.bytes, usedFiles: usage.files };
  }
  if (!known.usage.equals(r.usage)) {
    const usage = openUsage(s, r.id, r.usage);
    known.usage = Buffer.from(r.usage);
    known.bytes = usage.bytes;
    known.files = usage.files;
  }
  return { id: r.id, ...(JSON.parse(known.body) as SealedUser), usedBytes: known.bytes, usedFiles: known.files };
}

function userAad(id: string, nameIndex: Buffer): string {
  return `${id}\0${nameIndex.toString("hex")}`;
}

/** Usage counters: two u64 (bytes, files), so every usage record has the same length whatever the numbers. */
export function sealUsage(s: RowSealer, userId: string, bytes: number, files: number): Buffer {
  const plain = Buffer.alloc(16);
  plain.writeBigUInt64BE(BigInt(Math.max(0, Math.trunc(bytes))), 0);
  plain.writeBigUInt64BE(BigInt(Math.max(0, Math.trunc(files))), 8);
  return s.seal("user.usage", userId, plain);
}

export function openUsage(s: RowSealer, userId: string, sealed: Buffer): { bytes: number; files: number } {
  const plain = s.open("user.usage", userId, sealed);
  if (plain.length !== 16) throw new IntegrityError("usage record length");
  return { bytes: Number(plain.readBigUInt64BE(0)), files: Number(plain.readBigUInt64BE(8)) };
}

export function groupIndex(s: RowSealer, name: string): Buffer {
  return s.index("group", name);
}

export function sealGroup(s: RowSealer, g: GroupRow): NamedRecord {
  const index = groupIndex(s, g.name);
  return { index, sealed: s.seal("group", index.toString("hex"), Buffer.from(JSON.stringify(g))) };
}

export function openGroup(s: RowSealer, r: NamedRecord): GroupRow {
  const g = JSON.parse(s.open("group", r.index.toString("hex"), r.sealed).toString("utf8")) as GroupRow;
  if (!constantTimeEqual(groupIndex(s, g.name), r.index)) throw new IntegrityError("group row index mismatch");
  return g;
}

export function folderIndex(s: RowSealer, path: string): Buffer {
  return s.index("folder", path);
}

export function sealFolder(s: RowSealer, f: FolderRow): NamedRecord {
  const index = folderIndex(s, f.path);
  return { index, sealed: s.seal("folder", index.toString("hex"), Buffer.from(JSON.stringify(f))) };
}

export function openFolder(s: RowSealer, r: NamedRecord): FolderRow {
  const f = JSON.parse(s.open("folder", r.index.toString("hex"), r.sealed).toString("utf8")) as FolderRow;
  if (!constantTimeEqual(folderIndex(s, f.path), r.index)) throw new IntegrityError("folder row index mismatch");
  return f;
}

/** Sorts opened rows as the clear columns used to (`ORDER BY name` / `path`, byte order of UTF-8 like SQLite's). */
export function byKey<T>(key: (row: T) => string): (a: T, b: T) => number {
  return (a, b) => Buffer.compare(Buffer.from(key(a)), Buffer.from(key(b)));
}

/** API tokens (sql/api-tokens.ts): owner, label, scopes and path prefixes sealed; the owner's user index for lookups. */
export interface TokenBody {
  user: string;
  name: string;
  scopes: string[];
  paths: string[];
}

export function sealToken(s: RowSealer, t: TokenBody & { id: string }): { userIndex: Buffer; sealed: Buffer } {
  const body: TokenBody = { user: t.user, name: t.name, scopes: t.scopes, paths: t.paths };
  return { userIndex: userIndex(s, t.user), sealed: s.seal("token", t.id, Buffer.from(JSON.stringify(body))) };
}

export function openToken(s: RowSealer, id: string, sealed: Buffer, index: Buffer): TokenBody {
  const body = JSON.parse(s.open("token", id, sealed).toString("utf8")) as TokenBody;
  if (!constantTimeEqual(userIndex(s, body.user), index)) throw new IntegrityError("token row index mismatch");
  return body;
}

/** The owner of an S3 access key (sql/s3-keys.ts): the name sealed under the key id, the user index for lookups. */
export function sealKeyOwner(
  s: RowSealer,
  accessKeyId: string,
  userName: string,
): { userIndex: Buffer; sealed: Buffer } {
  return { userIndex: userIndex(s, userName), sealed: s.seal("s3key", accessKeyId, Buffer.from(userName, "utf8")) };
}

export function openKeyOwner(s: RowSealer, accessKeyId: string, sealed: Buffer, index: Buffer): string {
  const name = s.open("s3key", accessKeyId, sealed).toString("utf8");
  if (!constantTimeEqual(userIndex(s, name), index)) throw new IntegrityError("s3 key row index mismatch");
  return name;
}

/** A ban's subject (an IP address or a user name; sql/bans.ts): blind index per kind, the subject sealed. */
export function banIndex(s: RowSealer, kind: string, subject: string): Buffer {
  return s.index("ban", `${kind}\0${subject}`);
}

export function sealBanSubject(s: RowSealer, kind: string, subject: string): { index: Buffer; sealed: Buffer } {
  const index = banIndex(s, kind, subject);
  return { index, sealed: s.seal("ban", `${kind}\0${index.toString("hex")}`, Buffer.from(subject, "utf8")) };
}

export function openBanSubject(s: RowSealer, kind: string, index: Buffer, sealed: Buffer): string {
  const subject = s.open("ban", `${kind}\0${index.toString("hex")}`, sealed).toString("utf8");
  if (!constantTimeEqual(banIndex(s, kind, subject), index)) throw new IntegrityError("ban row index mismatch");
  return subject;
}

/** An OpenPGP public key row (sql/pgp-keys.ts): all but the fingerprint sealed, AAD = the fingerprint. */
export function sealPgpKey(s: RowSealer, k: PgpKeyRow): Buffer {
  return s.seal("pgp", k.fingerprint, Buffer.from(JSON.stringify(k)));
}

export function openPgpKey(s: RowSealer, fingerprint: string, sealed: Buffer): PgpKeyRow {
  const k = JSON.parse(s.open("pgp", fingerprint, sealed).toString("utf8")) as PgpKeyRow;
  if (k.fingerprint !== fingerprint) throw new IntegrityError("pgp key row fingerprint mismatch");
  return k;
}

/** A share link's secrets at rest (sql/shares.ts): the argon2id hash of its password and its source allow list, AAD = the share id. */
export interface ShareSecrets {
  passwordHash: string | null;
  allowFrom: string[];
}

export function sealShareSecrets(s: RowSealer, id: string, b: ShareSecrets): Buffer {
  const body: ShareSecrets = { passwordHash: b.passwordHash, allowFrom: b.allowFrom };
  return s.seal("share", id, Buffer.from(JSON.stringify(body)));
}

export function openShareSecrets(s: RowSealer, id: string, sealed: Buffer): ShareSecrets {
  return JSON.parse(s.open("share", id, sealed).toString("utf8")) as ShareSecrets;
}

/**
 * A user name in the E2EE sync tables (sql/sync.ts): the user's blind index (the same as users.name_index) for
 * lookups, the name sealed under `rowKey` (table and row) for reading back.
 */
export function sealSyncUser(s: RowSealer, rowKey: string, name: string): { index: Buffer; sealed: Buffer } {
  return { index: userIndex(s, name), sealed: s.seal("sync", rowKey, Buffer.from(name, "utf8")) };
}

export function openSyncUser(s: RowSealer, rowKey: string, index: Buffer, sealed: Buffer): string {
  const name = s.open("sync", rowKey, sealed).toString("utf8");
  if (!constantTimeEqual(userIndex(s, name), index)) throw new IntegrityError("sync row index mismatch");
  return name;
}

/** A sync region's used bytes: one u64, so every record has the same length whatever the number. */
export function sealSyncBytes(s: RowSealer, regionId: string, bytes: number): Buffer {
  const plain = Buffer.alloc(8);
  plain.writeBigUInt64BE(BigInt(Math.max(0, Math.trunc(bytes))), 0);
  return s.seal("sync", `region.used\0${regionId}`, plain);
}

export function openSyncBytes(s: RowSealer, regionId: string, sealed: Buffer): number {
  const plain = s.open("sync", `region.used\0${regionId}`, sealed);
  if (plain.length !== 8) throw new IntegrityError("sync usage record length");
  return Number(plain.readBigUInt64BE(0));
}
