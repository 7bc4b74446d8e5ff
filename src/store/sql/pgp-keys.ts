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
      return (await sql.all("SELECT * FROM pgp_keys ORDER BY owner_kind, owner_name, fingerprint")).map(toPgpKey);
    },
    async getPgpKey(fingerprint) {
      const r = await sql.get("SELECT * FROM pgp_keys WHERE fingerprint = ?", fingerprint);
      return r ? toPgpKey(r) : undefined;
    },
    async putPgpKey(k) {
      await sql.run(
        `INSERT INTO pgp_keys (fingerprint, owner_kind, owner_name, armored, user_ids, algorithm,
           created_at, expires_at, revoked, certified_by, source, imported_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(fingerprint) DO UPDATE SET owner_kind = excluded.owner_kind, owner_name = excluded.owner_name,
           armored = excluded.armored, user_ids = excluded.user_ids, algorithm = excluded.algorithm,
           created_at = excluded.created_at, expires_at = excluded.expires_at, revoked = excluded.revoked,
           certified_by = excluded.certified_by, source = excluded.source, imported_at = excluded.imported_at`,
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
      return (await sql.run("DELETE FROM pgp_keys WHERE fingerprint = ?", fingerprint)) > 0;
    },
  };
}
