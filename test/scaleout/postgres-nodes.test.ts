// Two `atrest server` processes on one PostgreSQL store, one S3 bucket (s3rver) and one remote key manager (issue 15):
// - 200 concurrent HTTPS uploads into one folder, half through each node, against a user's file quota: exactly the
//   quota's worth commit, every other upload is refused as over quota, both nodes and the CLI see the same usage;
// - a file written through one node reads through the other at once (small and multipart-sized);
// - a rename through one node racing a delete of the same file through the other: exactly one wins, nothing is lost
//   or duplicated;
// - users added or removed through one data dir are seen by the other node at once; a user disabled through one
//   node's API is logged out of and refused by the other;
// - a share link unlocked through one node opens through the other (the unlock cookie is sealed, not kept in memory);
// - each node's audit log carries its node id and verifies.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { cli, cliProcess, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { ApiClient } from "../helpers/https.ts";
import { type RunningKms, setupKms, startKms, unsealKms } from "../helpers/kms.ts";
import { dropTestSchemas, pgSkip, pgUrl, testSchema } from "../helpers/pg.ts";
import { type RunningS3rver, startS3rverProcess } from "../helpers/s3rver.ts";

const skip = await pgSkip();
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const UPLOADS = Number(process.env.PGN_UPLOADS ?? 200);
const QUOTA_FILES = 50;
const SIZE = 1024;

interface Node {
  id: string;
  data: string;
  server: RunningServer;
  api: ApiClient;
}

/**
 * A remote key manager, a PostgreSQL schema and two `atrest server` nodes on them (each its own data dir), with the
 * blobs in an s3rver bucket when `s3`; `before`/`after` hooks of the enclosing suite.
 */
function cluster(s3: boolean): { nodes: Node[] } {
  const nodes: Node[] = [];
  let root: string;
  let kms: RunningKms | undefined;
  let bucket: RunningS3rver | undefined;
  before(async () => {
    root = await tempDir("atrest-pg-nodes-");
    const setup = await setupKms(root, { fs: "server", alice: "custodian", bob: "custodian" });
    kms = await startKms(setup.dir);
    await unsealKms(kms.url, setup.certs.alice as string, [setup.shares[0] as string]);
    await unsealKms(kms.url, setup.certs.bob as string, [setup.shares[1] as string]);
    const meta = pgUrl(testSchema());
    const kmsFlags = ["--kms", kms.url, "--kms-cert", setup.certs.fs as string];
    let blobFlags: string[] = [];
    let env: NodeJS.ProcessEnv = {};
    if (s3) {
      bucket = await startS3rverProcess(["atrest"]);
      // no key prefix: s3rver prunes empty directories after a delete, which races concurrent writes under one prefix
      blobFlags = ["--blobs", "s3://atrest", "--blobs-endpoint", bucket.endpoint];
      env = {
        AWS_ACCESS_KEY_ID: bucket.credentials.accessKeyId,
        AWS_SECRET_ACCESS_KEY: bucket.credentials.secretAccessKey,
      };
      // the CLI commands run in this process and open the same bucket
      Object.assign(process.env, env);
    }
    for (const id of ["a", "b"]) {
      const data = join(root, `node-${id}`);
      await cli(["init", "--data", data, ...kmsFlags]);
      const server = await startServer(data, [...kmsFlags, ...blobFlags, "--meta", meta, "--node-id", id], env);
      assert.match(server.output(), new RegExp(`metadata store: postgres .* \\(node ${id}\\)`));
      nodes.push({ id, data, server, api: await ApiClient.forData(server.httpPort, data) });
    }
  });
  after(async () => {
    if (process.env.PGN_DEBUG) for (const n of nodes) console.log(n.server.output());
    for (const n of nodes) await n.server.stop();
    await kms?.stop();
    await bucket?.close();
    await dropTestSchemas();
    if (root) await removeDir(root);
    if (bucket) await removeDir(bucket.dir);
    delete process.env.AWS_ACCESS_KEY_ID;
    delete process.env.AWS_SECRET_ACCESS_KEY;
  });
  return { nodes };
}

describe("two server nodes on one PostgreSQL store, blobs on each node's disk", skip, () => {
  const { nodes } = cluster(false);
  before(async () => {
    // node a recorded the store in its data dir: the CLI finds it without --meta
    const a = nodes[0]?.data ?? "";
    await cli(
      ["user", "add", "alice", "--password-stdin", "--quota-files", String(QUOTA_FILES), "--data", a],
      "alice-password\n",
    );
    for (const n of nodes) assert.equal((await n.api.login("alice", "alice-password")).status, 200);
  });

  it(`${UPLOADS} concurrent uploads through both nodes: the file quota (${QUOTA_FILES}) holds exactly`, async () => {
    const started = Date.now();
    const replies = await Promise.all(
      Array.from({ length: UPLOADS }, (_, i) =>
        (nodes[i % 2] as (typeof nodes)[number]).api.req("PUT", `/api/v1/files/f${String(i).padStart(3, "0")}.bin`, {
          body: Buffer.alloc(SIZE, i % 251),
          headers: { "content-type": "application/octet-stream" },
        }),
      ),
    );
    const ms = Date.now() - started;
    const by = new Map<number, number>();
    for (const r of replies) by.set(r.status, (by.get(r.status) ?? 0) + 1);
    assert.equal(by.get(201), QUOTA_FILES, `statuses ${JSON.stringify([...by])}`);
    const refused = replies.filter((r) => r.status !== 201);
    for (const r of refused) assert.equal(r.json<{ code: string }>().code, "QUOTA_EXCEEDED", r.body.toString());
    // both nodes list the same folder from the shared store
    const listings = await Promise.all(nodes.map((n) => n.api.req("GET", "/api/v1/fs/list?path=/&limit=1000")));
    const names = listings.map((l) => {
      assert.equal(l.status, 200, l.body.toString());
      return (l.json<{ entries: { name: string }[] }>().entries ?? []).map((e) => e.name).sort();
    });
    assert.equal(names[0]?.length, QUOTA_FILES);
    assert.deepEqual(names[0], names[1]);
    const users = JSON.parse((await cliProcess(["user", "list", "--json", "--data", nodes[1]?.data ?? ""])).stdout) as {
      name: string;
      usedFiles: number;
      usedBytes: number;
    }[];
    const alice = users.find((u) => u.name === "alice");
    assert.equal(alice?.usedFiles, QUOTA_FILES);
    assert.equal(alice?.usedBytes, QUOTA_FILES * SIZE);
    console.log(`${UPLOADS} uploads through 2 nodes in ${ms} ms: ${by.get(201)} stored, ${refused.length} over quota`);
  });
});

describe("two server nodes on one PostgreSQL store and one S3 bucket", skip, () => {
  const { nodes } = cluster(true);
  describe("as bob, a user added through node a's data dir", () => {
    const bob: ApiClient[] = [];
    const file = (i: number) => `/api/v1/files/${encodeURIComponent(`r${i}.bin`)}`;
    before(async () => {
      await cli(["user", "add", "bob", "--password-stdin", "--data", nodes[0]?.data ?? ""], "bob-password\n");
      for (const n of nodes) {
        const c = n.api.fresh();
        // node b never saw the command: the user is in the shared store
        assert.equal((await c.login("bob", "bob-password")).status, 200);
        bob.push(c);
      }
    });

    it("a file written through one node reads through the other at once (64 KiB and 12 MiB)", async () => {
      for (const [name, size] of [
        ["small.bin", 65_536],
        ["large.bin", 12 * 1024 * 1024],
      ] as const) {
        const body = randomBytes(size);
        const put = await bob[0]?.req("PUT", `/api/v1/files/${name}`, {
          body,
          headers: { "content-type": "application/octet-stream" },
        });
        assert.equal(put?.status, 201, put?.body.toString());
        const got = await bob[1]?.req("GET", `/api/v1/files/${name}`);
        assert.equal(got?.status, 200);
        assert.equal(sha(got?.body ?? Buffer.alloc(0)), sha(body), `${name} through node b`);
      }
    });

    it("a rename on one node racing a delete on the other: exactly one wins, nothing lost or duplicated", async () => {
      const N = 20;
      for (let i = 0; i < N; i++) {
        const r = await bob[i % 2]?.req("PUT", file(i), { body: Buffer.from(`file ${i}`) });
        assert.equal(r?.status, 201);
      }
      const results = await Promise.all(
        Array.from({ length: N }, async (_, i) => {
          const [rename, del] = await Promise.all([
            bob[0]?.req("POST", "/api/v1/fs/rename", { json: { from: `/r${i}.bin`, to: `/m${i}.bin` } }),
            bob[1]?.req("DELETE", file(i)),
          ]);
          return {
            i,
            renamed: rename?.status === 200,
            deleted: del?.status === 204,
            statuses: [rename?.status, del?.status],
          };
        }),
      );
      const list = await bob[1]?.req("GET", "/api/v1/fs/list?path=/&limit=1000");
      const names = new Set((list?.json<{ entries: { name: string }[] }>().entries ?? []).map((e) => e.name));
      for (const r of results) {
        assert.equal(Number(r.renamed) + Number(r.deleted), 1, `file ${r.i}: ${JSON.stringify(r.statuses)}`);
        assert.ok(!names.has(`r${r.i}.bin`), `r${r.i}.bin still listed`);
        assert.equal(names.has(`m${r.i}.bin`), r.renamed, `m${r.i}.bin listed iff renamed`);
        if (r.renamed) {
          const got = await bob[1]?.req("GET", `/api/v1/files/m${r.i}.bin`);
          assert.equal(got?.body.toString(), `file ${r.i}`);
        }
      }
      console.log(
        `rename vs delete x${N}: ${results.filter((r) => r.renamed).length} renamed, ${results.filter((r) => r.deleted).length} deleted`,
      );
    });

    it("a share link unlocked through one node opens through the other (sealed cookie, no per-process state)", async () => {
      const body = randomBytes(4096);
      assert.equal((await bob[0]?.req("PUT", "/api/v1/files/shared.bin", { body }))?.status, 201);
      const made = await bob[0]?.req("POST", "/api/v1/shares", {
        json: { path: "/shared.bin", password: "open sesame" },
      });
      assert.equal(made?.status, 201, made?.body.toString());
      const link = made?.json<{ link: string }>().link;
      const visitor = nodes[0]?.api.fresh() as ApiClient;
      const unlock = await visitor.req("POST", `/api/v1/s/${link}/unlock`, { json: { password: "open sesame" } });
      assert.equal(unlock.status, 200, unlock.body.toString());
      const set = unlock.headers["set-cookie"];
      const cookie = (Array.isArray(set) ? set[0] : String(set)).split(";")[0] ?? "";
      const other = nodes[1]?.api.fresh() as ApiClient;
      assert.equal((await other.req("GET", `/api/v1/s/${link}/download`)).status, 401, "locked without the cookie");
      const got = await other.req("GET", `/api/v1/s/${link}/download`, { headers: { cookie } });
      assert.equal(got.status, 200, got.body.toString());
      assert.equal(sha(got.body), sha(body));
    });

    it("a user disabled through node a's API loses node b's session and cannot log in there", async () => {
      await cli(["user", "add", "dina", "--password-stdin", "--data", nodes[0]?.data ?? ""], "dina-password\n");
      await cli(
        ["user", "add", "root", "--role", "admin", "--password-stdin", "--data", nodes[0]?.data ?? ""],
        "root-password\n",
      );
      const dina = nodes[1]?.api.fresh() as ApiClient;
      assert.equal((await dina.login("dina", "dina-password")).status, 200);
      const root = nodes[0]?.api.fresh() as ApiClient;
      assert.equal((await root.login("root", "root-password")).status, 200);
      const off = await root.req("PATCH", "/api/v1/admin/users/dina", { json: { disabled: true } });
      assert.equal(off.status, 200, off.body.toString());
      assert.equal((await dina.req("GET", "/api/v1/fs/list")).status, 401, "node b reads the user at each request");
      assert.equal((await nodes[1]?.api.fresh().login("dina", "dina-password"))?.status, 401);
    });

    it("a user removed through node b's data dir can no longer log in through node a", async () => {
      await cli(["user", "add", "carol", "--password-stdin", "--data", nodes[1]?.data ?? ""], "carol-password\n");
      assert.equal((await nodes[0]?.api.fresh().login("carol", "carol-password"))?.status, 200);
      await cli(["user", "rm", "carol", "--data", nodes[1]?.data ?? ""]);
      assert.equal((await nodes[0]?.api.fresh().login("carol", "carol-password"))?.status, 401);
    });

    it("each node's audit log names its node in every record and verifies", async () => {
      await Promise.all(
        nodes.map(async (n) => {
          const [tail, verify] = await Promise.all([
            cliProcess(["audit", "tail", "-n", "200", "--data", n.data]),
            // exit 3 while the node runs (its newest records are not under a checkpoint yet); the marks are its own
            cliProcess(["audit", "verify", "--data", n.data]).catch(
              (err: { code?: number; stdout?: string; stderr?: string }) => {
                assert.equal(err.code, 3, err.stderr);
                return { stdout: err.stdout ?? "", stderr: err.stderr ?? "" };
              },
            ),
          ]);
          const lines = tail.stdout.trim().split("\n");
          assert.ok(lines.length > 10, `node ${n.id}: ${lines.length} records`);
          for (const line of lines) assert.equal((JSON.parse(line) as { node?: string }).node, n.id, line);
          const report = verify.stdout + verify.stderr;
          assert.match(report, /high-water mark \d+ \(metadata store\): present/, report);
          assert.match(report, /high-water mark \d+ \(key manager\): present/, report);
        }),
      );
    });
  });
});
