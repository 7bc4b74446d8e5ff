// S3 bucket versioning with real clients: awscli s3api put-bucket-versioning, put-object (version ids), list-object-versions,
// get-object --version-id, delete markers, deleting versions; OpenSSH sftp sees only the current file and its writes
// are versions too; a version's blob goes with it; versions survive a restart (the startup sweep keeps their blobs);
// the data dir holds no version's plaintext or key name.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../../helpers/atrest.ts";
import { addS3Key, s3PortOf } from "../../helpers/s3.ts";
import { makeClientKey, run, runSftpBatch } from "../../helpers/sftp-clients.ts";
import { storeBytes } from "../../helpers/store.ts";

let dir: string;
let data: string;
let server: RunningServer;
let s3Port: number;
let env: NodeJS.ProcessEnv;
let keyFile: string;
const BUCKET = "vers";
const KEY = `docs/report-${randomBytes(4).toString("hex")}.txt`;

const aws = async (args: string[]) => {
  const r = await run("aws", ["--endpoint-url", `http://127.0.0.1:${s3Port}`, ...args], { env, timeoutMs: 120_000 });
  return r;
};
const s3api = async (args: string[]): Promise<Record<string, unknown>> => {
  const r = await aws(["s3api", ...args, "--output", "json"]);
  assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
  return r.stdout.trim() ? (JSON.parse(r.stdout) as Record<string, unknown>) : {};
};
const sftp = (commands: string[]) => runSftpBatch({ port: server.port, user: "alice", keyFile, commands });

async function blobCount(): Promise<number> {
  let n = 0;
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (e.isDirectory()) await walk(join(d, e.name));
      else n++;
    }
  };
  await walk(join(data, "blobs"));
  return n;
}

async function start(): Promise<void> {
  server = await startServer(data, ["--s3-port", "auto", "--s3-tls", "off"]);
  s3Port = await s3PortOf(server);
}

before(async () => {
  dir = await tempDir("atrest-s3-versions-");
  data = join(dir, "data");
  await cli(["init", "--data", data]);
  keyFile = await makeClientKey(join(dir, "keys"));
  await cli(["user", "add", "alice", "--public-key", `${keyFile}.pub`, "--data", data]);
  const k = await addS3Key(data, "alice");
  const config = join(dir, "aws-config");
  await writeFile(config, "[default]\nregion = us-east-1\ns3 =\n  signature_version = s3v4\n");
  env = {
    ...process.env,
    AWS_ACCESS_KEY_ID: k.id,
    AWS_SECRET_ACCESS_KEY: k.secret,
    AWS_CONFIG_FILE: config,
    AWS_SHARED_CREDENTIALS_FILE: join(dir, "none"),
    AWS_EC2_METADATA_DISABLED: "true",
  };
  await start();
});

after(async () => {
  await server?.stop();
  if (dir) await removeDir(dir);
});

test("versions with awscli, sftp sees the current file, deletes leave markers, versions survive a restart", async () => {
  await s3api(["create-bucket", "--bucket", BUCKET]);
  // never enabled: no Status
  assert.equal((await s3api(["get-bucket-versioning", "--bucket", BUCKET])).Status, undefined);
  await s3api(["put-bucket-versioning", "--bucket", BUCKET, "--versioning-configuration", "Status=Enabled"]);
  assert.equal((await s3api(["get-bucket-versioning", "--bucket", BUCKET])).Status, "Enabled");

  const marker = `VERSION-ONE-PLAINTEXT-${randomBytes(8).toString("hex")}`;
  const bodies = [marker.repeat(50), `version two ${randomBytes(8).toString("hex")}`];
  const ids: string[] = [];
  for (const [i, body] of bodies.entries()) {
    const f = join(dir, `v${i}.txt`);
    await writeFile(f, body);
    const put = await s3api(["put-object", "--bucket", BUCKET, "--key", KEY, "--body", f]);
    assert.match(String(put.VersionId), /^[0-9a-f]{32}$/);
    ids.push(String(put.VersionId));
  }
  assert.notEqual(ids[0], ids[1]);

  // sftp shows the current version only, and an sftp upload is one more version
  const viaSftp = join(dir, "sftp.txt");
  await writeFile(viaSftp, "written over sftp");
  const got = join(dir, "got-sftp.txt");
  let b = await sftp([`get ${BUCKET}/${KEY} ${got}`, `ls -1 ${BUCKET}/docs`, `put ${viaSftp} ${BUCKET}/${KEY}`]);
  assert.equal(b.code, 0, b.stderr);
  assert.equal(await readFile(got, "utf8"), bodies[1]);
  assert.deepEqual(
    b.stdout
      .split("\n")
      .filter((l) => l.trim() && !l.startsWith("sftp>"))
      .map((l) => l.trim().split("/").pop()),
    [KEY.split("/").pop()],
  );

  let list = await s3api(["list-object-versions", "--bucket", BUCKET]);
  const versions = list.Versions as { Key: string; VersionId: string; IsLatest: boolean; Size: number }[];
  assert.equal(versions.length, 3);
  assert.ok(versions.every((v) => v.Key === KEY));
  assert.deepEqual(
    versions.map((v) => v.IsLatest),
    [true, false, false],
  );
  assert.deepEqual(
    versions.slice(1).map((v) => v.VersionId),
    [ids[1], ids[0]],
  );
  const sftpVersion = (versions[0] as { VersionId: string }).VersionId;

  // each version reads back by its id
  for (const [i, id] of ids.entries()) {
    const out = join(dir, `back-${i}.txt`);
    const r = await s3api(["get-object", "--bucket", BUCKET, "--key", KEY, "--version-id", id, out]);
    assert.equal(r.VersionId, id);
    assert.equal(await readFile(out, "utf8"), bodies[i]);
  }

  // a delete leaves a marker: the key is gone for every door, its versions stay
  const del = await s3api(["delete-object", "--bucket", BUCKET, "--key", KEY]);
  assert.equal(del.DeleteMarker, true);
  const head = await aws(["s3api", "head-object", "--bucket", BUCKET, "--key", KEY]);
  assert.notEqual(head.code, 0);
  assert.match(head.stderr, /404|Not Found/);
  b = await sftp([`ls ${BUCKET}/${KEY}`]);
  assert.notEqual(b.code, 0);
  list = await s3api(["list-object-versions", "--bucket", BUCKET]);
  assert.equal((list.Versions as unknown[]).length, 3);
  const markers = list.DeleteMarkers as { VersionId: string; IsLatest: boolean }[];
  assert.equal(markers.length, 1);
  assert.equal(markers[0]?.IsLatest, true);
  assert.equal(markers[0]?.VersionId, del.VersionId);

  // versions survive a restart: the startup sweep keeps their blobs
  await server.stop();
  await start();
  const afterRestart = join(dir, "after-restart.txt");
  await s3api(["get-object", "--bucket", BUCKET, "--key", KEY, "--version-id", ids[0] as string, afterRestart]);
  assert.equal(await readFile(afterRestart, "utf8"), bodies[0]);

  // deleting the marker brings the newest version back, over sftp too
  await s3api(["delete-object", "--bucket", BUCKET, "--key", KEY, "--version-id", String(del.VersionId)]);
  const back = join(dir, "back-sftp.txt");
  b = await sftp([`get ${BUCKET}/${KEY} ${back}`]);
  assert.equal(b.code, 0, b.stderr);
  assert.equal(await readFile(back, "utf8"), "written over sftp");

  // the data dir holds no version's plaintext and no key name
  const needles = [marker, KEY.split("/").pop() as string];
  const scan = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await scan(p);
      else {
        const bytes = await readFile(p);
        for (const n of needles) assert.ok(!bytes.includes(n), `${n} found in ${p}`);
      }
    }
  };
  await scan(data);

  // deleting a version deletes its blob; the bucket goes only once no version is left
  const blobs = await blobCount();
  await s3api(["delete-object", "--bucket", BUCKET, "--key", KEY, "--version-id", ids[0] as string]);
  assert.equal(await blobCount(), blobs - 1);
  const gone = await aws([
    "s3api",
    "get-object",
    "--bucket",
    BUCKET,
    "--key",
    KEY,
    "--version-id",
    ids[0] as string,
    join(dir, "x"),
  ]);
  assert.match(gone.stderr, /NoSuchVersion/);
  const rb = await aws(["s3api", "delete-bucket", "--bucket", BUCKET]);
  assert.match(rb.stderr, /BucketNotEmpty/);
  for (const id of [ids[1], sftpVersion]) {
    await s3api(["delete-object", "--bucket", BUCKET, "--key", KEY, "--version-id", id as string]);
  }
  list = await s3api(["list-object-versions", "--bucket", BUCKET]);
  assert.equal(list.Versions, undefined);
  assert.equal(await blobCount(), blobs - 3);
  await s3api(["delete-bucket", "--bucket", BUCKET]);
});

test("suspended versioning writes the version null, replacing the earlier null one", async () => {
  const bucket = "susp";
  await s3api(["create-bucket", "--bucket", bucket]);
  const f = join(dir, "s.txt");
  await writeFile(f, "before versioning");
  await s3api(["put-object", "--bucket", bucket, "--key", "k", "--body", f]);
  await s3api(["put-bucket-versioning", "--bucket", bucket, "--versioning-configuration", "Status=Enabled"]);
  await writeFile(f, "enabled");
  const enabled = String((await s3api(["put-object", "--bucket", bucket, "--key", "k", "--body", f])).VersionId);
  await s3api(["put-bucket-versioning", "--bucket", bucket, "--versioning-configuration", "Status=Suspended"]);
  const blobs = await blobCount();
  for (const body of ["suspended 1", "suspended 2"]) {
    await writeFile(f, body);
    const put = await s3api(["put-object", "--bucket", bucket, "--key", "k", "--body", f]);
    assert.equal(put.VersionId, undefined);
  }
  // the first "null" (written before versioning) was replaced by the suspended writes, which replaced each other
  assert.equal(await blobCount(), blobs);
  const versions = (await s3api(["list-object-versions", "--bucket", bucket])).Versions as { VersionId: string }[];
  assert.deepEqual(
    versions.map((v) => v.VersionId),
    ["null", enabled],
  );
  const out = join(dir, "s-null.txt");
  await s3api(["get-object", "--bucket", bucket, "--key", "k", "--version-id", "null", out]);
  assert.equal(await readFile(out, "utf8"), "suspended 2");
  // tags by version: the current one's and a noncurrent one's are set, read and removed, each on its own version
  const tagging = ["--tagging", "TagSet=[{Key=k,Value=v}]"];
  await s3api(["put-object-tagging", "--bucket", bucket, "--key", "k", "--version-id", "null", ...tagging]);
  const tags = await s3api(["get-object-tagging", "--bucket", bucket, "--key", "k", "--version-id", "null"]);
  assert.deepEqual(tags.TagSet, [{ Key: "k", Value: "v" }]);
  const old = await s3api(["get-object-tagging", "--bucket", bucket, "--key", "k", "--version-id", enabled]);
  assert.deepEqual(old.TagSet, []);
  const secret = `noncurrent-${randomBytes(6).toString("hex")}`;
  const set = await s3api([
    "put-object-tagging",
    "--bucket",
    bucket,
    "--key",
    "k",
    "--version-id",
    enabled,
    "--tagging",
    `TagSet=[{Key=project,Value=${secret}}]`,
  ]);
  assert.equal(set.VersionId, enabled);
  const tagged = await s3api(["get-object-tagging", "--bucket", bucket, "--key", "k", "--version-id", enabled]);
  assert.deepEqual(tagged.TagSet, [{ Key: "project", Value: secret }]);
  // the current version keeps its own tags, the old one its content and metadata
  const current = await s3api(["get-object-tagging", "--bucket", bucket, "--key", "k"]);
  assert.deepEqual(current.TagSet, [{ Key: "k", Value: "v" }]);
  const head = await s3api(["head-object", "--bucket", bucket, "--key", "k", "--version-id", enabled]);
  assert.equal(head.TagCount, 1);
  const back = join(dir, "s-enabled.txt");
  await s3api(["get-object", "--bucket", bucket, "--key", "k", "--version-id", enabled, back]);
  assert.equal(await readFile(back, "utf8"), "enabled");
  // sealed like the version's other attributes: not in the metadata store in the clear
  assert.ok(!(await storeBytes(data)).includes(secret));
  for (const f of (await readdir(data)).filter((n) => n.startsWith("meta.db"))) {
    assert.ok(!(await readFile(join(data, f))).includes(secret), f);
  }
  await s3api(["delete-object-tagging", "--bucket", bucket, "--key", "k", "--version-id", enabled]);
  const cleared = await s3api(["get-object-tagging", "--bucket", bucket, "--key", "k", "--version-id", enabled]);
  assert.deepEqual(cleared.TagSet, []);
  // a version that is not there
  const none = await aws([
    "s3api",
    "put-object-tagging",
    "--bucket",
    bucket,
    "--key",
    "k",
    "--version-id",
    "nosuchversion",
    ...tagging,
  ]);
  assert.match(none.stderr, /NoSuchVersion/);
});

test("key jobs cover kept versions: status counts them, rewrap and reencrypt move them, each reads back", async () => {
  const bucket = "keyv";
  await s3api(["create-bucket", "--bucket", bucket]);
  await s3api(["put-bucket-versioning", "--bucket", bucket, "--versioning-configuration", "Status=Enabled"]);
  const bodies = [randomBytes(70_000), randomBytes(1), randomBytes(200_000)];
  const ids: string[] = [];
  for (const [i, body] of bodies.entries()) {
    const f = join(dir, `kv${i}`);
    await writeFile(f, body);
    ids.push(String((await s3api(["put-object", "--bucket", bucket, "--key", "doc.bin", "--body", f])).VersionId));
  }
  // a version under a delete marker (the marker has no key and is counted nowhere)
  await writeFile(join(dir, "kvg"), "gone");
  const goneId = String(
    (await s3api(["put-object", "--bucket", bucket, "--key", "gone", "--body", join(dir, "kvg")])).VersionId,
  );
  await s3api(["delete-object", "--bucket", bucket, "--key", "gone"]);
  const readAll = async () => {
    for (const [i, id] of ids.entries()) {
      const out = join(dir, `kv-out${i}`);
      await s3api(["get-object", "--bucket", bucket, "--key", "doc.bin", "--version-id", id, out]);
      assert.deepEqual(await readFile(out), bodies[i], `version ${i}`);
    }
    const out = join(dir, "kvg-out");
    await s3api(["get-object", "--bucket", bucket, "--key", "gone", "--version-id", goneId, out]);
    assert.equal(await readFile(out, "utf8"), "gone");
  };
  type Count = { keyRef: string | null; files: number; current: boolean };
  const status = async () => JSON.parse((await cli(["keys", "status", "--json", "--data", data])).stdout) as Count[];
  type Shred = { count: number; files: { path: string; versionId?: string }[] };
  const shred = async (v: number) =>
    JSON.parse(
      (await cli(["keys", "shred-report", "--key", "default", "--version", String(v), "--json", "--data", data]))
        .stdout,
    ) as Shred;
  const ours = (r: Shred) =>
    r.files
      .filter((f) => f.path.includes(`/${bucket}/`))
      .map((f) => `${f.path.slice(f.path.indexOf(`/${bucket}/`))} ${f.versionId ?? "current"}`)
      .sort();
  const expected = [
    `/${bucket}/doc.bin ${ids[0]}`,
    `/${bucket}/doc.bin ${ids[1]}`,
    `/${bucket}/doc.bin current`,
    `/${bucket}/gone ${goneId}`,
  ].sort();

  const filesOn = (rows: Count[], ref: string) => rows.find((r) => r.keyRef === ref)?.files ?? 0;
  const all = filesOn(await status(), "kek:default:v1");
  assert.deepEqual(ours(await shred(1)), expected, "the shred report lists every kept version");
  assert.equal((await shred(1)).count, all, "status and the shred report count the same files");
  const docPath = (await shred(1)).files.find((f) => f.path.endsWith(`/${bucket}/doc.bin`))?.path as string;
  const who = async () =>
    JSON.parse((await cli(["keys", "who-can-decrypt", docPath, "--json", "--data", data])).stdout) as {
      noncurrentVersions?: { versionId: string; keyRef: string }[];
    };
  assert.deepEqual(
    (await who()).noncurrentVersions?.map((v) => `${v.versionId} ${v.keyRef}`).sort(),
    [`${ids[0]} kek:default:v1`, `${ids[1]} kek:default:v1`].sort(),
  );

  // rewrap: every version moves to v2; with v1 retired and the server restarted (no DEK cached), each still reads
  assert.match((await cli(["kms", "key", "rotate", "default", "--data", data])).stdout, /kek:default:v2/);
  const before = await status();
  assert.equal(filesOn(before, "kek:default:v1"), all);
  assert.equal(before.find((r) => r.keyRef === "kek:default:v1")?.current, false);
  const rw = JSON.parse((await cli(["keys", "rewrap", "--key", "default", "--json", "--data", data])).stdout);
  assert.equal(rw.keys[0].done, all);
  assert.equal(rw.keys[0].failed, 0);
  assert.deepEqual(
    (await status()).filter((r) => r.keyRef?.startsWith("kek:default:")),
    [{ keyRef: "kek:default:v2", files: all, current: true }],
  );
  assert.equal((await shred(1)).count, 0);
  assert.deepEqual(ours(await shred(2)), expected);
  assert.ok((await who()).noncurrentVersions?.every((v) => v.keyRef === "kek:default:v2"));
  await cli(["kms", "key", "policy", "default", "--min-decryption-version", "2", "--data", data]);
  await server.stop();
  await start();
  await readAll();

  // reencrypt: new blobs under v3 for every version, the old blobs gone, each version still reads
  assert.match((await cli(["kms", "key", "rotate", "default", "--data", data])).stdout, /kek:default:v3/);
  const blobs = await blobCount();
  const re = JSON.parse((await cli(["keys", "reencrypt", "--key", "default", "--json", "--data", data])).stdout);
  assert.equal(re.done, all);
  assert.equal(re.failed, 0);
  assert.deepEqual(
    (await status()).filter((r) => r.keyRef?.startsWith("kek:default:")),
    [{ keyRef: "kek:default:v3", files: all, current: true }],
  );
  assert.deepEqual(ours(await shred(3)), expected);
  assert.equal(await blobCount(), blobs);
  // reencrypt leaves the service keys (metadata, audit) to rewrap, which finds no file left to move
  const rest = JSON.parse((await cli(["keys", "rewrap", "--key", "default", "--json", "--data", data])).stdout);
  assert.equal(rest.keys[0].done, 0);
  await cli(["kms", "key", "policy", "default", "--min-decryption-version", "3", "--data", data]);
  await server.stop();
  await start();
  await readAll();
});
