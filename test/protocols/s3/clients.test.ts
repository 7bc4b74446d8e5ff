// The S3 door with more real clients (issue 13): awscli and s3cmd with virtual-hosted-style names
// (bucket.s3.localhost, through a loopback forward proxy: this machine's resolver does not map *.localhost),
// rclone's s3 backend, @aws-sdk/client-s3 from Node, a presigned GET made by `aws s3 presign`; files written over
// S3 read back over OpenSSH sftp and the other way round.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { type LoopbackProxy, type S3Atrest, startLoopbackProxy, startS3Atrest } from "../../helpers/s3.ts";
import { hashTree, makeTree, run, runSftpBatch } from "../../helpers/sftp-clients.ts";

let s3: S3Atrest;
let proxy: LoopbackProxy;
let awsEnv: NodeJS.ProcessEnv;
const USER = "carol";
const PASSWORD = `pw-${USER}-0123456789`;

before(async () => {
  s3 = await startS3Atrest({ prefix: "atrest-s3-clients-", users: [USER] });
  proxy = await startLoopbackProxy(s3.s3Port);
  const key = s3.keys[USER];
  assert.ok(key);
  const config = join(s3.dir, "aws-config");
  await writeFile(
    config,
    "[default]\nregion = us-east-1\ns3 =\n  addressing_style = virtual\n  signature_version = s3v4\n  multipart_threshold = 64MB\n",
  );
  // path-style straight to the door, SigV4 (awscli v1 presigns with SigV2 otherwise)
  await writeFile(join(s3.dir, "aws-path-config"), "[default]\nregion = us-east-1\ns3 =\n  signature_version = s3v4\n");
  awsEnv = {
    ...process.env,
    AWS_ACCESS_KEY_ID: key.id,
    AWS_SECRET_ACCESS_KEY: key.secret,
    AWS_CONFIG_FILE: config,
    AWS_SHARED_CREDENTIALS_FILE: join(s3.dir, "none"),
    AWS_EC2_METADATA_DISABLED: "true",
    HTTP_PROXY: proxy.url,
    http_proxy: proxy.url,
    NO_PROXY: "",
    no_proxy: "",
  };
});

after(async () => {
  await proxy?.close();
  await s3?.stop();
});

const virtualEndpoint = () => `http://s3.localhost:${s3.s3Port}`;
const aws = (args: string[]) =>
  run("aws", ["--endpoint-url", virtualEndpoint(), ...args], { env: awsEnv, timeoutMs: 120_000 });

test("awscli with addressing_style = virtual: bucket.s3.localhost requests, location, cp up and down", async () => {
  let r = await aws(["s3", "mb", "s3://vhost"]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(proxy.hosts.includes(`vhost.s3.localhost:${s3.s3Port}`), proxy.hosts.join(" "));
  r = await aws(["s3api", "get-bucket-location", "--bucket", "vhost"]);
  assert.equal(r.code, 0, r.stderr);
  // us-east-1 answers an empty LocationConstraint (awscli shows null)
  assert.equal(JSON.parse(r.stdout).LocationConstraint, null);
  const body = randomBytes(3 * 1024 * 1024 + 5);
  const local = join(s3.dir, "v.bin");
  await writeFile(local, body);
  r = await aws(["s3", "cp", local, "s3://vhost/dir/v.bin", "--only-show-errors"]);
  assert.equal(r.code, 0, r.stderr);
  r = await aws(["s3", "ls", "s3://vhost/dir/"]);
  assert.match(r.stdout, / 3145733 v\.bin$/m);
  r = await aws(["s3", "cp", "s3://vhost/dir/v.bin", `${local}.back`, "--only-show-errors"]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(body.equals(await readFile(`${local}.back`)));
  // the same object path-style, straight to the door
  r = await run(
    "aws",
    ["--endpoint-url", s3.endpoint, "s3api", "head-object", "--bucket", "vhost", "--key", "dir/v.bin"],
    {
      env: { ...awsEnv, HTTP_PROXY: "", http_proxy: "", AWS_CONFIG_FILE: join(s3.dir, "aws-path-config") },
      timeoutMs: 60_000,
    },
  );
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).ContentLength, body.length);
  r = await aws(["s3", "rb", "s3://vhost", "--force"]);
  assert.equal(r.code, 0, r.stderr);
});

test("s3cmd (host_bucket %(bucket)s.s3.localhost): mb, put, ls, get, sync, del, rb", async () => {
  const key = s3.keys[USER];
  assert.ok(key);
  const cfg = join(s3.dir, "s3cfg");
  await writeFile(
    cfg,
    [
      "[default]",
      `access_key = ${key.id}`,
      `secret_key = ${key.secret}`,
      `host_base = s3.localhost:${s3.s3Port}`,
      `host_bucket = %(bucket)s.s3.localhost:${s3.s3Port}`,
      "use_https = False",
      "signature_v2 = False",
      "bucket_location = us-east-1",
      "proxy_host = 127.0.0.1",
      `proxy_port = ${proxy.port}`,
      "",
    ].join("\n"),
  );
  const s3cmd = (args: string[]) => run("s3cmd", ["-c", cfg, "--no-progress", ...args], { timeoutMs: 120_000 });
  const before = proxy.hosts.length;
  let r = await s3cmd(["mb", "s3://cmdb"]);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const body = randomBytes(1024 * 1024 + 3);
  const local = join(s3.dir, "c.bin");
  await writeFile(local, body);
  r = await s3cmd(["put", local, "s3://cmdb/a/c.bin"]);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  r = await s3cmd(["ls", "-r", "s3://cmdb"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /1048579 +s3:\/\/cmdb\/a\/c\.bin/);
  r = await s3cmd(["get", "--force", "s3://cmdb/a/c.bin", `${local}.back`]);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.ok(body.equals(await readFile(`${local}.back`)));
  const tree = join(s3.dir, "cmdtree");
  await mkdir(tree);
  await makeTree(tree, 30);
  r = await s3cmd(["sync", `${tree}/`, "s3://cmdb/tree/"]);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const back = join(s3.dir, "cmdtree.back");
  await mkdir(back);
  r = await s3cmd(["sync", "s3://cmdb/tree/", `${back}/`]);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.deepEqual(await hashTree(back), await hashTree(tree));
  r = await s3cmd(["del", "--recursive", "--force", "s3://cmdb/"]);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  r = await s3cmd(["rb", "s3://cmdb"]);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.ok(
    proxy.hosts.slice(before).some((h) => h === `cmdb.s3.localhost:${s3.s3Port}`),
    proxy.hosts.slice(before).join(" "),
  );
});

test("rclone s3 backend: copy, check, lsf, sync, delete; S3 writes read over sftp and sftp writes over S3", async () => {
  const key = s3.keys[USER];
  assert.ok(key);
  const remote = `:s3,provider=Other,access_key_id=${key.id},secret_access_key=${key.secret},endpoint='${s3.endpoint}',force_path_style=true,region=us-east-1:`;
  // rclone's AWS SDK cannot apply a custom CA bundle to its transport (LoadCustomCABundleError): none for plain HTTP
  const { AWS_CA_BUNDLE: _ca, ...rcloneEnv } = process.env;
  const rclone = (args: string[]) =>
    run("rclone", ["--config", "/dev/null", "--low-level-retries", "1", "--retries", "1", ...args], {
      env: rcloneEnv,
      timeoutMs: 180_000,
    });
  const tree = join(s3.dir, "rtree");
  await mkdir(tree);
  await makeTree(tree, 40);
  await writeFile(join(tree, "big.bin"), randomBytes(12 * 1024 * 1024 + 1));
  let r = await rclone(["mkdir", `${remote}rcl`]);
  assert.equal(r.code, 0, r.stderr);
  // big.bin goes up as a multipart upload (3 parts of 5 MiB): OpenSSH sftp below reads the object stitched from them
  r = await rclone(["copy", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", tree, `${remote}rcl/t`]);
  assert.equal(r.code, 0, r.stderr);
  r = await rclone(["check", tree, `${remote}rcl/t`]);
  assert.equal(r.code, 0, r.stderr);
  r = await rclone(["lsf", "-R", "--files-only", `${remote}rcl/t`]);
  assert.equal(r.code, 0, r.stderr);
  const local = [...(await hashTree(tree)).keys()].sort();
  assert.deepEqual(r.stdout.trim().split("\n").sort(), local);
  // over sftp: what rclone wrote through S3
  const got = join(s3.dir, "via-sftp.bin");
  r = await runSftpBatch({
    port: s3.server.port,
    user: USER,
    password: PASSWORD,
    commands: [`get rcl/t/big.bin ${got}`, `put ${join(tree, "big.bin")} rcl/from-sftp.bin`],
    timeoutMs: 120_000,
  });
  assert.equal(r.code, 0, r.stderr);
  assert.ok((await readFile(got)).equals(await readFile(join(tree, "big.bin"))));
  // over S3: what sftp wrote
  const back = join(s3.dir, "from-sftp.back");
  r = await rclone(["copyto", `${remote}rcl/from-sftp.bin`, back]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok((await readFile(back)).equals(await readFile(join(tree, "big.bin"))));
  // sync with one file removed and one changed locally
  const names = local.filter((n) => n !== "big.bin");
  await writeFile(join(tree, names[0] as string), "changed");
  const { rm } = await import("node:fs/promises");
  await rm(join(tree, names[1] as string));
  r = await rclone(["sync", tree, `${remote}rcl/t`]);
  assert.equal(r.code, 0, r.stderr);
  r = await rclone(["check", tree, `${remote}rcl/t`]);
  assert.equal(r.code, 0, r.stderr);
  r = await rclone(["delete", `${remote}rcl`]);
  assert.equal(r.code, 0, r.stderr);
  r = await rclone(["lsf", "-R", `${remote}rcl`]);
  assert.equal(r.stdout.trim(), "");
});

test("@aws-sdk/client-s3 from Node: put, get, list, delete; a presigned GET (aws s3 presign) fetched, expired refused", async () => {
  const key = s3.keys[USER];
  assert.ok(key);
  const client = new S3Client({
    endpoint: s3.endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: key.id, secretAccessKey: key.secret },
  });
  try {
    await client.send(new CreateBucketCommand({ Bucket: "sdkb" }));
    const body = randomBytes(200_000);
    const put = await client.send(new PutObjectCommand({ Bucket: "sdkb", Key: "x/y.bin", Body: body }));
    assert.ok(put.ETag);
    const got = await client.send(new GetObjectCommand({ Bucket: "sdkb", Key: "x/y.bin" }));
    assert.ok(
      Buffer.from(await (got.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray()).equals(
        body,
      ),
    );
    const list = await client.send(new ListObjectsV2Command({ Bucket: "sdkb", Prefix: "x/" }));
    assert.deepEqual(
      list.Contents?.map((o) => [o.Key, o.Size]),
      [["x/y.bin", body.length]],
    );
    // a presigned GET from awscli (no presigner package here), fetched without credentials
    const env = { ...awsEnv, HTTP_PROXY: "", http_proxy: "", AWS_CONFIG_FILE: join(s3.dir, "aws-path-config") };
    let r = await run(
      "aws",
      ["--endpoint-url", s3.endpoint, "s3", "presign", "s3://sdkb/x/y.bin", "--expires-in", "300"],
      {
        env,
      },
    );
    assert.equal(r.code, 0, r.stderr);
    const res = await fetch(r.stdout.trim());
    assert.equal(res.status, 200);
    assert.ok(Buffer.from(await res.arrayBuffer()).equals(body));
    r = await run("aws", ["--endpoint-url", s3.endpoint, "s3", "presign", "s3://sdkb/x/y.bin", "--expires-in", "1"], {
      env,
    });
    await new Promise((done) => setTimeout(done, 2100));
    const expired = await fetch(r.stdout.trim());
    assert.equal(expired.status, 403);
    assert.match(await expired.text(), /AccessDenied/);
    await client.send(new DeleteObjectCommand({ Bucket: "sdkb", Key: "x/y.bin" }));
    const empty = await client.send(new ListObjectsV2Command({ Bucket: "sdkb" }));
    assert.equal(empty.KeyCount, 0);
  } finally {
    client.destroy();
  }
});
