// The sync server's checks over HTTPS (docs/sync-protocol.md §3, §7, §10), driven with objects the pure core signs:
// devices and chains, regions, manifests (stale, replayed, forged, foreign, missing blobs, non-owner changes), blobs
// (hash-checked, quota), envelopes, retention, revocation, and an audit that names regions and devices only.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { issueDeviceToken, SyncApi, SyncApiError } from "../../src/sync/client/api.ts";
import { canonical, sha256Hex } from "../../src/sync/core/canonical.ts";
import { applyLink, type ChainState, genesisLink, makeDeviceCert, nextLink } from "../../src/sync/core/chain.ts";
import { encodeFile, fileIdOf } from "../../src/sync/core/files.ts";
import { fingerprintOf, generateDeviceKeys, signObject } from "../../src/sync/core/keys.ts";
import {
  type Entry,
  type Manifest,
  manifestHash,
  signManifest,
  type UnsignedManifest,
} from "../../src/sync/core/manifest.ts";
import { encryptName } from "../../src/sync/core/names.ts";
import { keyCommitment, newRegionId, newRegionKey, sealEnvelope } from "../../src/sync/core/region.ts";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";

async function refused(p: Promise<unknown>, status: number, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof SyncApiError, String(err));
    assert.equal(`${err.status} ${err.problemCode}`, `${status} ${code}`, err.message);
    return true;
  });
}

describe("sync server over HTTPS", () => {
  let dir: string;
  let data: string;
  let server: RunningServer;
  let o: { server: string; ca: string };
  const dev = (user: string, name: string) => {
    const { secrets, pub } = generateDeviceKeys();
    return {
      user,
      secrets,
      pub,
      cert: makeDeviceCert(user, name, pub, secrets.sign),
      api: undefined as unknown as SyncApi,
    };
  };
  const a1 = dev("alice", "laptop");
  const a2 = dev("alice", "phone");
  const b1 = dev("bob", "desk");
  let aliceChain: ChainState;
  const regionId = newRegionId();
  const key = newRegionKey();
  const owner = { user: "alice", root: fingerprintOf(a1.pub) };
  let current: Manifest;

  const manifest = (over: Partial<UnsignedManifest>, signer = a1): Buffer => {
    const m = signManifest(
      {
        v: 1,
        type: "manifest",
        regionId,
        version: current ? current.version + 1 : 1,
        prev: current ? manifestHash(current) : "",
        owner,
        members: current?.members ?? [],
        epoch: 1,
        keys: [{ epoch: 1, commit: keyCommitment(key, regionId, 1) }],
        author: { user: signer.user, device: signer.cert.id },
        at: new Date().toISOString(),
        entries: current?.entries ?? [],
        ...over,
      },
      signer.secrets.sign,
    );
    return canonical(m);
  };
  const accept = async (bytes: Buffer, api = a1.api) => {
    await api.putManifest(regionId, bytes);
    current = JSON.parse(bytes.toString()) as Manifest;
  };
  const fileEntry = (id: string, blob: Buffer, by = a1): Entry => ({
    id,
    parent: "",
    kind: "file",
    name: encryptName(
      key,
      { regionId, entryId: id, parent: "", kind: "file", epoch: 1 },
      { name: "canary-name.txt", mtimeMs: 1, sha: "" },
    ),
    epoch: 1,
    fver: 1,
    size: 5,
    hash: sha256Hex(blob),
    blobSize: blob.length,
    by: by.cert.id,
    deleted: false,
  });

  before(async () => {
    dir = await tempDir("atrest-sync-server-");
    data = join(dir, "data");
    await cli(["init", "--data", data]);
    await cli(["user", "add", "alice", "--password-stdin", "--data", data], "alice-pw\n");
    await cli(["user", "add", "bob", "--password-stdin", "--quota-bytes", "20000", "--data", data], "bob-pw\n");
    server = await startServer(data);
    o = { server: `https://127.0.0.1:${server.httpPort}`, ca: await readFile(join(data, "tls", "server.crt"), "utf8") };
    for (const d of [a1, a2, b1])
      d.api = new SyncApi(o, await issueDeviceToken(o, d.user, `${d.user}-pw`, d.cert.name));
  });
  after(async () => {
    for (const d of [a1, a2, b1]) d.api?.close();
    await server?.stop();
    await removeDir(dir);
  });

  test("devices: register pending, first link self-signed, approval by an active device, forged links refused", async () => {
    assert.equal((await a1.api.registerDevice(a1.cert)).state, "pending");
    const l0 = genesisLink(a1.cert, a1.secrets.sign);
    assert.equal((await a1.api.appendLink(l0)).seq, 0);
    aliceChain = applyLink(undefined, l0, "alice");
    await a2.api.registerDevice(a2.cert);
    // a pending device cannot act, nor approve itself
    await refused(a2.api.createRegion(manifest({})), 403, "DEVICE_UNKNOWN");
    const self = nextLink(aliceChain, { add: a2.cert }, a2.cert.id, a2.secrets.sign);
    await refused(a2.api.appendLink(self), 400, "BAD_OBJECT");
    // another user's certificate cannot be registered
    await refused(a2.api.registerDevice(b1.cert), 400, "BAD_OBJECT");
    const l1 = nextLink(aliceChain, { add: a2.cert }, a1.cert.id, a1.secrets.sign);
    await refused(a1.api.appendLink({ ...l1, at: "2000-01-01T00:00:00.000Z" }), 403, "BAD_SIGNATURE");
    assert.equal((await a1.api.appendLink(l1)).seq, 1);
    aliceChain = applyLink(aliceChain, l1, "alice");
    await refused(a1.api.appendLink(l1), 400, "BAD_OBJECT");
    const list = await a1.api.devices();
    assert.deepEqual(
      list.devices.map((d) => [d.name, d.state]),
      [
        ["laptop", "active"],
        ["phone", "active"],
      ],
    );
    assert.equal((await a2.api.chain("alice")).length, 2);
    await b1.api.registerDevice(b1.cert);
    await b1.api.appendLink(genesisLink(b1.cert, b1.secrets.sign));
  });

  test("region and manifests: signed, monotonic, own region only, blobs present, owner-only membership", async () => {
    // owner fingerprint must be the owner's chain root
    await refused(a1.api.createRegion(manifest({ owner: { user: "alice", root: "0".repeat(64) } })), 400, "BAD_OBJECT");
    const first = manifest({});
    await a1.api.createRegion(first);
    current = JSON.parse(first.toString()) as Manifest;
    await refused(a1.api.createRegion(first), 409, "REGION_EXISTS");

    const blob = encodeFile(key, regionId, 1, fileIdOf(regionId, "aa".repeat(16), 1), Buffer.from("hello"));
    await refused(a1.api.putBlob(regionId, "0".repeat(64), blob), 400, "HASH_MISMATCH");
    assert.equal((await a1.api.putBlob(regionId, sha256Hex(blob), blob)).created, true);
    assert.equal((await a1.api.putBlob(regionId, sha256Hex(blob), blob)).created, false);
    const withFile = manifest({ entries: [fileEntry("aa".repeat(16), blob)] });
    // signed by a2 but naming a1 as author: forged
    const m = JSON.parse(withFile.toString()) as Manifest;
    const forged = canonical(signObject("manifest", m, a2.secrets.sign));
    await refused(a1.api.putManifest(regionId, forged), 403, "BAD_SIGNATURE");
    // sent by a device that did not sign it
    await refused(a2.api.putManifest(regionId, withFile), 403, "BAD_SIGNATURE");
    const { sig: _sig, ...unsignedM } = m;
    await refused(a1.api.putManifest(regionId, canonical(unsignedM)), 400, "BAD_OBJECT");
    // not canonical bytes
    await refused(a1.api.putManifest(regionId, Buffer.from(JSON.stringify(m, null, 1))), 400, "BAD_OBJECT");
    // foreign region: a manifest for another region sent here
    await refused(a1.api.putManifest(newRegionId(), withFile), 400, "BAD_OBJECT");
    const other = canonical(signManifest({ ...m, regionId: newRegionId() }, a1.secrets.sign));
    await refused(a1.api.putManifest(regionId, other), 400, "BAD_OBJECT");
    // a blob the region does not have
    const missing = manifest({ entries: [{ ...fileEntry("bb".repeat(16), blob), hash: "1".repeat(64) }] });
    await refused(a1.api.putManifest(regionId, missing), 409, "MISSING_BLOB");
    await accept(withFile);
    // replay of the accepted version, a version that skips one, a wrong prev: stale
    await refused(a1.api.putManifest(regionId, withFile), 409, "STALE_MANIFEST");
    await refused(a1.api.putManifest(regionId, manifest({ version: current.version + 2 })), 409, "STALE_MANIFEST");
    await refused(a1.api.putManifest(regionId, manifest({ prev: "f".repeat(64) })), 409, "STALE_MANIFEST");
    // bob is no member: the region does not exist for him
    await refused(b1.api.manifest(regionId), 404, "NOT_MEMBER");
    await refused(b1.api.putBlob(regionId, sha256Hex(blob), blob), 404, "NOT_MEMBER");
    // the second device of alice reads and writes
    assert.deepEqual(await a2.api.manifest(regionId), withFile);
    await accept(manifest({ author: { user: "alice", device: a2.cert.id } }, a2), a2.api);
  });

  test("share: envelopes from the sending device only, bob becomes a member, cannot change membership", async () => {
    const env = sealEnvelope(key, regionId, 1, b1.cert, { id: a1.cert.id, signKey: a1.secrets.sign });
    await refused(a2.api.putEnvelopes(regionId, [env]), 403, "BAD_SIGNATURE");
    assert.equal((await a1.api.putEnvelopes(regionId, [env])).stored, 1);
    await accept(manifest({ members: [{ user: "bob", root: fingerprintOf(b1.pub) }] }));
    assert.equal((await b1.api.envelopes(regionId)).length, 1);
    assert.equal((await a1.api.envelopes(regionId)).length, 0);
    assert.deepEqual(
      (await b1.api.regions()).map((r) => r.id),
      [regionId],
    );
    const carol = { user: "carol", root: "c".repeat(64) };
    await refused(
      b1.api.putManifest(regionId, manifest({ members: [{ user: "bob", root: fingerprintOf(b1.pub) }, carol] }, b1)),
      403,
      "NOT_OWNER",
    );
    await refused(
      b1.api.putManifest(
        regionId,
        manifest({ epoch: 2, keys: [...current.keys, { epoch: 2, commit: "d".repeat(64) }] }, b1),
      ),
      403,
      "NOT_OWNER",
    );
    await accept(manifest({}, b1), b1.api);
  });

  test("quota of the owner, retention keeps N versions and their blobs, legal hold keeps all", async () => {
    // bob's own region: 20,000 bytes quota
    const bobRegion = newRegionId();
    const bk = newRegionKey();
    const m1 = signManifest(
      {
        v: 1,
        type: "manifest",
        regionId: bobRegion,
        version: 1,
        prev: "",
        owner: { user: "bob", root: fingerprintOf(b1.pub) },
        members: [],
        epoch: 1,
        keys: [{ epoch: 1, commit: keyCommitment(bk, bobRegion, 1) }],
        author: { user: "bob", device: b1.cert.id },
        at: new Date().toISOString(),
        entries: [],
      },
      b1.secrets.sign,
    );
    await b1.api.createRegion(canonical(m1));
    await b1.api.putBlob(bobRegion, sha256Hex(Buffer.alloc(15_000, 1)), Buffer.alloc(15_000, 1));
    await refused(
      b1.api.putBlob(bobRegion, sha256Hex(Buffer.alloc(15_000, 2)), Buffer.alloc(15_000, 2)),
      507,
      "QUOTA_EXCEEDED",
    );

    await a1.api.setRetention(regionId, 2, false);
    const blobs: Buffer[] = [];
    for (let i = 0; i < 3; i++) {
      const id = `${"c".repeat(31)}${i}`;
      const blob = encodeFile(key, regionId, 1, fileIdOf(regionId, id, 1), Buffer.from(`v${i}`));
      blobs.push(blob);
      await a1.api.putBlob(regionId, sha256Hex(blob), blob);
      await accept(manifest({ entries: [fileEntry(id, blob)] }));
    }
    assert.deepEqual(await a1.api.versions(regionId), [current.version - 1, current.version]);
    await refused(a1.api.manifest(regionId, 1), 404, "NO_SUCH_VERSION");
    // the blob only dropped versions named is gone; the kept ones are there
    await refused(a1.api.getBlob(regionId, sha256Hex(blobs[0] as Buffer)), 404, "NO_SUCH_BLOB");
    const res = await a1.api.getBlob(regionId, sha256Hex(blobs[2] as Buffer));
    const got: Buffer[] = [];
    for await (const c of res) got.push(c as Buffer);
    assert.deepEqual(Buffer.concat(got), blobs[2]);
    await refused(b1.api.setRetention(regionId, 5, true), 403, "NOT_OWNER");
    await a1.api.setRetention(regionId, 1, true);
    await accept(manifest({}));
    await accept(manifest({}));
    assert.equal((await a1.api.versions(regionId)).length, 4);
    // by age: versions younger than a day stay although only one version is asked for; then by count alone
    await a1.api.setRetention(regionId, 1, false, 1);
    assert.equal((await a1.api.versions(regionId)).length, 4);
    await a1.api.setRetention(regionId, 1, false, 0);
    assert.deepEqual(await a1.api.versions(regionId), [current.version]);
  });

  test("revocation: the revoked device is refused everywhere with DEVICE_REVOKED; audit names no file", async () => {
    const l2 = nextLink(aliceChain, { revoke: a2.cert.id }, a1.cert.id, a1.secrets.sign);
    await a1.api.appendLink(l2);
    await refused(a2.api.manifest(regionId), 403, "DEVICE_REVOKED");
    await refused(
      a2.api.putManifest(regionId, manifest({ author: { user: "alice", device: a2.cert.id } }, a2)),
      403,
      "DEVICE_REVOKED",
    );
    const devices = await a1.api.devices();
    assert.equal(devices.devices.find((d) => d.id === a2.cert.id)?.state, "revoked");
    const { stdout } = await cli(["audit", "tail", "-n", "400", "--data", data]);
    assert.match(stdout, /sync\.manifest/);
    assert.match(stdout, /sync\.chain/);
    assert.doesNotMatch(stdout, /canary-name/);
  });
});
