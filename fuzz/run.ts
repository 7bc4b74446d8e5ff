// `npm run fuzz [-- [--runs N] [--seed S] [target...]]`: the fuzz targets of test/fuzz/targets.ts, 1,000,000 inputs
// each by default (100,000 for targets marked slow: one file written and read per input). fast-check drives them
// (random and mutated-valid inputs, shrinking on failure). `--guided` runs the coverage-guided byte fuzzer instead
// (fuzz/guided.ts: V8 block coverage as feedback). Not part of CI (`npm test` runs a
// short pass of the same targets). Prints inputs/s per target and the shrunk counterexample of a failure.
import { loadavg } from "node:os";
import { runTarget, TARGETS } from "../test/fuzz/targets.ts";

const args = process.argv.slice(2);
if (args.includes("--guided")) {
  // Coverage-guided byte fuzzing (fuzz/guided.ts): its own runner and flags (--inputs, --seed, targets).
  process.argv.splice(process.argv.indexOf("--guided"), 1);
  await import("./guided.ts").then((m) => m.main());
  process.exit(process.exitCode ?? 0);
}
const flag = (name: string) => {
  const i = args.indexOf(name);
  if (i < 0) return undefined;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
};
const runs = Number(flag("--runs") ?? 1_000_000);
const seedArg = flag("--seed");
const seed = seedArg === undefined ? undefined : Number(seedArg);
const selected = args.length ? TARGETS.filter((t) => args.includes(t.name)) : TARGETS;
if (args.some((a) => !TARGETS.some((t) => t.name === a))) {
  console.error(`unknown target; targets: ${TARGETS.map((t) => t.name).join(", ")}`);
  process.exit(2);
}
let failed = 0;
for (const t of selected) {
  const n = t.slow ? Math.ceil(runs / 10) : runs;
  const start = performance.now();
  const cpu0 = process.cpuUsage();
  try {
    await runTarget(t, n, seed);
    const s = (performance.now() - start) / 1000;
    const cpu = process.cpuUsage(cpu0);
    console.log(
      `${t.name}: ${n.toLocaleString("en-US")} inputs OK in ${s.toFixed(1)} s (${Math.round(n / s)}/s, CPU ` +
        `${((cpu.user + cpu.system) / 1e6).toFixed(1)} s, load ${loadavg()[0]?.toFixed(1)})`,
    );
  } catch (err) {
    failed++;
    console.log(`${t.name}: FAILED\n${(err as Error).message}`);
  }
}
process.exitCode = failed ? 1 : 0;
