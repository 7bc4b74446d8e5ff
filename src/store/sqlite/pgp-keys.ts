import type { PgpKeyReads, PgpKeyRow, PgpKeyWrites } from "../types.ts";
import type { Row, Sql } from "./sql.ts";

function toPgpKey(r: Row): PgpKeyRow {
  return {
    fingerprint: r.fingerprint as string,
    ownerKind: r.owner_kind as PgpKeyRow["ownerKind"],
    ownerName: r.owner_name as string,
    armored: r.armored as string,
    userIds: JSON.parse(r.user_ids as string),
    algorithm: r.algorithm as string,
    createdAt: r.created_at as string,
    expiresAt: r.expires_at as string | null,
    revoked: Number(r.revoked) === 1,
    certifiedBy: JSON.parse(r.certified_by as string),
    source: r.source as PgpKeyRow["source"],
    importedAt: r.imported_at as string,
  };
}

export function pgpKeys(sql: Sql): PgpKeyReads & PgpKeyWrites {
  return {
    async listPgpKeys() {
      return sql.all("SELECT * FROM pgp_keys ORDER BY owner_kind, owner_name, fingerprint").map(toPgpKey);
    },
    async getPgpKey(fingerprint) {
      const r = sql.get("SELECT * FROM pgp_keys WHERE fingerprint = ?", fingerprint);
      return r ? toPgpKey(r) : undefined;
    },
    async putPgpKey(k) {
      sql.run(
        `INSERT OR REPLACE INTO pgp_keys (fingerprint, owner_kind, owner_name, armored, user_ids, algorithm,
           created_at, expires_at, revoked, certified_by, source, imported_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        k.fingerprint,
        k.ownerKind,
        k.ownerName,
        k.armored,
        JSON.stringify(k.userIds),
        k.algorithm,
        k.createdAt,
        k.expiresAt,
        k.revoked ? 1 : 0,
        JSON.stringify(k.certifiedBy),
        k.source,
        k.importedAt,
      );
    },
    async deletePgpKey(fingerprint) {
      return sql.run("DELETE FROM pgp_keys WHERE fingerprint = ?", fingerprint) > 0;
    },
  };
}
