// The pure E2EE sync core (docs/sync-protocol.md): device chains, envelopes, names, manifests and file containers,
// each with the tampering a malicious server could try (§12), refused with IntegrityError.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parseHeader } from "../../src/format/index.ts";
import { canonical, parseCanonical } from "../../src/sync/core/canonical.ts";
import {
  applyLink,
  type ChainLink,
  genesisLink,
  makeDeviceCert,
  nextLink,
  pinOf,
  verifyChain,
} from "../../src/sync/core/chain.ts";
import { decodeFile, encodeFile, FileDecoder, fileIdOf } from "../../src/sync/core/files.ts";
import {
  fingerprintOf,
  formatFingerprint,
  generateDeviceKeys,
  privateKey,
  signObject,
} from "../../src/sync/core/keys.ts";
import {
  diffManifests,
  type Entry,
  MAX_DELTA_RUN,
  type Manifest,
  manifestHash,
  pinOfManifest,
  signManifest,
  signNext,
  stateRoot,
  type UnsignedManifest,
  verifyManifest,
} from "../../src/sync/core/manifest.ts";
import { decryptName, encryptName } from "../../src/sync/core/names.ts";
import { keyCommitment, newRegionId, newRegionKey, openEnvelope, sealEnvelope } from "../../src/sync/core/region.ts";

const integrity = { name: "IntegrityError" };

function device(user: string, name: string) {
  const { secrets, pub } = generateDeviceKeys();
  const cert = makeDeviceCert(user, name, pub, secrets.sign);
  return { secrets, pub, cert };
}

describe("sync core: canonical encoding", () => {
  test("sorted keys, no whitespace; floats, nulls and non-canonical text refused", () => {
    assert.equal(
      canonical({ b: 1, a: [true, "x"], c: { z: "", y: 2 } }).toString(),
      '{"a":[true,"x"],"b":1,"c":{"y":2,"z":""}}',
    );
    assert.throws(() => canonical({ a: 1.5 }), integrity);
    assert.throws(() => canonical({ a: null }), integrity);
    assert.throws(() => parseCanonical(Buffer.from('{"b":1,"a":2}')), integrity);
    assert.throws(() => parseCanonical(Buffer.from('{"a":1,"a":1}')), integrity);
    assert.deepEqual(parseCanonical(Buffer.from('{"a":2,"b":1}')), { a: 2, b: 1 });
  });
});

describe("sync core: device chain", () => {
  const a1 = device("alice", "laptop");
  const a2 = device("alice", "phone");
  const a3 = device("alice", "desk");
  const l0 = genesisLink(a1.cert, a1.secrets.sign);
  const s0 = applyLink(undefined, l0, "alice");
  const l1 = nextLink(s0, { add: a2.cert }, a1.cert.id, a1.secrets.sign);
  const s1 = applyLink(s0, l1, "alice");
  const l2 = nextLink(s1, { revoke: a1.cert.id }, a2.cert.id, a2.secrets.sign);

  test("build and verify: root fingerprint, active and revoked devices, pin", () => {
    const s = verifyChain("alice", [l0, l1, l2]);
    assert.equal(s.root, fingerprintOf(a1.pub));
    assert.deepEqual([...s.active], [a2.cert.id]);
    assert.deepEqual([...s.revoked], [a1.cert.id]);
    assert.match(formatFingerprint(s.root), /^([0-9a-f]{4} ){15}[0-9a-f]{4}$/);
    verifyChain("alice", [l0, l1, l2], pinOf(s1));
  });

  test("substituted root key, forged link, rollback, fork, revoked signer, stolen certificate: refused", () => {
    const m = device("alice", "mallory");
    const fake0 = genesisLink(m.cert, m.secrets.sign);
    assert.throws(() => verifyChain("alice", [fake0], pinOf(s0)), /another root key/);
    // a link signed by a device that is not in the chain
    const forged = signObject("chain", { ...l1, device: m.cert }, m.secrets.sign);
    assert.throws(() => verifyChain("alice", [l0, forged]), /signature/);
    // same link body, signature of the real device over other content
    const tampered: ChainLink = { ...l1, at: "2000-01-01T00:00:00.000Z" };
    assert.throws(() => verifyChain("alice", [l0, tampered]), /signature/);
    // shorter than the pin (a hidden revocation)
    assert.throws(() => verifyChain("alice", [l0, l1], pinOf(verifyChain("alice", [l0, l1, l2]))), /shorter/);
    // another link at the pinned seq
    const other = nextLink(s0, { add: a3.cert }, a1.cert.id, a1.secrets.sign);
    assert.throws(() => verifyChain("alice", [l0, other], pinOf(s1)), /forked/);
    // the revoked device signs after its revocation
    const s2 = applyLink(s1, l2, "alice");
    const late = nextLink(s2, { add: a3.cert }, a1.cert.id, a1.secrets.sign);
    assert.throws(() => applyLink(s2, late, "alice"), /not active/);
    // a certificate whose self-signature does not verify (someone else's key enrolled)
    const stolen = { ...a3.cert, name: "renamed" };
    assert.throws(
      () => applyLink(s1, nextLink(s1, { add: stolen }, a1.cert.id, a1.secrets.sign), "alice"),
      /self-signature/,
    );
    // another user's link
    assert.throws(() => verifyChain("bob", [l0]), /another user/);
  });

  test("a link of another protocol version is refused (no downgrade)", () => {
    const v2 = signObject("chain", { ...l0, v: 2 }, a1.secrets.sign);
    assert.throws(() => verifyChain("alice", [v2]), /unsupported protocol version/);
  });
});

describe("sync core: region keys and envelopes", () => {
  const alice = device("alice", "laptop");
  const bob = device("bob", "desk");
  const regionId = newRegionId();
  const key = newRegionKey();
  const commit = keyCommitment(key, regionId, 1);
  const env = sealEnvelope(key, regionId, 1, bob.cert, { id: alice.cert.id, signKey: alice.secrets.sign });
  const me = { cert: bob.cert, encKey: privateKey(bob.secrets.enc) };

  test("a key wrapped to a device opens there only, and matches the signed commitment", () => {
    assert.deepEqual(openEnvelope(env, me, { regionId, senderCert: alice.cert, commit }), key);
    const carol = device("carol", "x");
    assert.throws(
      () =>
        openEnvelope(
          env,
          { cert: carol.cert, encKey: privateKey(carol.secrets.enc) },
          { regionId, senderCert: alice.cert, commit },
        ),
      /another device/,
    );
  });

  test("server-chosen key, swapped envelope, foreign region, forged sender: refused", () => {
    // the server (or anyone) wraps a key of its own: the signed manifest's commitment does not match
    const evil = device("alice", "server-made");
    const injected = sealEnvelope(newRegionKey(), regionId, 1, bob.cert, {
      id: evil.cert.id,
      signKey: evil.secrets.sign,
    });
    assert.throws(() => openEnvelope(injected, me, { regionId, senderCert: evil.cert, commit }), /commitment/);
    assert.throws(() => openEnvelope(env, me, { regionId, senderCert: evil.cert, commit }), /signature/);
    assert.throws(
      () => openEnvelope(env, me, { regionId: newRegionId(), senderCert: alice.cert, commit }),
      /another region/,
    );
    const relabeled = { ...env, epoch: 2 };
    assert.throws(() => openEnvelope(relabeled, me, { regionId, senderCert: alice.cert, commit }), /signature/);
    const flipped = { ...env, ct: `${env.ct.slice(0, -2)}${env.ct.endsWith("AA") ? "AB" : "AA"}` };
    assert.throws(
      () =>
        openEnvelope(signObject("envelope", flipped, alice.secrets.sign), me, {
          regionId,
          senderCert: alice.cert,
          commit,
        }),
      integrity,
    );
  });
});

describe("sync core: names bound to their parent", () => {
  const key = newRegionKey();
  const regionId = newRegionId();
  const b = { regionId, entryId: "a".repeat(32), parent: "", kind: "file" as const, epoch: 1 };
  const ct = encryptName(key, b, { name: "q3 report.pdf", mtimeMs: 1_700_000_000_000, sha: "" });

  test("round trip; another parent, entry, kind, epoch or region fails", () => {
    assert.deepEqual(decryptName(key, b, ct), { name: "q3 report.pdf", mtimeMs: 1_700_000_000_000, sha: "" });
    for (const other of [
      { ...b, parent: "b".repeat(32) },
      { ...b, entryId: "c".repeat(32) },
      { ...b, kind: "dir" as const },
      { ...b, epoch: 2 },
      { ...b, regionId: newRegionId() },
    ]) {
      assert.throws(() => decryptName(key, other, ct), integrity);
    }
    assert.throws(() => decryptName(newRegionKey(), b, ct), integrity);
    assert.throws(() => encryptName(key, b, { name: "a/b", mtimeMs: 0, sha: "" }), /one path segment/);
    assert.throws(() => encryptName(key, b, { name: "..", mtimeMs: 0, sha: "" }), /one path segment/);
  });
});

describe("sync core: signed monotonic manifest", () => {
  const alice = device("alice", "laptop");
  const bob = device("bob", "desk");
  const regionId = newRegionId();
  const key = newRegionKey();
  const owner = { user: "alice", root: fingerprintOf(alice.pub) };
  const bobMember = { user: "bob", root: fingerprintOf(bob.pub) };
  const certs = new Map([
    [`alice/${alice.cert.id}`, alice.cert],
    [`bob/${bob.cert.id}`, bob.cert],
  ]);
  const authorDevice = (user: string, dev: string) => {
    const cert = certs.get(`${user}/${dev}`);
    return cert ? { cert, revoked: false } : undefined;
  };
  const file = (id: string, parent = ""): Entry => ({
    id,
    parent,
    kind: "file",
    name: encryptName(
      key,
      { regionId, entryId: id, parent, kind: "file", epoch: 1 },
      { name: `f${id.slice(0, 2)}`, mtimeMs: 1, sha: "" },
    ),
    epoch: 1,
    fver: 1,
    size: 3,
    hash: "0".repeat(64),
    blobSize: 300,
    by: alice.cert.id,
    deleted: false,
  });
  const base = (
    version: number,
    prev: string,
    entries: Entry[],
    extra: Partial<UnsignedManifest> = {},
  ): UnsignedManifest => ({
    v: 1,
    type: "manifest",
    regionId,
    version,
    prev,
    owner,
    members: [],
    epoch: 1,
    keys: [{ epoch: 1, commit: keyCommitment(key, regionId, 1) }],
    author: { user: "alice", device: alice.cert.id },
    at: "2026-01-01T00:00:00.000Z",
    entries,
    ...extra,
  });
  const m1 = signManifest(base(1, "", [file("11".repeat(16))]), alice.secrets.sign);
  const m2 = signManifest(
    base(2, manifestHash(m1), [file("11".repeat(16)), file("22".repeat(16))], { members: [bobMember] }),
    alice.secrets.sign,
  );
  const pin2 = pinOfManifest(m2);

  test("verify from first contact and from a pin; diff", () => {
    verifyManifest(m1, { regionId, owner, authorDevice });
    verifyManifest(m2, { regionId, pin: pinOfManifest(m1), authorDevice });
    const m3 = signManifest(
      base(3, manifestHash(m2), [file("22".repeat(16))], {
        members: [bobMember],
        author: { user: "bob", device: bob.cert.id },
      }),
      bob.secrets.sign,
    );
    verifyManifest(m3, { regionId, pin: pin2, authorDevice });
    const d = diffManifests(m2, m3);
    assert.equal(d.removed.length, 1);
    assert.equal(d.added.length, 0);
  });

  test("rollback, replay of another version, fork, forged, unsigned, foreign region, non-member, downgrade: refused", () => {
    assert.throws(() => verifyManifest(m1, { regionId, pin: pin2, authorDevice }), /rollback/);
    const fork = signManifest(base(2, manifestHash(m1), [], { members: [bobMember] }), alice.secrets.sign);
    assert.throws(() => verifyManifest(fork, { regionId, pin: pin2, authorDevice }), /fork/);
    const forged = { ...m2, entries: [...m2.entries, file("33".repeat(16))] };
    assert.throws(() => verifyManifest(forged, { regionId, pin: pinOfManifest(m1), authorDevice }), /forged/);
    const { sig: _s, ...unsignedM } = m2;
    assert.throws(
      () => verifyManifest(unsignedM, { regionId, pin: pinOfManifest(m1), authorDevice }),
      /unexpected fields/,
    );
    assert.throws(
      () => verifyManifest(m2, { regionId: newRegionId(), pin: pinOfManifest(m1), authorDevice }),
      /another region/,
    );
    // bob adds carol without being the owner
    const carol = { user: "carol", root: "c".repeat(64) };
    const byBob = signManifest(
      base(3, manifestHash(m2), m2.entries, {
        members: [bobMember, carol],
        author: { user: "bob", device: bob.cert.id },
      }),
      bob.secrets.sign,
    );
    assert.throws(() => verifyManifest(byBob, { regionId, pin: pin2, authorDevice }), /other than the owner/);
    // a device the server made up, under a member's name
    const evil = device("bob", "server-made");
    const byEvil = signManifest(
      base(3, manifestHash(m2), [], { members: [bobMember], author: { user: "bob", device: evil.cert.id } }),
      evil.secrets.sign,
    );
    assert.throws(() => verifyManifest(byEvil, { regionId, pin: pin2, authorDevice }), /verified device chain/);
    const v3 = signObject("manifest", { ...m2, v: 3 }, alice.secrets.sign);
    assert.throws(
      () => verifyManifest(v3, { regionId, pin: pinOfManifest(m1), authorDevice }),
      /unsupported protocol version/,
    );
    // another owner on first contact
    assert.throws(() => verifyManifest(m1, { regionId, owner: bobMember, authorDevice }), /owner differs/);
  });

  test("malformed trees: unsorted, duplicate, orphan, live entry under a deleted folder", () => {
    const dir: Entry = { ...file("44".repeat(16)), kind: "dir", hash: "", size: 0, blobSize: 0 };
    assert.throws(
      () => signManifest(base(1, "", [file("11".repeat(16), "55".repeat(16))]), alice.secrets.sign),
      /parent/,
    );
    assert.throws(
      () => signManifest(base(1, "", [{ ...dir, deleted: true }, file("66".repeat(16), dir.id)]), alice.secrets.sign),
      /deleted directory/,
    );
    const m = signManifest(base(1, "", [file("11".repeat(16))]), alice.secrets.sign);
    const dup = signObject("manifest", { ...m, entries: [m.entries[0], m.entries[0]] }, alice.secrets.sign);
    assert.throws(() => verifyManifest(dup, { regionId, owner, authorDevice }), /sorted/);
  });
});

describe("sync core: version 2 manifests (full checkpoints and deltas, §7a)", () => {
  const alice = device("alice", "laptop");
  const regionId = newRegionId();
  const key = newRegionKey();
  const owner = { user: "alice", root: fingerprintOf(alice.cert) };
  const authorDevice = (user: string, dev: string) =>
    user === "alice" && dev === alice.cert.id ? { cert: alice.cert, revoked: false } : undefined;
  const names = new Map<string, string>();
  const nameOf = (id: string) => {
    let n = names.get(id);
    if (!n) {
      n = encryptName(
        key,
        { regionId, entryId: id, parent: "", kind: "file", epoch: 1 },
        { name: `f${id.slice(0, 2)}`, mtimeMs: 1, sha: "" },
      );
      names.set(id, n);
    }
    return n;
  };
  const file = (id: string, fver = 1, deleted = false, dv = 0): Entry => ({
    id,
    parent: "",
    kind: "file",
    name: nameOf(id),
    epoch: 1,
    fver,
    size: 3,
    hash: String(fver % 10).repeat(64),
    blobSize: 300,
    by: alice.cert.id,
    deleted,
    dv,
    dt: dv ? 5 : 0,
  });
  const head = (version: number, prev: string) => ({
    type: "manifest" as const,
    regionId,
    version,
    prev,
    owner,
    members: [],
    epoch: 1,
    keys: [{ epoch: 1, commit: keyCommitment(key, regionId, 1) }],
    author: { user: "alice", device: alice.cert.id },
    at: "2026-01-01T00:00:00.000Z",
  });
  const v1 = signManifest(
    {
      ...head(1, ""),
      v: 2,
      form: "full",
      ckpt: 1,
      root: stateRoot(regionId, []),
      drop: [],
      entries: [],
    },
    alice.secrets.sign,
  );
  const a = "aa".repeat(16);
  const b = "bb".repeat(16);
  const c = "cc".repeat(16);
  /** The next version after `cur` with `tree` as its whole tree (verified like a client would). */
  const next = (cur: Manifest, tree: Entry[], full = false) =>
    signNext(cur, head(cur.version + 1, manifestHash(cur)), { entries: tree, full }, alice.secrets.sign);
  const verified = (raw: unknown, cur: Manifest) =>
    verifyManifest(raw, { regionId, pin: pinOfManifest(cur), state: cur.entries, authorDevice });

  test("a delta carries only what changed; applied to the verified tree it gives the signed root", () => {
    const s1 = verifyManifest(v1, { regionId, owner, authorDevice });
    const d2 = next(s1, [file(a), file(b)]);
    assert.equal(d2.signed.form, "delta");
    const s2 = verified(d2.signed, s1);
    const d3 = next(s2, [file(a, 2), file(b)]);
    assert.deepEqual(
      d3.signed.entries.map((e) => e.id),
      [a],
      "only the changed entry travels",
    );
    const s3 = verified(d3.signed, s2);
    assert.deepEqual(s3.entries, d3.tree);
    assert.equal(manifestHash(s3), manifestHash(d3.signed), "the pin names the signed object, not the tree");
    // trash expiry: an entry in the trash may leave the tree; a live one may not
    const d4 = next(s3, [file(a, 2), file(b, 1, true, 4)]);
    const s4 = verified(d4.signed, s3);
    const d5 = next(s4, [file(a, 2)]);
    assert.deepEqual(d5.signed.drop, [b]);
    verified(d5.signed, s4);
    const live = next(s3, [file(a, 2)]);
    assert.throws(() => verified(live.signed, s3), /not in the trash/);
    // a full checkpoint verifies on its own and against the pin
    const f = next(s3, [file(a, 2), file(b), file(c)], true);
    assert.equal(f.signed.form, "full");
    verified(f.signed, s3);
  });

  test("a delta on another tree, another checkpoint, skipping a version, a wrong root, a downgrade: refused", () => {
    const s1 = verifyManifest(v1, { regionId, owner, authorDevice });
    const s2 = verified(next(s1, [file(a), file(b)]).signed, s1);
    const d3 = next(s2, [file(a, 2), file(b)]).signed;
    // applied to another tree (the server replays it elsewhere, or dropped a version before it)
    assert.throws(
      () => verifyManifest(d3, { regionId, pin: pinOfManifest(s2), state: [file(a)], authorDevice }),
      /root/,
    );
    assert.throws(
      () => verifyManifest(d3, { regionId, pin: pinOfManifest(s1), state: s1.entries, authorDevice }),
      integrity,
    );
    assert.throws(() => verifyManifest(d3, { regionId, owner, authorDevice }), /does not follow/);
    // a root that is not the tree's, signed by a member: still refused (the verifier recomputes it)
    const { sig: _s, ...unsigned } = d3;
    const badRoot = signObject("manifest", { ...unsigned, root: "e".repeat(64) }, alice.secrets.sign);
    assert.throws(() => verified(badRoot, s2), /root/);
    // a delta that claims another checkpoint, or too long a run of deltas
    const otherCkpt = signObject("manifest", { ...unsigned, ckpt: 2 }, alice.secrets.sign);
    assert.throws(() => verified(otherCkpt, s2), /checkpoint/);
    const tooLong = signObject("manifest", { ...unsigned, version: MAX_DELTA_RUN + 2, ckpt: 1 }, alice.secrets.sign);
    assert.throws(() => verified(tooLong, s2), /deltas since the last full/);
    // version 1 after version 2: refused although signed by the owner (no downgrade)
    const { form: _f, root: _r, ckpt: _c, drop: _d, ...rest } = unsigned;
    const older = signObject(
      "manifest",
      { ...rest, v: 1, entries: rest.entries.map(({ dv: _dv, dt: _dt, ...e }) => e) },
      alice.secrets.sign,
    );
    assert.throws(() => verified(older, s2), /downgrade refused/);
  });
});

describe("sync core: files in the container format", () => {
  const key = newRegionKey();
  const regionId = newRegionId();
  const fid = fileIdOf(regionId, "ab".repeat(16), 1);
  const keyOf = (e: number) => {
    assert.equal(e, 1);
    return key;
  };

  test("round trip at 0, 1, 64 KiB and 200 kB, fed in odd chunks", () => {
    for (const n of [0, 1, 65_536, 200_000]) {
      const data = Buffer.alloc(n, 7);
      const blob = encodeFile(key, regionId, 1, fid, data);
      assert.deepEqual(decodeFile(blob, regionId, fid, keyOf), data);
      const dec = new FileDecoder(blob.length, regionId, fid, keyOf);
      const out: Buffer[] = [];
      for (let i = 0; i < blob.length; i += 7_777) out.push(...dec.push(blob.subarray(i, i + 7_777)));
      dec.finish();
      assert.deepEqual(Buffer.concat(out), data);
    }
  });

  test("flipped byte, truncation, extension, reordered or duplicated segments, other file id or key: refused", () => {
    const data = Buffer.alloc(200_000, 9);
    const blob = encodeFile(key, regionId, 1, fid, data);
    const flip = Buffer.from(blob);
    flip[blob.length - 100] ^= 1;
    assert.throws(() => decodeFile(flip, regionId, fid, keyOf), integrity);
    assert.throws(() => decodeFile(blob.subarray(0, blob.length - 1), regionId, fid, keyOf), integrity);
    assert.throws(() => decodeFile(Buffer.concat([blob, Buffer.alloc(1)]), regionId, fid, keyOf), integrity);
    const seg = 65_536 + 28;
    const hl = parseHeader(blob.subarray(0, 4096)).headerLength;
    const s0 = blob.subarray(hl, hl + seg);
    const s1 = blob.subarray(hl + seg, hl + 2 * seg);
    const swapped = Buffer.concat([blob.subarray(0, hl), s1, s0, blob.subarray(hl + 2 * seg)]);
    assert.throws(() => decodeFile(swapped, regionId, fid, keyOf), integrity);
    const dup = Buffer.concat([blob.subarray(0, hl), s0, s0, blob.subarray(hl + 2 * seg)]);
    assert.throws(() => decodeFile(dup, regionId, fid, keyOf), integrity);
    const dropped = Buffer.concat([blob.subarray(0, hl), s1, blob.subarray(hl + 2 * seg)]);
    assert.throws(() => decodeFile(dropped, regionId, fid, keyOf), integrity);
    assert.throws(() => decodeFile(blob, regionId, fileIdOf(regionId, "ab".repeat(16), 2), keyOf), integrity);
    assert.throws(() => decodeFile(blob, newRegionId(), fid, keyOf), integrity);
    assert.throws(() => decodeFile(blob, regionId, fid, () => newRegionKey()), integrity);
  });
});
