import type { GroupReads, GroupRow, GroupWrites } from "../types.ts";
import type { Row, Sql } from "./sql.ts";

function toGroup(r: Row): GroupRow {
  return { name: r.name as string, options: JSON.parse(r.options as string), createdAt: r.created_at as string };
}

export function groups(sql: Sql): GroupReads & GroupWrites {
  return {
    async listGroups() {
      return sql.all("SELECT * FROM groups ORDER BY name").map(toGroup);
    },
    async getGroup(name) {
      const r = sql.get("SELECT * FROM groups WHERE name = ?", name);
      return r ? toGroup(r) : undefined;
    },
    async putGroup(g) {
      sql.run(
        `INSERT INTO groups (name, options, created_at) VALUES (?, ?, ?)
         ON CONFLICT(name) DO UPDATE SET options = excluded.options`,
        g.name,
        JSON.stringify(g.options),
        g.createdAt,
      );
    },
    async deleteGroup(name) {
      return sql.run("DELETE FROM groups WHERE name = ?", name) > 0;
    },
  };
}
