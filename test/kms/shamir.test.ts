// Shamir sealing of the master key: share text, thresholds, every 3-of-5 combination, wrong shares, and a master-key
// rotation that keeps the shares valid. In process on a real kms.db.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { AtrestError, KeyUnavailableError } from "../../src/errors.ts";
import { KmsDb } from "../../src/kms/db.ts";
import { Keyring } from "../../src/kms/keyring.ts";
import { combineShares, parseShare, splitUnsealKey } from "../../src/kms/shares.ts";
import { initShamir, masterSourceFor, type ShamirConfig, ShamirSource } from "../../src/kms/unseal.ts";
import { removeDir, tempDir } from "../helpers/atrest.ts";

function combinations<T>(items: readonly T[], k: number): T[][] {
  if (k === 0) return [[]];
  return items.flatMap((x, i) => combinations(items.slice(i + 1), k - 1).map((rest) => [x, ...rest]));
}

/** A share with a valid checksum whose bytes are not a point of the real polynomial. */
function forge(text: string, sealId: Buffer): string {
  const bytes = Buffer.from(text.split("-")[1], "hex");
  bytes[0] ^= 0x5a;
  const sum = createHash("sha256")
    .update(Buffer.from("atrest-share-v1\0", "latin1"))
    .update(sealId)
    .update(bytes)
    .digest("hex")
    .slice(0, 8);
  return `${sum}-${bytes.toString("hex")}`;
}

async function unsealWith(source: ShamirSource, shares: readonly string[]): Promise<Buffer | undefined> {
  let master: Buffer | undefined;
  for (const s of shares) master = (await source.submitShare(s)).master ?? master;
  return master;
}

describe("Shamir unseal", () => {
  let dir: string;
  let db: KmsDb;
  let shares: string[];
  let config: ShamirConfig;

  before(async () => {
    dir = await tempDir("atrest-shamir-");
    db = new KmsDb(join(dir, "kms.db"));
    ({ shares, config } = await initShamir(db, dir, 5, 3));
  });

  after(async () => {
    db.close();
    await removeDir(dir);
  });

  test("share text: checksum prefix, 33 bytes, distinct x coordinates; whitespace and case forgiven", () => {
    const sealId = Buffer.from(config.sealId, "hex");
    assert.equal(shares.length, 5);
    const xs = new Set<number>();
    for (const s of shares) {
      assert.match(s, /^[0-9a-f]{8}-[0-9a-f]{66}$/);
      const p = parseShare(` ${s.toUpperCase().replace("-", " - ")}\n`, sealId);
      assert.equal(p.bytes.length, 33);
      xs.add(p.x);
    }
    assert.equal(xs.size, 5);
    assert.throws(() => parseShare("nonsense", sealId), /malformed share/);
    assert.throws(() => parseShare(shares[0], randomBytes(16)), /belongs to another KMS/);
  });

  test("2 of 3 do not rebuild the unseal key; the source stays sealed at 2/3", async () => {
    const key = randomBytes(32);
    const sealId = randomBytes(16);
    const parts = (await splitUnsealKey(key, sealId, 3, 3)).map((t) => parseShare(t, sealId).bytes);
    assert.notDeepEqual(await combineShares(parts.slice(0, 2)), key);
    assert.deepEqual(await combineShares(parts), key);
    const source = masterSourceFor(db, dir) as ShamirSource;
    const r1 = await source.submitShare(shares[0]);
    const r2 = await source.submitShare(shares[1]);
    assert.deepEqual([r1.unsealed, r1.progress, r2.unsealed, r2.progress, r2.threshold], [false, 1, false, 2, 3]);
    assert.equal(r2.master, undefined);
    assert.equal(source.status().progress, 2);
    source.reset();
    assert.equal(source.status().progress, 0);
  });

  test("every 3 of the 5 shares unseal to the same master key, which opens the keyring", async () => {
    const masters = new Set<string>();
    for (const combo of combinations(shares, 3)) {
      const master = await unsealWith(new ShamirSource(db, config), combo);
      assert.ok(master, `combination ${combo.map((s) => s.slice(0, 8)).join(",")}`);
      masters.add(master.toString("hex"));
      const ring = new Keyring(db, master); // verifies the master check value
      ring.close();
    }
    assert.equal(masters.size, 1);
    assert.equal(combinations(shares, 3).length, 10);
  });

  test("a forged share with a valid checksum is caught by the master check and resets the progress", async () => {
    const source = new ShamirSource(db, config);
    await source.submitShare(shares[0]);
    await source.submitShare(forge(shares[1], Buffer.from(config.sealId, "hex")));
    await assert.rejects(source.submitShare(shares[2]), (e: Error) => {
      assert.ok(e instanceof KeyUnavailableError);
      assert.match(e.message, /do not combine to this KMS's unseal key.*progress reset to 0/);
      return true;
    });
    assert.equal(source.status().progress, 0);
    assert.ok(await unsealWith(source, [shares[0], shares[1], shares[2]]));
  });

  test("a share of another initialisation fails its checksum and leaves the progress alone", async () => {
    const otherDir = await tempDir("atrest-shamir-other-");
    const otherDb = new KmsDb(join(otherDir, "kms.db"));
    try {
      const other = await initShamir(otherDb, otherDir, 3, 2);
      const source = new ShamirSource(db, config);
      await source.submitShare(shares[3]);
      await assert.rejects(source.submitShare(other.shares[0]), (e: Error) => {
        assert.ok(e instanceof AtrestError && e.code === "INVALID_INPUT");
        assert.match(e.message, /checksum does not match.*progress unchanged \(1\/3\)/);
        return true;
      });
      assert.equal(source.status().progress, 1);
      await assert.rejects(initShamir(db, dir, 5, 3), /already initialised/);
    } finally {
      otherDb.close();
      await removeDir(otherDir);
    }
  });

  test("master-key rotation stores the new master under the same unseal key: the shares keep working", async () => {
    const source = new ShamirSource(db, config);
    const master = await unsealWith(source, shares.slice(0, 3));
    assert.ok(master);
    const oldHex = master.toString("hex");
    const ring = new Keyring(db, master);
    const dk = ring.generateDataKey("default", { f: "before" });
    assert.throws(() => new ShamirSource(db, config).storeMaster(randomBytes(32)), /sealed/);
    ring.rotateMaster(randomBytes(32), (m) => source.storeMaster(m));
    ring.close();
    source.seal();
    const again = await unsealWith(new ShamirSource(db, config), [shares[4], shares[2], shares[0]]);
    assert.ok(again);
    assert.notEqual(again.toString("hex"), oldHex);
    const ring2 = new Keyring(db, again);
    assert.deepEqual(ring2.unwrap(dk.wrapped, { f: "before" }).dek, dk.plaintext);
    ring2.close();
  });

  test("share and threshold counts are validated", async () => {
    await assert.rejects(splitUnsealKey(randomBytes(32), randomBytes(16), 1, 1), /--shares must be/);
    await assert.rejects(splitUnsealKey(randomBytes(32), randomBytes(16), 3, 4), /--threshold must be/);
    await assert.rejects(splitUnsealKey(randomBytes(32), randomBytes(16), 3, 1), /--threshold must be/);
  });
});

describe("one share per custodian", () => {
  test("a custodian's second share is refused; distinct custodians unseal; reset forgets who submitted", async () => {
    const d = await tempDir("atrest-custodian-");
    const db = new KmsDb(join(d, "kms.db"));
    try {
      const { shares, config } = await initShamir(db, "/nonexistent", 3, 2, undefined, { oneSharePerCustodian: true });
      assert.equal(config.oneSharePerCustodian, true);
      const source = new ShamirSource(db, config);
      assert.equal((await source.submitShare(shares[0] as string, "alice")).progress, 1);
      await assert.rejects(source.submitShare(shares[1] as string, "alice"), /custodian alice already submitted/);
      await assert.rejects(source.submitShare(shares[1] as string), /name the custodian/);
      assert.equal(source.status().progress, 1);
      source.reset();
      assert.equal((await source.submitShare(shares[1] as string, "alice")).progress, 1);
      const done = await source.submitShare(shares[2] as string, "bob");
      assert.ok(done.master, "two distinct custodians unseal");
      done.master?.fill(0);
    } finally {
      db.close();
      await removeDir(d);
    }
  });

  test("off in a seal config without the field; `kms serve --one-share-per-custodian` turns it on", async () => {
    const d = await tempDir("atrest-custodian-");
    const db = new KmsDb(join(d, "kms.db"));
    try {
      const { shares, config } = await initShamir(db, "/nonexistent", 3, 2);
      assert.equal(config.oneSharePerCustodian, undefined);
      const any = new ShamirSource(db, config);
      assert.equal(any.oneSharePerCustodian, false);
      await any.submitShare(shares[0] as string, "alice");
      const r = await any.submitShare(shares[1] as string, "alice");
      assert.ok(r.master, "one custodian may submit two shares in this mode");
      r.master?.fill(0);
      const forced = new ShamirSource(db, config, { oneSharePerCustodian: true });
      await forced.submitShare(shares[0] as string, "alice");
      await assert.rejects(forced.submitShare(shares[1] as string, "alice"), /each custodian counts once/);
    } finally {
      db.close();
      await removeDir(d);
    }
  });
});
