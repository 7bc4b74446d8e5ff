// A stop must not wait on a client that stopped reading: a graceful close waits for every open stream, and a download
// whose client neither reads nor closes never ends (the PostgreSQL matrix's download test once hung 300 s in its
// server's stop with two HTTP/2 connections in CLOSE-WAIT). After the doors' grace period such connections are cut.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { connect } from "node:http2";
import { request as h1request } from "node:https";
import { join } from "node:path";
import { after, test } from "node:test";
import { cli, removeDir, startServer, tempDir } from "../../helpers/atrest.ts";
import { ApiClient } from "../../helpers/https.ts";

let dir: string | undefined;
after(async () => {
  if (dir) await removeDir(dir);
});

test("a stop cuts downloads whose clients stopped reading (HTTP/2 and HTTP/1.1) after the grace period", async (t) => {
  dir = await tempDir("atrest-http-stop-");
  const data = join(dir, "data");
  await cli(["init", "--data", data]);
  await cli(["user", "add", "alice", "--password-stdin", "--data", data], "alice-password\n");
  const server = await startServer(data);
  try {
    const ca = await readFile(join(data, "tls", "server.crt"));
    const api = await ApiClient.forData(server.httpPort, data);
    assert.equal((await api.login("alice", "alice-password")).status, 200);
    const put = await api.req("PUT", "/api/v1/files/big.bin", { body: randomBytes(16 << 20) });
    assert.equal(put.status, 201, put.body.toString());
    const tok = await api.req("POST", "/api/v1/tokens", {
      json: { name: "dl", scopes: ["files:read"], expiresInDays: 1 },
    });
    const token = tok.json<{ token: string }>().token;

    // HTTP/2: the stream is paused after its first bytes, so the server's writes wait on flow control
    const session = connect(`https://localhost:${server.httpPort}`, { ca });
    session.on("error", () => {});
    const h2 = session.request({ ":path": "/api/v1/files/big.bin", authorization: `Bearer ${token}` });
    h2.on("error", () => {});
    await new Promise<void>((resolve) => h2.once("data", () => resolve()));
    h2.pause();
    // HTTP/1.1: likewise, the response paused after its first bytes
    const h1 = h1request({
      host: "127.0.0.1",
      port: server.httpPort,
      path: "/api/v1/files/big.bin",
      ca,
      servername: "localhost",
      headers: { authorization: `Bearer ${token}` },
    });
    h1.on("error", () => {});
    h1.end();
    await new Promise<void>((resolve) =>
      h1.on("response", (res) => {
        res.on("error", () => {});
        res.once("data", () => {
          res.pause();
          resolve();
        });
      }),
    );

    const started = Date.now();
    await server.stop();
    const seconds = (Date.now() - started) / 1000;
    t.diagnostic(`stop took ${seconds.toFixed(1)} s`);
    assert.ok(seconds < 25, `stop took ${seconds} s`);
    assert.equal(server.proc.exitCode, 0, server.output());
    assert.match(server.output(), /connections still open at close are cut/);
    session.destroy();
  } finally {
    await server.kill();
  }
});
