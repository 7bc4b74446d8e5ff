import type { ApiTokenReads, ApiTokenRow, ApiTokenWrites } from "../types.ts";
import type { Row, Sql } from "./sql.ts";

function toToken(r: Row): ApiTokenRow {
  return {
    id: r.id as string,
    user: r.user_name as string,
    name: r.name as string,
    secretHash: Buffer.from(r.secret_hash as Uint8Array),
    scopes: JSON.parse(r.scopes as string) as string[],
    paths: JSON.parse(r.paths as string) as string[],
    createdAt: Number(r.created_at),
    expiresAt: Number(r.expires_at),
    lastUsedAt: r.last_used_at === null || r.last_used_at === undefined ? null : Number(r.last_used_at),
  };
}

export function apiTokens(sql: Sql): ApiTokenReads & ApiTokenWrites {
  return {
    async getApiToken(id) {
      const r = await sql.get("SELECT * FROM api_tokens WHERE id = ?", id);
      return r ? toToken(r) : undefined;
    },
    async listApiTokens(user) {
      const rows =
        user === undefined
          ? await sql.all("SELECT * FROM api_tokens ORDER BY created_at DESC, id")
          : await sql.all("SELECT * FROM api_tokens WHERE user_name = ? ORDER BY created_at DESC, id", user);
      return rows.map(toToken);
    },
    async putApiToken(t) {
      await sql.run(
        `INSERT INTO api_tokens (id, user_name, name, secret_hash, scopes, paths, created_at, expires_at, last_used_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(id) DO UPDATE SET name = excluded.name, scopes = excluded.scopes, paths = excluded.paths,
           expires_at = excluded.expires_at, last_used_at = excluded.last_used_at`,
        t.id,
        t.user,
        t.name,
        t.secretHash,
        JSON.stringify(t.scopes),
        JSON.stringify(t.paths),
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
