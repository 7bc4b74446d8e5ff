// Sealed rows of the metadata store (src/store/sealing.ts, sealed-rows.ts): blind-index lookups, bucket padding,
// fixed-length usage records, and rows that cannot be moved or swapped by someone who can write the database file.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, describe, it } from "node:test";
import { bucketLength, padToBucket, unpad } from "../../src/crypto/padding.ts";
import { RowSealer } from "../../src/store/sealing.ts";
import { migrations } from "../../src/store/sql/migrations.ts";
import { openSqliteStore } from "../../src/store/sqlite/index.ts";
import { removeDir, tempDir } from "../helpers/atrest.ts";
import { openTestStore, testSealer } from "../helpers/store.ts";
import { user } from "./contract.ts";

const dirs: string[] = [];
after(() => Promise.all(dirs.map(removeDir)));

describe("bucket padding", () => {
  it("pads every length to 32, 64, … 4096, then steps of 4096, and back", () => {
    assert.deepEqual(
      [0, 30, 31, 32, 63, 64, 200, 4095, 4096, 9000].map((n) => bucketLength(n)),
      [32, 32, 32, 64, 64, 128, 256, 4096, 8192, 12288],
    );
    for (const n of [0, 1, 31, 32, 100, 5000]) {
      const data = Buffer.alloc(n, 0x80);
      assert.ok(unpad(padToBucket(data)).equals(data));
    }
    assert.throws(() => unpad(Buffer.alloc(32)), { name: "IntegrityError" });
    assert.throws(() => unpad(Buffer.from([1, 2, 0x81, 0])), { name: "IntegrityError" });
  });
});

describe("sealed users, groups and folders", () => {
  it("look up by name, list in name order, and give one record length for names of similar length", async () => {
    const dir = await tempDir();
    dirs.push(dir);
    const store = await openTestStore(join(dir, "meta.db"));
    await store.transaction(async (tx) => {
      for (const n of ["carol", "alice", "bob"]) await tx.insertUser(user(n));
      await tx.addUsage((await tx.getUser("bob"))?.id ?? "", 123_456_789, 3);
      await tx.addUsage((await tx.getUser("bob"))?.id ?? "", -1_000_000_000, -1);
      await tx.putFolder({ path: "/b", options: {}, createdAt: "t1" });
      await tx.putFolder({ path: "/a", options: { key: "k" }, createdAt: "t2" });
      await tx.putFolder({ path: "/a", options: { key: "k2" }, createdAt: "t3" });
      await tx.putGroup({ name: "g", options: {}, createdAt: "t" });
    });
    assert.deepEqual(
      (await store.listUsers()).map((u) => u.name),
      ["alice", "bob", "carol"],
    );
    const bob = await store.getUser("bob");
    assert.deepEqual([bob?.usedBytes, bob?.usedFiles], [0, 2], "usage never below zero");
    assert.equal(await store.getUser("Bob"), undefined);
    assert.deepEqual(await store.listFolders(), [
      { path: "/a", options: { key: "k2" }, createdAt: "t2" },
      { path: "/b", options: {}, createdAt: "t1" },
    ]);
    assert.equal((await store.getGroup("g"))?.name, "g");
    await store.close();
    const db = new DatabaseSync(join(dir, "meta.db"));
    const lengths = db.prepare("SELECT length(sealed) AS s, length(usage) AS u FROM users").all() as {
      s: number;
      u: number;
    }[];
    assert.equal(new Set(lengths.map((l) => l.s)).size, 1, "alice, bob and carol: one bucket");
    assert.deepEqual(new Set(lengths.map((l) => l.u)), new Set([60]));
    db.close();
  });

  it("refuses a record moved to another row, a swapped index, and a store opened with another key", async () => {
    const dir = await tempDir();
    dirs.push(dir);
    const path = join(dir, "meta.db");
    const store = await openTestStore(path);
    await store.transaction(async (tx) => {
      await tx.insertUser({ ...user("alice"), role: "user" });
      await tx.insertUser({ ...user("mallory"), role: "admin" });
    });
    await store.close();
    const db = new DatabaseSync(path);
    // mallory's record (admin) under alice's id and index: opening fails instead of granting alice admin
    const rows = db.prepare("SELECT id, sealed FROM users").all() as { id: string; sealed: Uint8Array }[];
    const swap = db.prepare("UPDATE users SET sealed = ? WHERE id = ?");
    swap.run(rows[1]?.sealed ?? null, rows[0]?.id ?? "");
    swap.run(rows[0]?.sealed ?? null, rows[1]?.id ?? "");
    db.close();
    const tampered = await openTestStore(path);
    await assert.rejects(tampered.getUser("alice"), { name: "IntegrityError" });
    await tampered.close();

    const locked = openSqliteStore(path);
    await assert.rejects(locked.getUser("alice"), { code: "KEY_UNAVAILABLE" });
    await locked.unlock(new RowSealer(Buffer.alloc(32, 1)));
    assert.equal(await locked.getUser("alice"), undefined, "another key: another index");
    await locked.close();
  });

  it("a user opened before is opened again when its stored bytes change, also under a live store", async () => {
    const dir = await tempDir();
    dirs.push(dir);
    const path = join(dir, "meta.db");
    const store = await openTestStore(path);
    await store.transaction(async (tx) => {
      await tx.insertUser({ ...user("alice"), role: "user" });
      await tx.insertUser({ ...user("mallory"), role: "admin" });
    });
    const alice = (await store.getUser("alice"))?.id ?? "";
    const first = await store.getUserById(alice);
    assert.equal(first?.role, "user");
    // what a caller does to its copy is not what the next lookup returns
    first?.permissions["/"]?.push("delete");
    assert.deepEqual((await store.getUserById(alice))?.permissions, user("alice").permissions);
    await store.transaction(async (tx) => {
      await tx.addUsage(alice, 4096, 1);
      const u = await tx.getUserById(alice);
      if (u) await tx.updateUser({ ...u, quotaFiles: 7 });
    });
    const after = await store.getUserById(alice);
    assert.deepEqual([after?.usedBytes, after?.usedFiles, after?.quotaFiles], [4096, 1, 7]);
    await store.transaction((tx) => tx.addUsage(alice, 1, 1));
    assert.deepEqual(
      [(await store.getUserById(alice))?.usedBytes, (await store.getUserById(alice))?.usedFiles],
      [4097, 2],
    );
    // mallory's record and usage written under alice's id by someone with the database file, while the server runs
    const db = new DatabaseSync(path);
    const rows = db.prepare("SELECT id, sealed, usage FROM users").all() as {
      id: string;
      sealed: Uint8Array;
      usage: Uint8Array;
    }[];
    const m = rows.find((r) => r.id !== alice);
    db.prepare("UPDATE users SET sealed = ? WHERE id = ?").run(m?.sealed ?? null, alice);
    await assert.rejects(store.getUserById(alice), { name: "IntegrityError" });
    const a = rows.find((r) => r.id === alice);
    db.prepare("UPDATE users SET sealed = ?, usage = ? WHERE id = ?").run(a?.sealed ?? null, m?.usage ?? null, alice);
    await assert.rejects(store.getUserById(alice), { name: "IntegrityError" }, "another user's usage record");
    db.close();
    await store.close();
  });

  it("a sealer's index and records differ per domain", () => {
    const s = testSealer();
    assert.ok(!s.index("user", "x").equals(s.index("group", "x")));
    const ct = s.seal("user", "id", Buffer.from("v"));
    assert.throws(() => s.open("group", "id", ct), { name: "IntegrityError" });
    assert.throws(() => s.open("user", "id2", ct), { name: "IntegrityError" });
    assert.equal(s.open("user", "id", ct).toString(), "v");
  });
});

describe("sealed API tokens, S3 key owners and bans (migration 13)", () => {
  it("an upgraded schema-12 store keeps its tokens, keys and bans, and its file holds none of their names", async () => {
    const dir = await tempDir();
    dirs.push(dir);
    const path = join(dir, "meta.db");
    const db = new DatabaseSync(path);
    for (const m of migrations.slice(0, 12)) db.exec(m);
    db.exec("PRAGMA user_version = 12");
    db.prepare(
      `INSERT INTO api_tokens (id, user_name, name, secret_hash, scopes, paths, created_at, expires_at, last_used_at)
       VALUES ('t1', 'tokenowner-canary', 'backup-canary-label', x'00', '["files:read"]', '["/payroll-canary"]', 1, 2, NULL)`,
    ).run();
    db.prepare(
      `INSERT INTO s3_keys (access_key_id, user_id, user_name, secret_ct, created_at)
       VALUES ('AKIA1', 'u1', 's3owner-canary', x'01', 't')`,
    ).run();
    db.prepare(
      "INSERT INTO bans (kind, subject, since, until, count, expiry_audited) VALUES ('user', 'banned-canary', 1, 99, 2, 0)",
    ).run();
    db.prepare(
      "INSERT INTO bans (kind, subject, since, until, count, expiry_audited) VALUES ('ip', '203.0.113.77', 1, 50, 1, 1)",
    ).run();
    db.close();
    const store = await openTestStore(path);
    const t = await store.getApiToken("t1");
    assert.deepEqual(
      [t?.user, t?.name, t?.scopes, t?.paths],
      ["tokenowner-canary", "backup-canary-label", ["files:read"], ["/payroll-canary"]],
    );
    assert.equal((await store.listApiTokens("tokenowner-canary")).length, 1);
    assert.equal((await store.listApiTokens("someone")).length, 0);
    assert.equal((await store.listS3Keys("s3owner-canary"))[0]?.accessKeyId, "AKIA1");
    assert.equal((await store.getS3Key("AKIA1"))?.userName, "s3owner-canary");
    assert.deepEqual(
      (await store.listBans()).map((b) => [b.kind, b.subject, b.until]),
      [
        ["ip", "203.0.113.77", 50],
        ["user", "banned-canary", 99],
      ],
    );
    assert.equal((await store.getBan("user", "banned-canary"))?.count, 2);
    await store.transaction(async (tx) => {
      assert.equal(await tx.deleteBan("ip", "203.0.113.77"), true);
      await tx.putApiToken({ ...(t as NonNullable<typeof t>), lastUsedAt: 5 });
    });
    assert.equal((await store.getApiToken("t1"))?.lastUsedAt, 5);
    await store.close();
    const bytes = Buffer.concat([await readFile(path), await readFile(`${path}-wal`).catch(() => Buffer.alloc(0))]);
    for (const c of [
      "tokenowner-canary",
      "backup-canary-label",
      "payroll-canary",
      "s3owner-canary",
      "banned-canary",
      "203.0.113.77",
    ]) {
      assert.equal(bytes.indexOf(Buffer.from(c)), -1, c);
    }
  });
});

describe("sealed OpenPGP key rows (migration 15)", () => {
  it("an upgraded schema-14 store keeps its public keys; owner and user ids leave the file", async () => {
    const dir = await tempDir();
    dirs.push(dir);
    const path = join(dir, "meta.db");
    const db = new DatabaseSync(path);
    for (const m of migrations.slice(0, 14)) db.exec(m);
    db.exec("PRAGMA user_version = 14");
    db.prepare(
      `INSERT INTO pgp_keys (fingerprint, owner_kind, owner_name, armored, user_ids, algorithm, created_at, expires_at,
         revoked, certified_by, source, imported_at)
       VALUES ('ab12', 'user', 'pgpowner-canary', 'ARMORED-canary', '["Dana <dana-canary@example.org>"]', 'ed25519',
         't', NULL, 0, '[]', 'import', 't')`,
    ).run();
    db.close();
    const store = await openTestStore(path);
    const k = await store.getPgpKey("ab12");
    assert.deepEqual(
      [k?.ownerName, k?.userIds, k?.armored, k?.expiresAt],
      ["pgpowner-canary", ["Dana <dana-canary@example.org>"], "ARMORED-canary", null],
    );
    await store.transaction((tx) =>
      tx.putPgpKey({ ...(k as NonNullable<typeof k>), fingerprint: "0a", ownerName: "b" }),
    );
    assert.deepEqual(
      (await store.listPgpKeys()).map((r) => r.fingerprint),
      ["0a", "ab12"],
    );
    await store.close();
    const bytes = Buffer.concat([await readFile(path), await readFile(`${path}-wal`).catch(() => Buffer.alloc(0))]);
    for (const c of ["pgpowner-canary", "dana-canary", "ARMORED-canary"])
      assert.equal(bytes.indexOf(Buffer.from(c)), -1, c);
  });
});

describe("sealed trigger rule specs (migration 16)", () => {
  it("an upgraded schema-15 store keeps its rules (spec, secrets, last firing); the spec leaves the file", async () => {
    const dir = await tempDir();
    dirs.push(dir);
    const path = join(dir, "meta.db");
    const db = new DatabaseSync(path);
    for (const m of migrations.slice(0, 15)) db.exec(m);
    db.exec("PRAGMA user_version = 15");
    db.prepare(
      `INSERT INTO trigger_rules (name, spec, secrets, enabled, last_fired_at, created_at, updated_at)
       VALUES ('nightly', '{"paths":["/finance-canary/**"],"url":"https://hooks.canary.example"}', x'0102', 1, 1234, 'c', 'u')`,
    ).run();
    db.close();
    const store = await openTestStore(path);
    const rule = await store.getTriggerRule("nightly");
    assert.equal(rule?.spec, '{"paths":["/finance-canary/**"],"url":"https://hooks.canary.example"}');
    assert.deepEqual(
      [rule?.secrets, rule?.enabled, rule?.lastFiredAt, rule?.createdAt],
      [Buffer.from([1, 2]), true, 1234, "c"],
    );
    assert.deepEqual(
      (await store.listTriggerRules()).map((r) => r.name),
      ["nightly"],
    );
    await store.close();
    const bytes = Buffer.concat([await readFile(path), await readFile(`${path}-wal`).catch(() => Buffer.alloc(0))]);
    for (const c of ["finance-canary", "hooks.canary"]) assert.equal(bytes.indexOf(Buffer.from(c)), -1, c);
  });
});

describe("sealed share link secrets (migration 17)", () => {
  it("an upgraded schema-16 store keeps its shares (password hash, allow list, counters); both leave the file", async () => {
    const dir = await tempDir();
    dirs.push(dir);
    const path = join(dir, "meta.db");
    const db = new DatabaseSync(path);
    for (const m of migrations.slice(0, 16)) db.exec(m);
    db.exec("PRAGMA user_version = 16");
    db.prepare(
      `INSERT INTO shares (id, secret_hash, owner_id, node_id, kind, password_hash, expires_at, allow_download,
         allow_upload, max_downloads, downloads, max_uploads, uploads, allow_from, created_at, last_used_at)
       VALUES ('sh1', x'0a0b', 'u1', 'n1', 'file', '$argon2id$canary-hash', 99, 1, 0, 5, 2, 0, 0,
         '["203.0.113.77/32"]', 10, NULL)`,
    ).run();
    db.close();
    const store = await openTestStore(path);
    const s = await store.getShare("sh1");
    assert.deepEqual(
      [s?.passwordHash, s?.allowFrom, s?.expiresAt, s?.downloads, s?.maxDownloads, s?.lastUsedAt, s?.allowUpload],
      ["$argon2id$canary-hash", ["203.0.113.77/32"], 99, 2, 5, null, false],
    );
    assert.ok(s?.secretHash.equals(Buffer.from([10, 11])));
    assert.deepEqual(
      (await store.listShares("u1")).map((r) => r.id),
      ["sh1"],
    );
    assert.equal(await store.transaction((tx) => tx.countShareUse("sh1", "download", 1, 50)), true);
    assert.equal((await store.getShare("sh1"))?.downloads, 3);
    await store.close();
    const bytes = Buffer.concat([await readFile(path), await readFile(`${path}-wal`).catch(() => Buffer.alloc(0))]);
    for (const c of ["canary-hash", "203.0.113.77", "$argon2"]) assert.equal(bytes.indexOf(Buffer.from(c)), -1, c);
  });
});

describe("sealed E2EE sync user names and region usage (migration 18)", () => {
  const names = ["canary-sync-owner", "canary-sync-member"];
  const scan = async (path: string) => {
    const bytes = Buffer.concat([await readFile(path), await readFile(`${path}-wal`).catch(() => Buffer.alloc(0))]);
    for (const c of [...names, "canary-sync"]) assert.equal(bytes.indexOf(Buffer.from(c)), -1, c);
  };
  const check = async (store: Awaited<ReturnType<typeof openTestStore>>, used: number) => {
    const [owner, member] = names as [string, string];
    assert.deepEqual(
      (await store.listSyncDevices(owner)).map((d) => [d.id, d.user, d.state]),
      [["dev1", owner, "active"]],
    );
    assert.deepEqual((await store.getSyncDeviceByToken("tok1"))?.user, owner);
    assert.deepEqual(
      (await store.listSyncChain(owner)).map((l) => [l.user, l.seq, l.link]),
      [[owner, 0, "{}"]],
    );
    assert.deepEqual(await store.listSyncChain(member), []);
    const r = await store.getSyncRegion("reg1");
    assert.deepEqual([r?.owner, r?.usedBytes, r?.keepVersions, r?.keepDays], [owner, used, 3, 2]);
    assert.deepEqual(
      (await store.listSyncRegions(member)).map((g) => g.id),
      ["reg1"],
    );
    assert.deepEqual(await store.listSyncMembers("reg1"), [member, owner]);
    assert.equal(await store.syncBytesOwnedBy(owner), used);
    assert.equal(await store.syncBytesOwnedBy(member), 0);
  };

  it("an upgraded schema-17 store keeps devices, chains, regions and members; names and used bytes leave the file", async () => {
    const dir = await tempDir();
    dirs.push(dir);
    const path = join(dir, "meta.db");
    const db = new DatabaseSync(path);
    for (const m of migrations.slice(0, 17)) db.exec(m);
    db.exec("PRAGMA user_version = 17");
    const [owner, member] = names as [string, string];
    db.prepare(
      "INSERT INTO sync_devices (id, user_name, cert, state, token_id, created_at) VALUES ('dev1', ?, '{}', 'active', 'tok1', 1)",
    ).run(owner);
    db.prepare("INSERT INTO sync_chain (user_name, seq, link) VALUES (?, 0, '{}')").run(owner);
    db.prepare(
      `INSERT INTO sync_regions (id, owner, version, keep_versions, keep_days, legal_hold, used_bytes, created_at)
       VALUES ('reg1', ?, 4, 3, 2, 0, 7654321, 1)`,
    ).run(owner);
    db.prepare("INSERT INTO sync_members (region_id, user_name) VALUES ('reg1', ?), ('reg1', ?)").run(owner, member);
    db.close();
    const store = await openTestStore(path);
    await check(store, 7_654_321);
    // writes through the new columns: the usage record keeps its length whatever the number
    const before = new DatabaseSync(path, { readOnly: true });
    const len = (before.prepare("SELECT length(used) AS n FROM sync_regions").get() as { n: number }).n;
    before.close();
    const g = (await store.getSyncRegion("reg1")) as NonNullable<Awaited<ReturnType<typeof store.getSyncRegion>>>;
    await store.transaction((tx) => tx.putSyncRegion({ ...g, usedBytes: 12 }));
    await check(store, 12);
    await store.close();
    const after = new DatabaseSync(path, { readOnly: true });
    assert.equal((after.prepare("SELECT length(used) AS n FROM sync_regions").get() as { n: number }).n, len);
    after.close();
    await scan(path);
    const bytes = await readFile(path);
    assert.equal(bytes.indexOf(Buffer.from("7654321")), -1);
  });
});
