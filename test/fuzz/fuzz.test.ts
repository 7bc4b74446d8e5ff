// The fuzz targets (./targets.ts) as a short pass in `npm test`; `npm run fuzz` runs 1,000,000 inputs per target.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { runTarget, TARGETS } from "./targets.ts";

const RUNS = Number(process.env.ATREST_PROPERTY_RUNS ?? 500);

describe("fuzz targets (short pass)", () => {
  for (const t of TARGETS) it(t.name, () => runTarget(t, t.slow ? Math.ceil(RUNS / 10) : RUNS));
});

describe("coverage-guided byte targets (short pass; npm run fuzz -- --guided runs 1,000,000 each)", async () => {
  const { BYTE_TARGETS, coverageSession, fuzzGuided } = await import("../../fuzz/guided.ts");
  const session = coverageSession();
  it("coverage feedback finds a bug behind four nested byte comparisons that blind mutation misses", () => {
    const target = {
      name: "nested",
      seeds: () => [Buffer.from("....")],
      run(b: Buffer) {
        // Edge values, which the mutator tries often, so that the self-test is quick; each level is a new block.
        if (b[0] === 0xff) {
          if (b[1] === 0x80) {
            if (b[2] === 0x7f) {
              if (b[3] === 0x10) throw new Error("found FUZZ");
            }
          }
        }
      },
    };
    const here = (url: string) => url.includes("/test/fuzz/fuzz.test.ts");
    const guided = fuzzGuided(session, target, 100_000, 7, { include: here, stopOnFinding: true });
    assert.equal(guided.findings.length, 1, `${guided.inputs} inputs, corpus ${guided.corpus}`);
    assert.match(guided.findings[0]?.message ?? "", /found FUZZ/);
    // Twice the inputs without feedback (every input mutates the seed) do not get there.
    const blind = fuzzGuided(session, target, guided.inputs * 2, 7, { include: () => false, stopOnFinding: true });
    assert.equal(blind.findings.length, 0, `blind mutation found it too, in ${blind.inputs} inputs`);
  });
  for (const t of BYTE_TARGETS) {
    it(`${t.name}: no finding, and coverage grows the corpus`, () => {
      const r = fuzzGuided(session, t, 2000, 1);
      assert.deepEqual(r.findings, []);
      assert.ok(r.blocks > 0 && r.corpus >= 1, `${r.blocks} blocks, corpus ${r.corpus}`);
    });
  }
});
