// POST Object (browser form uploads): boto3's generate_presigned_post signs a SigV4 policy, curl -F posts the form as
// a browser would; the object comes back with its metadata through the SDK, the policy's conditions and size range
// are enforced (a refused upload leaves no object), SSE-C keys may come as form fields, the login is audited as
// s3-post-policy, and neither the key nor a metadata value is in the data dir in clear.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { GetObjectCommand, HeadObjectCommand } from "@aws-sdk/client-s3";
import { cli, removeDir } from "../../helpers/atrest.ts";
import { type S3Server, startS3 } from "../../helpers/s3.ts";
import { run } from "../../helpers/sftp-clients.ts";
import { storeBytes } from "../../helpers/store.ts";

let s3: S3Server;
const canary = `canary-${randomBytes(6).toString("hex")}`;
const keyName = `secret-name-${randomBytes(4).toString("hex")}`;
const customerKey = randomBytes(32);

before(async () => {
  s3 = await startS3("atrest-s3-post-", ["alice"], {
    env: { ATREST_TEST_MODE: "1", ATREST_TEST_SSE_C_OVER_HTTP: "1" },
  });
  const r = await s3.aws(["s3", "mb", "s3://forms"]);
  assert.equal(r.code, 0, r.stderr);
});

after(async () => {
  await s3?.server.stop();
  if (s3) await removeDir(s3.dir);
});

interface Presigned {
  url: string;
  fields: Record<string, string>;
}

/** boto3's generate_presigned_post (Debian's python3-boto3): a SigV4-signed policy for `key`. */
async function presignPost(
  key: string,
  opts: { fields?: Record<string, string>; conditions?: unknown[]; expiresIn?: number; secret?: string } = {},
): Promise<Presigned> {
  const user = s3.users[0];
  assert.ok(user);
  const script = `
import boto3, json, sys
from botocore.config import Config
a = json.loads(sys.argv[1])
c = boto3.client("s3", endpoint_url=a["endpoint"], region_name="us-east-1", aws_access_key_id=a["id"],
  aws_secret_access_key=a["secret"], config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
print(json.dumps(c.generate_presigned_post("forms", a["key"], Fields=a["fields"], Conditions=a["conditions"],
  ExpiresIn=a["expires"])))
`;
  const arg = JSON.stringify({
    endpoint: s3.endpoint,
    id: user.id,
    secret: opts.secret ?? user.secret,
    key,
    fields: opts.fields ?? {},
    conditions: opts.conditions ?? [],
    expires: opts.expiresIn ?? 600,
  });
  const r = await run("/usr/bin/python3", ["-c", script, arg], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Presigned;
}

/** curl -F of the form (fields in order, then the file): the status and the answer. */
async function curlPost(
  p: Presigned,
  file: string,
  extra: Record<string, string> = {},
): Promise<{ status: number; body: string; headers: string }> {
  // -i: the answer's headers before its body (no Expect: 100-continue, so one header block)
  const args = ["-sS", "-i", "-H", "Expect:", "-w", "\n%{http_code}"];
  for (const [k, v] of Object.entries({ ...p.fields, ...extra })) args.push("--form-string", `${k}=${v}`);
  args.push("-F", `file=@${file}`, p.url);
  const r = await run("curl", args, { timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);
  const at = r.stdout.lastIndexOf("\n");
  const head = r.stdout.indexOf("\r\n\r\n");
  return {
    status: Number(r.stdout.slice(at + 1)),
    body: r.stdout.slice(head + 4, at),
    headers: r.stdout.slice(0, head),
  };
}

async function exists(key: string): Promise<boolean> {
  try {
    await s3.client().send(new HeadObjectCommand({ Bucket: "forms", Key: key }));
    return true;
  } catch {
    return false;
  }
}

test("a form signed by generate_presigned_post and posted by curl stores the file with its metadata", async () => {
  const body = randomBytes(5 * 1024 * 1024 + 17);
  const local = join(s3.dir, "upload.bin");
  await writeFile(local, body);
  const fields = { "Content-Type": "application/x-form-test", "x-amz-meta-project": canary };
  const p = await presignPost(`in/${keyName}.bin`, {
    fields,
    conditions: [
      { "Content-Type": "application/x-form-test" },
      ["starts-with", "$x-amz-meta-project", "canary-"],
      ["content-length-range", 1, 16 * 1024 * 1024],
    ],
  });
  assert.ok(p.fields["x-amz-signature"], "boto3 signed with SigV4");
  const r = await curlPost(p, local);
  assert.equal(r.status, 204, r.body);
  const md5 = createHash("md5").update(body).digest("hex");
  assert.match(r.headers, new RegExp(`etag: "${md5}"`, "i"));
  const got = await s3.client().send(new GetObjectCommand({ Bucket: "forms", Key: `in/${keyName}.bin` }));
  assert.ok(
    Buffer.from(await (got.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray()).equals(
      body,
    ),
  );
  assert.equal(got.ETag, `"${md5}"`);
  assert.equal(got.ContentType, "application/x-form-test");
  assert.equal(got.Metadata?.project, canary);

  // success_action_status 201 answers the PostResponse document
  const p2 = await presignPost("in/second.bin", {
    fields: { success_action_status: "201" },
    conditions: [{ success_action_status: "201" }],
  });
  const r2 = await curlPost(p2, local);
  assert.equal(r2.status, 201, r2.body);
  assert.match(r2.body, /<PostResponse[^>]*>.*<Bucket>forms<\/Bucket><Key>in\/second\.bin<\/Key>/s);

  const { stdout } = await cli(["audit", "tail", "-n", "200", "--format", "json", "--data", s3.data]);
  const events = stdout
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));
  const flat = events.map((e) => JSON.stringify(e));
  assert.ok(
    flat.some((e) => e.includes('"s3-post-policy"') && e.includes("alice")),
    "a login by the form's policy",
  );
  assert.ok(
    flat.some((e) => e.includes("upload") && e.includes("second.bin") && e.includes("s3")),
    "the upload is audited",
  );
});

test("the policy holds: expired, a field it does not name, a condition failed, too large, a wrong secret", async () => {
  const local = join(s3.dir, "small.txt");
  await writeFile(local, "0123456789");
  const cases: [string, Presigned, Record<string, string>, number, RegExp][] = [
    ["expired", await presignPost("bad/expired", { expiresIn: -60 }), {}, 403, /Policy expired/],
    ["extra field", await presignPost("bad/extra"), { "x-amz-meta-sneaky": "1" }, 403, /Extra input fields/],
    [
      "condition",
      await presignPost("bad/cond", {
        fields: { "Content-Type": "text/html" },
        conditions: [["starts-with", "$Content-Type", "image/"]],
      }),
      {},
      403,
      /Condition failed/,
    ],
    [
      "too large",
      await presignPost("bad/large", { conditions: [["content-length-range", 0, 5]] }),
      {},
      400,
      /EntityTooLarge/,
    ],
    [
      "too small",
      await presignPost("bad/small", { conditions: [["content-length-range", 11, 20]] }),
      {},
      400,
      /EntityTooSmall/,
    ],
    ["secret", await presignPost("bad/secret", { secret: "x".repeat(40) }), {}, 403, /SignatureDoesNotMatch/],
  ];
  for (const [what, p, extra, status, code] of cases) {
    const r = await curlPost(p, local, extra);
    assert.equal(r.status, status, `${what}: ${r.body}`);
    assert.match(r.body, code, what);
    assert.equal(await exists(p.fields.key as string), false, `${what}: no object left`);
  }
  // an unsigned form: atrest has no public buckets
  const r = await run("curl", [
    "-sS",
    "-w",
    "\n%{http_code}",
    "-F",
    "key=anon.txt",
    "-F",
    `file=@${local}`,
    `${s3.endpoint}/forms`,
  ]);
  assert.match(r.stdout, /AccessDenied[\s\S]*\n403$/);
  assert.equal(await exists("anon.txt"), false);
});

test("SSE-C keys as form fields: the object needs the key to be read", async () => {
  const key = customerKey;
  const md5 = createHash("md5").update(key).digest("base64");
  const sse = {
    "x-amz-server-side-encryption-customer-algorithm": "AES256",
    "x-amz-server-side-encryption-customer-key": key.toString("base64"),
    "x-amz-server-side-encryption-customer-key-MD5": md5,
  };
  const p = await presignPost("sealed.txt", {
    fields: sse,
    conditions: Object.entries(sse).map(([k, v]) => ({ [k]: v })),
  });
  const local = join(s3.dir, "sealed.txt");
  await writeFile(local, "for the key holder only");
  const r = await curlPost(p, local);
  assert.equal(r.status, 204, r.body);
  assert.match(r.headers, /x-amz-server-side-encryption-customer-algorithm: AES256/i);
  await assert.rejects(
    s3.client().send(new GetObjectCommand({ Bucket: "forms", Key: "sealed.txt" })),
    /InvalidRequest|Bad Request/,
  );
  const got = await s3.client().send(
    new GetObjectCommand({
      Bucket: "forms",
      Key: "sealed.txt",
      SSECustomerAlgorithm: "AES256",
      SSECustomerKey: key.toString("base64"),
    }),
  );
  assert.equal(
    await (got.Body as { transformToString(): Promise<string> }).transformToString(),
    "for the key holder only",
  );
});

test("no form value is in the data dir in clear: key name, metadata, SSE-C key", async () => {
  const needles = [canary, keyName, "application/x-form-test"].map((n) => Buffer.from(n));
  needles.push(customerKey, Buffer.from(customerKey.toString("hex")), Buffer.from(customerKey.toString("base64")));
  const files: string[] = [];
  const visit = async (d: string) => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await visit(p);
      else if (e.isFile()) files.push(p);
    }
  };
  await visit(s3.data);
  const contents: [string, Buffer][] = [["metadata store", await storeBytes(s3.data)]];
  for (const f of files) contents.push([f, await readFile(f).catch(() => Buffer.alloc(0))]);
  for (const [where, bytes] of contents) {
    for (const n of needles) assert.equal(bytes.indexOf(n), -1, `${n} found in ${where}`);
  }
});
