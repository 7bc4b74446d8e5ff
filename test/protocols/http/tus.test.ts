// Resumable uploads over tus 1.0 with tus-js-client (the client Uppy builds on) run from Node against a real server:
// an upload aborted midway resumes from the server's offset and the stored file is byte-identical; a PATCH cut off
// by a dropped connection keeps what arrived and HEAD says so; nothing is visible at the path until the last byte;
// termination discards; the protocol's refusals (version, offset, content type, someone else's upload).
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { connect } from "node:tls";
import * as tus from "tus-js-client";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../../helpers/atrest.ts";
import { ApiClient, assertProblem } from "../../helpers/https.ts";

const TUS = { "tus-resumable": "1.0.0" };
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const b64 = (s: string) => Buffer.from(s).toString("base64");

describe("HTTPS API: tus resumable uploads", () => {
  let dir: string;
  let data: string;
  let server: RunningServer;
  let alice: ApiClient;
  let bob: ApiClient;

  before(async () => {
    dir = await tempDir("atrest-tus-");
    data = join(dir, "data");
    await cli(["init", "--data", data]);
    await cli(["user", "add", "alice", "--password-stdin", "--data", data], "alice-pw\n");
    await cli(["user", "add", "bob", "--password-stdin", "--data", data], "bob-pw\n");
    server = await startServer(data);
    alice = await ApiClient.forData(server.httpPort, data);
    bob = alice.fresh();
    assert.equal((await alice.login("alice", "alice-pw")).status, 200);
    assert.equal((await bob.login("bob", "bob-pw")).status, 200);
  });
  after(async () => {
    await server?.stop();
    await removeDir(dir);
  });

  const options = (extra: Partial<tus.UploadOptions>): tus.UploadOptions => ({
    endpoint: `${alice.base}/api/v1/uploads`,
    headers: { cookie: alice.cookie as string, "x-csrf-token": alice.csrf as string },
    httpStack: new tus.DefaultHttpStack({ ca: alice.ca, servername: "localhost" } as never),
    chunkSize: 1 << 20,
    retryDelays: [],
    ...extra,
  });

  test("tus-js-client: an upload aborted after two chunks resumes where the server is and is byte-identical", async () => {
    const content = randomBytes(5 * (1 << 20) + 12345);
    let url = "";
    await new Promise<void>((resolve, reject) => {
      let chunks = 0;
      const up: tus.Upload = new tus.Upload(
        content,
        options({
          metadata: { path: "/uploads/big.bin" },
          onError: reject,
          onChunkComplete: () => {
            if (++chunks === 2) {
              url = up.url ?? "";
              void up.abort().then(resolve, reject);
            }
          },
        }),
      );
      up.start();
    });
    assert.match(url, /\/api\/v1\/uploads\/[0-9a-f-]{36}$/);
    // not visible until complete
    assertProblem(await alice.req("GET", "/api/v1/fs/stat?path=/uploads/big.bin"), 404);
    const head = await alice.req("HEAD", new URL(url).pathname, { headers: TUS });
    assert.equal(head.status, 200);
    assert.equal(head.headers["upload-offset"], String(2 << 20));
    assert.equal(head.headers["upload-length"], String(content.length));
    let resumedFrom = -1;
    await new Promise<void>((resolve, reject) => {
      const up = new tus.Upload(
        content,
        options({
          uploadUrl: url,
          onError: reject,
          onProgress: (sent) => {
            if (resumedFrom < 0) resumedFrom = sent;
          },
          onSuccess: () => resolve(),
        }),
      );
      up.start();
    });
    assert.ok(resumedFrom >= 2 << 20, `resumed at ${resumedFrom}, not from 0`);
    const got = await alice.req("GET", "/api/v1/files/uploads/big.bin");
    assert.equal(got.status, 200);
    assert.equal(sha(got.body), sha(content));
    assert.equal((await alice.req("HEAD", new URL(url).pathname, { headers: TUS })).status, 404);
  });

  test("a PATCH cut off by a dropped connection keeps what arrived; the rest completes the file", async () => {
    const content = randomBytes(3_000_000);
    const created = await alice.req("POST", "/api/v1/uploads", {
      headers: { ...TUS, "upload-length": String(content.length), "upload-metadata": `filename ${b64("cut.bin")}` },
    });
    assert.equal(created.status, 201, created.body.toString());
    const path = new URL(created.headers.location as string, alice.base).pathname;
    const sent = 1_000_000;
    await new Promise<void>((resolve) => {
      const s = connect(
        {
          host: "127.0.0.1",
          port: server.httpPort,
          ca: alice.ca,
          servername: "localhost",
          ALPNProtocols: ["http/1.1"],
        },
        () => {
          s.write(
            `PATCH ${path} HTTP/1.1\r\nHost: localhost\r\nCookie: ${alice.cookie}\r\nX-CSRF-Token: ${alice.csrf}\r\n` +
              `Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n` +
              `Content-Length: ${content.length}\r\n\r\n`,
          );
          s.write(content.subarray(0, sent), () => setTimeout(() => s.destroy(), 500));
        },
      );
      s.on("close", () => resolve());
      s.on("error", () => {});
    });
    let offset = 0;
    for (let i = 0; i < 50 && offset < sent; i++) {
      await new Promise((r) => setTimeout(r, 100));
      offset = Number((await alice.req("HEAD", path, { headers: TUS })).headers["upload-offset"]);
    }
    assert.ok(offset > 0 && offset <= sent, `offset ${offset}`);
    assertProblem(await alice.req("GET", "/api/v1/fs/stat?path=/cut.bin"), 404);
    // the wrong offset, the wrong type, no Tus-Resumable, someone else
    const body = content.subarray(offset);
    const patch = (h: Record<string, string>, c: ApiClient = alice) => c.req("PATCH", path, { headers: h, body });
    const good = { ...TUS, "upload-offset": String(offset), "content-type": "application/offset+octet-stream" };
    assertProblem(await patch({ ...good, "upload-offset": "0" }), 409);
    assertProblem(await patch({ ...good, "content-type": "application/octet-stream" }), 415);
    assertProblem(
      await patch({ "upload-offset": String(offset), "content-type": "application/offset+octet-stream" }),
      412,
    );
    assertProblem(await patch(good, bob), 404);
    const done = await patch(good);
    assert.equal(done.status, 204, done.body.toString());
    assert.equal(done.headers["upload-offset"], String(content.length));
    const got = await alice.req("GET", "/api/v1/files/cut.bin");
    assert.equal(sha(got.body), sha(content));
  });

  test("termination discards; creation refuses bad metadata; OPTIONS names the extensions", async () => {
    const opts = await alice.req("OPTIONS", "/api/v1/uploads");
    assert.equal(opts.status, 204);
    assert.equal(opts.headers["tus-version"], "1.0.0");
    assert.match(String(opts.headers["tus-extension"]), /creation/);
    const created = await alice.req("POST", "/api/v1/uploads", {
      headers: { ...TUS, "upload-length": "10", "upload-metadata": `path ${b64("/gone.bin")}` },
    });
    const path = new URL(created.headers.location as string, alice.base).pathname;
    assert.equal((await alice.req("DELETE", path, { headers: TUS })).status, 204);
    assert.equal((await alice.req("HEAD", path, { headers: TUS })).status, 404);
    assertProblem(await alice.req("GET", "/api/v1/fs/stat?path=/gone.bin"), 404);
    assertProblem(await alice.req("POST", "/api/v1/uploads", { headers: { ...TUS, "upload-length": "10" } }), 400);
    assertProblem(
      await alice.req("POST", "/api/v1/uploads", {
        headers: { ...TUS, "upload-length": "x", "upload-metadata": `filename ${b64("a")}` },
      }),
      400,
    );
    assertProblem(
      await alice.req("POST", "/api/v1/uploads", {
        headers: { ...TUS, "upload-length": "1", "upload-metadata": `path ${b64("/a/../../b")}` },
      }),
      400,
    );
    assertProblem(await alice.req("POST", "/api/v1/uploads", { headers: { "upload-length": "1" } }), 412);
    const empty = await alice.req("POST", "/api/v1/uploads", {
      headers: { ...TUS, "upload-length": "0", "upload-metadata": `filename ${b64("empty.txt")}` },
    });
    assert.equal(empty.status, 201);
    assert.equal((await alice.req("GET", "/api/v1/fs/stat?path=/empty.txt")).json().size, 0);
  });
});
