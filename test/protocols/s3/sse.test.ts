// Server-side encryption headers of the S3 door with awscli: SSE-KMS (--sse aws:kms --sse-kms-key-id K lands under K,
// as `atrest keys who-can-decrypt` shows), SSE-S3 (--sse AES256 = the folder's key), keys the user may not name, and
// the headers echoed on PUT, GET and HEAD.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../../helpers/atrest.ts";
import { makeClientKey, run } from "../../helpers/sftp-clients.ts";

let dir: string;
let data: string;
let server: RunningServer;
let env: NodeJS.ProcessEnv;
let endpoint: string;

const aws = (args: string[]) => run("aws", ["--endpoint-url", endpoint, ...args], { env, timeoutMs: 120_000 });

async function whoCanDecrypt(path: string): Promise<{ keyRef: string; headerKeyRef: string }> {
  return JSON.parse((await cli(["keys", "who-can-decrypt", path, "--json", "--data", data])).stdout);
}

before(async () => {
  dir = await tempDir("atrest-s3-sse-");
  data = join(dir, "data");
  await cli(["init", "--data", data]);
  const keyFile = await makeClientKey(join(dir, "keys"));
  for (const k of ["finance", "projects", "secret"]) await cli(["kms", "key", "create", k, "--data", data]);
  await cli(["user", "add", "alice", "--public-key", `${keyFile}.pub`, "--data", data]);
  // the bucket's folder: its own key, and one more key S3 clients may name for an object
  await cli(["folder", "add", "/alice/enc", "--key", "finance", "--allow-key", "projects", "--data", data]);
  const { stdout } = await cli(["user", "s3-key", "add", "alice", "--data", data]);
  const id = /access key id: +(\S+)/.exec(stdout)?.[1];
  const secret = /secret access key: +(\S+)/.exec(stdout)?.[1];
  assert.ok(id && secret, stdout);
  server = await startServer(data, ["--s3-port", "auto", "--s3-tls", "off"]);
  for (let i = 0; i < 100 && !/s3 listening/.test(server.output()); i++) await new Promise((r) => setTimeout(r, 100));
  const m = /atrest: s3 listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(server.output());
  assert.ok(m, server.output());
  endpoint = m[1] as string;
  const config = join(dir, "aws-config");
  await writeFile(config, "[default]\nregion = us-east-1\ns3 =\n  signature_version = s3v4\n");
  env = {
    ...process.env,
    AWS_ACCESS_KEY_ID: id,
    AWS_SECRET_ACCESS_KEY: secret,
    AWS_CONFIG_FILE: config,
    AWS_SHARED_CREDENTIALS_FILE: join(dir, "none"),
    AWS_EC2_METADATA_DISABLED: "true",
  };
  // `folder add` made /alice/enc: the bucket exists
  const r = await aws(["s3api", "head-bucket", "--bucket", "enc"]);
  assert.equal(r.code, 0, r.stderr);
});

after(async () => {
  await server?.stop();
  await removeDir(dir);
});

test("aws s3 cp --sse aws:kms --sse-kms-key-id K lands under K; GET and HEAD echo it", async () => {
  const local = join(dir, "kms.bin");
  const body = randomBytes(3 * 1024 * 1024 + 11);
  await writeFile(local, body);
  let r = await aws(["s3", "cp", local, "s3://enc/kms.bin", "--sse", "aws:kms", "--sse-kms-key-id", "projects"]);
  assert.equal(r.code, 0, r.stderr);
  const who = await whoCanDecrypt("/alice/enc/kms.bin");
  assert.equal(who.keyRef, "kek:projects:v1");
  assert.equal(who.headerKeyRef, "kek:projects:v1");
  r = await aws(["s3api", "head-object", "--bucket", "enc", "--key", "kms.bin"]);
  assert.equal(r.code, 0, r.stderr);
  const head = JSON.parse(r.stdout);
  assert.equal(head.ServerSideEncryption, "aws:kms");
  assert.equal(head.SSEKMSKeyId, "projects");
  const back = join(dir, "kms.back");
  r = await aws(["s3api", "get-object", "--bucket", "enc", "--key", "kms.bin", back]);
  assert.equal(r.code, 0, r.stderr);
  const got = JSON.parse(r.stdout);
  assert.equal(got.ServerSideEncryption, "aws:kms");
  assert.equal(got.SSEKMSKeyId, "projects");
  assert.ok(body.equals(await readFile(back)));
  // an ARN-style key id names the same key
  r = await aws([
    "s3api",
    "put-object",
    "--bucket",
    "enc",
    "--key",
    "arn.bin",
    "--body",
    local,
    "--server-side-encryption",
    "aws:kms",
    "--ssekms-key-id",
    "arn:aws:kms:us-east-1:000000000000:key/projects",
  ]);
  assert.equal(r.code, 0, r.stderr);
  const put = JSON.parse(r.stdout);
  assert.equal(put.ServerSideEncryption, "aws:kms");
  assert.equal(put.SSEKMSKeyId, "projects");
  assert.equal((await whoCanDecrypt("/alice/enc/arn.bin")).keyRef, "kek:projects:v1");
});

test("--sse AES256 and no header both take the folder's key and echo AES256", async () => {
  const local = join(dir, "s3.txt");
  await writeFile(local, "sse-s3 object\n");
  let r = await aws(["s3", "cp", local, "s3://enc/aes.txt", "--sse", "AES256"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await whoCanDecrypt("/alice/enc/aes.txt")).keyRef, "kek:finance:v1");
  r = await aws(["s3api", "put-object", "--bucket", "enc", "--key", "plain.txt", "--body", local]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).ServerSideEncryption, "AES256");
  assert.equal((await whoCanDecrypt("/alice/enc/plain.txt")).keyRef, "kek:finance:v1");
  for (const key of ["aes.txt", "plain.txt"]) {
    r = await aws(["s3api", "head-object", "--bucket", "enc", "--key", key]);
    assert.equal(JSON.parse(r.stdout).ServerSideEncryption, "AES256");
    assert.equal(JSON.parse(r.stdout).SSEKMSKeyId, undefined);
  }
  // aws:kms without a key id: the folder's key (AWS would take its managed key)
  r = await aws(["s3", "cp", local, "s3://enc/kms-default.txt", "--sse", "aws:kms"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await whoCanDecrypt("/alice/enc/kms-default.txt")).keyRef, "kek:finance:v1");
});

test("a key the user may not name, a bad name or a bad mode is refused and nothing is written", async () => {
  const local = join(dir, "no.txt");
  await writeFile(local, "no\n");
  const put = (extra: string[]) =>
    aws(["s3api", "put-object", "--bucket", "enc", "--key", "no.txt", "--body", local, ...extra]);
  let r = await put(["--server-side-encryption", "aws:kms", "--ssekms-key-id", "secret"]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /AccessDenied/);
  r = await put(["--server-side-encryption", "aws:kms", "--ssekms-key-id", "No Such Key!"]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /KMS\.NotFoundException/);
  r = await put(["--server-side-encryption", "AES256", "--ssekms-key-id", "projects"]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /InvalidArgument/);
  r = await aws(["s3api", "head-object", "--bucket", "enc", "--key", "no.txt"]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /404/);
});

test("bucket default encryption: put, get, applies to new objects, delete", async () => {
  const local = join(dir, "bd.txt");
  await writeFile(local, "bucket default\n");
  let r = await aws(["s3api", "get-bucket-encryption", "--bucket", "enc"]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /ServerSideEncryptionConfigurationNotFoundError/);
  const conf = (alg: string, key?: string) =>
    JSON.stringify({
      Rules: [{ ApplyServerSideEncryptionByDefault: { SSEAlgorithm: alg, ...(key ? { KMSMasterKeyID: key } : {}) } }],
    });
  r = await aws([
    "s3api",
    "put-bucket-encryption",
    "--bucket",
    "enc",
    "--server-side-encryption-configuration",
    conf("aws:kms", "secret"),
  ]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /AccessDenied/);
  r = await aws([
    "s3api",
    "put-bucket-encryption",
    "--bucket",
    "enc",
    "--server-side-encryption-configuration",
    conf("aws:kms", "projects"),
  ]);
  assert.equal(r.code, 0, r.stderr);
  r = await aws(["s3api", "get-bucket-encryption", "--bucket", "enc"]);
  assert.equal(r.code, 0, r.stderr);
  const got = JSON.parse(r.stdout).ServerSideEncryptionConfiguration.Rules[0].ApplyServerSideEncryptionByDefault;
  assert.deepEqual(got, { SSEAlgorithm: "aws:kms", KMSMasterKeyID: "projects" });
  // a PUT without SSE headers takes the bucket's default; one with headers keeps its own choice
  r = await aws(["s3", "cp", local, "s3://enc/bd.txt"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await whoCanDecrypt("/alice/enc/bd.txt")).keyRef, "kek:projects:v1");
  r = await aws(["s3api", "head-object", "--bucket", "enc", "--key", "bd.txt"]);
  assert.equal(JSON.parse(r.stdout).SSEKMSKeyId, "projects");
  r = await aws(["s3", "cp", local, "s3://enc/bd-aes.txt", "--sse", "AES256"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await whoCanDecrypt("/alice/enc/bd-aes.txt")).keyRef, "kek:finance:v1");
  r = await aws(["s3api", "delete-bucket-encryption", "--bucket", "enc"]);
  assert.equal(r.code, 0, r.stderr);
  r = await aws(["s3api", "get-bucket-encryption", "--bucket", "enc"]);
  assert.match(r.stderr, /ServerSideEncryptionConfigurationNotFoundError/);
  r = await aws(["s3", "cp", local, "s3://enc/bd2.txt"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await whoCanDecrypt("/alice/enc/bd2.txt")).keyRef, "kek:finance:v1");
  // malformed configuration
  r = await aws([
    "s3api",
    "put-bucket-encryption",
    "--bucket",
    "enc",
    "--server-side-encryption-configuration",
    conf("aws:kms:dsse"),
  ]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /MalformedXML/);
});

test("SSE-C over plain HTTP is refused as AWS refuses it (no test switch in this server)", async () => {
  const local = join(dir, "c.txt");
  await writeFile(local, "c\n");
  const key = randomBytes(24).toString("base64");
  const r = await aws([
    "s3api",
    "put-object",
    "--bucket",
    "enc",
    "--key",
    "c.txt",
    "--body",
    local,
    "--sse-customer-algorithm",
    "AES256",
    "--sse-customer-key",
    key,
  ]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /InvalidRequest/);
  assert.match(r.stderr, /secure connection/);
});

test("the upload audit names the SSE mode and the key; the download its key", async () => {
  const { stdout } = await cli(["audit", "tail", "-n", "500", "--format", "json", "--data", data]);
  const records = stdout
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));
  const up = records.find((e) => e.action === "upload" && e.path === "/enc/kms.bin" && e.outcome === "success");
  assert.equal(up?.protocol, "s3");
  assert.equal(up?.detail, "sse aws:kms key projects");
  assert.equal(up?.keyRef, "kek:projects:v1");
  const aes = records.find((e) => e.action === "upload" && e.path === "/enc/aes.txt" && e.outcome === "success");
  assert.equal(aes?.detail, "sse AES256");
  assert.equal(aes?.keyRef, "kek:finance:v1");
  const down = records.find((e) => e.action === "download" && e.path === "/enc/kms.bin" && e.size > 0);
  assert.equal(down?.keyRef, "kek:projects:v1");
  const bd = records.find((e) => e.action === "upload" && e.path === "/enc/bd.txt" && e.outcome === "success");
  assert.equal(bd?.detail, "sse aws:kms key projects (bucket default)");
  const conf = records.find((e) => e.action === "attrs.change" && e.path === "/enc" && e.outcome === "success");
  assert.equal(conf?.detail, "encryption aws:kms key projects");
  const denied = records.find((e) => e.action === "upload" && e.path === "/enc/no.txt" && e.outcome === "failure");
  assert.equal(denied?.reason, "PERMISSION_DENIED");
});
