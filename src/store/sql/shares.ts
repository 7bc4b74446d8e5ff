import { openShareSecrets, sealShareSecrets } from "../sealed-rows.ts";
import type { RowSealer } from "../sealing.ts";
import type { ShareReads, ShareRow, ShareWrites } from "../types.ts";
import { buf, type Row, type Sql } from "./sql.ts";

const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

function toShare(s: RowSealer, r: Row): ShareRow {
  const id = r.id as string;
  const secrets = openShareSecrets(s, id, buf(r.sealed));
  return {
    id,
    secretHash: buf(r.secret_hash),
    ownerId: r.owner_id as string,
    nodeId: r.node_id as string,
    kind: r.kind as ShareRow["kind"],
    passwordHash: secrets.passwordHash,
    expiresAt: num(r.expires_at),
    allowDownload: Number(r.allow_download) === 1,
    allowUpload: Number(r.allow_upload) === 1,
    maxDownloads: Number(r.max_downloads),
    downloads: Number(r.downloads),
    maxUploads: Number(r.max_uploads),
    uploads: Number(r.uploads),
    allowFrom: secrets.allowFrom,
    createdAt: Number(r.created_at),
    lastUsedAt: num(r.last_used_at),
  };
}

/** Share links: the password hash and the allow list sealed (AAD = share id); ids, counters and times in clear. */
export function shares(sql: Sql, sealer: () => RowSealer): ShareReads & ShareWrites {
  const open = (r: Row): ShareRow => toShare(sealer(), r);
  return {
    async getShare(id) {
      const r = await sql.get("SELECT * FROM shares WHERE id = ?", id);
      return r ? open(r) : undefined;
    },
    async listShares(ownerId) {
      const rows =
        ownerId === undefined
          ? await sql.all("SELECT * FROM shares ORDER BY created_at DESC, id")
          : await sql.all("SELECT * FROM shares WHERE owner_id = ? ORDER BY created_at DESC, id", ownerId);
      return rows.map(open);
    },
    async insertShare(s) {
      await sql.run(
        `INSERT INTO shares (id, secret_hash, owner_id, node_id, kind, sealed, expires_at, allow_download,
           allow_upload, max_downloads, downloads, max_uploads, uploads, created_at, last_used_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        s.id,
        s.secretHash,
        s.ownerId,
        s.nodeId,
        s.kind,
        sealShareSecrets(sealer(), s.id, s),
        s.expiresAt,
        s.allowDownload ? 1 : 0,
        s.allowUpload ? 1 : 0,
        s.maxDownloads,
        s.downloads,
        s.maxUploads,
        s.uploads,
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
