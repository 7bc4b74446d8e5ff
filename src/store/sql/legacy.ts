// Upgrades of stores written before rows were sealed: migration 9 renamed the clear users, groups and folders tables
// legacy_*, migration 13 the API token, S3 key and ban tables, 15 the OpenPGP keys, 16 the trigger rules, 17 the share links, 18 the sync tables; SQL alone cannot seal, so once the metadata key is known
// (MetaStore.unlock) their rows are sealed into the new tables through the normal writes and the legacy tables dropped.
// Runs inside one transaction; idempotent (a store without legacy tables has nothing to do). Both drivers use it.

import type {
  ApiTokenRow,
  BanRow,
  FolderRow,
  GroupRow,
  MetaTx,
  PgpKeyRow,
  Role,
  S3KeyRow,
  ShareRow,
  UserRow,
} from "../types.ts";
import { buf, type Row, type Sql } from "./sql.ts";
import { legacySyncDevice, legacySyncRegion } from "./sync.ts";

const LEGACY_TABLES = [
  "legacy_users",
  "legacy_groups",
  "legacy_folders",
  "legacy_api_tokens",
  "legacy_s3_keys",
  "legacy_bans",
  "legacy_pgp_keys",
  "legacy_trigger_rules",
  "legacy_shares",
  "legacy_sync_devices",
  "legacy_sync_chain",
  "legacy_sync_regions",
  "legacy_sync_members",
] as const;

export async function legacyTables(sql: Sql): Promise<string[]> {
  const marks = LEGACY_TABLES.map(() => "?").join(", ");
  const q =
    sql.dialect === "sqlite"
      ? `SELECT name FROM sqlite_master WHERE type = 'table' AND name IN (${marks})`
      : `SELECT table_name AS name FROM information_schema.tables WHERE table_schema = current_schema() AND table_name IN (${marks})`;
  return (await sql.all(q, ...LEGACY_TABLES)).map((r) => r.name as string);
}

const optNum = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

function legacyUser(r: Row): UserRow {
  return {
    id: r.id as string,
    name: r.name as string,
    passwordHash: (r.password_hash as string | null) ?? null,
    publicKeys: JSON.parse(r.public_keys as string),
    home: r.home as string,
    permissions: JSON.parse(r.permissions as string),
    groups: JSON.parse(r.groups as string),
    role: r.role as Role,
    kek: (r.kek as string | null) ?? null,
    quotaBytes: Number(r.quota_bytes),
    quotaFiles: Number(r.quota_files),
    usedBytes: Number(r.used_bytes),
    usedFiles: Number(r.used_files),
    createdAt: r.created_at as string,
  };
}

function legacyNamed(r: Row): { options: never; createdAt: string } {
  return { options: JSON.parse(r.options as string) as never, createdAt: r.created_at as string };
}

function legacyToken(r: Row): ApiTokenRow {
  return {
    id: r.id as string,
    user: r.user_name as string,
    name: r.name as string,
    secretHash: buf(r.secret_hash),
    scopes: JSON.parse(r.scopes as string) as string[],
    paths: JSON.parse(r.paths as string) as string[],
    createdAt: Number(r.created_at),
    expiresAt: Number(r.expires_at),
    lastUsedAt: r.last_used_at === null || r.last_used_at === undefined ? null : Number(r.last_used_at),
  };
}

function legacyS3Key(r: Row): S3KeyRow {
  return {
    accessKeyId: r.access_key_id as string,
    userId: r.user_id as string,
    userName: r.user_name as string,
    secretCt: buf(r.secret_ct),
    createdAt: r.created_at as string,
  };
}

function legacyPgpKey(r: Row): PgpKeyRow {
  return {
    fingerprint: r.fingerprint as string,
    ownerKind: r.owner_kind as PgpKeyRow["ownerKind"],
    ownerName: r.owner_name as string,
    armored: r.armored as string,
    userIds: JSON.parse(r.user_ids as string),
    algorithm: r.algorithm as string,
    createdAt: r.created_at as string,
    expiresAt: (r.expires_at as string | null) ?? null,
    revoked: Number(r.revoked) === 1,
    certifiedBy: JSON.parse(r.certified_by as string),
    source: r.source as PgpKeyRow["source"],
    importedAt: r.imported_at as string,
  };
}

function legacyBan(r: Row): BanRow {
  return {
    kind: r.kind as BanRow["kind"],
    subject: r.subject as string,
    since: Number(r.since),
    until: Number(r.until),
    count: Number(r.count),
    expiryAudited: Number(r.expiry_audited) === 1,
  };
}

/** Seals every legacy row through `tx` and drops the legacy tables; returns how many rows moved. */
export async function sealLegacyRows(sql: Sql, tx: MetaTx): Promise<number> {
  const present = new Set(await legacyTables(sql));
  let moved = 0;
  const each = async (table: string, put: (r: Row) => Promise<void>) => {
    if (!present.has(table)) return;
    for (const r of await sql.all(`SELECT * FROM ${table}`)) {
      await put(r);
      moved++;
    }
  };
  await each("legacy_users", (r) => tx.insertUser(legacyUser(r)));
  await each("legacy_groups", (r) => tx.putGroup({ name: r.name as string, ...legacyNamed(r) } as GroupRow));
  await each("legacy_folders", (r) => tx.putFolder({ path: r.path as string, ...legacyNamed(r) } as FolderRow));
  await each("legacy_api_tokens", (r) => tx.putApiToken(legacyToken(r)));
  await each("legacy_s3_keys", (r) => tx.insertS3Key(legacyS3Key(r)));
  await each("legacy_bans", (r) => tx.putBan(legacyBan(r)));
  await each("legacy_pgp_keys", (r) => tx.putPgpKey(legacyPgpKey(r)));
  await each("legacy_trigger_rules", async (r) => {
    const name = r.name as string;
    await tx.putTriggerRule({
      name,
      spec: r.spec as string,
      secrets: r.secrets === null || r.secrets === undefined ? null : buf(r.secrets),
      enabled: Number(r.enabled) === 1,
      createdAt: r.created_at as string,
      updatedAt: r.updated_at as string,
    });
    if (r.last_fired_at !== null && r.last_fired_at !== undefined) {
      await tx.setTriggerRuleFired(name, Number(r.last_fired_at));
    }
  });
  await each("legacy_shares", (r) =>
    tx.insertShare({
      id: r.id as string,
      secretHash: buf(r.secret_hash),
      ownerId: r.owner_id as string,
      nodeId: r.node_id as string,
      kind: r.kind as ShareRow["kind"],
      passwordHash: (r.password_hash as string | null) ?? null,
      expiresAt: optNum(r.expires_at),
      allowDownload: Number(r.allow_download) === 1,
      allowUpload: Number(r.allow_upload) === 1,
      maxDownloads: Number(r.max_downloads),
      downloads: Number(r.downloads),
      maxUploads: Number(r.max_uploads),
      uploads: Number(r.uploads),
      allowFrom: JSON.parse(r.allow_from as string) as string[],
      createdAt: Number(r.created_at),
      lastUsedAt: optNum(r.last_used_at),
    }),
  );
  await each("legacy_sync_devices", (r) => tx.putSyncDevice(legacySyncDevice(r)));
  await each("legacy_sync_chain", (r) =>
    tx.insertSyncChainLink({ user: r.user_name as string, seq: Number(r.seq), link: r.link as string }),
  );
  await each("legacy_sync_regions", (r) => tx.putSyncRegion(legacySyncRegion(r)));
  if (present.has("legacy_sync_members")) {
    const members = new Map<string, string[]>();
    for (const r of await sql.all(
      "SELECT region_id, user_name FROM legacy_sync_members ORDER BY region_id, user_name",
    )) {
      const list = members.get(r.region_id as string) ?? [];
      list.push(r.user_name as string);
      members.set(r.region_id as string, list);
      moved++;
    }
    for (const [regionId, names] of members) await tx.setSyncMembers(regionId, names);
  }
  for (const t of LEGACY_TABLES) if (present.has(t)) await sql.run(`DROP TABLE ${t}`);
  return moved;
}
