// E2EE sync over HTTPS (docs/sync-protocol.md): a thin door over src/sync/server. Devices talk with their own API
// token (scope `sync`); the server stores only public keys, signed objects and opaque blobs. Manifests and blobs are
// raw bodies (the manifest's canonical bytes are what its signature covers); everything else is JSON.
import { Readable } from "node:stream";
import { z } from "zod";
import type { BlobReader } from "../../store/blobs.ts";
import type { SyncActor, SyncServer } from "../../sync/server/service.ts";
import type { HttpDeps } from "./deps.ts";
import { HttpProblem } from "./problem.ts";
import { errors, type Principal, type Route, route } from "./routes.ts";

const SYNC = { roles: ["admin", "user"], scope: "sync" } as const;
const Region = z.strictObject({ region: z.string().regex(/^[0-9a-f]{32}$/) });
const RegionHash = z.strictObject({
  region: z.string().regex(/^[0-9a-f]{32}$/),
  hash: z.string().regex(/^[0-9a-f]{64}$/),
});
const LinkInfo = z
  .object({
    id: z.string(),
    blobHash: z.string(),
    expiresAt: z.string(),
    revoked: z.boolean(),
    uses: z.number().int(),
    createdBy: z.string(),
  })
  .meta({ id: "SyncLink" });
const LinkParam = z.strictObject({ id: z.string().regex(/^[0-9a-f]{32}$/) });
const SignedObject = z
  .record(z.string(), z.unknown())
  .meta({ description: "a signed sync object (docs/sync-protocol.md)" });

const DeviceInfo = z
  .object({
    id: z.string(),
    name: z.string(),
    state: z.enum(["pending", "active", "revoked"]),
    fingerprint: z.string(),
    cert: SignedObject,
  })
  .meta({ id: "SyncDevice" });
const RegionInfo = z
  .object({
    id: z.string(),
    owner: z.string(),
    version: z.number().int(),
    keepVersions: z.number().int(),
    keepDays: z.number().int(),
    legalHold: z.boolean(),
    usedBytes: z.number().int(),
  })
  .meta({ id: "SyncRegion" });

export function syncActor(p: Principal): SyncActor {
  return {
    user: p.user,
    tokenId: p.sessionId.startsWith("token:") ? p.sessionId.slice(6) : undefined,
    sourceIp: p.sourceIp,
    sessionId: p.sessionId,
  };
}

async function readAll(body: AsyncIterable<Buffer | Uint8Array>, limit: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of body) {
    n += c.length;
    if (n > limit) throw new HttpProblem(413, "PAYLOAD_TOO_LARGE", `body over ${limit} bytes`);
    parts.push(Buffer.from(c));
  }
  return Buffer.concat(parts);
}

function blobStream(reader: BlobReader): Readable {
  let pos = 0;
  return new Readable({
    highWaterMark: 256 * 1024,
    async read() {
      try {
        if (pos >= reader.size) {
          await reader.close();
          this.push(null);
          return;
        }
        const b = await reader.read(pos, Math.min(256 * 1024, reader.size - pos));
        pos += b.length;
        this.push(b);
      } catch (err) {
        this.destroy(err as Error);
      }
    },
    destroy(err, cb) {
      reader.close().then(
        () => cb(err),
        () => cb(err),
      );
    },
  });
}

export function syncRoutes(deps: HttpDeps): Route[] {
  const sync = (): SyncServer => {
    const s = deps.options.sync;
    if (!s) throw new HttpProblem(501, "UNSUPPORTED", "sync is not enabled on this server", { code: "UNSUPPORTED" });
    return s;
  };
  const raw = (req: { raw: unknown }) => req.raw as AsyncIterable<Buffer>;
  return [
    route(
      {
        method: "POST",
        url: "/api/v1/sync/devices",
        operationId: "syncRegisterDevice",
        summary:
          "Register this device (its self-signed certificate) with the token it talks with; pending until approved",
        tags: ["sync"],
        auth: SYNC,
        body: z.strictObject({ cert: SignedObject }),
        responses: { 201: { description: "registered", schema: DeviceInfo }, ...errors(400, 401, 403, 409, 415) },
      },
      async ({ body, principal, reply }) => {
        const d = await sync().registerDevice(syncActor(principal), body.cert);
        reply.code(201);
        return d;
      },
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/sync/devices",
        operationId: "syncListDevices",
        summary: "Your sync devices (pending, active, revoked) with their certificates and fingerprints",
        tags: ["sync"],
        auth: SYNC,
        responses: {
          200: { description: "devices", schema: z.object({ devices: z.array(DeviceInfo) }) },
          ...errors(401, 403),
        },
      },
      async ({ principal }) => ({ devices: await sync().listDevices(syncActor(principal)) }),
    ),
    route(
      {
        method: "POST",
        url: "/api/v1/sync/chain",
        operationId: "syncAppendChainLink",
        summary: "Append a signed link to your device chain (first device, approve a device, revoke a device)",
        tags: ["sync"],
        auth: SYNC,
        body: z.strictObject({ link: SignedObject }),
        responses: {
          201: { description: "appended", schema: z.object({ seq: z.number().int() }) },
          ...errors(400, 401, 403, 409, 415),
        },
      },
      async ({ body, principal, reply }) => {
        const r = await sync().appendLink(syncActor(principal), body.link);
        reply.code(201);
        return r;
      },
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/sync/users/:user/chain",
        operationId: "syncGetChain",
        summary: "A user's device chain (clients verify it from the root fingerprint they checked out of band)",
        tags: ["sync"],
        auth: SYNC,
        params: z.strictObject({ user: z.string().min(1).max(64) }),
        responses: {
          200: { description: "links in seq order", schema: z.object({ links: z.array(SignedObject) }) },
          ...errors(401, 403),
        },
      },
      async ({ params }) => ({ links: await sync().chain(params.user) }),
    ),
    route(
      {
        method: "POST",
        url: "/api/v1/sync/regions",
        operationId: "syncCreateRegion",
        summary: "Create a region with its signed first manifest (version 1, no entries); you own it",
        tags: ["sync"],
        auth: SYNC,
        rawBody: ["application/octet-stream"],
        responses: { 201: { description: "created", schema: RegionInfo }, ...errors(400, 401, 403, 409, 413) },
      },
      async ({ req, principal, reply }) => {
        const s = sync();
        const r = await s.createRegion(syncActor(principal), await readAll(raw(req), s.maxManifestBytes));
        reply.code(201);
        return r;
      },
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/sync/regions",
        operationId: "syncListRegions",
        summary: "Regions you own or are a member of",
        tags: ["sync"],
        auth: SYNC,
        responses: {
          200: { description: "regions", schema: z.object({ regions: z.array(RegionInfo) }) },
          ...errors(401, 403),
        },
      },
      async ({ principal }) => ({ regions: await sync().listRegions(syncActor(principal)) }),
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/sync/regions/:region/manifest",
        operationId: "syncGetManifest",
        summary: "The latest signed manifest, or ?version=N while it is kept (the canonical bytes as signed)",
        tags: ["sync"],
        auth: SYNC,
        params: Region,
        query: z.strictObject({ version: z.coerce.number().int().min(1).optional() }),
        responses: { 200: { description: "the manifest", contentType: "application/json" }, ...errors(401, 403, 404) },
      },
      async ({ params, query, principal, reply }) => {
        const bytes = await sync().manifest(syncActor(principal), params.region, query.version);
        return reply.type("application/json").send(bytes);
      },
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/sync/regions/:region/manifests",
        operationId: "syncGetManifests",
        summary:
          "Signed manifests to replay, one canonical object a line: ?since=P (versions after P), ?from=F, or from the checkpoint of ?to=T (default the current version); headers x-atrest-head (version and hash of the current one) and x-atrest-retention",
        tags: ["sync"],
        auth: SYNC,
        params: Region,
        query: z.strictObject({
          since: z.coerce.number().int().min(0).optional(),
          from: z.coerce.number().int().min(1).optional(),
          to: z.coerce.number().int().min(1).optional(),
        }),
        responses: {
          200: { description: "manifests, newline-delimited", contentType: "application/x-ndjson" },
          ...errors(400, 401, 403, 404),
        },
      },
      async ({ params, query, principal, reply }) => {
        if (query.since !== undefined && query.from !== undefined)
          throw new HttpProblem(400, "INVALID_INPUT", "since or from, not both");
        const r = await sync().manifests(syncActor(principal), params.region, query);
        const parts: Buffer[] = [];
        for (const l of r.lines) parts.push(l, Buffer.from("\n"));
        return reply
          .header("x-atrest-head", `${r.head.version} ${r.head.hash}`)
          .header(
            "x-atrest-retention",
            `${r.retention.keepVersions} ${r.retention.keepDays} ${r.retention.legalHold ? 1 : 0}`,
          )
          .type("application/x-ndjson")
          .send(Buffer.concat(parts));
      },
    ),
    route(
      {
        method: "POST",
        url: "/api/v1/sync/regions/:region/sweep",
        operationId: "syncSweepRegion",
        summary:
          "Delete the region's blobs no kept manifest names and no live link serves, once past the grace period (members)",
        tags: ["sync"],
        auth: SYNC,
        params: Region,
        responses: {
          200: {
            description: "swept",
            schema: z.object({ removed: z.number().int(), usedBytes: z.number().int() }),
          },
          ...errors(401, 403, 404),
        },
      },
      async ({ params, principal }) => sync().sweep(syncActor(principal), params.region),
    ),
    route(
      {
        method: "PUT",
        url: "/api/v1/sync/regions/:region/manifest",
        operationId: "syncPutManifest",
        summary:
          "The next signed manifest: version = current + 1, prev = hash of the current one, signed by this device",
        tags: ["sync"],
        auth: SYNC,
        params: Region,
        rawBody: ["application/octet-stream"],
        responses: {
          200: { description: "accepted", schema: z.object({ version: z.number().int() }) },
          ...errors(400, 401, 403, 404, 409, 413),
        },
      },
      async ({ req, params, principal }) => {
        const s = sync();
        return s.putManifest(syncActor(principal), params.region, await readAll(raw(req), s.maxManifestBytes));
      },
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/sync/regions/:region/versions",
        operationId: "syncListVersions",
        summary: "Manifest versions the region still keeps (retention)",
        tags: ["sync"],
        auth: SYNC,
        params: Region,
        responses: {
          200: { description: "versions", schema: z.object({ versions: z.array(z.number().int()) }) },
          ...errors(401, 403, 404),
        },
      },
      async ({ params, principal }) => ({ versions: await sync().versions(syncActor(principal), params.region) }),
    ),
    route(
      {
        method: "PUT",
        url: "/api/v1/sync/regions/:region/retention",
        operationId: "syncSetRetention",
        summary:
          "Keep the last N manifest versions or those younger than D days (and their blobs); legal hold keeps everything (owner only)",
        tags: ["sync"],
        auth: SYNC,
        params: Region,
        body: z.strictObject({
          keepVersions: z.number().int().min(1).max(100_000),
          keepDays: z.number().int().min(0).max(36_500).default(0),
          legalHold: z.boolean(),
        }),
        responses: { 200: { description: "set", schema: RegionInfo }, ...errors(400, 401, 403, 404, 415) },
      },
      async ({ params, body, principal }) => sync().setRetention(syncActor(principal), params.region, body),
    ),
    route(
      {
        method: "PUT",
        url: "/api/v1/sync/regions/:region/envelopes",
        operationId: "syncPutEnvelopes",
        summary: "Store region key envelopes signed by this device (share, new epoch, new device)",
        tags: ["sync"],
        auth: SYNC,
        params: Region,
        body: z.strictObject({ envelopes: z.array(SignedObject).max(10_000) }),
        responses: {
          200: { description: "stored", schema: z.object({ stored: z.number().int() }) },
          ...errors(400, 401, 403, 404, 415),
        },
      },
      async ({ params, body, principal }) => sync().putEnvelopes(syncActor(principal), params.region, body.envelopes),
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/sync/regions/:region/envelopes",
        operationId: "syncGetEnvelopes",
        summary: "The key envelopes addressed to this device",
        tags: ["sync"],
        auth: SYNC,
        params: Region,
        responses: {
          200: { description: "envelopes", schema: z.object({ envelopes: z.array(SignedObject) }) },
          ...errors(401, 403, 404),
        },
      },
      async ({ params, principal }) => ({ envelopes: await sync().envelopes(syncActor(principal), params.region) }),
    ),
    route(
      {
        method: "POST",
        url: "/api/v1/sync/regions/:region/links",
        operationId: "syncCreateLink",
        summary: "A share link to one file version: its payload sealed under a key that stays in the URL fragment",
        tags: ["sync"],
        auth: SYNC,
        params: Region,
        body: z.strictObject({
          id: z.string().regex(/^[0-9a-f]{32}$/),
          blobHash: z.string().regex(/^[0-9a-f]{64}$/),
          payload: z.string().max(8192),
          expiresAt: z.iso.datetime(),
        }),
        responses: { 201: { description: "created", schema: LinkInfo }, ...errors(400, 401, 403, 404, 409, 415) },
      },
      async ({ params, body, principal, reply }) => {
        const l = await sync().createLink(syncActor(principal), params.region, {
          ...body,
          expiresAt: Date.parse(body.expiresAt),
        });
        reply.code(201);
        return l;
      },
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/sync/regions/:region/links",
        operationId: "syncListLinks",
        summary: "The region's share links (never their keys: the server has none)",
        tags: ["sync"],
        auth: SYNC,
        params: Region,
        responses: {
          200: { description: "links", schema: z.object({ links: z.array(LinkInfo) }) },
          ...errors(401, 403, 404),
        },
      },
      async ({ params, principal }) => ({ links: await sync().listLinks(syncActor(principal), params.region) }),
    ),
    route(
      {
        method: "DELETE",
        url: "/api/v1/sync/regions/:region/links/:id",
        operationId: "syncRevokeLink",
        summary: "Revoke a share link (the server refuses it from now on)",
        tags: ["sync"],
        auth: SYNC,
        params: Region.extend({ id: z.string().regex(/^[0-9a-f]{32}$/) }),
        responses: { 204: { description: "revoked" }, ...errors(401, 403, 404) },
      },
      async ({ params, principal, reply }) => {
        await sync().revokeLink(syncActor(principal), params.region, params.id);
        reply.code(204);
      },
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/sync/links/:id",
        operationId: "syncOpenLink",
        summary: "A share link's sealed payload, for whoever holds the link (no account; key in the URL fragment)",
        tags: ["sync"],
        auth: "public",
        params: LinkParam,
        responses: {
          200: {
            description: "the sealed payload",
            schema: z.object({
              payload: z.string(),
              blobHash: z.string(),
              blobSize: z.number().int(),
              expiresAt: z.string(),
            }),
          },
          ...errors(404),
          410: { description: "expired or revoked" },
        },
      },
      async ({ params, req }) => {
        const l = await sync().openLink(params.id, req.ip, false);
        return {
          payload: l.payload,
          blobHash: l.blobHash,
          blobSize: l.blobSize,
          expiresAt: new Date(l.expiresAt).toISOString(),
        };
      },
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/sync/links/:id/blob",
        operationId: "syncLinkBlob",
        summary: "The encrypted file version of a share link (streamed)",
        tags: ["sync"],
        auth: "public",
        params: LinkParam,
        responses: {
          200: { description: "the blob", contentType: "application/octet-stream" },
          ...errors(404),
          410: { description: "expired or revoked" },
        },
      },
      async ({ params, req, reply }) => {
        const l = await sync().openLink(params.id, req.ip, true);
        const reader = l.reader as BlobReader;
        return reply
          .type("application/octet-stream")
          .header("content-length", String(reader.size))
          .send(blobStream(reader));
      },
    ),
    route(
      {
        method: "PUT",
        url: "/api/v1/sync/regions/:region/blobs/:hash",
        operationId: "syncPutBlob",
        summary:
          "Upload an encrypted blob named by its SHA-256 (streamed; refused unless the hash matches; owner's quota)",
        tags: ["sync"],
        auth: SYNC,
        params: RegionHash,
        rawBody: ["application/octet-stream"],
        responses: {
          200: { description: "already there", schema: z.object({ created: z.boolean(), size: z.number().int() }) },
          201: { description: "stored", schema: z.object({ created: z.boolean(), size: z.number().int() }) },
          ...errors(400, 401, 403, 404, 507),
        },
      },
      async ({ req, params, principal, reply }) => {
        const declared = req.headers["content-length"];
        const r = await sync().putBlob(
          syncActor(principal),
          params.region,
          params.hash,
          raw(req),
          declared === undefined ? undefined : Number(declared),
        );
        reply.code(r.created ? 201 : 200);
        return r;
      },
    ),
    route(
      {
        method: "GET",
        url: "/api/v1/sync/regions/:region/blobs/:hash",
        operationId: "syncGetBlob",
        summary: "Download an encrypted blob (streamed)",
        tags: ["sync"],
        auth: SYNC,
        params: RegionHash,
        responses: {
          200: { description: "the blob", contentType: "application/octet-stream" },
          ...errors(401, 403, 404),
        },
      },
      async ({ params, principal, reply }) => {
        const reader = await sync().openBlob(syncActor(principal), params.region, params.hash);
        return reply
          .type("application/octet-stream")
          .header("content-length", String(reader.size))
          .send(blobStream(reader));
      },
    ),
  ];
}
