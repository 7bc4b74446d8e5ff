// What a file-server node does while each thing it depends on is down (docs/operations.md "When a component is
// down"): one `atrest server` on PostgreSQL (through a TCP relay the test cuts), an S3 bucket (s3rver on a fixed port,
// killed and started again) and a remote key manager (killed, restarted sealed, unsealed). For each: /readyz names
// the failing dependency, uploads are refused without leaving anything behind, what still works works, and everything
// is back once the dependency is.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { cli, ROOT, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { ApiClient } from "../helpers/https.ts";
import { type KmsSetup, type RunningKms, setupKms, startKms, unsealKms } from "../helpers/kms.ts";
import { dropTestSchemas, pgSkip, pgUrl, testSchema } from "../helpers/pg.ts";

const skip = await pgSkip();

/** A TCP relay to PostgreSQL: `cut()` drops every connection and refuses new ones, `restore()` listens again. */
async function relay(): Promise<{ port: number; cut(): Promise<void>; restore(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const target = new URL(pgUrl("x"));
  const onConnection = (inbound: Socket) => {
    const out = createConnection({ host: target.hostname, port: Number(target.port || 5432) });
    for (const s of [inbound, out]) {
      sockets.add(s);
      s.on("error", () => undefined);
      s.on("close", () => sockets.delete(s));
    }
    inbound.pipe(out).pipe(inbound);
  };
  let server: Server = createServer(onConnection);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    cut: async () => {
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of sockets) s.destroy();
      await closed;
    },
    restore: async () => {
      server = createServer(onConnection);
      await new Promise<void>((r) => server.listen(port, "127.0.0.1", () => r()));
    },
  };
}

/** s3rver in its own process on `port` (the same port again after a restart, as an object store comes back). */
async function s3rverOn(port: number, dir: string): Promise<ChildProcess> {
  const code = `const S = require("s3rver"); new S({ address: "127.0.0.1", port: ${port}, silent: true,
    directory: ${JSON.stringify(dir)}, configureBuckets: [{ name: "atrest" }] }).run().then(() => console.log("up"));`;
  const proc = spawn(process.execPath, ["-e", code], { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] });
  await new Promise<void>((resolve, reject) => {
    proc.stdout?.once("data", () => resolve());
    proc.once("exit", (c) => reject(new Error(`s3rver exited with ${c}`)));
  });
  return proc;
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

describe("one node while PostgreSQL, the bucket or the key manager is down", skip, () => {
  let root: string;
  let pg: Awaited<ReturnType<typeof relay>>;
  let s3: ChildProcess | undefined;
  let s3port: number;
  let setup: KmsSetup;
  let kms: RunningKms | undefined;
  let server: RunningServer | undefined;
  let api: ApiClient;
  let n = 0;
  const seed = randomBytes(50_000);

  const unseal = async () => {
    await unsealKms(kms?.url as string, setup.certs.alice as string, [setup.shares[0] as string]);
    await unsealKms(kms?.url as string, setup.certs.bob as string, [setup.shares[1] as string]);
  };
  const state = async () => {
    const ready = await api.req("GET", "/readyz", { anonymous: true });
    const name = `p${++n}.bin`;
    const put = await api.req("PUT", `/api/v1/files/${name}`, { body: randomBytes(100_000) });
    const get = await api.req("GET", "/api/v1/files/seed.bin");
    const failing = ready.json<{ checks: { name: string; ok: boolean }[] }>().checks.filter((c) => !c.ok);
    return { ready: ready.status, failing: failing.map((c) => c.name), put: put.status, name, get };
  };
  /** Whether `name` is listed (a refused upload must have left nothing). */
  const listed = async (name: string) => {
    const l = await api.req("GET", "/api/v1/fs/list?path=/&limit=1000");
    assert.equal(l.status, 200, l.body.toString());
    return l.json<{ entries: { name: string }[] }>().entries.some((e) => e.name === name);
  };

  before(async () => {
    root = await tempDir("atrest-deps-down-");
    pg = await relay();
    s3port = await freePort();
    s3 = await s3rverOn(s3port, join(root, "bucket"));
    setup = await setupKms(root, { fs: "server", alice: "custodian", bob: "custodian" });
    kms = await startKms(setup.dir);
    await unseal();
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: "S3RVER", AWS_SECRET_ACCESS_KEY: "S3RVER" });
    const kmsFlags = ["--kms", kms.url, "--kms-cert", setup.certs.fs as string];
    const data = join(root, "node");
    await cli(["init", "--data", data, ...kmsFlags]);
    const meta = new URL(pgUrl(testSchema()));
    meta.port = String(pg.port);
    const blobs = ["--blobs", "s3://atrest", "--blobs-endpoint", `http://127.0.0.1:${s3port}`];
    server = await startServer(data, [...kmsFlags, ...blobs, "--meta", meta.toString(), "--node-id", "a"]);
    await cli(["user", "add", "alice", "--password-stdin", "--data", data], "alice-password\n");
    api = await ApiClient.forData(server.httpPort, data);
    assert.equal((await api.login("alice", "alice-password")).status, 200);
    assert.equal((await api.req("PUT", "/api/v1/files/seed.bin", { body: seed })).status, 201);
    // read once: its data key is in the node's DEK cache from now on
    assert.equal((await api.req("GET", "/api/v1/files/seed.bin")).status, 200);
  });

  after(async () => {
    await server?.stop();
    await kms?.stop();
    s3?.kill();
    await pg?.cut();
    await dropTestSchemas();
    delete process.env.AWS_ACCESS_KEY_ID;
    delete process.env.AWS_SECRET_ACCESS_KEY;
    if (root) await removeDir(root);
  });

  it("all up: ready, uploads and reads work", async () => {
    const s = await state();
    assert.deepEqual([s.ready, s.failing, s.put, s.get.status], [200, [], 201, 200]);
  });

  it("bucket down: not ready (blobs), uploads and reads refused, listing works; back: all works", async () => {
    s3?.kill("SIGKILL");
    await new Promise((r) => s3?.once("exit", r));
    const down = await state();
    assert.deepEqual([down.ready, down.failing], [503, ["blobs"]]);
    assert.ok(down.put >= 500, `upload refused: ${down.put}`);
    assert.ok(down.get.status >= 500, `read refused: ${down.get.status}`);
    assert.equal(await listed(down.name), false, "the refused upload left nothing");
    s3 = await s3rverOn(s3port, join(root, "bucket"));
    const back = await state();
    assert.deepEqual([back.ready, back.failing, back.put, back.get.status], [200, [], 201, 200]);
    assert.deepEqual(back.get.body.length, seed.length);
  });

  it("key manager down: not ready, uploads 503, cached files still read; restarted sealed: not ready until unsealed", async () => {
    const port = kms?.port ?? 0;
    await kms?.kill();
    const down = await state();
    assert.deepEqual([down.ready, down.failing, down.put], [503, ["key-manager"], 503]);
    assert.equal(down.get.status, 200, "a file whose data key is cached still reads");
    assert.equal(await listed(down.name), false);
    kms = await startKms(setup.dir, port);
    const sealed = await state();
    assert.deepEqual([sealed.ready, sealed.failing, sealed.put], [503, ["key-manager"], 503]);
    await unseal();
    const back = await state();
    assert.deepEqual([back.ready, back.failing, back.put, back.get.status], [200, [], 201, 200]);
  });

  it("PostgreSQL unreachable: not ready (store), requests refused; reachable again: all works at once", async () => {
    await pg.cut();
    const down = await state();
    assert.deepEqual([down.ready, down.failing], [503, ["store"]]);
    // 503 (UNAVAILABLE: retry later), not 500: the database being away is not a bug of the request
    assert.equal(down.put, 503, `upload refused: ${down.put}`);
    assert.equal(down.get.status, 503, `read refused: ${down.get.status}`);
    await pg.restore();
    const back = await state();
    assert.deepEqual([back.ready, back.failing, back.put, back.get.status], [200, [], 201, 200]);
    assert.equal(await listed(down.name), false, "the upload refused while PostgreSQL was away left nothing");
    assert.equal(await listed(back.name), true);
  });
});
