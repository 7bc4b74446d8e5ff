import { constantTimeEqual } from "../../crypto/bytes.ts";
import { IntegrityError } from "../../errors.ts";
import { userIndex } from "../sealed-rows.ts";
import type { RowSealer } from "../sealing.ts";
import type { S3BucketReads, S3BucketWrites } from "../types.ts";
import { buf, type Sql } from "./sql.ts";

/** The global S3 bucket namespace: a name's row found by its blind index, name and owner sealed under that index. */
export function s3Buckets(sql: Sql, sealer: () => RowSealer): S3BucketReads & S3BucketWrites {
  const nameIndex = (name: string) => sealer().index("bucket", name);
  return {
    async getS3Bucket(name) {
      const index = nameIndex(name);
      const r = await sql.get("SELECT * FROM s3_buckets WHERE name_index = ?", index);
      if (!r) return undefined;
      const s = sealer();
      const body = JSON.parse(s.open("bucket", index.toString("hex"), buf(r.sealed)).toString("utf8")) as {
        name: string;
        owner: string;
      };
      if (body.name !== name || !constantTimeEqual(userIndex(s, body.owner), buf(r.owner_index))) {
        throw new IntegrityError("s3 bucket row index mismatch");
      }
      return { name, owner: body.owner, createdAt: Number(r.created_at) };
    },
    async insertS3Bucket(b) {
      const s = sealer();
      const index = nameIndex(b.name);
      const sealed = s.seal(
        "bucket",
        index.toString("hex"),
        Buffer.from(JSON.stringify({ name: b.name, owner: b.owner })),
      );
      const n = await sql.run(
        "INSERT INTO s3_buckets (name_index, owner_index, sealed, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (name_index) DO NOTHING",
        index,
        userIndex(s, b.owner),
        sealed,
        b.createdAt,
      );
      return n > 0;
    },
    async deleteS3Bucket(name, owner) {
      const s = sealer();
      return (
        (await sql.run(
          "DELETE FROM s3_buckets WHERE name_index = ? AND owner_index = ?",
          nameIndex(name),
          userIndex(s, owner),
        )) > 0
      );
    },
  };
}
