import { banIndex, openBanSubject, sealBanSubject } from "../sealed-rows.ts";
import type { RowSealer } from "../sealing.ts";
import type { BanReads, BanRow, BanWrites } from "../types.ts";
import { buf, type Row, type Sql } from "./sql.ts";

/** Bans: the banned address or user name sealed, found by its blind index (sealed-rows.ts). */
export function bans(sql: Sql, sealer: () => RowSealer): BanReads & BanWrites {
  const toBan = (r: Row): BanRow => {
    const kind = r.kind as BanRow["kind"];
    return {
      kind,
      subject: openBanSubject(sealer(), kind, buf(r.subject_index), buf(r.subject)),
      since: Number(r.since),
      until: Number(r.until),
      count: Number(r.count),
      expiryAudited: Number(r.expiry_audited) === 1,
    };
  };
  return {
    async getBan(kind, subject) {
      const r = await sql.get(
        "SELECT * FROM bans WHERE kind = ? AND subject_index = ?",
        kind,
        banIndex(sealer(), kind, subject),
      );
      return r ? toBan(r) : undefined;
    },
    async listBans() {
      // ordered as before (until, kind, subject); the subject is known only after opening
      const all = (await sql.all("SELECT * FROM bans")).map(toBan);
      return all.sort(
        (a, b) =>
          a.until - b.until ||
          Buffer.compare(Buffer.from(a.kind), Buffer.from(b.kind)) ||
          Buffer.compare(Buffer.from(a.subject), Buffer.from(b.subject)),
      );
    },
    async putBan(b) {
      const s = sealBanSubject(sealer(), b.kind, b.subject);
      await sql.run(
        `INSERT INTO bans (kind, subject_index, subject, since, until, count, expiry_audited) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(kind, subject_index) DO UPDATE SET subject = excluded.subject, since = excluded.since,
           until = excluded.until, count = excluded.count, expiry_audited = excluded.expiry_audited`,
        b.kind,
        s.index,
        s.sealed,
        b.since,
        b.until,
        b.count,
        b.expiryAudited ? 1 : 0,
      );
    },
    async deleteBan(kind, subject) {
      return (
        (await sql.run(
          "DELETE FROM bans WHERE kind = ? AND subject_index = ?",
          kind,
          banIndex(sealer(), kind, subject),
        )) > 0
      );
    },
    async deleteBansBefore(before) {
      return await sql.run("DELETE FROM bans WHERE until < ?", before);
    },
  };
}
