// Bucket CORS with real clients: awscli s3api put/get/delete-bucket-cors, curl sending a browser's preflight OPTIONS
// to a presigned URL (aws s3 presign) and to a plain one (the bucket found by name), and a GET with Origin; the rules
// are sealed in the data dir.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { removeDir } from "../../helpers/atrest.ts";
import { type S3Server, startS3 } from "../../helpers/s3.ts";
import { run } from "../../helpers/sftp-clients.ts";

let s3: S3Server;
const origin = `https://app-${randomBytes(4).toString("hex")}.example`;

before(async () => {
  s3 = await startS3("atrest-s3-cors-");
});

after(async () => {
  await s3?.server.stop();
  if (s3) await removeDir(s3.dir);
});

/** curl -i: the status and the headers (lowercase names). */
async function curl(args: string[]): Promise<{ status: number; headers: Record<string, string> }> {
  const r = await run("curl", ["-s", "-i", ...args], { timeoutMs: 30_000 });
  assert.equal(r.code, 0, r.stderr);
  const head = r.stdout.split("\r\n\r\n")[0] ?? "";
  const [statusLine, ...lines] = head.split("\r\n");
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const at = l.indexOf(":");
    if (at > 0) headers[l.slice(0, at).trim().toLowerCase()] = l.slice(at + 1).trim();
  }
  return { status: Number(statusLine?.split(" ")[1]), headers };
}

test("bucket CORS: set, read, preflight and GET answered from the rules, removed", async () => {
  let r = await s3.aws(["s3", "mb", "s3://web"]);
  assert.equal(r.code, 0, r.stderr);
  const f = join(s3.dir, "obj.txt");
  await writeFile(f, "hello from atrest");
  r = await s3.aws(["s3", "cp", f, "s3://web/obj.txt"]);
  assert.equal(r.code, 0, r.stderr);
  r = await s3.aws(["s3api", "get-bucket-cors", "--bucket", "web"]);
  assert.match(r.stderr, /NoSuchCORSConfiguration/);

  const config = join(s3.dir, "cors.json");
  await writeFile(
    config,
    JSON.stringify({
      CORSRules: [
        {
          AllowedOrigins: [origin],
          AllowedMethods: ["GET", "HEAD"],
          AllowedHeaders: ["x-amz-*", "content-type"],
          ExposeHeaders: ["ETag"],
          MaxAgeSeconds: 600,
        },
        { AllowedOrigins: ["*.upload.example"], AllowedMethods: ["PUT"] },
      ],
    }),
  );
  r = await s3.aws(["s3api", "put-bucket-cors", "--bucket", "web", "--cors-configuration", `file://${config}`]);
  assert.equal(r.code, 0, r.stderr);
  r = await s3.aws(["s3api", "get-bucket-cors", "--bucket", "web", "--output", "json"]);
  assert.equal(r.code, 0, r.stderr);
  const rules = (JSON.parse(r.stdout) as { CORSRules: { AllowedOrigins: string[]; AllowedMethods: string[] }[] })
    .CORSRules;
  assert.deepEqual(rules[0]?.AllowedOrigins, [origin]);
  assert.deepEqual(rules[1]?.AllowedMethods, ["PUT"]);
  // unknown methods are refused
  await writeFile(config, JSON.stringify({ CORSRules: [{ AllowedOrigins: ["*"], AllowedMethods: ["PATCH"] }] }));
  r = await s3.aws(["s3api", "put-bucket-cors", "--bucket", "web", "--cors-configuration", `file://${config}`]);
  assert.match(r.stderr, /InvalidRequest/);

  r = await s3.aws(["s3", "presign", "s3://web/obj.txt", "--expires-in", "300"]);
  assert.equal(r.code, 0, r.stderr);
  const url = r.stdout.trim();
  // the browser's preflight, unsigned
  let a = await curl([
    "-X",
    "OPTIONS",
    "-H",
    `Origin: ${origin}`,
    "-H",
    "Access-Control-Request-Method: GET",
    "-H",
    "Access-Control-Request-Headers: x-amz-date, Content-Type",
    url,
  ]);
  assert.equal(a.status, 200);
  assert.equal(a.headers["access-control-allow-origin"], origin);
  assert.equal(a.headers["access-control-allow-methods"], "GET, HEAD");
  assert.equal(a.headers["access-control-allow-headers"], "x-amz-date, Content-Type");
  assert.equal(a.headers["access-control-max-age"], "600");
  a = await curl([
    "-X",
    "OPTIONS",
    "-H",
    "Origin: https://elsewhere.example",
    "-H",
    "Access-Control-Request-Method: GET",
    url,
  ]);
  assert.equal(a.status, 403);
  assert.equal(a.headers["access-control-allow-origin"], undefined);
  a = await curl(["-X", "OPTIONS", "-H", `Origin: ${origin}`, "-H", "Access-Control-Request-Method: DELETE", url]);
  assert.equal(a.status, 403);
  a = await curl(["-X", "OPTIONS", url]);
  assert.equal(a.status, 400);
  // a preflight of a page signing its requests with headers has no credential in its URL: found by bucket name
  a = await curl([
    "-X",
    "OPTIONS",
    "-H",
    `Origin: ${origin}`,
    "-H",
    "Access-Control-Request-Method: HEAD",
    `${s3.endpoint}/web/obj.txt`,
  ]);
  assert.equal(a.status, 200);
  assert.equal(a.headers["access-control-allow-origin"], origin);
  a = await curl([
    "-X",
    "OPTIONS",
    "-H",
    "Origin: https://a.upload.example",
    "-H",
    "Access-Control-Request-Method: PUT",
    url,
  ]);
  assert.equal(a.status, 200);
  assert.equal(a.headers["access-control-allow-origin"], "https://a.upload.example");
  // the GET itself, from the page
  a = await curl(["-H", `Origin: ${origin}`, url]);
  assert.equal(a.status, 200);
  assert.equal(a.headers["access-control-allow-origin"], origin);
  assert.equal(a.headers["access-control-expose-headers"], "ETag");
  a = await curl(["-H", "Origin: https://elsewhere.example", url]);
  assert.equal(a.status, 200);
  assert.equal(a.headers["access-control-allow-origin"], undefined);

  // sealed at rest: no origin in the data dir
  const scan = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await scan(p);
      else assert.ok(!(await readFile(p)).includes(origin.slice(8)), `origin found in ${p}`);
    }
  };
  await scan(s3.data);

  r = await s3.aws(["s3api", "delete-bucket-cors", "--bucket", "web"]);
  assert.equal(r.code, 0, r.stderr);
  a = await curl(["-X", "OPTIONS", "-H", `Origin: ${origin}`, "-H", "Access-Control-Request-Method: GET", url]);
  assert.equal(a.status, 403);
});
