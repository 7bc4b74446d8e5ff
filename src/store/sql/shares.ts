import type { ShareReads, ShareRow, ShareWrites } from "../types.ts";
import { buf, type Row, type Sql } from "./sql.ts";

const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

function toShare(r: Row): ShareRow {
  return {
    id: r.id as string,
    secretHash: buf(r.secret_hash),
    ownerId: r.owner_id as string,
    nodeId: r.node_id as string,
    kind: r.kind as ShareRow["kind"],
    passwordHash: (r.password_hash as string | null) ?? null,
    expiresAt: num(r.expires_at),
    allowDownload: Number(r.allow_download) === 1,
    allowUpload: Number(r.allow_upload) === 1,
    maxDownloads: Number(r.max_downloads),
    downloads: Number(r.downloads),
    maxUploads: Number(r.max_uploads),
    uploads: Number(r.uploads),
    allowFrom: JSON.parse(r.allow_from as string) as string[],
    createdAt: Number(r.created_at),
    lastUsedAt: num(r.last_used_at),
  };
}

export function shares(sql: Sql): ShareReads & ShareWrites {
  return {
    async getShare(id) {
      const r = await sql.get("SELECT * FROM shares WHERE id = ?", id);
      return r ? toShare(r) : undefined;
    },
    async listShares(ownerId) {
      const rows =
        ownerId === undefined
          ? await sql.all("SELECT * FROM shares ORDER BY created_at DESC, id")
          : await sql.all("SELECT * FROM shares WHERE owner_id = ? ORDER BY created_at DESC, id", ownerId);
      return rows.map(toShare);
    },
    async insertShare(s) {
      await sql.run(
        `INSERT INTO shares (id, secret_hash, owner_id, node_id, kind, password_hash, expires_at, allow_download,
           allow_upload, max_downloads, downloads, max_uploads, uploads, allow_from, created_at, last_used_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        s.id,
        s.secretHash,
        s.ownerId,
        s.nodeId,
        s.kind,
        s.passwordHash,
        s.expiresAt,
        s.allowDownload ? 1 : 0,
        s.allowUpload ? 1 : 0,
        s.maxDownloads,
        s.downloads,
        s.maxUploads,
        s.uploads,
        JSON.stringify(s.allowFrom),
        s.createdAt,
        s.lastUsedAt,
      );
    },
    async deleteShare(id) {
      return (await sql.run("DELETE FROM shares WHERE id = ?", id)) > 0;
    },
    async countShareUse(id, kind, delta, now) {
      const max = sql.dialect === "sqlite" ? "MAX" : "GREATEST";
      // one statement: the limit check and the increment cannot interleave with another use
      if (kind === "download") {
        return delta === 1
          ? (await sql.run(
              `UPDATE shares SET downloads = downloads + 1, last_used_at = ?
               WHERE id = ? AND (max_downloads = 0 OR downloads < max_downloads)`,
              now,
              id,
            )) > 0
          : (await sql.run(`UPDATE shares SET downloads = ${max}(0, downloads - 1) WHERE id = ?`, id)) > 0;
      }
      return delta === 1
        ? (await sql.run(
            `UPDATE shares SET uploads = uploads + 1, last_used_at = ?
             WHERE id = ? AND (max_uploads = 0 OR uploads < max_uploads)`,
            now,
            id,
          )) > 0
        : (await sql.run(`UPDATE shares SET uploads = ${max}(0, uploads - 1) WHERE id = ?`, id)) > 0;
    },
    async deleteSharesOf(ownerId) {
      return await sql.run("DELETE FROM shares WHERE owner_id = ?", ownerId);
    },
  };
}
