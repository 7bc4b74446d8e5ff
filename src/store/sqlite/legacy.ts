// Upgrade of a store written before migration 9: the clear users, groups and folders tables (renamed legacy_* by the
// migration) are sealed into the new tables once the metadata key is known, then dropped. Runs inside the unlock
// transaction; idempotent (a store without legacy tables has nothing to do).

import type { Row, Sql } from "../sql/sql.ts";
import type { FolderRow, GroupRow, MetaTx, Role, UserRow } from "../types.ts";

const LEGACY_TABLES = ["legacy_users", "legacy_groups", "legacy_folders"] as const;

export async function legacyTables(sql: Sql): Promise<string[]> {
  return (
    await sql.all("SELECT name FROM sqlite_master WHERE type = 'table' AND name IN (?, ?, ?)", ...LEGACY_TABLES)
  ).map((r) => r.name as string);
}

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

/** Seals every legacy row through `tx` and drops the legacy tables; returns how many rows moved. */
export async function sealLegacyRows(sql: Sql, tx: MetaTx): Promise<number> {
  const present = new Set(await legacyTables(sql));
  let moved = 0;
  if (present.has("legacy_users")) {
    for (const r of await sql.all("SELECT * FROM legacy_users")) {
      await tx.insertUser(legacyUser(r));
      moved++;
    }
  }
  if (present.has("legacy_groups")) {
    for (const r of await sql.all("SELECT * FROM legacy_groups")) {
      const g: GroupRow = { name: r.name as string, ...legacyNamed(r) };
      await tx.putGroup(g);
      moved++;
    }
  }
  if (present.has("legacy_folders")) {
    for (const r of await sql.all("SELECT * FROM legacy_folders")) {
      const f: FolderRow = { path: r.path as string, ...legacyNamed(r) };
      await tx.putFolder(f);
      moved++;
    }
  }
  for (const t of present) await sql.run(`DROP TABLE ${t}`);
  return moved;
}
