import type { KeyCursor, KeyJobReads, KeyJobRow, KeyJobWrites } from "../types.ts";
import { patchSet, toNode } from "./nodes.ts";
import type { Row, Sql } from "./sql.ts";

// `rowid:key_ref` (the format key jobs have always persisted; PostgreSQL's nodes.seq in place of the rowid); "" is the
// start. Files are visited in (key_ref, rowid) order: the key_ref index order.
function decodeCursor(cursor: KeyCursor): { rowid: number; keyRef: string } {
  const at = cursor.indexOf(":");
  return at < 0 ? { rowid: 0, keyRef: "" } : { rowid: Number(cursor.slice(0, at)), keyRef: cursor.slice(at + 1) };
}

function encodeCursor(rowid: number, keyRef: string): KeyCursor {
  return `${rowid}:${keyRef}` as KeyCursor;
}

function toKeyJob(r: Row): KeyJobRow {
  return {
    id: r.id as string,
    kind: r.kind as KeyJobRow["kind"],
    scope: r.scope as string,
    state: r.state as KeyJobRow["state"],
    cursor: r.cursor as KeyCursor,
    total: Number(r.total),
    done: Number(r.done),
    skipped: Number(r.skipped),
    failed: Number(r.failed),
    bytes: Number(r.bytes),
    startedAt: r.started_at as string,
    updatedAt: r.updated_at as string,
  };
}

export function keyJobs(sql: Sql): KeyJobReads & KeyJobWrites {
  return {
    async filesByKeyRef(range, cursor, limit) {
      const after = decodeCursor(cursor);
      // Two index range scans (rest of the current key_ref in insertion order, then the following key_refs) instead
      // of one row-value comparison, which SQLite turns into a scan from the start of the key_ref: quadratic over a big
      // job. The order within a key_ref is SQLite's rowid, PostgreSQL's nodes.seq (both in the key_ref index).
      const [order, hint] = sql.dialect === "sqlite" ? ["rowid", "INDEXED BY nodes_key_ref"] : ["seq", ""];
      const exclude = range.exclude ?? "";
      // PostgreSQL text holds no NUL: `< x + "\0"` (the smallest string after x, as shred-report bounds one key_ref)
      // is `<= x` there
      let below = "key_ref < ?";
      let to = range.to;
      if (sql.dialect === "postgres" && to.endsWith("\u0000")) {
        below = "key_ref <= ?";
        to = to.slice(0, -1);
      }
      const rows: Row[] = [];
      if (after.keyRef >= range.from && after.keyRef < range.to && after.keyRef !== exclude) {
        rows.push(
          ...(await sql.all(
            `SELECT ${order} AS _rowid, * FROM nodes ${hint}
               WHERE key_ref = ? AND ${order} > ? AND kind = 'file' ORDER BY ${order} LIMIT ?`,
            after.keyRef,
            after.rowid,
            limit,
          )),
        );
      }
      if (rows.length < limit) {
        rows.push(
          ...(await sql.all(
            `SELECT ${order} AS _rowid, * FROM nodes ${hint}
               WHERE key_ref > ? AND key_ref >= ? AND ${below} AND key_ref != ? AND kind = 'file'
               ORDER BY key_ref, ${order} LIMIT ?`,
            after.keyRef,
            range.from,
            to,
            exclude,
            limit - rows.length,
          )),
        );
      }
      return rows.map((r) => ({ cursor: encodeCursor(Number(r._rowid), r.key_ref as string), node: toNode(r) }));
    },
    async keyRefCounts() {
      return (
        await sql.all("SELECT key_ref, COUNT(*) AS n FROM nodes WHERE kind = 'file' GROUP BY key_ref ORDER BY key_ref")
      ).map((r) => ({ keyRef: r.key_ref as string | null, files: Number(r.n) }));
    },
    async updateNodeIfBlob(id, blobId, patch) {
      const set = patchSet(patch);
      if (!set) return false;
      return (
        (await sql.run(`UPDATE nodes SET ${set.sets} WHERE id = ? AND blob_id = ?`, ...set.params, id, blobId)) > 0
      );
    },
    async getKeyJob(id) {
      const r = await sql.get("SELECT * FROM key_jobs WHERE id = ?", id);
      return r ? toKeyJob(r) : undefined;
    },
    async openKeyJob(kind, scope) {
      const r = await sql.get(
        "SELECT * FROM key_jobs WHERE kind = ? AND scope = ? AND state = 'running' ORDER BY started_at DESC LIMIT 1",
        kind,
        scope,
      );
      return r ? toKeyJob(r) : undefined;
    },
    async pendingBlobs(jobId) {
      return (await sql.all("SELECT blob_id FROM pending_blobs WHERE job_id = ?", jobId)).map(
        (r) => r.blob_id as string,
      );
    },
    async putKeyJob(j) {
      await sql.run(
        `INSERT INTO key_jobs (id, kind, scope, state, cursor, total, done, skipped, failed, bytes, started_at,
           updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(id) DO UPDATE SET state = excluded.state, cursor = excluded.cursor, total = excluded.total,
           done = excluded.done, skipped = excluded.skipped, failed = excluded.failed, bytes = excluded.bytes,
           updated_at = excluded.updated_at`,
        j.id,
        j.kind,
        j.scope,
        j.state,
        j.cursor,
        j.total,
        j.done,
        j.skipped,
        j.failed,
        j.bytes,
        j.startedAt,
        j.updatedAt,
      );
    },
    async addPendingBlob(blobId, jobId) {
      await sql.run(
        "INSERT INTO pending_blobs (blob_id, job_id, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        blobId,
        jobId,
        new Date().toISOString(),
      );
    },
    async removePendingBlob(blobId) {
      await sql.run("DELETE FROM pending_blobs WHERE blob_id = ?", blobId);
    },
  };
}
