import type { SettingsReads, SettingsWrites } from "../types.ts";
import { buf, type Sql } from "./sql.ts";

export function settings(sql: Sql): SettingsReads & SettingsWrites {
  return {
    async getSetting(key) {
      const r = await sql.get("SELECT value FROM settings WHERE key = ?", key);
      return r ? buf(r.value) : undefined;
    },
    async listSettings(prefix) {
      // a comparison of the key's first characters, not LIKE: a prefix holding % or _ needs no escaping, and the
      // result does not hang on a collation (PostgreSQL's default one orders '.' apart from C's)
      const rows = await sql.all(
        "SELECT key, value FROM settings WHERE substr(key, 1, ?) = ? ORDER BY key",
        prefix.length,
        prefix,
      );
      return rows.map((r) => ({ key: r.key as string, value: buf(r.value) }));
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
