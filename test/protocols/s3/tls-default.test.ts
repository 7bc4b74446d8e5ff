// The S3 door is on by default (port 9000) over TLS with the server's certificate (issue 13 item 1): the HTTPS door's
// generated self-signed one unless --s3-tls-cert names another; its fingerprint is printed at start; awscli trusting
// <data>/tls/server.crt works, one that does not trust it fails. Plain HTTP only on loopback.
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { loadConfig } from "../../../src/config/config.ts";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../../helpers/atrest.ts";
import { addS3Key, type S3Key, s3PortOf } from "../../helpers/s3.ts";
import { run } from "../../helpers/sftp-clients.ts";

let dir: string;
let data: string;
let server: RunningServer;
let key: S3Key;

before(async () => {
  dir = await tempDir("atrest-s3-tls-");
  data = join(dir, "data");
  await cli(["init", "--data", data]);
  await cli(["user", "add", "dora", "--password-stdin", "--data", data], "pw-dora-0123456789\n");
  key = await addS3Key(data, "dora");
  // no --s3-tls, no certificate: TLS with the server's own
  server = await startServer(data, ["--s3-port", "auto"]);
});

after(async () => {
  await server?.stop();
  await removeDir(dir);
});

test("defaults: S3 on 9000 over TLS, region us-east-1, virtual-hosted names under s3.localhost and localhost", () => {
  const c = loadConfig({}, undefined, {});
  assert.equal(c.s3Port, 9000);
  assert.equal(c.s3Tls, "on");
  assert.equal(c.s3Region, "us-east-1");
  assert.equal(c.s3Domain, "s3.localhost,localhost");
  assert.throws(() => loadConfig({ s3Tls: "off", host: "0.0.0.0" }, undefined, {}), /loopback/);
  assert.throws(() => loadConfig({ s3TlsCert: "/x.pem" }, undefined, {}), /go together/);
  assert.equal(loadConfig({ s3Port: "0" }, undefined, {}).s3Port, 0);
});

test("the S3 door serves HTTPS with the server's certificate and prints its fingerprint", async () => {
  const port = await s3PortOf(server);
  for (let i = 0; i < 100 && !/s3 tls certificate/.test(server.output()); i++)
    await new Promise((r) => setTimeout(r, 50));
  const out = server.output();
  assert.match(out, /atrest: s3 listening on https:\/\/127\.0\.0\.1:\d+/);
  const https = /atrest: tls certificate (SHA256:[0-9A-F:]+)/.exec(out)?.[1];
  const s3 = /atrest: s3 tls certificate (SHA256:[0-9A-F:]+) \(the server's certificate\)/.exec(out)?.[1];
  assert.ok(https && s3, out);
  assert.equal(s3, https);
  const certFile = join(data, "tls", "server.crt");
  const cert = new X509Certificate(await readFile(certFile));
  assert.equal(`SHA256:${cert.fingerprint256}`, s3);
  const config = join(dir, "aws-config");
  await writeFile(config, "[default]\nregion = us-east-1\ns3 =\n  signature_version = s3v4\n");
  const env = {
    ...process.env,
    AWS_ACCESS_KEY_ID: key.id,
    AWS_SECRET_ACCESS_KEY: key.secret,
    AWS_CONFIG_FILE: config,
    AWS_SHARED_CREDENTIALS_FILE: join(dir, "none"),
    AWS_EC2_METADATA_DISABLED: "true",
    AWS_CA_BUNDLE: certFile,
  };
  const endpoint = `https://127.0.0.1:${port}`;
  let r = await run("aws", ["--endpoint-url", endpoint, "s3", "mb", "s3://tlsb"], { env });
  assert.equal(r.code, 0, r.stderr);
  await writeFile(join(dir, "f.txt"), "over tls");
  r = await run("aws", ["--endpoint-url", endpoint, "s3", "cp", join(dir, "f.txt"), "s3://tlsb/f.txt"], { env });
  assert.equal(r.code, 0, r.stderr);
  r = await run("aws", ["--endpoint-url", endpoint, "s3", "cp", "s3://tlsb/f.txt", "-"], { env });
  assert.equal(r.stdout, "over tls");
  // curl trusting the certificate reaches the door (an unsigned request: 403 S3 XML); without it, no connection
  r = await run("curl", ["-s", "--cacert", certFile, `${endpoint}/tlsb`]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /<Code>AccessDenied<\/Code>|<Code>SignatureDoesNotMatch<\/Code>/);
  r = await run("curl", ["-s", `${endpoint}/tlsb`], { env: { ...process.env, CURL_CA_BUNDLE: "" } });
  assert.equal(r.code, 60, `curl exit ${r.code}: the self-signed certificate must not be trusted by default`);
});
