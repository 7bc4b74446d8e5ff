// Container throughput: atrest's segment seal/open (src/format/) in memory vs `openssl speed -evp aes-256-gcm`.
import { randomBytes, randomFillSync } from "node:crypto";
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

/** Seals `total` bytes as full segments plus an empty final one, then opens them all; seconds for each. */
function sealOpen(format: Format, total: number): { seal: number; open: number } {
  const dek = randomBytes(32);
  const { keys } = format.createHeader({ dek, fileId: "bench/container", wrappedDek: randomBytes(60) });
  const seg = keys.layout.segmentSize;
  const count = Math.floor(total / seg);
  const source = randomFillSync(Buffer.allocUnsafe(Math.min(64 * MiB, count * seg)));
  const perSource = source.length / seg;
  const sealed: Buffer[] = new Array(count + 1);
  let t = performance.now();
  for (let i = 0; i < count; i++) {
    const at = (i % perSource) * seg;
    sealed[i] = keys.seal(i, source.subarray(at, at + seg), false);
  }
  sealed[count] = keys.seal(count, Buffer.alloc(0), true);
  const sealSeconds = (performance.now() - t) / 1000;
  t = performance.now();
  let check = 0;
  for (let i = 0; i <= count; i++) check += keys.open(i, sealed[i], i === count).length;
  const openSeconds = (performance.now() - t) / 1000;
  keys.destroy();
  if (check !== count * seg) throw new Error(`opened ${check} bytes, expected ${count * seg}`);
  return { seal: sealSeconds, open: openSeconds };
}

export const container: BenchModule = {
  name: "container",
  title: "Container encryption: atrest vs OpenSSL",
  method: [
    "**Container**: `openssl speed -evp aes-256-gcm -seconds 3` (one core; the 16384-byte column) against atrest's " +
      "`createHeader` + `keys.seal(i, segment, last)` over 1 GiB of in-memory plaintext in default-size segments, " +
      "then `keys.open` of every sealed segment (one core, Node's `node:crypto`). Best of 2. " +
      "Ratio = atrest MB/s / OpenSSL MB/s (target ≥ 0.6×).",
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
    let best: { seal: number; open: number } | undefined;
    let segment = "";
    if (typeof format === "string") {
      ctx.log(`skipping atrest container: ${format}`);
      notes.push(`atrest skipped: ${format}`);
    } else {
      for (let n = 1; n <= ctx.runs; n++) {
        const r = sealOpen(format, total);
        ctx.log(`  run ${n}: seal ${r.seal.toFixed(2)} s, open ${r.open.toFixed(2)} s for ${size(total)}`);
        best = { seal: Math.min(best?.seal ?? r.seal, r.seal), open: Math.min(best?.open ?? r.open, r.open) };
      }
      const probe = format.createHeader({ dek: randomBytes(32), fileId: "probe", wrappedDek: randomBytes(60) });
      segment = size(probe.keys.layout.segmentSize);
      probe.keys.destroy();
    }
    const rate = (s: number | undefined) => (s === undefined ? undefined : total / s);
    const fmt = (v: number | undefined) => (v === undefined ? "–" : (v / MB).toFixed(0));
    const vs = (v: number | undefined) => (v === undefined || ossl === undefined ? "–" : `${(v / ossl).toFixed(2)}×`);
    const table = [
      ["operation", "OpenSSL MB/s (16 KiB blocks)", `atrest MB/s (${segment || "?"} segments)`, "ratio atrest/OpenSSL"],
      ["encrypt (seal)", fmt(ossl), fmt(rate(best?.seal)), vs(rate(best?.seal))],
      ["decrypt (open)", fmt(ossl), fmt(rate(best?.open)), vs(rate(best?.open))],
    ];
    notes.push(
      `OpenSSL at 8192-byte blocks: ${fmt(speed.get(8192))} MB/s. atrest processed ${size(total)} per run; target ≥ ${TARGET}×.`,
    );
    if (ctx.quick) notes.push("`--quick`: smaller size and one run; not comparable with full runs.");
    const summary = [
      `container encrypt: atrest ${fmt(rate(best?.seal))} MB/s vs OpenSSL ${fmt(ossl)} MB/s, ratio ${vs(rate(best?.seal))}`,
      `container decrypt: atrest ${fmt(rate(best?.open))} MB/s vs OpenSSL ${fmt(ossl)} MB/s, ratio ${vs(rate(best?.open))}`,
    ];
    return { table, notes, summary };
  },
};
