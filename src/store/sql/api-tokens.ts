import { openToken, sealToken, userIndex } from "../sealed-rows.ts";
import type { RowSealer } from "../sealing.ts";
import type { ApiTokenReads, ApiTokenRow, ApiTokenWrites } from "../types.ts";
import { buf, type Row, type Sql } from "./sql.ts";

/** API tokens: owner, label, scopes and path prefixes sealed (sealed-rows.ts), found by the owner's blind index. */
export function apiTokens(sql: Sql, sealer: () => RowSealer): ApiTokenReads & ApiTokenWrites {
  const toToken = (r: Row): ApiTokenRow => {
    const id = r.id as string;
    const body = openToken(sealer(), id, buf(r.sealed), buf(r.user_index));
    return {
      id,
      user: body.user,
      name: body.name,
      secretHash: buf(r.secret_hash),
      scopes: body.scopes,
      paths: body.paths,
      createdAt: Number(r.created_at),
      expiresAt: Number(r.expires_at),
      lastUsedAt: r.last_used_at === null || r.last_used_at === undefined ? null : Number(r.last_used_at),
    };
  };
  return {
    async getApiToken(id) {
      const r = await sql.get("SELECT * FROM api_tokens WHERE id = ?", id);
      return r ? toToken(r) : undefined;
    },
    async listApiTokens(user) {
      const rows =
        user === undefined
          ? await sql.all("SELECT * FROM api_tokens ORDER BY created_at DESC, id")
          : await sql.all(
              "SELECT * FROM api_tokens WHERE user_index = ? ORDER BY created_at DESC, id",
              userIndex(sealer(), user),
            );
      return rows.map(toToken);
    },
    async putApiToken(t) {
      const rec = sealToken(sealer(), t);
      await sql.run(
        `INSERT INTO api_tokens (id, user_index, sealed, secret_hash, created_at, expires_at, last_used_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(id) DO UPDATE SET user_index = excluded.user_index, sealed = excluded.sealed,
           expires_at = excluded.expires_at, last_used_at = excluded.last_used_at`,
        t.id,
        rec.userIndex,
        rec.sealed,
        t.secretHash,
        t.createdAt,
        t.expiresAt,
        t.lastUsedAt,
      );
    },
    async deleteApiToken(id) {
      return (await sql.run("DELETE FROM api_tokens WHERE id = ?", id)) > 0;
    },
    async deleteApiTokensBefore(before) {
      return await sql.run("DELETE FROM api_tokens WHERE expires_at < ?", before);
    },
  };
}
