// Key jobs on a store shared by two nodes (PostgreSQL, blobs in one s3rver bucket, one remote key manager): the job
// rows are shared, so a job runs once across the nodes (the store's cluster lease, src/keys/lock.ts). While anyone
// holds the lease a `keys reencrypt` on the other node's data dir is refused; a run killed with SIGKILL mid-job frees
// the lease at once (no timeout to wait out) and the same command through the other node resumes at the job's cursor
// and finishes it; every file then reads through both nodes under the new key version.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { openPostgresStore } from "../../src/store/postgres/index.ts";
import { cli, cliProcess, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { ApiClient } from "../helpers/https.ts";
import { type RunningKms, setupKms, startKms, unsealKms } from "../helpers/kms.ts";
import { dropTestSchemas, pgSkip, pgUrl, testSchema } from "../helpers/pg.ts";
import { type RunningS3rver, startS3rverProcess } from "../helpers/s3rver.ts";

const skip = await pgSkip();
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const FILES = 40;
const CRASH_AFTER = 15;

describe("key jobs across two nodes on one PostgreSQL store", skip, () => {
  let root: string;
  let kms: RunningKms | undefined;
  let bucket: RunningS3rver | undefined;
  let schema: string;
  let operator: string;
  const nodes: { id: string; data: string; server: RunningServer; api: ApiClient }[] = [];
  const files = new Map<string, Buffer>();

  before(async () => {
    root = await tempDir("atrest-keyjobs-nodes-");
    const setup = await setupKms(root, { fs: "server", op: "operator", alice: "custodian", bob: "custodian" });
    operator = setup.certs.op as string;
    kms = await startKms(setup.dir);
    await unsealKms(kms.url, setup.certs.alice as string, [setup.shares[0] as string]);
    await unsealKms(kms.url, setup.certs.bob as string, [setup.shares[1] as string]);
    bucket = await startS3rverProcess(["atrest"]);
    Object.assign(process.env, {
      AWS_ACCESS_KEY_ID: bucket.credentials.accessKeyId,
      AWS_SECRET_ACCESS_KEY: bucket.credentials.secretAccessKey,
    });
    schema = testSchema();
    const kmsFlags = ["--kms", kms.url, "--kms-cert", setup.certs.fs as string];
    const flags = [...kmsFlags, "--blobs", "s3://atrest", "--blobs-endpoint", bucket.endpoint, "--meta", pgUrl(schema)];
    for (const id of ["a", "b"]) {
      const data = join(root, `node-${id}`);
      await cli(["init", "--data", data, ...kmsFlags]);
      const server = await startServer(data, [...flags, "--node-id", id]);
      nodes.push({ id, data, server, api: await ApiClient.forData(server.httpPort, data) });
    }
    await cli(["user", "add", "alice", "--password-stdin", "--data", nodes[0]?.data ?? ""], "alice-password\n");
    for (const n of nodes) assert.equal((await n.api.login("alice", "alice-password")).status, 200);
    for (let i = 0; i < FILES; i++) {
      const body = randomBytes(i % 8 === 0 ? 200_000 : 3000 + i);
      const name = `f${String(i).padStart(2, "0")}.bin`;
      files.set(name, body);
      const put = await nodes[i % 2]?.api.req("PUT", `/api/v1/files/${name}`, { body });
      assert.equal(put?.status, 201, put?.body.toString());
    }
    await cli(["kms", "key", "rotate", "default", "--kms", kms.url, "--kms-cert", operator]);
  });

  after(async () => {
    for (const n of nodes) await n.server.stop();
    await kms?.stop();
    await bucket?.close();
    await dropTestSchemas();
    if (root) await removeDir(root);
    if (bucket) await removeDir(bucket.dir);
    delete process.env.AWS_ACCESS_KEY_ID;
    delete process.env.AWS_SECRET_ACCESS_KEY;
  });

  it("runs once across nodes: refused while held, taken over at once after a kill -9, resumed at its cursor", async () => {
    const reencrypt = (node: number, env: NodeJS.ProcessEnv = {}) =>
      cliProcess(["keys", "reencrypt", "--key", "default", "--json", "--data", nodes[node]?.data ?? ""], undefined, {
        ...process.env,
        ...env,
      });
    const store = openPostgresStore(pgUrl(schema), { nodeId: "holder" });
    try {
      // someone else holds the lease (as a job on another node would): refused, naming the holder
      const lease = await store.holdLease("keyjob");
      assert.equal(lease.held, true);
      const refused = await reencrypt(1).then(
        () => assert.fail("reencrypt ran while another process held the lease"),
        (err: { code?: number; stderr?: string }) => err,
      );
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr ?? "", /another key job is running on node holder/, refused.stderr);
      if (lease.held) await lease.release();

      // through node a: killed (SIGKILL) after CRASH_AFTER files, its lease goes with its connection
      const crashed = await reencrypt(0, {
        ATREST_TEST_MODE: "1",
        ATREST_TEST_CRASH_REENCRYPT_AFTER_BATCHES: String(CRASH_AFTER),
      }).then(
        () => assert.fail("the crash hook did not fire"),
        (err: { signal?: string }) => err,
      );
      assert.equal(crashed.signal, "SIGKILL");
      const midway = await store.keyRefCounts();
      const onV1 = midway.find((r) => r.keyRef === "kek:default:v1")?.files ?? 0;
      assert.equal(onV1, FILES - CRASH_AFTER, JSON.stringify(midway));

      // through node b, at once: the lease is free (no 30 s node timeout), the job resumes where a stopped
      const t0 = Date.now();
      const { stdout } = await reencrypt(1);
      const report = JSON.parse(stdout) as { resumed: boolean; done: number; failed: number; total: number };
      assert.equal(report.resumed, true);
      assert.equal(report.failed, 0, stdout);
      assert.equal(report.total, FILES);
      assert.equal(report.done, FILES, "the crashed run's 15 and the resumed run's 25");
      const counts = await store.keyRefCounts();
      assert.deepEqual(
        counts.filter((r) => r.files > 0 && r.keyRef?.startsWith("kek:default:")),
        [{ keyRef: "kek:default:v2", files: FILES }],
      );
      const again = await store.holdLease("keyjob");
      assert.equal(again.held, true, "released when the job ended");
      if (again.held) await again.release();
      console.log(
        `killed after ${CRASH_AFTER}/${FILES} files on node a; node b resumed and finished in ${Date.now() - t0} ms`,
      );
    } finally {
      await store.close();
    }
    for (const n of nodes) {
      for (const [name, body] of files) {
        const got = await n.api.req("GET", `/api/v1/files/${name}`);
        assert.equal(got.status, 200, `${name} through node ${n.id}`);
        assert.equal(sha(got.body), sha(body), `${name} through node ${n.id}`);
      }
    }
  });
});

// With local blobs each node holds the blobs of the files written through it, but the job rows and the file rows are
// shared: a rewrap run on one node's data dir reaches only that node's blobs. The files of the other node must come
// out as failures (the old key version still protects them), never as skipped, so nobody retires the version.
describe("keys rewrap on PostgreSQL with each node's blobs on its own disk", skip, () => {
  let root: string;
  let kms: RunningKms | undefined;
  const nodes: { id: string; data: string; server: RunningServer; api: ApiClient }[] = [];
  const files = new Map<string, { body: Buffer; node: number }>();

  before(async () => {
    root = await tempDir("atrest-rewrap-local-nodes-");
    const setup = await setupKms(root, { fs: "server", op: "operator", alice: "custodian", bob: "custodian" });
    kms = await startKms(setup.dir);
    await unsealKms(kms.url, setup.certs.alice as string, [setup.shares[0] as string]);
    await unsealKms(kms.url, setup.certs.bob as string, [setup.shares[1] as string]);
    const kmsFlags = ["--kms", kms.url, "--kms-cert", setup.certs.fs as string];
    const meta = pgUrl(testSchema());
    for (const id of ["a", "b"]) {
      const data = join(root, `node-${id}`);
      await cli(["init", "--data", data, ...kmsFlags]);
      const server = await startServer(data, [...kmsFlags, "--meta", meta, "--node-id", id]);
      nodes.push({ id, data, server, api: await ApiClient.forData(server.httpPort, data) });
    }
    await cli(["user", "add", "alice", "--password-stdin", "--data", nodes[0]?.data ?? ""], "alice-password\n");
    for (const n of nodes) assert.equal((await n.api.login("alice", "alice-password")).status, 200);
    for (let i = 0; i < 12; i++) {
      const body = randomBytes(2000 + i);
      files.set(`g${i}.bin`, { body, node: i % 3 === 0 ? 1 : 0 });
      const put = await nodes[i % 3 === 0 ? 1 : 0]?.api.req("PUT", `/api/v1/files/g${i}.bin`, { body });
      assert.equal(put?.status, 201, put?.body.toString());
    }
    await cli(["kms", "key", "rotate", "default", "--kms", kms.url, "--kms-cert", setup.certs.op as string]);
  });

  after(async () => {
    for (const n of nodes) await n.server.stop();
    await kms?.stop();
    await dropTestSchemas();
    if (root) await removeDir(root);
  });

  it("node a's run fails node b's files (not skipped); node b's run then rewraps them", async () => {
    const rewrap = (node: number) =>
      cliProcess(["keys", "rewrap", "--key", "default", "--json", "--data", nodes[node]?.data ?? ""]).then(
        (r) => ({ code: 0, report: r.stdout }),
        (err: { code?: number; stdout?: string }) => ({ code: err.code, report: err.stdout ?? "" }),
      );
    const onB = [...files.values()].filter((f) => f.node === 1).length;
    const first = await rewrap(0);
    const a = JSON.parse(first.report) as { keys: { key: string; done: number; failed: number; skipped: number }[] };
    const keyA = a.keys.find((k) => k.key === "default");
    assert.equal(first.code, 1, "a rewrap that left files behind exits non-zero, --json too");
    assert.deepEqual([keyA?.done, keyA?.failed, keyA?.skipped], [files.size - onB, onB, 0], first.report);
    const second = await rewrap(1);
    assert.equal(second.code, 0, second.report);
    const b = JSON.parse(second.report) as { keys: { key: string; done: number; failed: number }[] };
    const keyB = b.keys.find((k) => k.key === "default");
    assert.deepEqual([keyB?.done, keyB?.failed], [onB, 0], second.report);
    for (const [name, f] of files) {
      const got = await nodes[f.node]?.api.req("GET", `/api/v1/files/${name}`);
      assert.equal(got?.status, 200);
      assert.equal(sha(got?.body ?? Buffer.alloc(0)), sha(f.body));
    }
  });
});
