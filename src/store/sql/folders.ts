import { byKey, folderIndex, openFolder, sealFolder } from "../sealed-rows.ts";
import type { RowSealer } from "../sealing.ts";
import type { FolderReads, FolderRow, FolderWrites } from "../types.ts";
import { buf, type Row, type Sql } from "./sql.ts";

/** Folders are sealed rows keyed by the blind index of the path (sealed-rows.ts). */
export function folders(sql: Sql, sealer: () => RowSealer): FolderReads & FolderWrites {
  const toFolder = (r: Row): FolderRow => openFolder(sealer(), { index: buf(r.path_index), sealed: buf(r.sealed) });
  const get = async (path: string): Promise<FolderRow | undefined> => {
    const r = await sql.get("SELECT * FROM folders WHERE path_index = ?", folderIndex(sealer(), path));
    return r ? toFolder(r) : undefined;
  };
  return {
    async listFolders() {
      return (await sql.all("SELECT * FROM folders")).map(toFolder).sort(byKey((f) => f.path));
    },
    async getFolder(path) {
      return get(path);
    },
    async putFolder(f) {
      // a replace keeps the creation time, as before
      const createdAt = (await get(f.path))?.createdAt ?? f.createdAt;
      const rec = sealFolder(sealer(), { ...f, createdAt });
      await sql.run(
        `INSERT INTO folders (path_index, sealed) VALUES (?, ?)
         ON CONFLICT(path_index) DO UPDATE SET sealed = excluded.sealed`,
        rec.index,
        rec.sealed,
      );
    },
    async deleteFolder(path) {
      return (await sql.run("DELETE FROM folders WHERE path_index = ?", folderIndex(sealer(), path))) > 0;
    },
  };
}
