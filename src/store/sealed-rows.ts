// The persisted form of the sealed aggregates (users, groups, folders), shared by every driver: a driver stores the
// record's columns as they are and calls these to go to and from the contract's rows. See sealing.ts.
import { constantTimeEqual } from "../crypto/bytes.ts";
import { IntegrityError } from "../errors.ts";
import type { RowSealer } from "./sealing.ts";
import type { FolderRow, GroupRow, UserRow } from "./types.ts";

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

/** The row back; IntegrityError when the record does not open or its name does not match its index. */
export function openUser(s: RowSealer, r: UserRecord): UserRow {
  const body = JSON.parse(s.open("user", userAad(r.id, r.nameIndex), r.sealed).toString("utf8")) as SealedUser;
  if (!constantTimeEqual(userIndex(s, body.name), r.nameIndex)) throw new IntegrityError("user row index mismatch");
  const usage = openUsage(s, r.id, r.usage);
  return { id: r.id, ...body, usedBytes: usage.bytes, usedFiles: usage.files };
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
