import { openUsage, openUser, sealUsage, sealUser, type UserRecord, userIndex } from "../sealed-rows.ts";
import type { RowSealer } from "../sealing.ts";
import type { UserReads, UserRow, UserWrites } from "../types.ts";
import { buf, type Row, type Sql } from "./sql.ts";

function record(r: Row): UserRecord {
  return { id: r.id as string, nameIndex: buf(r.name_index), sealed: buf(r.sealed), usage: buf(r.usage) };
}

/** Users are sealed rows (sealed-rows.ts): looked up by the blind index of the name, sorted after opening. */
export function users(sql: Sql, sealer: () => RowSealer, inTransaction = false): UserReads & UserWrites {
  // Inside a write transaction nobody else changes a row (the driver's writer lock), so a usage read or written in it
  // is still current at addUsage: the read-modify-write skips its SELECT (a round trip on PostgreSQL, inside the
  // serialised part of every upload's commit).
  const usage = inTransaction ? new Map<string, Buffer>() : undefined;
  const toUser = (r: Row): UserRow => {
    const rec = record(r);
    usage?.set(rec.id, rec.usage);
    return openUser(sealer(), rec);
  };
  return {
    async getUser(name) {
      const r = await sql.get("SELECT * FROM users WHERE name_index = ?", userIndex(sealer(), name));
      if (!r) return undefined;
      const u = toUser(r);
      return u.name === name ? u : undefined;
    },
    async getUserById(id) {
      const r = await sql.get("SELECT * FROM users WHERE id = ?", id);
      return r ? toUser(r) : undefined;
    },
    async listUsers() {
      const all = (await sql.all("SELECT * FROM users")).map(toUser);
      return all.sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
    },
    async insertUser(u) {
      const rec = sealUser(sealer(), u);
      usage?.set(rec.id, rec.usage);
      await sql.run(
        "INSERT INTO users (id, name_index, sealed, usage) VALUES (?, ?, ?, ?)",
        rec.id,
        rec.nameIndex,
        rec.sealed,
        rec.usage,
      );
    },
    async updateUser(u) {
      const rec = sealUser(sealer(), u);
      usage?.set(rec.id, rec.usage);
      await sql.run(
        "UPDATE users SET name_index = ?, sealed = ?, usage = ? WHERE id = ?",
        rec.nameIndex,
        rec.sealed,
        rec.usage,
        rec.id,
      );
    },
    async deleteUser(name) {
      usage?.clear();
      return (await sql.run("DELETE FROM users WHERE name_index = ?", userIndex(sealer(), name))) > 0;
    },
    async addUsage(userId, bytes, files) {
      // read-modify-write: a write runs in a transaction, and the driver serialises transactions (BEGIN IMMEDIATE)
      const s = sealer();
      let current = usage?.get(userId);
      if (!current) {
        const r = await sql.get("SELECT usage FROM users WHERE id = ?", userId);
        if (!r) return;
        current = buf(r.usage);
      }
      const now = openUsage(s, userId, current);
      const next = sealUsage(s, userId, Math.max(0, now.bytes + bytes), Math.max(0, now.files + files));
      // a user deleted meanwhile in this transaction: nothing to charge (as when the SELECT found no row)
      if ((await sql.run("UPDATE users SET usage = ? WHERE id = ?", next, userId)) > 0) usage?.set(userId, next);
    },
  };
}
