// Three `atrest server` processes on one PostgreSQL schema, one S3 bucket (s3rver, its own process) and two key manager
// nodes (`kms serve` on a PostgreSQL schema of their own) (issue 15, "Proven by"): OpenSSH sftp and rclone upload
// through different nodes at once, node c and key manager node 1 are killed with SIGKILL while an sftp put and an
// rclone copy run through c. Then:
// - the uploads through nodes a and b finish as if nothing happened (their key manager client fails over to kms 2);
// - the clients of node c fail (non-zero exit), nothing half-written of their files is visible through any node, and
//   redone through node a they succeed (rclone's copy skips what c had committed and sends the rest);
// - every file read back through the surviving nodes (sftp from a, rclone from b) hashes to what was sent;
// - the data dirs, the bucket's objects and a pg_dump of the schema hold neither the plaintext canary nor a name.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { type RunningKms, startKms, unsealKms } from "../helpers/kms.ts";
import { dropTestSchemas, pgSkip, pgUrl, TEST_PG, testSchema } from "../helpers/pg.ts";
import { type RunningS3rver, startS3rverProcess } from "../helpers/s3rver.ts";
import {
  hashTree,
  makeClientKey,
  type RunResult,
  rclone,
  rcloneRemote,
  runSftpBatch,
} from "../helpers/sftp-clients.ts";

const execFileP = promisify(execFile);
const skip = await pgSkip();
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
// in every name and every file's first bytes: the scan at the end looks for it
const TOKEN = `cnry${randomBytes(6).toString("hex")}`;
const CANARY = Buffer.from(`PLAINTEXT CANARY ${TOKEN} `);

interface Node {
  id: string;
  data: string;
  server: RunningServer;
}

/** `n` files of `size(i)` bytes under `dir`, each starting with the canary, names carrying the token. */
async function makeFiles(dir: string, tag: string, n: number, size: (i: number) => number): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (let i = 0; i < n; i++) {
    await writeFile(join(dir, `${TOKEN}-${tag}-${i}.bin`), Buffer.concat([CANARY, randomBytes(size(i))]));
  }
}

/** Every file under `dir` (recursive) whose bytes contain `needle`, as paths relative to `dir`. */
async function filesHolding(dir: string, needles: Buffer[]): Promise<string[]> {
  const hits: string[] = [];
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const p = join(e.parentPath, e.name);
    if (needles.some((n) => p.includes(n.toString()))) hits.push(`${relative(dir, p)} (path)`);
    const bytes = await readFile(p).catch(() => Buffer.alloc(0));
    if (needles.some((n) => bytes.includes(n))) hits.push(relative(dir, p));
  }
  return hits;
}

const log = (r: RunResult) => `exit ${r.code}\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`;

describe("three server nodes, kill -9 of one mid-transfer", skip, () => {
  let root: string;
  const kms: RunningKms[] = [];
  let bucket: RunningS3rver | undefined;
  let schema: string;
  let kmsSchema: string;
  let keyFile: string;
  const nodes: Node[] = [];
  const node = (id: string) => nodes.find((n) => n.id === id) as Node;
  const sftpTo = (id: string, commands: string[], args: string[] = []) =>
    runSftpBatch({ port: node(id).server.port, user: "alice", keyFile, commands, args, timeoutMs: 150_000 });
  const remote = (id: string) => rcloneRemote({ port: node(id).server.port, user: "alice", keyFile });

  before(async () => {
    root = await tempDir("atrest-3nodes-");
    // two key manager nodes on one store schema (the first initialised, the second joined), each unsealed
    kmsSchema = testSchema();
    const kmsStore = pgUrl(kmsSchema);
    const kmsDirs = [join(root, "kms", "1"), join(root, "kms", "2")];
    const init = await cli([
      "kms",
      "init",
      "--data",
      kmsDirs[0] as string,
      "--store",
      kmsStore,
      "--shares",
      "3",
      "--threshold",
      "2",
    ]);
    const shares = [...init.stdout.matchAll(/share \d+: ([0-9a-f]{8}-[0-9a-f]{66})/g)].map((m) => m[1] as string);
    const certs: Record<string, string> = {};
    for (const [name, role] of [
      ["fs", "server"],
      ["alice", "custodian"],
      ["bob", "custodian"],
    ] as const) {
      certs[name] = join(root, "certs", name);
      await cli(["kms", "client", "issue", name, "--role", role, "--out", certs[name], "--data", kmsDirs[0] as string]);
    }
    await cli(["kms", "init", "--data", kmsDirs[1] as string, "--store", kmsStore, "--join", kmsDirs[0] as string]);
    for (const dir of kmsDirs) {
      const k = await startKms(dir);
      await unsealKms(k.url, certs.alice as string, [shares[0] as string]);
      await unsealKms(k.url, certs.bob as string, [shares[1] as string]);
      kms.push(k);
    }
    bucket = await startS3rverProcess(["atrest"]);
    schema = testSchema();
    const kmsFlags = ["--kms", kms.map((k) => k.url).join(","), "--kms-cert", certs.fs as string];
    const env = {
      AWS_ACCESS_KEY_ID: bucket.credentials.accessKeyId,
      AWS_SECRET_ACCESS_KEY: bucket.credentials.secretAccessKey,
    };
    Object.assign(process.env, env);
    // the server takes the key manager list from its data dir (init; `server --kms` names one URL)
    const flags = ["--blobs", "s3://atrest", "--blobs-endpoint", bucket.endpoint, "--meta", pgUrl(schema)];
    for (const id of ["a", "b", "c"]) await cli(["init", "--data", join(root, `node-${id}`), ...kmsFlags]);
    // the first node migrates the schema; the other two start together against it
    const start = async (id: string) => {
      const data = join(root, `node-${id}`);
      nodes.push({ id, data, server: await startServer(data, [...flags, "--node-id", id, "--http-port", "0"], env) });
    };
    await start("a");
    await Promise.all([start("b"), start("c")]);
    // one SSH identity for the cluster: the host keys are sealed in the shared store (the first node's win), so a
    // client moved to another node by a load balancer sees the same host key
    const hostKeys = nodes.map((n) => [...n.server.output().matchAll(/host key (\S+ SHA256:\S+)/g)].map((m) => m[1]));
    assert.ok((hostKeys[0]?.length ?? 0) >= 1, nodes[0]?.server.output());
    for (const k of hostKeys) assert.deepEqual(k, hostKeys[0], "every node presents the same host keys");
    keyFile = await makeClientKey(join(root, "client"));
    await cli(["user", "add", "alice", "--public-key", `${keyFile}.pub`, "--data", node("a").data]);
  });

  after(async () => {
    for (const n of nodes) await n.server.stop();
    for (const k of kms) await k.stop();
    await bucket?.close();
    await dropTestSchemas();
    if (root) await removeDir(root);
    if (bucket) await removeDir(bucket.dir);
    delete process.env.AWS_ACCESS_KEY_ID;
    delete process.env.AWS_SECRET_ACCESS_KEY;
  });

  it("loses no committed file, keeps serving, and the killed node's uploads succeed when redone elsewhere", async () => {
    const src = join(root, "src");
    // through node a (sftp) and node b (rclone): run to the end while c dies
    await makeFiles(join(src, "a"), "a", 12, (i) => 50_000 + i * 37_000);
    await makeFiles(join(src, "b"), "b", 30, (i) => 20_000 + i * 11_000);
    // through node c: one large sftp put and an rclone copy, both slowed so that the kill lands mid-transfer
    await makeFiles(join(src, "c"), "c", 16, (i) => 300_000 + i * 20_000);
    await makeFiles(join(src, "big"), "big", 1, () => 24 * 1024 * 1024);
    const bigName = `${TOKEN}-big-0.bin`;
    const started = Date.now();

    const onA = sftpTo("a", ["mkdir a", "cd a", `lcd ${join(src, "a")}`, "put *.bin"]);
    const onB = rclone(["copy", "--transfers", "4", join(src, "b"), `${remote("b")}b`], 150_000);
    // -l: kbit/s (3 MB/s); --bwlimit: bytes/s
    const bigOnC = sftpTo("c", [`put ${join(src, "big", bigName)} ${bigName}`], ["-l", "24000"]);
    const treeOnC = rclone(["copy", "--transfers", "2", "--bwlimit", "1M", join(src, "c"), `${remote("c")}c`], 150_000);
    // the transfers through c are a few seconds in (logins done, bytes flowing) when it dies
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal(node("c").server.proc.exitCode, null, "node c still up before the kill");
    await Promise.all([node("c").server.kill(), kms[0]?.kill()]);
    const killedAt = Date.now() - started;

    const [a, b, big, tree] = await Promise.all([onA, onB, bigOnC, treeOnC]);
    assert.equal(a.code, 0, `sftp through node a:\n${log(a)}`);
    assert.equal(b.code, 0, `rclone through node b:\n${log(b)}`);
    assert.notEqual(big.code, 0, `sftp through node c must fail: it was killed\n${log(big)}`);
    assert.notEqual(tree.code, 0, `rclone through node c must fail: it was killed\n${log(tree)}`);

    // nothing half-written: the large file is absent (its upload never committed), and whatever c committed of its
    // tree before dying is whole
    const listed = await sftpTo("a", ["ls -l"]);
    assert.equal(listed.code, 0, log(listed));
    assert.doesNotMatch(listed.stdout, new RegExp(bigName), "the killed upload left nothing visible");
    // what c committed before dying is whole: each listed file has its source's size (its content is hashed below)
    const srcSizes = new Map(
      await Promise.all(
        (await readdir(join(src, "c"))).map(async (n) => [n, (await readFile(join(src, "c", n))).length] as const),
      ),
    );
    const lsjson = await rclone(["lsjson", `${remote("a")}c`]);
    const committed = lsjson.code === 0 ? (JSON.parse(lsjson.stdout) as { Name: string; Size: number }[]) : [];
    for (const f of committed) assert.equal(f.Size, srcSizes.get(f.Name), `${f.Name} committed whole`);
    const committedByC = committed.length;

    // redone through node a: the sftp put again (the killed node's partial died with it), rclone copy resumes at
    // file granularity (what c committed is skipped)
    const bigAgain = await sftpTo("a", [`put ${join(src, "big", bigName)} ${bigName}`]);
    assert.equal(bigAgain.code, 0, log(bigAgain));
    const treeAgain = await rclone(["copy", "-v", "--transfers", "4", join(src, "c"), `${remote("a")}c`], 150_000);
    assert.equal(treeAgain.code, 0, log(treeAgain));
    // rclone sends every file c had not committed; of those c had, at most the ones whose mtime rclone had not set
    // yet (its SETSTAT comes after the commit, and the kill can fall between) go again, replacing equal bytes
    const copiedNew = [...treeAgain.stderr.matchAll(/: Copied \(new\)/g)].length;
    const replaced = [...treeAgain.stderr.matchAll(/(\S+): Copied \(replaced existing\)/g)].map((m) => m[1]);
    assert.equal(copiedNew, 16 - committedByC, `rclone resent what c had not committed\n${log(treeAgain)}`);
    for (const r of replaced)
      assert.ok(
        committed.some((f) => f.Name === r),
        `${r} replaced: c had committed it`,
      );

    // every file, read back through the surviving nodes, is what was sent: sftp from a, rclone from b
    const back = join(root, "back");
    await mkdir(join(back, "sftp"), { recursive: true });
    const got = await sftpTo("a", [`lcd ${join(back, "sftp")}`, "get -r a", "get -r c", `get ${bigName}`]);
    assert.equal(got.code, 0, log(got));
    const viaRclone = await rclone(["copy", `${remote("b")}`, join(back, "rclone")], 150_000);
    assert.equal(viaRclone.code, 0, log(viaRclone));
    const want = new Map<string, string>();
    for (const d of ["a", "b", "c"]) for (const [p, h] of await hashTree(join(src, d))) want.set(`${d}/${p}`, h);
    want.set(bigName, sha(await readFile(join(src, "big", bigName))));
    assert.deepEqual(await hashTree(join(back, "rclone")), new Map([...want].sort()), "rclone through node b");
    const sftpWant = new Map([...want].filter(([p]) => !p.startsWith("b/")).sort());
    assert.deepEqual(await hashTree(join(back, "sftp")), sftpWant, "sftp through node a");

    // no plaintext and no name at rest: the data dirs (nodes, key manager), the bucket's objects, the database
    const dump = join(root, "pg_dump.sql");
    const url = new URL(TEST_PG);
    await execFileP("pg_dump", ["--schema", schema, "--schema", kmsSchema, "--file", dump, url.toString()]);
    const needles = [Buffer.from(TOKEN), Buffer.from(Buffer.from(TOKEN).toString("hex"))];
    const hits: string[] = [];
    for (const n of nodes) hits.push(...(await filesHolding(n.data, needles)).map((p) => `node-${n.id}/${p}`));
    hits.push(...(await filesHolding(join(root, "kms"), needles)).map((p) => `kms/${p}`));
    hits.push(...(await filesHolding(bucket?.dir as string, needles)).map((p) => `bucket/${p}`));
    const dumped = await readFile(dump);
    if (needles.some((n) => dumped.includes(n))) hits.push("pg_dump of the schema");
    assert.deepEqual(hits, [], "plaintext or names found at rest");
    // the scan does find them where they are in clear: every source file
    assert.equal((await filesHolding(src, needles.slice(0, 1))).length, 2 * want.size, "control: names and bytes");
    assert.match(dumped.toString(), /CREATE TABLE/, "the dump holds the schema");
    const objects = (await readdir(bucket?.dir as string, { recursive: true })).length;
    console.log(
      `killed node c and kms 1 at ${killedAt} ms; c had committed ${committedByC}/16 of its tree (${replaced.length} resent for their mtime); ${want.size} files verified ` +
        `through a and b; scanned 3 data dirs, the key manager's, ${objects} bucket entries, a ${dumped.length}-byte ` +
        `pg_dump of both schemas: 0 hits; ${Date.now() - started} ms`,
    );
  });
});
