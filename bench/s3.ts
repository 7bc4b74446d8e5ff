// S3 throughput: awscli against atrest's S3 door and against s3rver (a second S3 implementation, from node_modules:
// `rclone serve s3` needs rclone >= 1.65, Debian 12 has 1.60; MinIO is not installed) in the same run, plus atrest's
// own SFTP door for the same 1 GiB file. Plain HTTP on loopback for both S3 servers (--s3-tls off), one run each.
import { createCipheriv, createHash, randomBytes } from "node:crypto";
import { closeSync, createReadStream, mkdirSync, openSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { serverRuntime } from "./lib/atrest.ts";
import { captureTail, freePort, run, spawnTracked, stop, waitForLine } from "./lib/proc.ts";
import { GiB, MiB, mbps, ratio, seconds, size } from "./lib/report.ts";
import { startRssSampler } from "./lib/rss.ts";
import { generateKey, type KeyPair, quote, sftpBatch } from "./lib/ssh.ts";
import type { BenchContext, BenchModule, BenchSection } from "./lib/types.ts";

const RSS_TARGET_MB = 200;

interface S3Peer {
  label: string;
  endpoint: string;
  pid: number;
  creds: { id: string; secret: string };
  stop(): Promise<void>;
  /** atrest only: its SFTP door, for the same file over SFTP. */
  sftp?: { port: number; user: string; key: KeyPair };
}

/** Writes `bytes` of AES-CTR keystream (incompressible) and returns its SHA-256. */
function makeBigFile(path: string, bytes: number): string {
  const cipher = createCipheriv("aes-128-ctr", randomBytes(16), randomBytes(16));
  const zeros = Buffer.alloc(4 * MiB);
  const hash = createHash("sha256");
  const fd = openSync(path, "w");
  try {
    for (let left = bytes; left > 0; left -= zeros.length) {
      const chunk = cipher.update(left >= zeros.length ? zeros : zeros.subarray(0, left));
      hash.update(chunk);
      writeSync(fd, chunk);
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest("hex");
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MiB })) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

function awsEnv(dir: string, id: string, secret: string, multipart: boolean): NodeJS.ProcessEnv {
  const config = join(dir, `aws-config-${multipart ? "mp" : "single"}`);
  // single: one PUT for the whole file (threshold above it); multipart: awscli's defaults (8 MiB parts, 10 threads)
  writeFileSync(
    config,
    `[default]\nregion = us-east-1\ns3 =\n  signature_version = s3v4\n  addressing_style = path\n${
      multipart ? "" : "  multipart_threshold = 5GB\n  multipart_chunksize = 5GB\n"
    }`,
  );
  const { AWS_CA_BUNDLE: _ca, HTTP_PROXY: _p, http_proxy: _p2, ...base } = process.env;
  return {
    ...base,
    AWS_ACCESS_KEY_ID: id,
    AWS_SECRET_ACCESS_KEY: secret,
    AWS_CONFIG_FILE: config,
    AWS_SHARED_CREDENTIALS_FILE: join(dir, "none"),
    AWS_EC2_METADATA_DISABLED: "true",
  };
}

async function startAtrestS3(ctx: BenchContext, dir: string): Promise<S3Peer> {
  const cli = join(ctx.root, "src", "cli", "main.ts");
  const data = join(dir, "data");
  mkdirSync(dir, { recursive: true });
  // the server's process settings as bin/atrest.js applies them (V8 flags, MALLOC_ARENA_MAX)
  const { nodeFlags, env } = serverRuntime(ctx.root);
  const node = process.execPath;
  const key = await generateKey(join(dir, "ssh"));
  await run(node, [cli, "init", "--data", data], { cwd: dir, env, timeoutMs: 60_000 });
  await run(node, [cli, "user", "add", "bench", "--public-key", key.publicKey, "--data", data], { cwd: dir, env });
  const added = await run(node, [cli, "user", "s3-key", "add", "bench", "--data", data], { cwd: dir, env });
  const id = /access key id: +(\S+)/.exec(added.stdout)?.[1];
  const secret = /secret access key: +(\S+)/.exec(added.stdout)?.[1];
  if (!id || !secret) throw new Error(`no access key printed: ${added.stdout}`);
  const [sftpPort, s3Port] = [await freePort(), await freePort()];
  const child = spawnTracked(
    node,
    [
      ...nodeFlags,
      cli,
      "server",
      "--data",
      data,
      "--host",
      "127.0.0.1",
      "--sftp-port",
      String(sftpPort),
      "--http-port",
      "0",
      "--s3-port",
      String(s3Port),
      "--s3-tls",
      "off",
      "--log-level",
      "warn",
    ],
    { cwd: dir, env },
  );
  const tail = captureTail(child);
  try {
    await waitForLine(child, /atrest: s3 listening on http:\/\/127\.0\.0\.1:\d+/, 60_000);
  } catch (e) {
    await stop(child);
    throw new Error(`atrest did not start: ${(e as Error).message}\n${tail()}`);
  }
  return {
    label: "atrest",
    endpoint: `http://127.0.0.1:${s3Port}`,
    pid: child.pid as number,
    creds: { id, secret },
    stop: () => stop(child),
    sftp: { port: sftpPort, user: "bench", key },
  };
}

async function startS3rver(ctx: BenchContext, dir: string): Promise<S3Peer> {
  const bin = join(ctx.root, "node_modules", "s3rver", "bin", "s3rver.js");
  mkdirSync(join(dir, "store"), { recursive: true });
  const port = await freePort();
  const child = spawnTracked(
    process.execPath,
    [bin, "-d", join(dir, "store"), "-a", "127.0.0.1", "-p", String(port), "--no-vhost-buckets"],
    { cwd: dir, env: process.env },
  );
  const tail = captureTail(child);
  try {
    await waitForLine(child, /listening on/i, 30_000);
  } catch (e) {
    await stop(child);
    throw new Error(`s3rver did not start: ${(e as Error).message}\n${tail()}`);
  }
  return {
    label: "s3rver",
    endpoint: `http://127.0.0.1:${port}`,
    pid: child.pid as number,
    // s3rver's built-in account
    creds: { id: "S3RVER", secret: "S3RVER" },
    stop: () => stop(child),
  };
}

interface Figures {
  [workload: string]: { seconds?: number; rssMb?: number; note?: string };
}

export const s3: BenchModule = {
  name: "s3",
  title: "S3 door: awscli PUT/GET of 1 GiB (single PUT and multipart) and small objects, atrest vs s3rver",
  method: [
    "**S3**: awscli (`aws s3 cp`) against atrest's S3 door (`--s3-tls off`, loopback) and against s3rver 3.7 (node_modules; " +
      "`rclone serve s3` needs rclone 1.65+, Debian 12 ships 1.60) in the same run, servers started fresh; one run of each workload, servers interleaved",
    "single: one PutObject of the whole file (`multipart_threshold = 5GB`), GET with one stream; multipart: awscli's " +
      "defaults (8 MiB parts, 10 concurrent requests) both ways",
    "small objects: `aws s3 cp --recursive` of N × 4 KiB files up and down (10 concurrent requests), objects/s",
    "the same 1 GiB file over atrest's own SFTP door (`sftp -b`, aes128-gcm) in the same run, for the S3 ÷ SFTP ratio",
    "server RSS: peak VmRSS of the server process, sampled every 100 ms during the 1 GiB transfers; every download's " +
      "SHA-256 checked against the upload",
  ],
  async run(ctx: BenchContext): Promise<BenchSection> {
    const bytes = ctx.quick ? 64 * MiB : 1 * GiB;
    const nSmall = ctx.quick ? 100 : 1000;
    // one run of each: a 1 GiB transfer is long enough to be stable, and 12 of them already take minutes
    const runs = 1;
    const big = join(ctx.tmp, "big.bin");
    const bigHash = makeBigFile(big, bytes);
    const smallDir = join(ctx.tmp, "small");
    mkdirSync(smallDir, { recursive: true });
    for (let i = 0; i < nSmall; i++)
      writeFileSync(join(smallDir, `f${String(i).padStart(5, "0")}.bin`), randomBytes(4096));
    const peers: S3Peer[] = [];
    const figures = new Map<string, Figures>();
    const notes: string[] = [];
    const loads: number[] = [];
    try {
      peers.push(await startAtrestS3(ctx, join(ctx.tmp, "atrest")));
      peers.push(await startS3rver(ctx, join(ctx.tmp, "s3rver")));
      for (const p of peers) {
        figures.set(p.label, {});
        const env = awsEnv(ctx.tmp, p.creds.id, p.creds.secret, true);
        await run("aws", ["--endpoint-url", p.endpoint, "s3", "mb", "s3://bench"], { env });
      }
      const best = (label: string, workload: string, s: number, rssMb?: number) => {
        const f = figures.get(label) as Figures;
        const prev = f[workload];
        if (!prev?.seconds || s < prev.seconds)
          f[workload] = { seconds: s, rssMb: Math.max(rssMb ?? 0, prev?.rssMb ?? 0) };
        else if (rssMb !== undefined) prev.rssMb = Math.max(prev.rssMb ?? 0, rssMb);
      };
      for (let n = 0; n < runs; n++) {
        for (const p of peers) {
          for (const multipart of [false, true]) {
            const mode = multipart ? "multipart" : "single";
            const env = awsEnv(ctx.tmp, p.creds.id, p.creds.secret, multipart);
            const cp = async (from: string, to: string) => {
              const rss = startRssSampler(p.pid);
              const r = await run("aws", ["--endpoint-url", p.endpoint, "s3", "cp", "--only-show-errors", from, to], {
                env,
                timeoutMs: 30 * 60_000,
              });
              return { s: r.seconds, rssMb: rss.stop().peakBytes / 1e6 };
            };
            loads.push(loadavg()[0] as number);
            const up = await cp(big, `s3://bench/big-${mode}.bin`);
            best(p.label, `put ${mode}`, up.s, up.rssMb);
            const back = join(ctx.tmp, `back-${p.label}.bin`);
            const down = await cp(`s3://bench/big-${mode}.bin`, back);
            best(p.label, `get ${mode}`, down.s, down.rssMb);
            if ((await sha256File(back)) !== bigHash) throw new Error(`${p.label} ${mode}: downloaded bytes differ`);
            rmSync(back);
            ctx.log(`${p.label} ${mode} run ${n + 1}: put ${seconds(up.s)} get ${seconds(down.s)}`);
          }
          const env = awsEnv(ctx.tmp, p.creds.id, p.creds.secret, true);
          const upSmall = await run(
            "aws",
            [
              "--endpoint-url",
              p.endpoint,
              "s3",
              "cp",
              "--recursive",
              "--only-show-errors",
              smallDir,
              `s3://bench/small${n}/`,
            ],
            { env, timeoutMs: 30 * 60_000 },
          );
          best(p.label, "put small", upSmall.seconds);
          const smallBack = join(ctx.tmp, `small-back-${p.label}`);
          const downSmall = await run(
            "aws",
            [
              "--endpoint-url",
              p.endpoint,
              "s3",
              "cp",
              "--recursive",
              "--only-show-errors",
              `s3://bench/small${n}/`,
              smallBack,
            ],
            { env, timeoutMs: 30 * 60_000 },
          );
          best(p.label, "get small", downSmall.seconds);
          rmSync(smallBack, { recursive: true, force: true });
          // atrest's own SFTP door, same file
          if (p.sftp) {
            const server = {
              label: "atrest sftp",
              user: p.sftp.user,
              port: p.sftp.port,
              pid: p.pid,
              remoteBase: "",
              stop: async () => {},
              output: () => "",
            };
            const back = join(ctx.tmp, "sftp-back.bin");
            const rss = startRssSampler(p.pid);
            const put = await sftpBatch(server, p.sftp.key, ctx.tmp, [`put ${quote(big)} sftp-big.bin`]);
            const get = await sftpBatch(server, p.sftp.key, ctx.tmp, [`get sftp-big.bin ${quote(back)}`]);
            const rssMb = rss.stop().peakBytes / 1e6;
            if (!figures.has("atrest sftp")) figures.set("atrest sftp", {});
            best("atrest sftp", "put single", put.seconds, rssMb);
            best("atrest sftp", "get single", get.seconds, rssMb);
            if ((await sha256File(back)) !== bigHash) throw new Error("atrest sftp: downloaded bytes differ");
            rmSync(back);
          }
        }
      }
    } finally {
      for (const p of peers) await p.stop();
    }
    const a = figures.get("atrest") ?? {};
    const r = figures.get("s3rver") ?? {};
    const f = figures.get("atrest sftp") ?? {};
    const rate = (w: string, fig: Figures) =>
      w.endsWith("small")
        ? `${fig[w]?.seconds ? (nSmall / fig[w].seconds).toFixed(0) : "–"} obj/s`
        : mbps(bytes, fig[w]?.seconds);
    const table: string[][] = [
      [
        "workload",
        "atrest S3 (MB/s)",
        "s3rver (MB/s)",
        "atrest ÷ s3rver",
        "atrest SFTP (MB/s)",
        "S3 ÷ SFTP",
        "atrest RSS",
      ],
    ];
    for (const w of ["put single", "get single", "put multipart", "get multipart", "put small", "get small"]) {
      const label = w.endsWith("small")
        ? `${w.slice(0, 3).toUpperCase()} ${nSmall} × 4 KiB`
        : `${w.split(" ")[0]?.toUpperCase()} ${size(bytes)} ${w.split(" ")[1]}`;
      const sftpW = w.startsWith("put") ? "put single" : "get single";
      table.push([
        label,
        rate(w, a),
        rate(w, r),
        ratio(r[w]?.seconds, a[w]?.seconds),
        w.endsWith("small") ? "" : mbps(bytes, f[sftpW]?.seconds),
        w.endsWith("small") ? "" : ratio(f[sftpW]?.seconds, a[w]?.seconds),
        a[w]?.rssMb ? `${a[w].rssMb.toFixed(0)} MB` : "",
      ]);
    }
    const peakRss = Math.max(...Object.values(a).map((x) => x.rssMb ?? 0));
    notes.push(
      `atrest server peak RSS ${peakRss.toFixed(0)} MB over the ${size(bytes)} transfers (target < ${RSS_TARGET_MB} MB: ${peakRss < RSS_TARGET_MB ? "met" : "not met"})`,
      `ratios are throughput ratios (> 1 = atrest faster); 1-minute load average during the runs ${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)} on this machine`,
      "s3rver keeps objects as plain files (no encryption); atrest encrypts every object (AES-256-GCM segments, " +
        "names too) and commits it atomically",
    );
    return {
      table,
      notes,
      summary: [
        `s3: PUT ${size(bytes)} single ${mbps(bytes, a["put single"]?.seconds)} (${ratio(r["put single"]?.seconds, a["put single"]?.seconds)} s3rver), GET ${mbps(bytes, a["get single"]?.seconds)} (${ratio(r["get single"]?.seconds, a["get single"]?.seconds)}), RSS ${peakRss.toFixed(0)} MB`,
      ],
    };
  },
};
