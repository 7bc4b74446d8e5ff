// E2EE sync tables (src/sync/server): plain SQL in the subset both drivers speak. Every value is public key material
// or opaque to the server (canonical JSON signed by devices, ciphertext blobs addressed by hash), except the user
// names (devices, chains, members, region owners) and a region's used bytes: those are sealed (migration 18), a name
// found by the user's blind index (sealed-rows.ts sealSyncUser), the bytes one fixed-width record.
import { openSyncBytes, openSyncUser, sealSyncBytes, sealSyncUser, userIndex } from "../sealed-rows.ts";
import type { RowSealer } from "../sealing.ts";
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
import { buf, type Row, type Sql } from "./sql.ts";

const hex = (b: Buffer): string => b.toString("hex");
/** The AAD row keys of the sealed names: a record opens only on its own row. */
const deviceKey = (id: string) => `device\0${id}`;
const chainKey = (index: Buffer, seq: number) => `chain\0${hex(index)}\0${seq}`;
const regionKey = (id: string) => `region\0${id}`;
const memberKey = (regionId: string, index: Buffer) => `member\0${regionId}\0${hex(index)}`;

/** The clear-column rows of schema 10-17 (also what sql/legacy.ts reads from legacy_sync_*). */
export const legacySyncDevice = (r: Row): SyncDeviceRow => ({
  id: r.id as string,
  user: r.user_name as string,
  cert: r.cert as string,
  state: r.state as SyncDeviceRow["state"],
  tokenId: r.token_id as string,
  createdAt: Number(r.created_at),
});

export const legacySyncRegion = (r: Row): SyncRegionRow => ({
  id: r.id as string,
  owner: r.owner as string,
  version: Number(r.version),
  keepVersions: Number(r.keep_versions),
  keepDays: Number(r.keep_days ?? 0),
  legalHold: Number(r.legal_hold) !== 0,
  usedBytes: Number(r.used_bytes),
  createdAt: Number(r.created_at),
});

const device = (s: RowSealer, r: Row): SyncDeviceRow => ({
  id: r.id as string,
  user: openSyncUser(s, deviceKey(r.id as string), buf(r.user_index), buf(r.user_sealed)),
  cert: r.cert as string,
  state: r.state as SyncDeviceRow["state"],
  tokenId: r.token_id as string,
  createdAt: Number(r.created_at),
});

const region = (s: RowSealer, r: Row): SyncRegionRow => ({
  id: r.id as string,
  owner: openSyncUser(s, regionKey(r.id as string), buf(r.owner_index), buf(r.owner_sealed)),
  version: Number(r.version),
  keepVersions: Number(r.keep_versions),
  keepDays: Number(r.keep_days ?? 0),
  legalHold: Number(r.legal_hold) !== 0,
  usedBytes: openSyncBytes(s, r.id as string, buf(r.used)),
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

export function sync(sql: Sql, sealer: () => RowSealer): SyncReads & SyncWrites {
  const toDevice = (r: Row): SyncDeviceRow => device(sealer(), r);
  const toRegion = (r: Row): SyncRegionRow => region(sealer(), r);
  const idx = (user: string): Buffer => userIndex(sealer(), user);
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
      return r ? toDevice(r) : undefined;
    },
    async getSyncDeviceByToken(tokenId) {
      const r = await sql.get("SELECT * FROM sync_devices WHERE token_id = ?", tokenId);
      return r ? toDevice(r) : undefined;
    },
    async listSyncDevices(user) {
      const rows = await sql.all("SELECT * FROM sync_devices WHERE user_index = ? ORDER BY created_at, id", idx(user));
      return rows.map(toDevice).filter((d) => d.user === user);
    },
    async listSyncChain(user) {
      const s = sealer();
      const rows = await sql.all("SELECT * FROM sync_chain WHERE user_index = ? ORDER BY seq", idx(user));
      return rows
        .map((r): SyncChainRow => {
          const index = buf(r.user_index);
          const seq = Number(r.seq);
          return {
            user: openSyncUser(s, chainKey(index, seq), index, buf(r.user_sealed)),
            seq,
            link: r.link as string,
          };
        })
        .filter((l) => l.user === user);
    },
    async getSyncRegion(id) {
      const r = await sql.get("SELECT * FROM sync_regions WHERE id = ?", id);
      return r ? toRegion(r) : undefined;
    },
    async listSyncRegions(user) {
      const rows = await sql.all(
        `SELECT * FROM sync_regions WHERE owner_index = ?
         OR id IN (SELECT region_id FROM sync_members WHERE user_index = ?) ORDER BY id`,
        idx(user),
        idx(user),
      );
      return rows.map(toRegion);
    },
    async listSyncMembers(regionId) {
      const s = sealer();
      const rows = await sql.all("SELECT user_index, user_sealed FROM sync_members WHERE region_id = ?", regionId);
      const names = rows.map((r) => {
        const index = buf(r.user_index);
        return openSyncUser(s, memberKey(regionId, index), index, buf(r.user_sealed));
      });
      return names.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
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
    async listSyncBlobs(regionId) {
      return (await sql.all("SELECT * FROM sync_blobs WHERE region_id = ?", regionId)).map(blob);
    },
    async syncBytesOwnedBy(user) {
      const rows = await sql.all("SELECT * FROM sync_regions WHERE owner_index = ?", idx(user));
      return rows.map(toRegion).reduce((n, g) => (g.owner === user ? n + g.usedBytes : n), 0);
    },
    async putSyncDevice(d) {
      const u = sealSyncUser(sealer(), deviceKey(d.id), d.user);
      await sql.run(
        `INSERT INTO sync_devices (id, user_index, user_sealed, cert, state, token_id, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(id) DO UPDATE SET state = excluded.state, token_id = excluded.token_id`,
        d.id,
        u.index,
        u.sealed,
        d.cert,
        d.state,
        d.tokenId,
        d.createdAt,
      );
    },
    async insertSyncChainLink(l) {
      const s = sealer();
      const index = userIndex(s, l.user);
      const u = sealSyncUser(s, chainKey(index, l.seq), l.user);
      await sql.run(
        "INSERT INTO sync_chain (user_index, user_sealed, seq, link) VALUES (?, ?, ?, ?)",
        u.index,
        u.sealed,
        l.seq,
        l.link,
      );
    },
    async putSyncRegion(g) {
      const s = sealer();
      const o = sealSyncUser(s, regionKey(g.id), g.owner);
      await sql.run(
        `INSERT INTO sync_regions (id, owner_index, owner_sealed, version, keep_versions, keep_days, legal_hold, used,
           created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(id) DO UPDATE SET version = excluded.version, keep_versions = excluded.keep_versions,
           keep_days = excluded.keep_days,
           legal_hold = excluded.legal_hold, used = excluded.used`,
        g.id,
        o.index,
        o.sealed,
        g.version,
        g.keepVersions,
        g.keepDays,
        g.legalHold ? 1 : 0,
        sealSyncBytes(s, g.id, g.usedBytes),
        g.createdAt,
      );
    },
    async setSyncMembers(regionId, users) {
      await sql.run("DELETE FROM sync_members WHERE region_id = ?", regionId);
      const s = sealer();
      for (const name of users) {
        const index = userIndex(s, name);
        const u = sealSyncUser(s, memberKey(regionId, index), name);
        await sql.run(
          "INSERT INTO sync_members (region_id, user_index, user_sealed) VALUES (?, ?, ?)",
          regionId,
          u.index,
          u.sealed,
        );
      }
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
    async touchSyncBlob(regionId, hash, at) {
      await sql.run("UPDATE sync_blobs SET created_at = ? WHERE region_id = ? AND hash = ?", at, regionId, hash);
    },
    async deleteSyncBlob(regionId, hash) {
      await sql.run("DELETE FROM sync_blobs WHERE region_id = ? AND hash = ?", regionId, hash);
    },
  };
}
