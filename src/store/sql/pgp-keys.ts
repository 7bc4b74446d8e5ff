import { openPgpKey, sealPgpKey } from "../sealed-rows.ts";
import type { RowSealer } from "../sealing.ts";
import type { PgpKeyReads, PgpKeyRow, PgpKeyWrites } from "../types.ts";
import { buf, type Row, type Sql } from "./sql.ts";

const byOwner = (a: PgpKeyRow, b: PgpKeyRow): number =>
  Buffer.compare(Buffer.from(a.ownerKind), Buffer.from(b.ownerKind)) ||
  Buffer.compare(Buffer.from(a.ownerName), Buffer.from(b.ownerName)) ||
  Buffer.compare(Buffer.from(a.fingerprint), Buffer.from(b.fingerprint));

/** OpenPGP public keys: everything but the fingerprint sealed (owner, user ids, the key itself; sealed-rows.ts). */
export function pgpKeys(sql: Sql, sealer: () => RowSealer): PgpKeyReads & PgpKeyWrites {
  const toPgpKey = (r: Row): PgpKeyRow => openPgpKey(sealer(), r.fingerprint as string, buf(r.sealed));
  return {
    async listPgpKeys() {
      // ordered as before (owner kind, owner name, fingerprint); the owner is known only after opening
      return (await sql.all("SELECT * FROM pgp_keys")).map(toPgpKey).sort(byOwner);
    },
    async getPgpKey(fingerprint) {
      const r = await sql.get("SELECT * FROM pgp_keys WHERE fingerprint = ?", fingerprint);
      return r ? toPgpKey(r) : undefined;
    },
    async putPgpKey(k) {
      await sql.run(
        `INSERT INTO pgp_keys (fingerprint, sealed) VALUES (?, ?)
         ON CONFLICT(fingerprint) DO UPDATE SET sealed = excluded.sealed`,
        k.fingerprint,
        sealPgpKey(sealer(), k),
      );
    },
    async deletePgpKey(fingerprint) {
      return (await sql.run("DELETE FROM pgp_keys WHERE fingerprint = ?", fingerprint)) > 0;
    },
  };
}
