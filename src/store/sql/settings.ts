import type { SettingsReads, SettingsWrites } from "../types.ts";
import { buf, type Sql } from "./sql.ts";

export function settings(sql: Sql): SettingsReads & SettingsWrites {
  return {
    async getSetting(key) {
      const r = await sql.get("SELECT value FROM settings WHERE key = ?", key);
      return r ? buf(r.value) : undefined;
    },
    async setSetting(key, value) {
      await sql.run(
        "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        key,
        value,
      );
    },
    async deleteSetting(key) {
      return (await sql.run("DELETE FROM settings WHERE key = ?", key)) > 0;
    },
  };
}
