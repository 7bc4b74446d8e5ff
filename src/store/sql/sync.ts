// E2EE sync tables (src/sync/server): plain SQL in the subset both drivers speak. Every value is public key material
// or opaque to the server (canonical JSON signed by devices, ciphertext blobs addressed by hash).
import type {
  SyncBlobRow,
  SyncChainRow,
  SyncDeviceRow,
  SyncEnvelopeRow,
  SyncLinkRow,
  SyncManifestRow,
  SyncReads,
  SyncRegionRow,
  SyncWrites,
} from "../types.ts";
import type { Row, Sql } from "./sql.ts";

const device = (r: Row): SyncDeviceRow => ({
  id: r.id as string,
  user: r.user_name as string,
  cert: r.cert as string,
  state: r.state as SyncDeviceRow["state"],
  tokenId: r.token_id as string,
  createdAt: Number(r.created_at),
});

const region = (r: Row): SyncRegionRow => ({
  id: r.id as string,
  owner: r.owner as string,
  version: Number(r.version),
  keepVersions: Number(r.keep_versions),
  keepDays: Number(r.keep_days ?? 0),
  legalHold: Number(r.legal_hold) !== 0,
  usedBytes: Number(r.used_bytes),
  createdAt: Number(r.created_at),
});

const manifest = (r: Row): SyncManifestRow => ({
  regionId: r.region_id as string,
  version: Number(r.version),
  hash: r.hash as string,
  body: r.body as string,
  author: r.author as string,
  createdAt: Number(r.created_at),
});

const blob = (r: Row): SyncBlobRow => ({
  regionId: r.region_id as string,
  hash: r.hash as string,
  blobId: r.blob_id as string,
  size: Number(r.size),
  createdAt: Number(r.created_at),
});

const link = (r: Row): SyncLinkRow => ({
  id: r.id as string,
  regionId: r.region_id as string,
  blobHash: r.blob_hash as string,
  payload: r.payload as string,
  expiresAt: Number(r.expires_at),
  revoked: Number(r.revoked) !== 0,
  createdBy: r.created_by as string,
  createdAt: Number(r.created_at),
  uses: Number(r.uses),
});

export function sync(sql: Sql): SyncReads & SyncWrites {
  return {
    async getSyncLink(id) {
      const r = await sql.get("SELECT * FROM sync_links WHERE id = ?", id);
      return r ? link(r) : undefined;
    },
    async listSyncLinks(regionId) {
      return (await sql.all("SELECT * FROM sync_links WHERE region_id = ? ORDER BY created_at, id", regionId)).map(
        link,
      );
    },
    async putSyncLink(l) {
      await sql.run(
        `INSERT INTO sync_links (id, region_id, blob_hash, payload, expires_at, revoked, created_by, created_at, uses)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(id) DO UPDATE SET revoked = excluded.revoked, uses = excluded.uses`,
        l.id,
        l.regionId,
        l.blobHash,
        l.payload,
        l.expiresAt,
        l.revoked ? 1 : 0,
        l.createdBy,
        l.createdAt,
        l.uses,
      );
    },
    async getSyncDevice(id) {
      const r = await sql.get("SELECT * FROM sync_devices WHERE id = ?", id);
      return r ? device(r) : undefined;
    },
    async getSyncDeviceByToken(tokenId) {
      const r = await sql.get("SELECT * FROM sync_devices WHERE token_id = ?", tokenId);
      return r ? device(r) : undefined;
    },
    async listSyncDevices(user) {
      return (await sql.all("SELECT * FROM sync_devices WHERE user_name = ? ORDER BY created_at, id", user)).map(
        device,
      );
    },
    async listSyncChain(user) {
      const rows = await sql.all("SELECT * FROM sync_chain WHERE user_name = ? ORDER BY seq", user);
      return rows.map(
        (r): SyncChainRow => ({ user: r.user_name as string, seq: Number(r.seq), link: r.link as string }),
      );
    },
    async getSyncRegion(id) {
      const r = await sql.get("SELECT * FROM sync_regions WHERE id = ?", id);
      return r ? region(r) : undefined;
    },
    async listSyncRegions(user) {
      const rows = await sql.all(
        `SELECT * FROM sync_regions WHERE owner = ?
         OR id IN (SELECT region_id FROM sync_members WHERE user_name = ?) ORDER BY id`,
        user,
        user,
      );
      return rows.map(region);
    },
    async listSyncMembers(regionId) {
      const rows = await sql.all("SELECT user_name FROM sync_members WHERE region_id = ? ORDER BY user_name", regionId);
      return rows.map((r) => r.user_name as string);
    },
    async getSyncManifest(regionId, version) {
      const r = await sql.get("SELECT * FROM sync_manifests WHERE region_id = ? AND version = ?", regionId, version);
      return r ? manifest(r) : undefined;
    },
    async listSyncManifestVersions(regionId) {
      const rows = await sql.all("SELECT version FROM sync_manifests WHERE region_id = ? ORDER BY version", regionId);
      return rows.map((r) => Number(r.version));
    },
    async listSyncEnvelopes(regionId, recipient) {
      const rows = await sql.all(
        "SELECT * FROM sync_envelopes WHERE region_id = ? AND recipient = ? ORDER BY epoch",
        regionId,
        recipient,
      );
      return rows.map(
        (r): SyncEnvelopeRow => ({
          regionId: r.region_id as string,
          epoch: Number(r.epoch),
          recipient: r.recipient as string,
          body: r.body as string,
          createdAt: Number(r.created_at),
        }),
      );
    },
    async getSyncBlob(regionId, hash) {
      const r = await sql.get("SELECT * FROM sync_blobs WHERE region_id = ? AND hash = ?", regionId, hash);
      return r ? blob(r) : undefined;
    },
    async syncBytesOwnedBy(user) {
      const r = await sql.get("SELECT COALESCE(SUM(used_bytes), 0) AS n FROM sync_regions WHERE owner = ?", user);
      return Number(r?.n ?? 0);
    },
    async putSyncDevice(d) {
      await sql.run(
        `INSERT INTO sync_devices (id, user_name, cert, state, token_id, created_at) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT(id) DO UPDATE SET state = excluded.state, token_id = excluded.token_id`,
        d.id,
        d.user,
        d.cert,
        d.state,
        d.tokenId,
        d.createdAt,
      );
    },
    async insertSyncChainLink(l) {
      await sql.run("INSERT INTO sync_chain (user_name, seq, link) VALUES (?, ?, ?)", l.user, l.seq, l.link);
    },
    async putSyncRegion(g) {
      await sql.run(
        `INSERT INTO sync_regions (id, owner, version, keep_versions, keep_days, legal_hold, used_bytes, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(id) DO UPDATE SET version = excluded.version, keep_versions = excluded.keep_versions,
           keep_days = excluded.keep_days,
           legal_hold = excluded.legal_hold, used_bytes = excluded.used_bytes`,
        g.id,
        g.owner,
        g.version,
        g.keepVersions,
        g.keepDays,
        g.legalHold ? 1 : 0,
        g.usedBytes,
        g.createdAt,
      );
    },
    async setSyncMembers(regionId, users) {
      await sql.run("DELETE FROM sync_members WHERE region_id = ?", regionId);
      for (const u of users)
        await sql.run("INSERT INTO sync_members (region_id, user_name) VALUES (?, ?)", regionId, u);
    },
    async insertSyncManifest(m) {
      await sql.run(
        "INSERT INTO sync_manifests (region_id, version, hash, body, author, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        m.regionId,
        m.version,
        m.hash,
        m.body,
        m.author,
        m.createdAt,
      );
    },
    async deleteSyncManifest(regionId, version) {
      await sql.run("DELETE FROM sync_manifests WHERE region_id = ? AND version = ?", regionId, version);
    },
    async putSyncEnvelope(e) {
      await sql.run(
        `INSERT INTO sync_envelopes (region_id, epoch, recipient, body, created_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT(region_id, epoch, recipient) DO UPDATE SET body = excluded.body, created_at = excluded.created_at`,
        e.regionId,
        e.epoch,
        e.recipient,
        e.body,
        e.createdAt,
      );
    },
    async insertSyncBlob(b) {
      await sql.run(
        "INSERT INTO sync_blobs (region_id, hash, blob_id, size, created_at) VALUES (?, ?, ?, ?, ?)",
        b.regionId,
        b.hash,
        b.blobId,
        b.size,
        b.createdAt,
      );
    },
    async deleteSyncBlob(regionId, hash) {
      await sql.run("DELETE FROM sync_blobs WHERE region_id = ? AND hash = ?", regionId, hash);
    },
  };
}
