import { openKeyOwner, sealKeyOwner, userIndex } from "../sealed-rows.ts";
import type { RowSealer } from "../sealing.ts";
import type { S3KeyReads, S3KeyRow, S3KeyWrites } from "../types.ts";
import { buf, type Row, type Sql } from "./sql.ts";

/** S3 access keys: the owner's name sealed, found by its blind index; the secret sealed by service/s3-keys.ts. */
export function s3Keys(sql: Sql, sealer: () => RowSealer): S3KeyReads & S3KeyWrites {
  const toKey = (r: Row): S3KeyRow => {
    const accessKeyId = r.access_key_id as string;
    return {
      accessKeyId,
      userId: r.user_id as string,
      userName: openKeyOwner(sealer(), accessKeyId, buf(r.owner), buf(r.user_index)),
      secretCt: buf(r.secret_ct),
      createdAt: r.created_at as string,
    };
  };
  return {
    async getS3Key(accessKeyId) {
      const r = await sql.get("SELECT * FROM s3_keys WHERE access_key_id = ?", accessKeyId);
      return r ? toKey(r) : undefined;
    },
    async listS3Keys(userName) {
      const rows =
        userName === undefined
          ? await sql.all("SELECT * FROM s3_keys ORDER BY created_at, access_key_id")
          : await sql.all(
              "SELECT * FROM s3_keys WHERE user_index = ? ORDER BY created_at, access_key_id",
              userIndex(sealer(), userName),
            );
      return rows.map(toKey);
    },
    async insertS3Key(k) {
      const owner = sealKeyOwner(sealer(), k.accessKeyId, k.userName);
      await sql.run(
        "INSERT INTO s3_keys (access_key_id, user_id, user_index, owner, secret_ct, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        k.accessKeyId,
        k.userId,
        owner.userIndex,
        owner.sealed,
        k.secretCt,
        k.createdAt,
      );
    },
    async deleteS3Key(accessKeyId) {
      return (await sql.run("DELETE FROM s3_keys WHERE access_key_id = ?", accessKeyId)) > 0;
    },
  };
}
