// SSE-C (customer-provided keys) with awscli s3api: the exact bytes back with the key, the awscli error without it or
// with another key, HEAD likewise, the headers echoed; SFTP and HTTPS users see the object but cannot read it; the key
// appears nowhere under the data dir (raw, hex or base64), in the logs or in the audit.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../../helpers/atrest.ts";
import { makeClientKey, run, runSftpBatch } from "../../helpers/sftp-clients.ts";

let dir: string;
let data: string;
let server: RunningServer;
let env: NodeJS.ProcessEnv;
let endpoint: string;
let keyFile: string;
// awscli takes the key as given (base64-encoding it and adding the MD5 itself): 32 ASCII bytes, or fileb:// for raw
const textKey = randomBytes(24).toString("base64"); // 32 characters
const rawKey = randomBytes(32);
let rawKeyFile: string;
const otherKey = randomBytes(24).toString("base64");

const aws = (args: string[]) => run("aws", ["--endpoint-url", endpoint, ...args], { env, timeoutMs: 120_000 });
const ssec = (key: string) => ["--sse-customer-algorithm", "AES256", "--sse-customer-key", key];

before(async () => {
  dir = await tempDir("atrest-s3-ssec-");
  data = join(dir, "data");
  await cli(["init", "--data", data]);
  keyFile = await makeClientKey(join(dir, "keys"));
  await cli(["user", "add", "alice", "--public-key", `${keyFile}.pub`, "--data", data]);
  const { stdout } = await cli(["user", "s3-key", "add", "alice", "--data", data]);
  const id = /access key id: +(\S+)/.exec(stdout)?.[1];
  const secret = /secret access key: +(\S+)/.exec(stdout)?.[1];
  assert.ok(id && secret, stdout);
  server = await startServer(data, ["--s3-port", "auto", "--s3-tls", "off"], {
    ...process.env,
    ATREST_TEST_MODE: "1",
    ATREST_TEST_SSE_C_OVER_HTTP: "1",
  });
  for (let i = 0; i < 100 && !/s3 listening/.test(server.output()); i++) await new Promise((r) => setTimeout(r, 100));
  const m = /atrest: s3 listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(server.output());
  assert.ok(m, server.output());
  endpoint = m[1] as string;
  const config = join(dir, "aws-config");
  await writeFile(config, "[default]\nregion = us-east-1\ns3 =\n  signature_version = s3v4\n");
  rawKeyFile = join(dir, "raw.key");
  await writeFile(rawKeyFile, rawKey);
  env = {
    ...process.env,
    AWS_ACCESS_KEY_ID: id,
    AWS_SECRET_ACCESS_KEY: secret,
    AWS_CONFIG_FILE: config,
    AWS_SHARED_CREDENTIALS_FILE: join(dir, "none"),
    AWS_EC2_METADATA_DISABLED: "true",
  };
  const r = await aws(["s3", "mb", "s3://vault"]);
  assert.equal(r.code, 0, r.stderr);
});

after(async () => {
  await server?.stop();
  await removeDir(dir);
});

test("put-object / get-object / head-object with the customer key: the exact bytes, the headers echoed", async () => {
  const body = randomBytes(2 * 1024 * 1024 + 3);
  const local = join(dir, "secret.bin");
  await writeFile(local, body);
  let r = await aws([
    "s3api",
    "put-object",
    "--bucket",
    "vault",
    "--key",
    "a/secret.bin",
    "--body",
    local,
    ...ssec(textKey),
  ]);
  assert.equal(r.code, 0, r.stderr);
  const put = JSON.parse(r.stdout);
  assert.equal(put.SSECustomerAlgorithm, "AES256");
  const md5 = createHash("md5").update(Buffer.from(textKey)).digest("base64");
  assert.equal(put.SSECustomerKeyMD5, md5);
  assert.equal(put.ServerSideEncryption, undefined);
  const back = join(dir, "secret.back");
  r = await aws(["s3api", "get-object", "--bucket", "vault", "--key", "a/secret.bin", ...ssec(textKey), back]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).SSECustomerKeyMD5, md5);
  assert.ok(body.equals(await readFile(back)));
  r = await aws([
    "s3api",
    "get-object",
    "--bucket",
    "vault",
    "--key",
    "a/secret.bin",
    "--range",
    "bytes=1000-1999",
    ...ssec(textKey),
    back,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(body.subarray(1000, 2000).equals(await readFile(back)));
  r = await aws(["s3api", "head-object", "--bucket", "vault", "--key", "a/secret.bin", ...ssec(textKey)]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).ContentLength, body.length);
  assert.equal(JSON.parse(r.stdout).SSECustomerAlgorithm, "AES256");
  // a raw binary key (fileb://)
  r = await aws([
    "s3api",
    "put-object",
    "--bucket",
    "vault",
    "--key",
    "raw.bin",
    "--body",
    local,
    ...ssec(`fileb://${rawKeyFile}`),
  ]);
  assert.equal(r.code, 0, r.stderr);
  r = await aws([
    "s3api",
    "get-object",
    "--bucket",
    "vault",
    "--key",
    "raw.bin",
    ...ssec(`fileb://${rawKeyFile}`),
    back,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(body.equals(await readFile(back)));
  // the listing shows the objects
  r = await aws(["s3", "ls", "s3://vault", "--recursive"]);
  assert.match(r.stdout, /a\/secret\.bin/);
});

test("without the key, or with another one: the S3 errors, and no data", async () => {
  const back = join(dir, "nokey.back");
  let r = await aws(["s3api", "get-object", "--bucket", "vault", "--key", "a/secret.bin", back]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /InvalidRequest/);
  assert.match(r.stderr, /Server Side Encryption/);
  r = await aws(["s3api", "get-object", "--bucket", "vault", "--key", "a/secret.bin", ...ssec(otherKey), back]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /InvalidRequest/);
  r = await aws(["s3api", "head-object", "--bucket", "vault", "--key", "a/secret.bin"]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /400/);
  r = await aws(["s3api", "head-object", "--bucket", "vault", "--key", "a/secret.bin", ...ssec(otherKey)]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /400/);
  // a key for an object stored without one
  const plain = join(dir, "plain.txt");
  await writeFile(plain, "plain\n");
  r = await aws(["s3api", "put-object", "--bucket", "vault", "--key", "plain.txt", "--body", plain]);
  assert.equal(r.code, 0, r.stderr);
  r = await aws(["s3api", "get-object", "--bucket", "vault", "--key", "plain.txt", ...ssec(textKey), back]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /InvalidArgument/);
});

test("a bad MD5, a bad algorithm or a short key is refused before anything is written", async () => {
  const local = join(dir, "x.txt");
  await writeFile(local, "x\n");
  const key = Buffer.from(textKey);
  const md5 = createHash("md5").update(key).digest("base64");
  const curlPut = async (headers: Record<string, string>) => {
    // awscli always sends a matching MD5: a presigned-free raw request through the SDK's signer is simplest via aws
    // s3api with --sse-customer-key-md5 override
    const args = ["s3api", "put-object", "--bucket", "vault", "--key", "x.txt", "--body", local];
    for (const [k, v] of Object.entries(headers)) args.push(k, v);
    return aws(args);
  };
  let r = await curlPut({
    "--sse-customer-algorithm": "AES256",
    "--sse-customer-key": textKey,
    "--sse-customer-key-md5": createHash("md5").update("other").digest("base64"),
  });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /InvalidArgument/);
  r = await curlPut({
    "--sse-customer-algorithm": "AES128",
    "--sse-customer-key": textKey,
    "--sse-customer-key-md5": md5,
  });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /InvalidEncryptionAlgorithmError/);
  r = await curlPut({ "--sse-customer-algorithm": "AES256", "--sse-customer-key": "short" });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /InvalidArgument/);
  r = await aws(["s3api", "head-object", "--bucket", "vault", "--key", "x.txt"]);
  assert.match(r.stderr, /404/);
});

test("upload-part-copy from an SSE-C object into an SSE-C upload with another key: both keys needed, the exact bytes", async () => {
  const body = randomBytes(5 * 1024 * 1024 + 4321);
  const local = join(dir, "mp-src.bin");
  await writeFile(local, body);
  let r = await aws([
    "s3api",
    "put-object",
    "--bucket",
    "vault",
    "--key",
    "mp/src.bin",
    "--body",
    local,
    ...ssec(textKey),
  ]);
  assert.equal(r.code, 0, r.stderr);
  r = await aws(["s3api", "create-multipart-upload", "--bucket", "vault", "--key", "mp/dst.bin", ...ssec(otherKey)]);
  assert.equal(r.code, 0, r.stderr);
  const uploadId = JSON.parse(r.stdout).UploadId as string;
  const sourceKey = ["--copy-source-sse-customer-algorithm", "AES256", "--copy-source-sse-customer-key"];
  const copyPart = (n: number, range: string, extra: string[]) =>
    aws([
      "s3api",
      "upload-part-copy",
      "--bucket",
      "vault",
      "--key",
      "mp/dst.bin",
      "--upload-id",
      uploadId,
      "--part-number",
      String(n),
      "--copy-source",
      "vault/mp/src.bin",
      "--copy-source-range",
      range,
      ...extra,
    ]);
  const first = `bytes=0-${5 * 1024 * 1024 - 1}`;
  // without the source's key, with the destination's key as the source's, without the upload's key: 400
  for (const extra of [ssec(otherKey), [...sourceKey, otherKey, ...ssec(otherKey)], [...sourceKey, textKey]]) {
    r = await copyPart(1, first, extra);
    assert.notEqual(r.code, 0, `refused: ${extra.filter((a) => a.startsWith("--")).join(" ")}`);
    assert.match(r.stderr, /\(Invalid(Request|Argument)\)/);
  }
  const parts = [];
  for (const [n, range] of [
    [1, first],
    [2, `bytes=${5 * 1024 * 1024}-${body.length - 1}`],
  ] as const) {
    r = await copyPart(n, range, [...sourceKey, textKey, ...ssec(otherKey)]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.SSECustomerAlgorithm, "AES256");
    parts.push({ PartNumber: n, ETag: out.CopyPartResult.ETag });
  }
  const layout = join(dir, "mp-parts.json");
  await writeFile(layout, JSON.stringify({ Parts: parts }));
  r = await aws([
    "s3api",
    "complete-multipart-upload",
    "--bucket",
    "vault",
    "--key",
    "mp/dst.bin",
    "--upload-id",
    uploadId,
    "--multipart-upload",
    `file://${layout}`,
    ...ssec(otherKey),
  ]);
  assert.equal(r.code, 0, r.stderr);
  const back = join(dir, "mp-dst.back");
  r = await aws(["s3api", "get-object", "--bucket", "vault", "--key", "mp/dst.bin", ...ssec(otherKey), back]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(body.equals(await readFile(back)), "the copy's bytes");
  // the source's key does not open the copy
  r = await aws(["s3api", "get-object", "--bucket", "vault", "--key", "mp/dst.bin", ...ssec(textKey), back]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /InvalidRequest/);
});

test("SFTP sees the object in the listing but reading it gives a clear error", async () => {
  const b = await runSftpBatch({
    port: server.port,
    user: "alice",
    keyFile,
    commands: ["ls -l vault/a", `get vault/a/secret.bin ${join(dir, "via-sftp")}`],
  });
  assert.match(b.stdout, /secret\.bin/);
  assert.notEqual(b.code, 0);
  // OpenSSH shows the status code only; the status message names the customer key, and the audit the reason
  assert.match(b.stderr, /remote open .*secret\.bin.*Permission denied/, b.stderr);
});

test("the customer keys are nowhere under the data dir, in the server's output or in the audit", async () => {
  const needles: Buffer[] = [];
  for (const k of [Buffer.from(textKey), rawKey]) {
    needles.push(k, Buffer.from(k.toString("hex")), Buffer.from(k.toString("base64")));
  }
  needles.push(Buffer.from(textKey)); // the text form awscli was given
  const walk = async (d: string): Promise<string[]> => {
    const out: string[] = [];
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) out.push(...(await walk(p)));
      else if (e.isFile()) out.push(p);
    }
    return out;
  };
  const files = await walk(data);
  assert.ok(files.length > 5);
  for (const f of files) {
    // a file the live server removes between the walk and the read (a lock, a staged blob) holds nothing any more
    const gone = (e: NodeJS.ErrnoException) => {
      if (e.code === "ENOENT") return undefined;
      throw e;
    };
    const size = (await stat(f).catch(gone))?.size;
    if (size === undefined || size > 64 * 1024 * 1024) continue;
    const content = await readFile(f).catch(gone);
    if (!content) continue;
    for (const n of needles) assert.equal(content.indexOf(n), -1, `${f} holds a customer key`);
  }
  const out = Buffer.from(server.output());
  for (const n of needles) assert.equal(out.indexOf(n), -1, "server output holds a customer key");
  const { stdout } = await cli(["audit", "tail", "-n", "500", "--format", "json", "--data", data]);
  for (const n of needles) assert.ok(!stdout.includes(n.toString()), "audit holds a customer key");
  const records = stdout
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));
  const up = records.find((e) => e.action === "upload" && e.path === "/vault/a/secret.bin" && e.outcome === "success");
  assert.equal(up?.detail, "sse-c");
  assert.match(up?.keyRef ?? "", /^kek:default:v1$/);
  const down = records.find((e) => e.action === "download" && e.path === "/vault/a/secret.bin" && e.size > 0);
  assert.equal(down?.detail, "sse-c");
  const refused = records.find((e) => e.action === "download" && e.protocol === "sftp" && e.outcome === "failure");
  assert.equal(refused?.reason, "KEY_REQUIRED");
});
