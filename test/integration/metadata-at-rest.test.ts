// What a disk thief reads in meta.db (issue 11 item 9): users, groups, folders, usage and password hashes are sealed
// rows behind blind indexes, names and attributes padded. Canary names, paths, sizes and quotas go in through the real
// doors (CLI, OpenSSH sftp, HTTPS); then every byte of meta.db and its WAL is scanned for them. And a meta.db written
// by the version before (schema 8, clear tables; test/store/fixtures/legacy-v8.tar.gz) upgrades and still works.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { App } from "../../src/app.ts";
import { SEAL_OVERHEAD } from "../../src/crypto/aead.ts";
import { bucketLength } from "../../src/crypto/padding.ts";
import { ATTRS_LENGTH } from "../../src/vfs/meta-crypto.ts";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { ApiClient } from "../helpers/https.ts";
import { makeClientKey, runSftpBatch } from "../helpers/sftp-clients.ts";
import { get } from "../helpers/vfs.ts";
import { Device } from "../sync/helpers.ts";

const execFileP = promisify(execFile);

/** meta.db and whatever SQLite keeps beside it (WAL, shared memory). */
async function metaFiles(data: string): Promise<{ name: string; bytes: Buffer }[]> {
  const out: { name: string; bytes: Buffer }[] = [];
  for (const name of await readdir(data)) {
    if (name.startsWith("meta.db")) out.push({ name, bytes: await readFile(join(data, name)) });
  }
  return out;
}

async function assertNoCanary(data: string, canaries: string[]): Promise<number> {
  const files = await metaFiles(data);
  assert.ok(files.length >= 1);
  for (const { name, bytes } of files) {
    for (const c of canaries) {
      for (const needle of [Buffer.from(c), Buffer.from(c, "utf16le")]) {
        assert.equal(bytes.indexOf(needle), -1, `"${c}" found in ${name}`);
      }
    }
  }
  return files.reduce((n, f) => n + f.bytes.length, 0);
}

/** Every node's name ciphertext is a bucket's length, every attributes ciphertext the one fixed length. */
function assertPadded(data: string): number {
  const db = new DatabaseSync(join(data, "meta.db"), { readOnly: true });
  try {
    const rows = db.prepare("SELECT length(name_ct) AS n, length(attrs_ct) AS a FROM nodes").all() as {
      n: number;
      a: number;
    }[];
    for (const r of rows) {
      const body = r.n - SEAL_OVERHEAD;
      assert.equal(bucketLength(body - 1), body, `name ciphertext of ${r.n} bytes is not a bucket`);
      assert.equal(r.a, ATTRS_LENGTH + SEAL_OVERHEAD);
    }
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[];
    assert.deepEqual(
      tables.filter((t) => t.name.startsWith("legacy_")),
      [],
    );
    return rows.length;
  } finally {
    db.close();
  }
}

describe("metadata at rest: a disk thief's view of meta.db", () => {
  let dir: string;
  let data: string;
  let key: string;
  let server: RunningServer;
  const tag = randomBytes(4).toString("hex");
  const user = `canaryuser${tag}`;
  const home = `/canaryhome-${tag}`;
  const group = `canarygroup${tag}`;
  const folder = `/shared/finance-payroll-${tag}`;
  const dirName = `board-minutes-${tag}`;
  const fileName = `salaries-${tag}.csv`;
  const quota = 987_654_321;
  // sizes whose digits would show in a clear usage column or a JSON size record
  const sizes = [314_159, 27_183];
  const password = `Pw-${tag}-correct horse`;
  const tokenLabel = `nightly-backup-${tag}`;
  const sharePassword = `share-pw-${tag}`;

  before(async () => {
    dir = await tempDir("atrest-meta-rest-");
    data = join(dir, "data");
    key = await makeClientKey(join(dir, "keys"));
    await cli(["init", "--data", data]);
    await cli(["group", "add", group, "--data", data]);
    await cli(
      [
        ...["user", "add", user, "--password-stdin", "--public-key", `${key}.pub`, "--home", home],
        ...["--group", group, "--quota-bytes", String(quota), "--perm", "/:*", "--data", data],
      ],
      `${password}\n`,
    );
    await cli(["folder", "add", folder, "--data", data]);
    server = await startServer(data);
  });
  after(async () => {
    await server?.stop();
    await removeDir(dir);
  });

  it("holds no user name, home, group, folder path, quota, usage, file name or password hash; every door works", async () => {
    const files = sizes.map((n, i) => ({ name: `${i}-${fileName}`, body: randomBytes(n) }));
    for (const f of files) await writeFile(join(dir, f.name), f.body);
    const r = await runSftpBatch({
      port: server.port,
      user,
      keyFile: key,
      cwd: dir,
      commands: [`mkdir ${dirName}`, ...files.map((f) => `put ${f.name} ${dirName}/${f.name}`)],
      timeoutMs: 60_000,
    });
    assert.equal(r.code, 0, r.stderr);
    // HTTPS with the password (the sealed hash is what verifies it)
    const api = await ApiClient.forData(server.httpPort, data);
    assert.equal((await api.login(user, password)).status, 200);
    const got = await api.req("GET", `/api/v1/files/${dirName}/${files[0]?.name}`);
    assert.equal(got.status, 200);
    assert.ok(got.body.equals(files[0]?.body as Buffer));
    // an API token with a canary label and path prefix, and an S3 access key: both name the user
    const issued = await api.req("POST", "/api/v1/tokens", {
      json: { name: tokenLabel, scopes: ["files:read"], paths: [`/${dirName}`] },
    });
    assert.equal(issued.status, 201, issued.body.toString());
    const bearer = api.fresh();
    bearer.bearer = issued.json<{ token: string }>().token;
    assert.equal((await bearer.req("GET", `/api/v1/files/${dirName}/${files[0]?.name}`)).status, 200);
    assert.match((await cli(["user", "s3-key", "add", user, "--data", data])).stdout, /AKIA|access key/i);
    assert.match((await cli(["user", "s3-key", "list", user, "--data", data])).stdout, new RegExp(user));
    // a share link with a password and a source allow list (migration 17: both sealed); the link still works
    const shareIp = `198.51.100.${1 + (Number.parseInt(tag.slice(0, 2), 16) % 250)}`;
    const made = await api.req("POST", "/api/v1/shares", {
      json: {
        path: `/${dirName}/${files[0]?.name}`,
        password: sharePassword,
        allowFrom: ["127.0.0.1", `${shareIp}/32`],
      },
    });
    assert.equal(made.status, 201, made.body.toString());
    const link = made.json<{ link: string }>().link;
    const visit = await api.fresh().req("GET", `/api/v1/s/${link}/download`, {
      headers: { "x-share-password": sharePassword },
    });
    assert.equal(visit.status, 200, visit.body.toString());
    assert.ok(visit.body.equals(files[0]?.body as Buffer));
    const listed = await api.req("GET", "/api/v1/shares");
    assert.match(listed.body.toString(), new RegExp(shareIp.replaceAll(".", "\\.")));
    // usage is exact (sealed, not approximated)
    const list = await cli(["user", "list", "--data", data]);
    assert.match(list.stdout, new RegExp(`${sizes[0] + sizes[1]}/${quota} bytes, 2/∞ files`));
    assert.match((await cli(["folder", "list", "--data", data])).stdout, new RegExp(folder));
    assert.match((await cli(["group", "list", "--data", data])).stdout, new RegExp(`${group}.*${user}`));

    const publicKey = (await readFile(`${key}.pub`, "utf8")).split(" ")[1] as string;
    const canaries = [
      user,
      home.slice(1),
      group,
      folder,
      `finance-payroll-${tag}`,
      dirName,
      fileName,
      String(quota),
      String(sizes[0]),
      String(sizes[1]),
      String(sizes[0] + sizes[1]),
      "$argon2",
      publicKey.slice(0, 40),
      tokenLabel,
      shareIp,
      sharePassword,
    ];
    // live (the WAL holds the recent pages), then after a clean stop
    const live = await assertNoCanary(data, canaries);
    await server.stop();
    const stopped = await assertNoCanary(data, canaries);
    const nodes = assertPadded(data);
    assert.ok(live > 0 && stopped > 0 && nodes >= 5, `${live} / ${stopped} bytes, ${nodes} nodes`);
    server = await startServer(data);
    const again = await runSftpBatch({
      port: server.port,
      user,
      keyFile: key,
      cwd: dir,
      commands: [`get ${dirName}/${files[1]?.name} back.bin`],
      timeoutMs: 60_000,
    });
    assert.equal(again.code, 0, again.stderr);
    assert.ok((await readFile(join(dir, "back.bin"))).equals(files[1]?.body as Buffer));
    // an E2EE sync device, region and upload of the user (migration 18: names and the region's used bytes sealed)
    const device = new Device(dir, user, "laptop");
    const enrolled = await device.enroll(
      `https://127.0.0.1:${server.httpPort}`,
      join(data, "tls", "server.crt"),
      password,
    );
    assert.ok(device.id, enrolled.stderr);
    const region = (await device.run(["region", "create", "canary-region"])).stdout.trim();
    await writeFile(join(device.dir, "synced.bin"), randomBytes(4096));
    await device.sync(region);
    // device certificates, chain links and manifests are the clients' signed JSON and name the user (and a manifest
    // the exact file sizes) by design (docs/sync-protocol.md, docs/threat-model.md "Still visible"); everything else
    // of the sync tables holds no canary (migration 18)
    await server.stop();
    const copy = join(dir, "sync-view.db");
    const view = new DatabaseSync(join(data, "meta.db"));
    view.exec(`VACUUM INTO '${copy}'`);
    view.close();
    const scrubbed = new DatabaseSync(copy);
    scrubbed.exec(
      "UPDATE sync_devices SET cert = ''; UPDATE sync_chain SET link = ''; UPDATE sync_manifests SET body = ''; VACUUM;",
    );
    const counts = scrubbed
      .prepare("SELECT (SELECT count(*) FROM sync_devices) AS d, (SELECT count(*) FROM sync_regions) AS r")
      .get() as { d: number; r: number };
    scrubbed.close();
    assert.deepEqual({ ...counts }, { d: 1, r: 1 });
    const bytes = await readFile(copy);
    for (const c of canaries) assert.equal(bytes.indexOf(Buffer.from(c)), -1, `"${c}" found in the sync tables`);
    server = await startServer(data);
  });
});

describe("metadata at rest: upgrading a schema-8 meta.db", () => {
  it("seals the clear rows, pads the old nodes, scrubs the file; users, folders, groups and files still work", async () => {
    const dir = await tempDir("atrest-meta-upgrade-");
    try {
      const data = join(dir, "data");
      await execFileP("mkdir", ["-p", data]);
      await execFileP("tar", [
        "xzf",
        join(import.meta.dirname, "..", "store", "fixtures", "legacy-v8.tar.gz"),
        "-C",
        data,
      ]);
      // made by the previous version: clear in meta.db
      const before = (await readFile(join(data, "meta.db"))).toString("latin1");
      for (const c of ["canaryuseralpha", "canaryhomeomega", "canarygroupzeta", "canary-folder-payroll", "$argon2"]) {
        assert.ok(before.includes(c), c);
      }
      const app = await App.open(data);
      try {
        assert.ok(await app.verifyPassword("canaryuseralpha", "CanaryPassw0rd!"));
        assert.equal(await app.verifyPassword("canaryuseralpha", "wrong"), undefined);
        const u = await app.store.getUser("canaryuseralpha");
        assert.equal(u?.home, "/canaryhomeomega");
        assert.deepEqual(u?.groups, ["canarygroupzeta"]);
        assert.deepEqual([u?.quotaBytes, u?.usedBytes, u?.usedFiles], [987_654_321, 26, 1]);
        assert.deepEqual(
          (await app.store.listFolders()).map((f) => f.path),
          ["/shared/canary-folder-payroll"],
        );
        assert.ok(await app.store.getGroup("canarygroupzeta"));
        const s = await app.openSession("canaryuseralpha", { protocol: "sftp", remoteAddress: "127.0.0.1" } as never);
        try {
          assert.deepEqual(
            (await s.list("/canary-dir-quartz")).map((e) => e.name),
            ["canary-file-ledger.txt"],
          );
          assert.equal(
            (await get(s, "/canary-dir-quartz/canary-file-ledger.txt")).toString(),
            "canary file content 12345\n",
          );
        } finally {
          await s.close();
        }
      } finally {
        await app.close();
      }
      await assertNoCanary(data, [
        "canaryuseralpha",
        "canaryhomeomega",
        "canarygroupzeta",
        "canary-folder-payroll",
        "987654321",
        "$argon2",
        "canary-dir-quartz",
        "canary-file-ledger",
      ]);
      assertPadded(data);
      // and the CLI of the new version reads it as before
      assert.match((await cli(["user", "list", "--data", data])).stdout, /canaryuseralpha\tuser\t\/canaryhomeomega/);
    } finally {
      await removeDir(dir);
    }
  });
});
