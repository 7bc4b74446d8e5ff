// The S3 door against real clients: awscli (s3 and s3api), curl on presigned URLs, OpenSSH sftp on the same files.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../../helpers/atrest.ts";
import { makeClientKey, run, runSftpBatch } from "../../helpers/sftp-clients.ts";

let dir: string;
let data: string;
let server: RunningServer;
let s3Port: number;
let env: NodeJS.ProcessEnv;
let keyFile: string;
let accessKeyId: string;
let secret: string;

async function addKey(user: string): Promise<{ id: string; secret: string }> {
  const { stdout } = await cli(["user", "s3-key", "add", user, "--data", data]);
  const id = /access key id: +(\S+)/.exec(stdout)?.[1];
  const sec = /secret access key: +(\S+)/.exec(stdout)?.[1];
  assert.ok(id && sec, stdout);
  return { id, secret: sec };
}

const endpoint = () => `http://127.0.0.1:${s3Port}`;
const aws = (args: string[], e: NodeJS.ProcessEnv = env) =>
  run("aws", ["--endpoint-url", endpoint(), ...args], { env: e, timeoutMs: 120_000 });

before(async () => {
  dir = await tempDir("atrest-s3-");
  data = join(dir, "data");
  await cli(["init", "--data", data]);
  keyFile = await makeClientKey(join(dir, "keys"));
  await cli(["user", "add", "alice", "--public-key", `${keyFile}.pub`, "--data", data]);
  await cli(["user", "add", "bob", "--public-key", `${keyFile}.pub`, "--data", data]);
  const k = await addKey("alice");
  accessKeyId = k.id;
  secret = k.secret;
  server = await startServer(data, ["--s3-port", "auto", "--s3-tls", "off"]);
  for (let i = 0; i < 100 && !/s3 listening/.test(server.output()); i++) await new Promise((r) => setTimeout(r, 100));
  const m = /atrest: s3 listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(server.output());
  assert.ok(m, server.output());
  s3Port = Number(m[1]);
  const config = join(dir, "aws-config");
  // single PUTs up to 64 MiB (multipart uploads are not served yet)
  await writeFile(
    config,
    "[default]\nregion = us-east-1\ns3 =\n  multipart_threshold = 64MB\n  signature_version = s3v4\n",
  );
  env = {
    ...process.env,
    AWS_ACCESS_KEY_ID: accessKeyId,
    AWS_SECRET_ACCESS_KEY: secret,
    AWS_CONFIG_FILE: config,
    AWS_SHARED_CREDENTIALS_FILE: join(dir, "none"),
    AWS_EC2_METADATA_DISABLED: "true",
  };
});

after(async () => {
  await server?.stop();
  await removeDir(dir);
});

test("s3-key list shows ids and never the secret", async () => {
  const { stdout } = await cli(["user", "s3-key", "list", "--data", data]);
  assert.match(stdout, new RegExp(`^${accessKeyId}\\talice\\t`, "m"));
  assert.ok(!stdout.includes(secret));
});

test("aws s3: mb, cp up and down (20 MiB, byte-identical), ls, rm, rb", async () => {
  let r = await aws(["s3", "mb", "s3://photos"]);
  assert.equal(r.code, 0, r.stderr);
  const local = join(dir, "big.bin");
  const body = randomBytes(20 * 1024 * 1024 + 7);
  await writeFile(local, body);
  r = await aws(["s3", "cp", local, "s3://photos/2026/big.bin", "--only-show-errors"]);
  assert.equal(r.code, 0, r.stderr);
  r = await aws(["s3", "ls", "s3://photos", "--recursive"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, / 20971527 2026\/big\.bin$/m);
  r = await aws(["s3", "ls"]);
  assert.match(r.stdout, / photos$/m);
  const back = join(dir, "big.back");
  r = await aws(["s3", "cp", "s3://photos/2026/big.bin", back, "--only-show-errors"]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(body.equals(await readFile(back)));
  r = await aws(["s3api", "head-object", "--bucket", "photos", "--key", "2026/big.bin"]);
  assert.equal(JSON.parse(r.stdout).ContentLength, body.length);
  r = await aws([
    "s3api",
    "get-object",
    "--bucket",
    "photos",
    "--key",
    "2026/big.bin",
    "--range",
    "bytes=100-199",
    join(dir, "part"),
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(body.subarray(100, 200).equals(await readFile(join(dir, "part"))));
  r = await aws(["s3", "rb", "s3://photos"]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /BucketNotEmpty/);
  r = await aws(["s3", "rm", "s3://photos/2026/big.bin"]);
  assert.equal(r.code, 0, r.stderr);
  r = await aws(["s3api", "head-object", "--bucket", "photos", "--key", "2026/big.bin"]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /404/);
  r = await aws(["s3", "rb", "s3://photos", "--force"]);
  assert.equal(r.code, 0, r.stderr);
  r = await aws(["s3", "ls"]);
  assert.doesNotMatch(r.stdout, /photos/);
});

test("aws s3 sync of 300 files up and back", async () => {
  const src = join(dir, "tree");
  for (let i = 0; i < 300; i++) {
    const sub = join(src, `d${i % 7}`);
    await import("node:fs/promises").then((fs) => fs.mkdir(sub, { recursive: true }));
    await writeFile(join(sub, `f${i}.txt`), `file ${i} ${randomBytes(i).toString("hex")}`);
  }
  let r = await aws(["s3", "mb", "s3://sync"]);
  assert.equal(r.code, 0, r.stderr);
  r = await aws(["s3", "sync", src, "s3://sync/", "--only-show-errors"]);
  assert.equal(r.code, 0, r.stderr);
  r = await aws(["s3", "ls", "s3://sync", "--recursive"]);
  assert.equal(r.stdout.trim().split("\n").length, 300);
  const dst = join(dir, "tree.back");
  r = await aws(["s3", "sync", "s3://sync/", dst, "--only-show-errors"]);
  assert.equal(r.code, 0, r.stderr);
  for (let i = 0; i < 300; i += 37) {
    const rel = join(`d${i % 7}`, `f${i}.txt`);
    assert.deepEqual(await readFile(join(dst, rel)), await readFile(join(src, rel)));
  }
  // a second sync finds nothing to do
  r = await aws(["s3", "sync", src, "s3://sync/"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), "");
});

test("wrong secret, unknown key and removed key are refused as SignatureDoesNotMatch and audited", async () => {
  let r = await aws(["s3", "ls"], { ...env, AWS_SECRET_ACCESS_KEY: `${secret.slice(0, -2)}xx` });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /SignatureDoesNotMatch/);
  r = await aws(["s3", "ls"], { ...env, AWS_ACCESS_KEY_ID: "AKAAAAAAAAAAAAAAAAAA" });
  assert.match(r.stderr, /SignatureDoesNotMatch/);
  const other = await addKey("alice");
  const e2 = { ...env, AWS_ACCESS_KEY_ID: other.id, AWS_SECRET_ACCESS_KEY: other.secret };
  r = await aws(["s3", "ls"], e2);
  assert.equal(r.code, 0, r.stderr);
  await cli(["user", "s3-key", "rm", "alice", other.id, "--data", data]);
  r = await aws(["s3", "ls"], e2);
  assert.match(r.stderr, /SignatureDoesNotMatch/);
  const { stdout } = await cli(["audit", "logins", "alice", "--data", data, "--format", "json"]);
  const events = stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
  assert.ok(events.some((e) => e.outcome === "failure" && e.protocol === "s3" && e.reason === "bad signature"));
  assert.ok(events.some((e) => e.outcome === "success" && e.protocol === "s3" && e.method === "s3-sigv4"));
  assert.ok(!stdout.includes(secret) && !stdout.includes(other.secret));
});

test("presigned GET with curl: the bytes; tampered or expired URL refused", async () => {
  await aws(["s3", "mb", "s3://share"]);
  const local = join(dir, "shared.txt");
  await writeFile(local, "shared content\n");
  let r = await aws(["s3", "cp", local, "s3://share/a b+c.txt"]);
  assert.equal(r.code, 0, r.stderr);
  // A long-lived URL for the reads and a 1 s one for expiry: on a loaded machine awscli's own start-up can outlast a
  // short expiry before curl runs.
  r = await aws(["s3", "presign", "s3://share/a b+c.txt", "--expires-in", "300"]);
  const url = r.stdout.trim();
  r = await aws(["s3", "presign", "s3://share/a b+c.txt", "--expires-in", "1"]);
  const shortLived = r.stdout.trim();
  const got = await run("curl", ["-s", "-f", url]);
  assert.equal(got.code, 0, got.stderr);
  assert.equal(got.stdout, "shared content\n");
  const tampered = await run("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", url.replace("a%20b", "a%20c")]);
  assert.equal(tampered.stdout, "403");
  await new Promise((res) => setTimeout(res, 2000));
  const expired = await run("curl", ["-s", shortLived]);
  assert.match(expired.stdout, /<Code>AccessDenied<\/Code>.*expired/s);
});

test("a bad Content-MD5 or a cut body leaves no object behind", async () => {
  await aws(["s3", "mb", "s3://bad"]);
  const local = join(dir, "payload");
  await writeFile(local, randomBytes(1000));
  const r = await aws([
    "s3api",
    "put-object",
    "--bucket",
    "bad",
    "--key",
    "x",
    "--body",
    local,
    "--content-md5",
    "1B2M2Y8AsgTpgAmY7PhCfg==",
  ]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /BadDigest/);
  const ls = await aws(["s3api", "list-objects-v2", "--bucket", "bad"]);
  assert.equal(ls.code, 0, ls.stderr);
  assert.equal(JSON.parse(ls.stdout || "{}").KeyCount ?? 0, 0);
});

test("same file over S3 and SFTP: written by one, read by the other", async () => {
  await aws(["s3", "mb", "s3://both"]);
  const local = join(dir, "via-s3.bin");
  const body = randomBytes(300_000);
  await writeFile(local, body);
  let r = await aws(["s3", "cp", local, "s3://both/in/via-s3.bin"]);
  assert.equal(r.code, 0, r.stderr);
  const back = join(dir, "via-sftp.back");
  const sftpPort = server.port;
  const fromSftp = join(dir, "via-sftp.bin");
  const body2 = randomBytes(123_457);
  await writeFile(fromSftp, body2);
  const b = await runSftpBatch({
    port: sftpPort,
    user: "alice",
    keyFile,
    commands: [`get both/in/via-s3.bin ${back}`, `put ${fromSftp} both/in/via-sftp.bin`],
  });
  assert.equal(b.code, 0, b.stderr);
  assert.ok(body.equals(await readFile(back)));
  const back2 = join(dir, "via-sftp.s3back");
  r = await aws(["s3", "cp", "s3://both/in/via-sftp.bin", back2]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(body2.equals(await readFile(back2)));
  // bob has his own home: alice's bucket is not his
  const bobKey = await addKey("bob");
  r = await aws(["s3", "ls"], { ...env, AWS_ACCESS_KEY_ID: bobKey.id, AWS_SECRET_ACCESS_KEY: bobKey.secret });
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stdout, /both/);
});

test("data dir holds no plaintext, object name or S3 secret", async () => {
  await aws(["s3", "mb", "s3://scan"]);
  const marker = `PLAINTEXT-MARKER-${randomBytes(8).toString("hex")}`;
  const local = join(dir, "marker.txt");
  await writeFile(local, marker.repeat(100));
  const name = `secret-object-name-${randomBytes(4).toString("hex")}`;
  const r = await aws(["s3", "cp", local, `s3://scan/${name}`]);
  assert.equal(r.code, 0, r.stderr);
  const needles = [marker, name, secret].map((s) => Buffer.from(s));
  const walkDir = async (d: string): Promise<string[]> => {
    const out: string[] = [];
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) out.push(...(await walkDir(p)));
      else if (e.isFile()) out.push(p);
    }
    return out;
  };
  for (const file of await walkDir(data)) {
    if ((await stat(file)).size > 64 * 1024 * 1024) continue;
    const content = await readFile(file);
    for (const n of needles) assert.equal(content.indexOf(n), -1, `${file} holds ${n.toString().slice(0, 20)}…`);
  }
});
