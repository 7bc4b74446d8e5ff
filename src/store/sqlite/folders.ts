import type { FolderReads, FolderRow, FolderWrites } from "../types.ts";
import type { Row, Sql } from "./sql.ts";

function toFolder(r: Row): FolderRow {
  return { path: r.path as string, options: JSON.parse(r.options as string), createdAt: r.created_at as string };
}

export function folders(sql: Sql): FolderReads & FolderWrites {
  return {
    async listFolders() {
      return sql.all("SELECT * FROM folders ORDER BY path").map(toFolder);
    },
    async getFolder(path) {
      const r = sql.get("SELECT * FROM folders WHERE path = ?", path);
      return r ? toFolder(r) : undefined;
    },
    async putFolder(f) {
      sql.run(
        `INSERT INTO folders (path, options, created_at) VALUES (?, ?, ?)
         ON CONFLICT(path) DO UPDATE SET options = excluded.options`,
        f.path,
        JSON.stringify(f.options),
        f.createdAt,
      );
    },
    async deleteFolder(path) {
      return sql.run("DELETE FROM folders WHERE path = ?", path) > 0;
    },
  };
}
