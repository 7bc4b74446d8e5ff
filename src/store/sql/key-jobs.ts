import type { KeyCursor, KeyJobReads, KeyJobRow, KeyJobWrites, NodePatch, NodeRow } from "../types.ts";
import { patchSet, toNode } from "./nodes.ts";
import { buf, type Row, type Sql } from "./sql.ts";

// Nodes first, then the kept S3 versions (file_versions rows: each has a blob and a key ref of its own). Nodes:
// `rowid:key_ref` (the format key jobs have always persisted, so a job started before versions were covered resumes;
// PostgreSQL's nodes.seq in place of the rowid); "" is the start. Versions: `v:id:key_ref` (ids are UUIDs, no ":").
// Within each table files are visited in (key_ref, rowid or id) order: the key_ref index order.
type Cursor = { table: "nodes"; rowid: number; keyRef: string } | { table: "versions"; id: string; keyRef: string };

function decodeCursor(cursor: KeyCursor): Cursor {
  if (cursor.startsWith("v:")) {
    const at = cursor.indexOf(":", 2);
    return { table: "versions", id: cursor.slice(2, at), keyRef: cursor.slice(at + 1) };
  }
  const at = cursor.indexOf(":");
  return at < 0
    ? { table: "nodes", rowid: 0, keyRef: "" }
    : { table: "nodes", rowid: Number(cursor.slice(0, at)), keyRef: cursor.slice(at + 1) };
}

function encodeCursor(rowid: number, keyRef: string): KeyCursor {
  return `${rowid}:${keyRef}` as KeyCursor;
}

function encodeVersionCursor(id: string, keyRef: string): KeyCursor {
  return `v:${id}:${keyRef}` as KeyCursor;
}

/**
 * A kept version as the key jobs see it: a file whose attributes are sealed with the row's id (like Versions.asNode),
 * its parent the versioned folder and its name the key below it (so NodePaths gives the object's global path).
 */
function versionAsNode(r: Row): NodeRow {
  return {
    id: r.id as string,
    parentId: r.dir_id as string,
    nameMac: buf(r.key_mac),
    nameCt: buf(r.key_ct),
    kind: "file",
    attrsCt: buf(r.attrs_ct),
    blobId: r.blob_id as string | null,
    contentId: r.content_id as string | null,
    keyRef: r.key_ref as string | null,
    ownerId: r.owner_id as string | null,
  };
}

/** Columns a kept version shares with a node (what a key job changes). */
const VERSION_PATCHABLE = new Set<keyof NodePatch>(["blobId", "contentId", "keyRef", "attrsCt"]);

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
      const out: { cursor: KeyCursor; node: NodeRow; version?: true }[] = [];
      const inRange = (keyRef: string) => keyRef >= range.from && keyRef < range.to && keyRef !== exclude;
      if (after.table === "nodes") {
        const rows: Row[] = [];
        if (inRange(after.keyRef)) {
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
        for (const r of rows) {
          out.push({ cursor: encodeCursor(Number(r._rowid), r.key_ref as string), node: toNode(r) });
        }
        if (out.length >= limit) return out;
      }
      // then the kept versions (delete markers have no key ref, so the ranges leave them out)
      const v = after.table === "versions" ? after : { id: "", keyRef: "" };
      const vhint = sql.dialect === "sqlite" ? "INDEXED BY file_versions_key_ref" : "";
      const rows: Row[] = [];
      if (inRange(v.keyRef)) {
        rows.push(
          ...(await sql.all(
            `SELECT * FROM file_versions ${vhint} WHERE key_ref = ? AND id > ? ORDER BY id LIMIT ?`,
            v.keyRef,
            v.id,
            limit - out.length,
          )),
        );
      }
      if (out.length + rows.length < limit) {
        rows.push(
          ...(await sql.all(
            `SELECT * FROM file_versions ${vhint}
               WHERE key_ref > ? AND key_ref >= ? AND ${below} AND key_ref != ? ORDER BY key_ref, id LIMIT ?`,
            v.keyRef,
            range.from,
            to,
            exclude,
            limit - out.length - rows.length,
          )),
        );
      }
      for (const r of rows) {
        out.push({
          cursor: encodeVersionCursor(r.id as string, r.key_ref as string),
          node: versionAsNode(r),
          version: true,
        });
      }
      return out;
    },
    async keyRefCounts() {
      return (
        await sql.all(
          `SELECT key_ref, SUM(n) AS n FROM (
             SELECT key_ref, COUNT(*) AS n FROM nodes WHERE kind = 'file' GROUP BY key_ref
             UNION ALL
             SELECT key_ref, COUNT(*) AS n FROM file_versions WHERE marker = 0 AND key_ref IS NOT NULL GROUP BY key_ref
           ) AS c GROUP BY key_ref ORDER BY key_ref`,
        )
      ).map((r) => ({ keyRef: r.key_ref as string | null, files: Number(r.n) }));
    },
    async updateNodeIfBlob(id, blobId, patch) {
      const set = patchSet(patch);
      if (!set) return false;
      if ((await sql.run(`UPDATE nodes SET ${set.sets} WHERE id = ? AND blob_id = ?`, ...set.params, id, blobId)) > 0)
        return true;
      // a kept version (ids are random UUIDs in both tables, so a node id never names a version row)
      if (!(Object.keys(patch) as (keyof NodePatch)[]).every((k) => VERSION_PATCHABLE.has(k))) return false;
      return (
        (await sql.run(
          `UPDATE file_versions SET ${set.sets} WHERE id = ? AND blob_id = ?`,
          ...set.params,
          id,
          blobId,
        )) > 0
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
