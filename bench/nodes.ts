// Several file-server nodes (issue 15): aggregate SFTP upload throughput through 1, 2 and 3 `atrest server` processes
// on one PostgreSQL schema, one S3 bucket (s3rver, its own process) and one remote key manager (`kms serve`). The
// machine has 2 cores shared by every process here, so wall-clock MB/s cannot grow with the nodes; the scaling figure
// is each node's CPU seconds per GiB it took in (flat = a node costs the same however many run beside it).
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { cli, type RunningServer, startServer } from "../test/helpers/atrest.ts";
import { type RunningKms, setupKms, startKms, unsealKms } from "../test/helpers/kms.ts";
import { type RunningS3rver, startS3rverProcess } from "../test/helpers/s3rver.ts";
import { makeClientKey, runSftpBatch } from "../test/helpers/sftp-clients.ts";
import type { BenchContext, BenchModule, BenchSection } from "./lib/types.ts";

const PG = process.env.ATREST_TEST_PG || "postgres://postgres@127.0.0.1:5432/test";
const GIB = 1024 ** 3;

/** utime + stime of a process, seconds. */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  return (Number(f[11]) + Number(f[12])) / 100;
}

export const nodes: BenchModule = {
  name: "nodes",
  title: "Several nodes: aggregate SFTP upload through 1, 2 and 3 server processes",
  method: [
    "nodes: three `atrest server` processes on one PostgreSQL 15 schema (local server), blobs in one s3rver bucket (its own process), keys from one `atrest kms serve` (mutual TLS, unsealed with 2 of 3 shares), all on loopback. For N = 1, 2, 3: C concurrent OpenSSH `sftp -b` clients (aes128-gcm), each putting its own copy of one random file, spread round-robin over the first N nodes; aggregate MB/s = all bytes / time until the last client ends. CPU s/GiB per node = the node process's utime+stime over the run per GiB it received (/proc/PID/stat), also net of the node's idle CPU rate (measured over 10 s with all nodes up and no transfers) times the run's length; the s3rver and kms columns likewise per GiB in total. Best of the runs by time.",
  ],
  async run(ctx: BenchContext): Promise<BenchSection> {
    const clients = ctx.quick ? 3 : 6;
    const mib = ctx.quick ? 16 : 64;
    const loadBefore = loadavg()[0].toFixed(1);
    const schema = `bench_${randomBytes(6).toString("hex")}`;
    const u = new URL(PG);
    u.searchParams.set("schema", schema);
    const rows: string[][] = [
      [
        "nodes",
        "clients x MiB",
        "aggregate MB/s",
        "CPU s/GiB per node",
        "same, net of idle",
        "s3rver CPU s/GiB",
        "kms CPU s/GiB",
        "load",
      ],
    ];
    const summary: string[] = [];
    let idleNote = "";
    let kms: RunningKms | undefined;
    let bucket: RunningS3rver | undefined;
    const servers: RunningServer[] = [];
    const savedEnv = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    try {
      const setup = await setupKms(ctx.tmp, { fs: "server", alice: "custodian", bob: "custodian" });
      kms = await startKms(setup.dir);
      await unsealKms(kms.url, setup.certs.alice as string, [setup.shares[0] as string]);
      await unsealKms(kms.url, setup.certs.bob as string, [setup.shares[1] as string]);
      bucket = await startS3rverProcess(["bench"]);
      const env = {
        AWS_ACCESS_KEY_ID: bucket.credentials.accessKeyId,
        AWS_SECRET_ACCESS_KEY: bucket.credentials.secretAccessKey,
      };
      Object.assign(process.env, env);
      const kmsFlags = ["--kms", kms.url, "--kms-cert", setup.certs.fs as string];
      const flags = [...kmsFlags, "--blobs", "s3://bench", "--blobs-endpoint", bucket.endpoint, "--meta", u.toString()];
      for (const id of ["a", "b", "c"]) {
        const data = join(ctx.tmp, `node-${id}`);
        await cli(["init", "--data", data, ...kmsFlags]);
        servers.push(await startServer(data, [...flags, "--node-id", id, "--http-port", "0"], env));
      }
      const keyFile = await makeClientKey(join(ctx.tmp, "client"));
      await cli(["user", "add", "bench", "--public-key", `${keyFile}.pub`, "--data", join(ctx.tmp, "node-a")]);
      const file = join(ctx.tmp, "upload.bin");
      await writeFile(file, randomBytes(mib * 1024 * 1024));
      const bytes = clients * mib * 1024 * 1024;
      let round = 0;
      const once = async (n: number) => {
        const pids = [...servers.slice(0, n).map((s) => s.proc.pid as number)];
        const others = [bucket?.pid as number, kms?.proc.pid as number];
        const before = [...pids, ...others].map(cpuSeconds);
        const load = loadavg()[0];
        const t0 = performance.now();
        const results = await Promise.all(
          Array.from({ length: clients }, (_, i) =>
            runSftpBatch({
              port: (servers[i % n] as RunningServer).port,
              user: "bench",
              keyFile,
              commands: [`put ${file} r${round}-n${n}-c${i}.bin`],
              timeoutMs: 600_000,
            }),
          ),
        );
        const seconds = (performance.now() - t0) / 1000;
        round++;
        for (const r of results) if (r.code !== 0) throw new Error(`sftp failed: ${r.stderr}`);
        const after = [...pids, ...others].map(cpuSeconds);
        const used = after.map((a, i) => a - (before[i] as number));
        // node i took in the files of clients i, i + n, …
        const gibOf = (i: number) =>
          (Array.from({ length: clients }, (_, c) => c).filter((c) => c % n === i).length * mib * 1024 * 1024) / GIB;
        const perNode = pids.map((_, i) => (used[i] as number) / gibOf(i));
        const netNode = pids.map((_, i) => ((used[i] as number) - (idleRate[i] as number) * seconds) / gibOf(i));
        return {
          seconds,
          load,
          perNode,
          netNode,
          s3rver: (used[n] as number) / (bytes / GIB),
          kms: (used[n + 1] as number) / (bytes / GIB),
        };
      };
      // every node's first upload (connections to the key manager and the bucket, JIT) outside the figures
      const warm = await Promise.all(
        servers.map((s, i) =>
          runSftpBatch({ port: s.port, user: "bench", keyFile, commands: [`put ${file} warm-${i}.bin`] }),
        ),
      );
      for (const r of warm) if (r.code !== 0) throw new Error(`sftp failed: ${r.stderr}`);
      // what each node burns doing nothing (heartbeats, sweeps, timers): over a run on a few nodes it is a share of
      // the per-GiB figure, so the table also gives the figure net of it
      const idleFrom = servers.map((s) => cpuSeconds(s.proc.pid as number));
      const idleT0 = performance.now();
      await new Promise((r) => setTimeout(r, ctx.quick ? 3000 : 10_000));
      const idleSeconds = (performance.now() - idleT0) / 1000;
      const idleRate = servers.map(
        (s, i) => (cpuSeconds(s.proc.pid as number) - (idleFrom[i] as number)) / idleSeconds,
      );
      ctx.log(`idle CPU per node: ${idleRate.map((r) => r.toFixed(3)).join(" / ")} s/s`);
      idleNote = `idle CPU per node ${idleRate.map((r) => r.toFixed(3)).join(" / ")} s per second (measured for ${idleSeconds.toFixed(0)} s before the runs)`;
      for (const n of [1, 2, 3]) {
        let best: Awaited<ReturnType<typeof once>> | undefined;
        for (let r = 0; r < ctx.runs; r++) {
          const got = await once(n);
          if (!best || got.seconds < best.seconds) best = got;
        }
        const b = best as NonNullable<typeof best>;
        const mbps = bytes / 1e6 / b.seconds;
        ctx.log(`${n} node(s): ${mbps.toFixed(0)} MB/s, CPU s/GiB per node ${b.perNode.map((c) => c.toFixed(1))}`);
        rows.push([
          String(n),
          `${clients} x ${mib}`,
          mbps.toFixed(0),
          b.perNode.map((c) => c.toFixed(1)).join(" / "),
          b.netNode.map((c) => c.toFixed(1)).join(" / "),
          b.s3rver.toFixed(1),
          b.kms.toFixed(2),
          b.load.toFixed(1),
        ]);
        summary.push(
          `nodes: ${n} node(s) ${mbps.toFixed(0)} MB/s aggregate, ${b.perNode.map((c) => c.toFixed(1)).join("/")} CPU s/GiB per node`,
        );
      }
    } finally {
      for (const s of servers) await s.stop();
      await kms?.stop();
      await bucket?.close();
      process.env.AWS_ACCESS_KEY_ID = savedEnv.id;
      process.env.AWS_SECRET_ACCESS_KEY = savedEnv.secret;
      if (savedEnv.id === undefined) delete process.env.AWS_ACCESS_KEY_ID;
      if (savedEnv.secret === undefined) delete process.env.AWS_SECRET_ACCESS_KEY;
      const admin = new pg.Client({ connectionString: PG });
      await admin.connect();
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
      await admin.end();
    }
    return {
      table: rows,
      notes: [
        `load before ${loadBefore}; best of ${ctx.runs} by time. Every process (clients, nodes, PostgreSQL, s3rver, kms) shares the machine's 2 cores: aggregate MB/s is bounded by the machine, not by the node count; CPU s/GiB per node staying flat as nodes are added is the scaling figure.`,
        "s3rver is single-threaded JavaScript writing files on the same disk: its CPU per GiB is what a real object store would take off this machine.",
        `${idleNote}; "net of idle" subtracts that rate times the run's length from each node's CPU.`,
      ],
      summary,
    };
  },
};
