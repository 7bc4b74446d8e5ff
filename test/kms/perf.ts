// Quick throughput check for the embedded provider (not a test): node test/kms/perf.ts
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { initEmbeddedKms, openEmbeddedKms } from "../../src/kms/embedded.ts";

const dir = await mkdtemp(join(tmpdir(), "atrest-kms-perf-"));
await initEmbeddedKms(dir);
const kms = await openEmbeddedKms(dir, { auditLog: { record() {} } });
const ctx = { fileId: "0190f3a2-7c1e-7000-8000-000000000001", owner: "alice", folder: "/finance/reports" };
const N = 100_000;
const wrapped: Buffer[] = new Array(N);

// Wall time on a shared, loaded machine overstates cost; CPU time (user+system) of this process is reported too.
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
for (let round = 0; round < 3; round++) {
  let t = performance.now();
  let c = cpu();
  for (let i = 0; i < N; i++) {
    const dk = await kms.generateDataKey("default", ctx);
    dk.plaintext.fill(0);
    wrapped[i] = dk.wrapped;
  }
  const gen = performance.now() - t;
  const genCpu = cpu() - c;
  t = performance.now();
  c = cpu();
  for (let i = 0; i < N; i++) (await kms.unwrap(wrapped[i], ctx)).fill(0);
  const unw = performance.now() - t;
  const unwCpu = cpu() - c;
  t = performance.now();
  for (let i = 0; i < N; i++) kms.keyRefOf(wrapped[i]);
  const ref = performance.now() - t;
  const fmt = (ms: number) =>
    `${((ms * 1000) / N).toFixed(2)} µs/op, ${Math.round(N / (ms / 1000)).toLocaleString("en")} ops/s`;
  console.log(`round ${round}: generateDataKey ${fmt(gen)} | unwrap ${fmt(unw)} | keyRefOf ${fmt(ref)}`);
  console.log(`         cpu: generateDataKey ${fmt(genCpu)} | unwrap ${fmt(unwCpu)}`);
}
await kms.close();
await rm(dir, { recursive: true, force: true });
