// Coverage-guided fuzzing of the parsers that take bytes from the network or the disk, with V8's own block coverage
// as the feedback: `npm run fuzz -- --guided [--inputs N] [--seed S] [target...]`.
//
// Why not Jazzer.js: its prebuilt libFuzzer addon needs GLIBC 2.38 and Debian 12 has 2.36, and building it from source
// needs clang's libFuzzer, which this toolchain does not ship. V8 already counts every executed block of our code:
// `Profiler.takePreciseCoverage` (node:inspector, synchronous on the main thread) after each input says which blocks
// it reached; an input that reaches a block no earlier input reached joins the corpus and is mutated further
// (bit flips, byte sets, inserts, deletes, interesting values, chunk copies, splices with other corpus entries), the
// loop libFuzzer and AFL run. A crash is any exception a target does not list as its typed refusal.
import { randomBytes } from "node:crypto";
import { Session } from "node:inspector";
import { AtrestError, IntegrityError } from "../src/errors.ts";
import { createHeader, openContainer } from "../src/format/container.ts";
import { parseHeader } from "../src/format/header.ts";
import { decodeTtlv, encodeTtlv, TtlvError } from "../src/kms/kmip/ttlv.ts";
import { parse, schemas } from "../src/kms/server/codec.ts";
import { BadMessage, Reader } from "../src/protocols/sftp/protocol/packets.ts";

export interface ByteTarget {
  name: string;
  /** Valid inputs to start from (the corpus seeds). */
  seeds(): Buffer[];
  /** Runs one input; throws only for a bug (typed refusals are caught inside). */
  run(input: Buffer): void;
}

function refuses(fn: () => unknown, ...allowed: (new (...args: never[]) => Error)[]): unknown {
  try {
    return fn();
  } catch (err) {
    if (allowed.some((c) => err instanceof c)) return undefined;
    throw err;
  }
}

const OPS = ["u32", "u64", "bytes", "string", "attrs"] as const;

const dek = randomBytes(32);
const made = createHeader({ dek, fileId: "f-guided", wrappedDek: randomBytes(96), segmentLog2: 10 });
const sealed = made.keys.seal(0, randomBytes(300), true);

export const BYTE_TARGETS: ByteTarget[] = [
  {
    name: "sftp-packet-reader",
    // First byte: which reads to do (2 bits each, wrapping), the rest: the packet.
    seeds: () => [Buffer.from("1b0000000500000003000000022f6100000000", "hex")],
    run(input) {
      if (input.length === 0) return;
      const plan = input[0] as number;
      const r = new Reader(input.subarray(1));
      for (let i = 0; i < 8; i++) {
        const op = OPS[((plan >> ((i % 4) * 2)) + i) % OPS.length] as (typeof OPS)[number];
        const before = r.pos;
        if (refuses(() => r[op](), BadMessage) === undefined) break;
        if (!(r.pos > before && r.pos <= r.buf.length)) throw new Error(`${op} moved the cursor to ${r.pos}`);
      }
    },
  },
  {
    name: "container-header",
    seeds: () => [Buffer.from(made.header)],
    run(input) {
      const parsed = refuses(() => parseHeader(input), IntegrityError) as ReturnType<typeof parseHeader> | undefined;
      if (parsed) refuses(() => openContainer(parsed, dek, "f-guided"), IntegrityError);
    },
  },
  {
    name: "container-segment",
    seeds: () => [Buffer.from(sealed)],
    run(input) {
      const reader = openContainer(parseHeader(made.header), dek, "f-guided");
      const out = refuses(() => reader.open(0, input, true), IntegrityError, AtrestError) as Buffer | undefined;
      if (out && !input.equals(sealed)) throw new Error("a changed segment opened");
    },
  },
  {
    name: "kmip-ttlv-decoder",
    // A request header shape: a structure holding an integer and a text string.
    seeds: () => [
      encodeTtlv({
        tag: 0x420078,
        type: "structure",
        value: [
          { tag: 0x42006a, type: "integer", value: 1 },
          { tag: 0x420094, type: "text", value: "atrest" },
        ],
      }),
    ],
    run(input) {
      const decoded = refuses(() => decodeTtlv(input), TtlvError);
      // The decoder is strict (exact lengths, zero padding, no trailing bytes): what decodes encodes back the same.
      if (decoded !== undefined && !encodeTtlv(decoded as never).equals(input)) {
        throw new Error("decode → encode changed the bytes");
      }
    },
  },
  {
    name: "kms-request-decoder",
    seeds: () => [
      Buffer.from('{"context":{"file":"1","owner":"alice"},"plaintext":"AAAA","wrapped":"atrest:x:v1:AA"}'),
    ],
    run(input) {
      let value: unknown;
      try {
        value = JSON.parse(input.toString("utf8"));
      } catch {
        return;
      }
      for (const schema of Object.values(schemas)) refuses(() => parse(schema as never, value), AtrestError);
    },
  },
];

/** Inputs that raise the same exception at the same place are one finding. */
export interface Finding {
  target: string;
  message: string;
  input: string;
}

export interface GuidedReport {
  target: string;
  inputs: number;
  corpus: number;
  blocks: number;
  seconds: number;
  findings: Finding[];
}

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const INTERESTING = [0, 1, 0x7f, 0x80, 0xff, 0xfe, 0x10, 0x20, 0x40];
const MAX_LEN = 4096;

function mutate(input: Buffer, corpus: Buffer[], rand: () => number): Buffer {
  const n = (k: number) => Math.floor(rand() * k);
  let b = Buffer.from(input);
  for (let rounds = 1 + n(4); rounds > 0; rounds--) {
    switch (n(9)) {
      case 0:
        if (b.length) b[n(b.length)] ^= 1 << n(8);
        break;
      case 8:
        if (b.length) b[n(b.length)] = n(256);
        break;
      case 1:
        if (b.length) b[n(b.length)] = INTERESTING[n(INTERESTING.length)] as number;
        break;
      case 2: {
        const at = n(b.length + 1);
        b = Buffer.concat([b.subarray(0, at), randomBytes(1 + n(8)), b.subarray(at)]);
        break;
      }
      case 3: {
        if (b.length < 2) break;
        const at = n(b.length);
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + n(Math.min(16, b.length - at)))]);
        break;
      }
      case 4: {
        // a big-endian length field set to an edge value
        if (b.length < 4) break;
        const at = n(b.length - 3);
        b.writeUInt32BE([0, 1, 0x7fffffff, 0xffffffff, b.length, b.length - at][n(6)] as number, at);
        break;
      }
      case 5: {
        if (b.length < 2) break;
        const from = n(b.length);
        const len = 1 + n(Math.min(32, b.length - from));
        const to = n(b.length);
        b = Buffer.concat([b.subarray(0, to), b.subarray(from, from + len), b.subarray(to)]);
        break;
      }
      case 6: {
        const other = corpus[n(corpus.length)] as Buffer;
        b = Buffer.concat([b.subarray(0, n(b.length + 1)), other.subarray(n(other.length + 1))]);
        break;
      }
      default:
        b = b.subarray(0, n(b.length + 1));
    }
  }
  return b.length > MAX_LEN ? b.subarray(0, MAX_LEN) : b;
}

interface Coverage {
  result: { url: string; functions: { ranges: { startOffset: number; endOffset: number; count: number }[] }[] }[];
}

/** Runs one target for `inputs` inputs; returns what was found. The session is the caller's (one per process). */
export function fuzzGuided(
  session: Session,
  t: ByteTarget,
  inputs: number,
  seed: number,
  options: {
    /** Whose blocks count as feedback (default: the project's src/). */
    include?: (url: string) => boolean;
    /** Stop at the first finding (a self-test measuring how fast one is found). */
    stopOnFinding?: boolean;
  } = {},
): GuidedReport {
  const include = options.include ?? ((url: string) => url.includes("/src/"));
  const rand = rng(seed);
  const seen = new Set<string>();
  const corpus: Buffer[] = [];
  const findings = new Map<string, Finding>();
  // V8 lists a function's range and, inside it, only the blocks whose count differs from their parent's: a block that
  // ran as often as its parent is not listed at all. So a block is remembered once any run has listed it, and in
  // each run it counts as covered when the innermost range listed in that run around it has a count above 0.
  const known = new Map<string, Map<string, [number, number]>>();
  const take = (): number => {
    let fresh = 0;
    session.post("Profiler.takePreciseCoverage", (err, res) => {
      if (err) throw err;
      for (const script of (res as Coverage).result) {
        if (!include(script.url)) continue;
        for (const fn of script.functions) {
          const first = fn.ranges[0];
          if (!first) continue;
          const fk = `${script.url}:${first.startOffset}`;
          let blocks = known.get(fk);
          if (!blocks) {
            blocks = new Map();
            known.set(fk, blocks);
          }
          for (const r of fn.ranges) blocks.set(`${r.startOffset}:${r.endOffset}`, [r.startOffset, r.endOffset]);
          for (const [bk, [start, end]] of blocks) {
            let inner: (typeof fn.ranges)[number] | undefined;
            for (const r of fn.ranges) {
              if (r.startOffset <= start && end <= r.endOffset) {
                if (!inner || r.endOffset - r.startOffset < inner.endOffset - inner.startOffset) inner = r;
              }
            }
            if (!inner || inner.count === 0) continue;
            const k = `${fk}:${bk}`;
            if (!seen.has(k)) {
              seen.add(k);
              fresh++;
            }
          }
        }
      }
    });
    return fresh;
  };
  // Each take resets the counters, so the blocks a take reports are those of the input run since the last one.
  const exec = (input: Buffer): boolean => {
    try {
      t.run(input);
    } catch (err) {
      const e = err as Error;
      const where = (e.stack ?? "").split("\n")[1]?.trim() ?? "";
      const key = `${e.name}: ${e.message.slice(0, 80)} ${where}`;
      if (!findings.has(key)) findings.set(key, { target: t.name, message: key, input: input.toString("hex") });
    }
    return take() > 0;
  };
  const t0 = performance.now();
  take();
  for (const s of t.seeds()) if (exec(s) || corpus.length === 0) corpus.push(s);
  let i = 0;
  for (; i < inputs; i++) {
    const parent = corpus[Math.floor(rand() * corpus.length)] as Buffer;
    const child = mutate(parent, corpus, rand);
    if (exec(child)) corpus.push(child);
    if (options.stopOnFinding && findings.size > 0) {
      i++;
      break;
    }
  }
  return {
    target: t.name,
    inputs: i,
    corpus: corpus.length,
    blocks: seen.size,
    seconds: (performance.now() - t0) / 1000,
    findings: [...findings.values()],
  };
}

/** A coverage session on this thread (block granularity, counters reset at each take). */
export function coverageSession(): Session {
  const s = new Session();
  s.connect();
  s.post("Profiler.enable");
  s.post("Profiler.startPreciseCoverage", { callCount: true, detailed: true });
  return s;
}

export function main(): void {
  const args = process.argv.slice(2);
  const flag = (name: string, d: string) => {
    const i = args.indexOf(name);
    if (i < 0) return d;
    const v = args[i + 1] ?? d;
    args.splice(i, 2);
    return v;
  };
  const inputs = Number(flag("--inputs", "1000000"));
  const seed = Number(flag("--seed", String(Date.now() % 2 ** 31)));
  const picked = args.length ? BYTE_TARGETS.filter((t) => args.includes(t.name)) : BYTE_TARGETS;
  const session = coverageSession();
  let found = 0;
  for (const t of picked) {
    const r = fuzzGuided(session, t, inputs, seed);
    found += r.findings.length;
    console.log(
      `${r.target}: ${r.inputs.toLocaleString("en-US")} inputs in ${r.seconds.toFixed(1)} s ` +
        `(${Math.round(r.inputs / r.seconds)}/s), ${r.blocks} blocks reached, corpus ${r.corpus}, ` +
        `${r.findings.length} finding(s) (seed ${seed})`,
    );
    for (const f of r.findings) console.log(`  FINDING ${f.message}\n    input ${f.input.slice(0, 400)}`);
  }
  process.exitCode = found ? 1 : 0;
}

if (import.meta.main) main();
