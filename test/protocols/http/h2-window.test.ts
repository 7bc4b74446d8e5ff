// The HTTPS door's HTTP/2 flow-control windows: 2 MiB per stream (SETTINGS_INITIAL_WINDOW_SIZE) and 8 MiB per
// connection, so an upload over HTTP/2 is not held to Node's default 64 KiB between window updates.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { connect } from "node:http2";
import { join } from "node:path";
import { test } from "node:test";
import { cli, removeDir, startServer, tempDir } from "../../helpers/atrest.ts";

test("HTTP/2 settings: 2 MiB stream window, 8 MiB connection window", async () => {
  const dir = await tempDir("atrest-h2win-");
  const data = join(dir, "data");
  await cli(["init", "--data", data]);
  const server = await startServer(data);
  try {
    const ca = await readFile(join(data, "tls", "server.crt"));
    const session = connect(`https://localhost:${server.httpPort}`, { ca });
    const settings = await new Promise<{ initialWindowSize?: number }>((resolve, reject) => {
      session.once("remoteSettings", resolve);
      session.once("error", reject);
    });
    assert.equal(settings.initialWindowSize, 2 << 20);
    // the connection window update follows the settings; a round trip (PING) later it has arrived
    await new Promise<void>((resolve, reject) => session.ping((err) => (err ? reject(err) : resolve())));
    assert.equal(session.state.remoteWindowSize, 8 << 20);
    session.close();
  } finally {
    await server.stop();
    await removeDir(dir);
  }
});
