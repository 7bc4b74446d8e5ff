import { byKey, groupIndex, openGroup, sealGroup } from "../sealed-rows.ts";
import type { RowSealer } from "../sealing.ts";
import type { GroupReads, GroupRow, GroupWrites } from "../types.ts";
import { buf, type Row, type Sql } from "./sql.ts";

/** Groups are sealed rows keyed by the blind index of the name (sealed-rows.ts). */
export function groups(sql: Sql, sealer: () => RowSealer): GroupReads & GroupWrites {
  const toGroup = (r: Row): GroupRow => openGroup(sealer(), { index: buf(r.name_index), sealed: buf(r.sealed) });
  const get = async (name: string): Promise<GroupRow | undefined> => {
    const r = await sql.get("SELECT * FROM groups WHERE name_index = ?", groupIndex(sealer(), name));
    return r ? toGroup(r) : undefined;
  };
  return {
    async listGroups() {
      return (await sql.all("SELECT * FROM groups")).map(toGroup).sort(byKey((g) => g.name));
    },
    async getGroup(name) {
      return get(name);
    },
    async putGroup(g) {
      // a replace keeps the creation time, as before
      const createdAt = (await get(g.name))?.createdAt ?? g.createdAt;
      const rec = sealGroup(sealer(), { ...g, createdAt });
      await sql.run(
        `INSERT INTO groups (name_index, sealed) VALUES (?, ?)
         ON CONFLICT(name_index) DO UPDATE SET sealed = excluded.sealed`,
        rec.index,
        rec.sealed,
      );
    },
    async deleteGroup(name) {
      return (await sql.run("DELETE FROM groups WHERE name_index = ?", groupIndex(sealer(), name))) > 0;
    },
  };
}
