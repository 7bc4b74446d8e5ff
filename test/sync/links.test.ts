// Share links of E2EE regions (issue 14 item 4): the key travels only in the URL fragment (never in a request, the
// store, the audit or the server's log), anyone with the URL fetches and verifies the file without an account, a
// tampered payload or blob is refused, and revocation and expiry are enforced by the server.
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, before, describe, test } from "node:test";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { Device, plaintextHits } from "./helpers.ts";

describe("sync share links", () => {
  let dir: string;
  let data: string;
  let ca: string;
  let server: RunningServer;
  let a1: Device;
  let region: string;
  let url: string;
  let db: DatabaseSync;
  const get = (link: string, out: string) => cli(["sync", "link", "get", link, "--out", out, "--ca", ca]);

  before(async () => {
    dir = await tempDir("atrest-sync-links-");
    data = join(dir, "data");
    await cli(["init", "--data", data]);
    await cli(["user", "add", "alice", "--password-stdin", "--data", data], "alice-pw\n");
    server = await startServer(data);
    ca = join(data, "tls", "server.crt");
    a1 = new Device(dir, "alice", "laptop");
    await a1.enroll(`https://127.0.0.1:${server.httpPort}`, ca, "alice-pw");
    region = (await a1.run(["region", "create", "l"])).stdout.trim();
    await writeFile(join(a1.dir, "report link-canary-3c1d.pdf"), Buffer.alloc(150_000, 3));
    await a1.sync(region);
    url = (
      await a1.run(["link", "create", "report link-canary-3c1d.pdf", "--region", region, "--days", "2"])
    ).stdout.trim();
    db = new DatabaseSync(join(data, "meta.db"));
    db.exec("PRAGMA busy_timeout = 5000");
  });
  after(async () => {
    db?.close();
    await server?.stop();
    await removeDir(dir);
  });

  test("fetched without an account into a directory: name and content verified", async () => {
    assert.match(url, /^https:\/\/127\.0\.0\.1:\d+\/e\/[0-9a-f]{32}#[A-Za-z0-9_-]{43}$/);
    const r = await get(url, `${dir}/`);
    assert.match(r.stdout, /150000 bytes, verified/);
    assert.deepEqual(await readFile(join(dir, "report link-canary-3c1d.pdf")), Buffer.alloc(150_000, 3));
    assert.match((await a1.run(["link", "list", "--region", region])).stdout, /active\t1 downloads/);
  });

  test("the key never reaches the server: not in its store, blobs, audit or log", async () => {
    const key = url.split("#")[1] as string;
    assert.deepEqual(await plaintextHits(data, [key, "link-canary-3c1d"]), []);
    assert.doesNotMatch(server.output(), new RegExp(key));
    assert.deepEqual(await plaintextHits(data, [Buffer.from(key, "base64url").toString("latin1")]), []);
  });

  test("a tampered payload, a wrong key, another blob: refused", async () => {
    const id = /\/e\/([0-9a-f]{32})/.exec(url)?.[1] as string;
    const row = db.prepare("SELECT payload FROM sync_links WHERE id = ?").get(id) as { payload: string };
    const flipped = `${row.payload.slice(0, 10)}${row.payload[10] === "A" ? "B" : "A"}${row.payload.slice(11)}`;
    db.prepare("UPDATE sync_links SET payload = ? WHERE id = ?").run(flipped, id);
    await assert.rejects(get(url, join(dir, "x1")), /integrity|authentication/i);
    db.prepare("UPDATE sync_links SET payload = ? WHERE id = ?").run(row.payload, id);
    await assert.rejects(get(`${url.split("#")[0]}#${"A".repeat(43)}`, join(dir, "x2")), /integrity|authentication/i);
    // the server hands out another file's blob under this link
    await writeFile(join(a1.dir, "other.bin"), Buffer.alloc(1000, 9));
    await a1.sync(region);
    const other = db
      .prepare("SELECT hash FROM sync_blobs WHERE region_id = ? ORDER BY created_at DESC LIMIT 1")
      .get(region) as { hash: string };
    const mine = db.prepare("SELECT blob_hash FROM sync_links WHERE id = ?").get(id) as { blob_hash: string };
    db.prepare("UPDATE sync_links SET blob_hash = ? WHERE id = ?").run(other.hash, id);
    await assert.rejects(get(url, join(dir, "x3")), /integrity|signed size|not the one|longer|shorter/i);
    db.prepare("UPDATE sync_links SET blob_hash = ? WHERE id = ?").run(mine.blob_hash, id);
    await get(url, join(dir, "x4"));
  });

  test("expiry and revocation are enforced by the server", async () => {
    const id = /\/e\/([0-9a-f]{32})/.exec(url)?.[1] as string;
    const exp = db.prepare("SELECT expires_at FROM sync_links WHERE id = ?").get(id) as { expires_at: number };
    db.prepare("UPDATE sync_links SET expires_at = ? WHERE id = ?").run(Date.now() - 1000, id);
    await assert.rejects(get(url, join(dir, "y1")), /410 LINK_GONE: the link expired/);
    db.prepare("UPDATE sync_links SET expires_at = ? WHERE id = ?").run(exp.expires_at, id);
    await a1.run(["link", "revoke", id, "--region", region]);
    await assert.rejects(get(url, join(dir, "y2")), /410 LINK_GONE: the link was revoked/);
  });
});
