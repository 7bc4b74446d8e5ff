import type { S3KeyReads, S3KeyRow, S3KeyWrites } from "../types.ts";
import { buf, type Row, type Sql } from "./sql.ts";

function toKey(r: Row): S3KeyRow {
  return {
    accessKeyId: r.access_key_id as string,
    userId: r.user_id as string,
    userName: r.user_name as string,
    secretCt: buf(r.secret_ct),
    createdAt: r.created_at as string,
  };
}

export function s3Keys(sql: Sql): S3KeyReads & S3KeyWrites {
  return {
    async getS3Key(accessKeyId) {
      const r = await sql.get("SELECT * FROM s3_keys WHERE access_key_id = ?", accessKeyId);
      return r ? toKey(r) : undefined;
    },
    async listS3Keys(userName) {
      const rows =
        userName === undefined
          ? await sql.all("SELECT * FROM s3_keys ORDER BY created_at, access_key_id")
          : await sql.all("SELECT * FROM s3_keys WHERE user_name = ? ORDER BY created_at, access_key_id", userName);
      return rows.map(toKey);
    },
    async insertS3Key(k) {
      await sql.run(
        "INSERT INTO s3_keys (access_key_id, user_id, user_name, secret_ct, created_at) VALUES (?, ?, ?, ?, ?)",
        k.accessKeyId,
        k.userId,
        k.userName,
        k.secretCt,
        k.createdAt,
      );
    },
    async deleteS3Key(accessKeyId) {
      return (await sql.run("DELETE FROM s3_keys WHERE access_key_id = ?", accessKeyId)) > 0;
    },
  };
}
