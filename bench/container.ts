// Container throughput: atrest's segment seal/open (src/format/) in memory vs `openssl speed -evp aes-256-gcm`.
import { randomBytes, randomFillSync } from "node:crypto";
import { loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { containerCrypto } from "../src/crypto/gcm-native.ts";
import { serverRuntime } from "./lib/atrest.ts";
import { run } from "./lib/proc.ts";
import { GiB, MB, MiB, size } from "./lib/report.ts";
import type { BenchContext, BenchModule, BenchSection } from "./lib/types.ts";

const TARGET = 0.6;

/** Bytes/s per block size from `openssl speed` output ("The 'numbers' are in 1000s of bytes per second"). */
export function parseOpensslSpeed(output: string): Map<number, number> {
  const lines = output.split("\n");
  const head = lines.find((l) => l.startsWith("type"));
  const row = lines.find((l) => /^aes-256-gcm\s/i.test(l));
  const out = new Map<number, number>();
  if (!head || !row) return out;
  const sizes = [...head.matchAll(/(\d+) bytes/g)].map((m) => Number(m[1]));
  const values = row
    .trim()
    .split(/\s+/)
    .slice(1)
    .map((v) => Number.parseFloat(v) * 1000);
  sizes.forEach((s, i) => {
    if (Number.isFinite(values[i])) out.set(s, values[i]);
  });
  return out;
}

type Format = typeof import("../src/format/container.ts");

async function loadFormat(): Promise<Format | string> {
  try {
    const mod: Format = await import("../src/format/container.ts");
    if (typeof mod.createHeader !== "function") return "src/format/container.ts has no createHeader export";
    return mod;
  } catch (e) {
    return `container API not available (${(e as Error).message.split("\n")[0]})`;
  }
}

/**
 * The seal worker's young-generation collection every 8 jobs of 16 segments (seal-worker.ts): each segment's cipher
 * output is a fresh 64 KiB Buffer, which V8 otherwise collects by a major GC every ~64 MiB (33 per GiB sealed and
 * opened here). Only in the --seal-open child, which runs with --expose-gc.
 */
const JOBS_PER_SCAVENGE = 8;
type Collect = (options: { type: "minor"; execution: "sync" }) => void;
const gc = (globalThis as { gc?: Collect }).gc;
const scavenge = gc ? () => gc({ type: "minor", execution: "sync" }) : undefined;

/** CPU seconds (user + system) of this process since `from`. */
function cpuSince(from: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(from);
  return (used.user + used.system) / 1e6;
}

interface Timing {
  /** CPU seconds (user + system) */
  seal: number;
  open: number;
  /** wall seconds */
  sealWall: number;
  openWall: number;
  /** Which AES-GCM sealed and opened (src/crypto/gcm-native.ts). */
  crypto: string;
}

/**
 * Seals `total` bytes as full segments plus an empty final one, then opens as many; seconds for each. As the server's
 * seal worker does: the plaintext comes in 1 MiB batches (16 segments) and is sealed into a recycled 1 MiB output (a
 * fresh output per segment would be measuring the allocator, a 64 MiB ring the memory bus: 1,376 against 2,650
 * MB/s, measured); the opens likewise, batch by batch into a recycled 1 MiB plaintext output, as the seal worker's
 * do (the last batch sealed, opened again and again).
 */
function sealOpen(format: Format, total: number): Timing {
  const dek = randomBytes(32);
  const { keys } = format.createHeader({ dek, fileId: "bench/container", wrappedDek: randomBytes(60) });
  const seg = keys.layout.segmentSize;
  const sealedSize = keys.layout.sealedSegmentSize;
  const count = Math.floor(total / seg);
  const source = randomFillSync(Buffer.allocUnsafe(Math.min(MiB, count * seg)));
  const perRing = source.length / seg;
  const ring = Buffer.alloc(perRing * sealedSize);
  const ringIndex: number[] = new Array(perRing);
  let cpu = process.cpuUsage();
  let t = performance.now();
  for (let i = 0; i < count; i += perRing) {
    const n = Math.min(perRing, count - i);
    keys.sealSegmentsInto(i, source.subarray(0, n * seg), ring);
    for (let k = 0; k < n; k++) ringIndex[k] = i + k;
    if ((i / perRing) % JOBS_PER_SCAVENGE === JOBS_PER_SCAVENGE - 1) scavenge?.();
  }
  const final = keys.seal(count, Buffer.alloc(0), true);
  const seal = cpuSince(cpu);
  const sealWall = (performance.now() - t) / 1000;
  cpu = process.cpuUsage();
  t = performance.now();
  let check = 0;
  const plain = Buffer.alloc(perRing * seg);
  for (let i = 0; i < count; i += perRing) {
    const n = Math.min(perRing, count - i);
    check += keys.openSegmentsInto(ringIndex[0], ring.subarray(0, n * sealedSize), false, plain);
    if ((i / perRing) % JOBS_PER_SCAVENGE === JOBS_PER_SCAVENGE - 1) scavenge?.();
  }
  check += keys.open(count, final, true).length;
  const open = cpuSince(cpu);
  const openWall = (performance.now() - t) / 1000;
  keys.destroy();
  if (check !== count * seg) throw new Error(`opened ${check} bytes, expected ${count * seg}`);
  return { seal, open, sealWall, openWall, crypto: containerCrypto().describe };
}

/**
 * sealOpen in a process of its own, as the server seals on a worker thread with a heap of its own: in the bench
 * runner's heap (every bench module loaded, ~55 MB) each cipher output Buffer counted towards a major GC, 33 of them
 * per GiB, and the same loop measured 0.17× instead of 0.46× (2026-12-04, load 16).
 */
async function sealOpenApart(root: string, total: number, env: NodeJS.ProcessEnv = {}): Promise<Timing> {
  // with the server's process settings (src/cli/server-runtime.json: V8 flags, MALLOC_ARENA_MAX), as its seal worker
  const runtime = serverRuntime(root);
  const args = [...runtime.nodeFlags, "--expose-gc", fileURLToPath(import.meta.url), "--seal-open", String(total)];
  const { stdout } = await run(process.execPath, args, { env: { ...runtime.env, ...env }, timeoutMs: 600_000 });
  return JSON.parse(stdout.trim().split("\n").at(-1) ?? "") as Timing;
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === "--seal-open") {
  const format = await loadFormat();
  if (typeof format === "string") throw new Error(format);
  console.log(JSON.stringify(sealOpen(format, Number(process.argv[3]))));
}

export const container: BenchModule = {
  name: "container",
  title: "Container encryption: atrest vs OpenSSL",
  method: [
    "**Container**: `openssl speed -evp aes-256-gcm -seconds 3` (one core; the 16384-byte column) against atrest's " +
      "`createHeader` + `keys.sealSegmentsInto(i, batch, output)` (the seal worker's routine) over 1 GiB of in-memory plaintext in default-size " +
      "segments (1 MiB batches sealed into a recycled 1 MiB output, as the server's seal worker does), then " +
      "`keys.openSegmentsInto` of as many sealed segments, 1 MiB batches into a recycled output as the worker opens them (one core, OpenSSL's EVP through atrest's GCM binding, in a Node process of its own with " +
      "the server's process settings, as the server seals on a worker thread with a heap of its own, and its " +
      "young-generation collection every 8 batches). Best of 2; then one run on the node:crypto path (`ATREST_CONTAINER_CRYPTO=js`, a server without the binding). " +
      "Both sides on CPU time: `openssl speed` divides by the user CPU time it used, atrest's MB/s are bytes over " +
      "the process's user + system CPU time for the loop (`process.cpuUsage`), so other load on the machine does " +
      "not count against either (wall-time MB/s in the notes). Ratio = atrest MB/s / OpenSSL MB/s (target ≥ 0.6×).",
  ],
  async run(ctx: BenchContext): Promise<BenchSection> {
    const total = ctx.quick ? 256 * MiB : GiB;
    ctx.log("openssl speed -evp aes-256-gcm");
    const speed = parseOpensslSpeed(
      (await run("openssl", ["speed", "-evp", "aes-256-gcm", "-seconds", ctx.quick ? "1" : "3"])).stdout,
    );
    const ossl = speed.get(16384) ?? speed.get(8192);
    const notes: string[] = [];
    if (ossl === undefined) notes.push("could not parse `openssl speed` output");

    const format = await loadFormat();
    let best: Timing | undefined;
    let fallback: Timing | undefined;
    let segment = "";
    if (typeof format === "string") {
      ctx.log(`skipping atrest container: ${format}`);
      notes.push(`atrest skipped: ${format}`);
    } else {
      for (let n = 1; n <= ctx.runs; n++) {
        const r = await sealOpenApart(ctx.root, total);
        ctx.log(
          `  run ${n}: seal ${r.seal.toFixed(2)} s CPU (${r.sealWall.toFixed(2)} s wall), open ${r.open.toFixed(2)} s CPU (${r.openWall.toFixed(2)} s wall) for ${size(total)}`,
        );
        best = {
          seal: Math.min(best?.seal ?? r.seal, r.seal),
          open: Math.min(best?.open ?? r.open, r.open),
          sealWall: Math.min(best?.sealWall ?? r.sealWall, r.sealWall),
          openWall: Math.min(best?.openWall ?? r.openWall, r.openWall),
          crypto: r.crypto,
        };
      }
      // The node:crypto path a server without the binding (or with ATREST_CONTAINER_CRYPTO=js) takes: one run.
      fallback = await sealOpenApart(ctx.root, total, { ATREST_CONTAINER_CRYPTO: "js" });
      ctx.log(`  node:crypto: seal ${fallback.seal.toFixed(2)} s CPU, open ${fallback.open.toFixed(2)} s CPU`);
      const probe = format.createHeader({ dek: randomBytes(32), fileId: "probe", wrappedDek: randomBytes(60) });
      segment = size(probe.keys.layout.segmentSize);
      probe.keys.destroy();
    }
    const rate = (s: number | undefined) => (s === undefined ? undefined : total / s);
    const fmt = (v: number | undefined) => (v === undefined ? "–" : (v / MB).toFixed(0));
    const vs = (v: number | undefined) => (v === undefined || ossl === undefined ? "–" : `${(v / ossl).toFixed(2)}×`);
    const table = [
      [
        "operation",
        "OpenSSL MB/s (16 KiB blocks, CPU time)",
        `atrest MB/s (${segment || "?"} segments, CPU time)`,
        "ratio atrest/OpenSSL",
      ],
      ["encrypt (seal)", fmt(ossl), fmt(rate(best?.seal)), vs(rate(best?.seal))],
      ["decrypt (open)", fmt(ossl), fmt(rate(best?.open)), vs(rate(best?.open))],
    ];
    notes.push(
      `OpenSSL at 8192-byte blocks: ${fmt(speed.get(8192))} MB/s. atrest processed ${size(total)} per run; target ≥ ${TARGET}×.`,
      `atrest by wall time (load ${loadavg()[0].toFixed(1)} at the end): seal ${fmt(rate(best?.sealWall))} MB/s, open ${fmt(rate(best?.openWall))} MB/s.`,
    );
    if (best) notes.push(`atrest's AES-GCM: ${best.crypto}.`);
    if (fallback) {
      notes.push(
        `node:crypto path (ATREST_CONTAINER_CRYPTO=js, as without the binding), one run: seal ${fmt(rate(fallback.seal))} MB/s (${vs(rate(fallback.seal))}), open ${fmt(rate(fallback.open))} MB/s (${vs(rate(fallback.open))}).`,
      );
    }
    if (ctx.quick) notes.push("`--quick`: smaller size and one run; not comparable with full runs.");
    const summary = [
      `container encrypt: atrest ${fmt(rate(best?.seal))} MB/s vs OpenSSL ${fmt(ossl)} MB/s, ratio ${vs(rate(best?.seal))}`,
      `container decrypt: atrest ${fmt(rate(best?.open))} MB/s vs OpenSSL ${fmt(ossl)} MB/s, ratio ${vs(rate(best?.open))}`,
    ];
    return { table, notes, summary };
  },
};
