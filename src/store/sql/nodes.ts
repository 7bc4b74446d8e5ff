import type { NodePatch, NodeReads, NodeRow, NodeWrites, VersioningState, VersionRow } from "../types.ts";
import { buf, type Row, type Sql, type Value } from "./sql.ts";

const nodeColumns: Record<keyof Omit<NodeRow, "id">, string> = {
  parentId: "parent_id",
  nameMac: "name_mac",
  nameCt: "name_ct",
  kind: "kind",
  attrsCt: "attrs_ct",
  blobId: "blob_id",
  contentId: "content_id",
  keyRef: "key_ref",
  ownerId: "owner_id",
};

function toVersion(r: Row): VersionRow {
  return {
    id: r.id as string,
    dirId: r.dir_id as string,
    keyMac: buf(r.key_mac),
    keyCt: buf(r.key_ct),
    versionId: r.version_id as string,
    seq: Number(r.seq),
    marker: Number(r.marker) === 1,
    attrsCt: buf(r.attrs_ct),
    blobId: r.blob_id as string | null,
    contentId: r.content_id as string | null,
    keyRef: r.key_ref as string | null,
    ownerId: r.owner_id as string | null,
  };
}

export function toNode(r: Row): NodeRow {
  return {
    id: r.id as string,
    parentId: r.parent_id as string | null,
    nameMac: buf(r.name_mac),
    nameCt: buf(r.name_ct),
    kind: r.kind as "file" | "dir",
    attrsCt: buf(r.attrs_ct),
    blobId: r.blob_id as string | null,
    contentId: r.content_id as string | null,
    keyRef: r.key_ref as string | null,
    ownerId: r.owner_id as string | null,
  };
}

/** `col = ?, …` and its parameters for a patch; null when the patch is empty. */
export function patchSet(patch: NodePatch): { sets: string; params: Value[] } | null {
  const keys = Object.keys(patch) as (keyof NodePatch)[];
  if (keys.length === 0) return null;
  return {
    sets: keys.map((k) => `${nodeColumns[k]} = ?`).join(", "),
    params: keys.map((k) => patch[k] as Value),
  };
}

export function nodes(sql: Sql): NodeReads & NodeWrites {
  return {
    async getNode(id) {
      const r = await sql.get("SELECT * FROM nodes WHERE id = ?", id);
      return r ? toNode(r) : undefined;
    },
    async findChild(parentId, nameMac) {
      const r = await sql.get("SELECT * FROM nodes WHERE parent_id = ? AND name_mac = ?", parentId, nameMac);
      return r ? toNode(r) : undefined;
    },
    async listChildren(parentId) {
      return (await sql.all("SELECT * FROM nodes WHERE parent_id = ?", parentId)).map(toNode);
    },
    async listChildrenAfter(parentId, afterMac, limit) {
      const rows =
        afterMac === undefined
          ? await sql.all("SELECT * FROM nodes WHERE parent_id = ? ORDER BY name_mac LIMIT ?", parentId, limit)
          : await sql.all(
              "SELECT * FROM nodes WHERE parent_id = ? AND name_mac > ? ORDER BY name_mac LIMIT ?",
              parentId,
              afterMac,
              limit,
            );
      return rows.map(toNode);
    },
    async listChildNames(parentId) {
      return (await sql.all("SELECT id, name_ct FROM nodes WHERE parent_id = ?", parentId)).map((r) => ({
        id: r.id as string,
        nameCt: buf(r.name_ct),
      }));
    },
    async childNamesDigest(parentId) {
      // SQLite: the driver's atrest_xor48 aggregate (a sum would overflow 64 bits past 32,768 children); PostgreSQL:
      // the exact (numeric) sum of the same 48 bits, in the server
      const r = await sql.get(
        sql.dialect === "sqlite"
          ? "SELECT count(*) AS n, atrest_xor48(name_mac) AS x FROM nodes WHERE parent_id = ?"
          : "SELECT count(*) AS n, sum(('x' || encode(substring(name_mac from 1 for 6), 'hex'))::bit(48)::bigint) AS x FROM nodes WHERE parent_id = ?",
        parentId,
      );
      return `${String(r?.n ?? 0)}:${String(r?.x ?? 0)}`;
    },
    async getChildren(parentId, ids) {
      if (ids.length === 0) return [];
      if (ids.length > 1000) throw new Error("getChildren: at most 1,000 ids");
      const marks = ids.map(() => "?").join(", ");
      return (await sql.all(`SELECT * FROM nodes WHERE parent_id = ? AND id IN (${marks})`, parentId, ...ids)).map(
        toNode,
      );
    },
    async hasChildren(parentId) {
      return (await sql.get("SELECT 1 FROM nodes WHERE parent_id = ? LIMIT 1", parentId)) !== undefined;
    },
    async nodesAfter(afterId, limit) {
      return (await sql.all("SELECT * FROM nodes WHERE id > ? ORDER BY id LIMIT ?", afterId, limit)).map(toNode);
    },
    async blobIds() {
      return new Set(
        (
          await sql.all(
            `SELECT blob_id FROM nodes WHERE blob_id IS NOT NULL UNION SELECT blob_id FROM file_pieces
             UNION SELECT blob_id FROM pending_blobs UNION SELECT blob_id FROM file_versions WHERE blob_id IS NOT NULL`,
          )
        ).map((r) => r.blob_id as string),
      );
    },
    async filePieces(contentId) {
      return (
        await sql.all("SELECT blob_id, piece_content_id FROM file_pieces WHERE content_id = ? ORDER BY seq", contentId)
      ).map((r) => ({ blobId: r.blob_id as string, contentId: r.piece_content_id as string }));
    },
    async listVersionedDirs() {
      return (await sql.all("SELECT dir_id, state FROM versioned_dirs")).map((r) => ({
        dirId: r.dir_id as string,
        state: r.state as VersioningState,
      }));
    },
    async getVersioning(dirId) {
      const r = await sql.get("SELECT state FROM versioned_dirs WHERE dir_id = ?", dirId);
      return r ? (r.state as VersioningState) : undefined;
    },
    async listVersions(dirId, keyMac) {
      const rows =
        keyMac === undefined
          ? await sql.all("SELECT * FROM file_versions WHERE dir_id = ?", dirId)
          : await sql.all(
              "SELECT * FROM file_versions WHERE dir_id = ? AND key_mac = ? ORDER BY seq DESC",
              dirId,
              keyMac,
            );
      return rows.map(toVersion);
    },
    async getVersion(dirId, keyMac, versionId) {
      const r = await sql.get(
        "SELECT * FROM file_versions WHERE dir_id = ? AND key_mac = ? AND version_id = ?",
        dirId,
        keyMac,
        versionId,
      );
      return r ? toVersion(r) : undefined;
    },
    async hasVersions(dirId) {
      return (await sql.get("SELECT 1 FROM file_versions WHERE dir_id = ? LIMIT 1", dirId)) !== undefined;
    },
    async setVersioning(dirId, state) {
      if (state === undefined) await sql.run("DELETE FROM versioned_dirs WHERE dir_id = ?", dirId);
      else
        await sql.run(
          "INSERT INTO versioned_dirs (dir_id, state) VALUES (?, ?) ON CONFLICT(dir_id) DO UPDATE SET state = excluded.state",
          dirId,
          state,
        );
    },
    async insertVersion(v) {
      await sql.run(
        `INSERT INTO file_versions (id, dir_id, key_mac, key_ct, version_id, seq, marker, attrs_ct, blob_id, content_id,
           key_ref, owner_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        v.id,
        v.dirId,
        v.keyMac,
        v.keyCt,
        v.versionId,
        v.seq,
        v.marker ? 1 : 0,
        v.attrsCt,
        v.blobId,
        v.contentId,
        v.keyRef,
        v.ownerId,
      );
    },
    async deleteVersion(id) {
      await sql.run("DELETE FROM file_versions WHERE id = ?", id);
    },
    async updateVersionAttrs(id, attrsCt) {
      await sql.run("UPDATE file_versions SET attrs_ct = ? WHERE id = ?", attrsCt, id);
    },
    async insertFilePieces(contentId, pieces) {
      for (let i = 0; i < pieces.length; i++) {
        const p = pieces[i] as (typeof pieces)[number];
        await sql.run(
          "INSERT INTO file_pieces (content_id, seq, blob_id, piece_content_id) VALUES (?, ?, ?, ?)",
          contentId,
          i,
          p.blobId,
          p.contentId,
        );
      }
    },
    async deleteFilePieces(contentId) {
      await sql.run("DELETE FROM file_pieces WHERE content_id = ?", contentId);
    },
    async insertNode(n) {
      await sql.run(
        `INSERT INTO nodes (id, parent_id, name_mac, name_ct, kind, attrs_ct, blob_id, content_id, key_ref, owner_id)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        n.id,
        n.parentId,
        n.nameMac,
        n.nameCt,
        n.kind,
        n.attrsCt,
        n.blobId,
        n.contentId,
        n.keyRef,
        n.ownerId,
      );
    },
    async updateNode(id, patch) {
      const set = patchSet(patch);
      if (set) await sql.run(`UPDATE nodes SET ${set.sets} WHERE id = ?`, ...set.params, id);
    },
    async deleteNode(id) {
      await sql.run("DELETE FROM nodes WHERE id = ?", id);
    },
  };
}
