import type { SQLInputValue } from "node:sqlite";
import type { Role, UserReads, UserRow, UserWrites } from "../types.ts";
import type { Row, Sql } from "./sql.ts";

function toUser(r: Row): UserRow {
  return {
    id: r.id as string,
    name: r.name as string,
    passwordHash: r.password_hash as string | null,
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

function userParams(u: UserRow): SQLInputValue[] {
  return [
    u.name,
    u.passwordHash,
    JSON.stringify(u.publicKeys),
    u.home,
    JSON.stringify(u.permissions),
    JSON.stringify(u.groups),
    u.quotaBytes,
    u.quotaFiles,
    u.usedBytes,
    u.usedFiles,
    u.createdAt,
    u.role,
    u.kek,
    u.id,
  ];
}

export function users(sql: Sql): UserReads & UserWrites {
  return {
    async getUser(name) {
      const r = sql.get("SELECT * FROM users WHERE name = ?", name);
      return r ? toUser(r) : undefined;
    },
    async getUserById(id) {
      const r = sql.get("SELECT * FROM users WHERE id = ?", id);
      return r ? toUser(r) : undefined;
    },
    async listUsers() {
      return sql.all("SELECT * FROM users ORDER BY name").map(toUser);
    },
    async insertUser(u) {
      sql.run(
        `INSERT INTO users (name, password_hash, public_keys, home, permissions, groups, quota_bytes, quota_files,
           used_bytes, used_files, created_at, role, kek, id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        ...userParams(u),
      );
    },
    async updateUser(u) {
      sql.run(
        `UPDATE users SET name = ?, password_hash = ?, public_keys = ?, home = ?, permissions = ?, groups = ?,
           quota_bytes = ?, quota_files = ?, used_bytes = ?, used_files = ?, created_at = ?, role = ?, kek = ?
           WHERE id = ?`,
        ...userParams(u),
      );
    },
    async deleteUser(name) {
      return sql.run("DELETE FROM users WHERE name = ?", name) > 0;
    },
    async addUsage(userId, bytes, files) {
      sql.run(
        "UPDATE users SET used_bytes = MAX(0, used_bytes + ?), used_files = MAX(0, used_files + ?) WHERE id = ?",
        bytes,
        files,
        userId,
      );
    },
  };
}
