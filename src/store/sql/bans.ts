import type { BanReads, BanRow, BanWrites } from "../types.ts";
import type { Row, Sql } from "./sql.ts";

function toBan(r: Row): BanRow {
  return {
    kind: r.kind as BanRow["kind"],
    subject: r.subject as string,
    since: Number(r.since),
    until: Number(r.until),
    count: Number(r.count),
    expiryAudited: Number(r.expiry_audited) === 1,
  };
}

export function bans(sql: Sql): BanReads & BanWrites {
  return {
    async getBan(kind, subject) {
      const r = await sql.get("SELECT * FROM bans WHERE kind = ? AND subject = ?", kind, subject);
      return r ? toBan(r) : undefined;
    },
    async listBans() {
      return (await sql.all("SELECT * FROM bans ORDER BY until, kind, subject")).map(toBan);
    },
    async putBan(b) {
      await sql.run(
        `INSERT INTO bans (kind, subject, since, until, count, expiry_audited) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT(kind, subject) DO UPDATE SET since = excluded.since, until = excluded.until,
           count = excluded.count, expiry_audited = excluded.expiry_audited`,
        b.kind,
        b.subject,
        b.since,
        b.until,
        b.count,
        b.expiryAudited ? 1 : 0,
      );
    },
    async deleteBan(kind, subject) {
      return (await sql.run("DELETE FROM bans WHERE kind = ? AND subject = ?", kind, subject)) > 0;
    },
    async deleteBansBefore(before) {
      return await sql.run("DELETE FROM bans WHERE until < ?", before);
    },
  };
}
