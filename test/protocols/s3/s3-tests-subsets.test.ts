// ceph/s3-tests subsets multipart, list-v2 and presigned (issue 13: "report their counts"), against a fresh `atrest
// server` (./s3-tests-run.ts). Most of their tests are in core+sse-c too, which s3-tests.test.ts runs: this file runs
// only the others (about 50, most excluded as lacking: CORS, POST object, policies, versioning), so it stays at a
// minute or two on a loaded machine. Every test run passes but the documented exclusions (./s3-tests-exclusions.ts,
// docs/s3.md "Conformance"); the counts of each whole subset are printed as diagnostics.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { type Conformance, collect, runConformance, startConformance, unusedExclusions } from "./s3-tests-run.ts";

let c: Conformance;
let core: Set<string>;
const seen = new Set<string>();

before(async () => {
  c = await startConformance("atrest-s3tests-subsets-");
  core = new Set(await collect(c.conf, "core+sse-c"));
  for (const id of core) seen.add(id);
});

after(async () => {
  await c?.s3.stop();
});

for (const subset of ["multipart", "list-v2", "presigned"]) {
  test(`ceph/s3-tests ${subset}: every test passes but the documented exclusions`, { timeout: 900_000 }, async (t) => {
    const all = await collect(c.conf, subset);
    // a test of two subsets runs once
    const ids = all.filter((id) => !seen.has(id));
    for (const id of all) seen.add(id);
    t.diagnostic(
      `s3-tests ${subset}: ${all.length} tests, ${all.filter((id) => core.has(id)).length} of them in core+sse-c ` +
        `(s3-tests.test.ts), ${all.length - ids.length - all.filter((id) => core.has(id)).length} in an earlier ` +
        `subset, ${ids.length} here`,
    );
    await runConformance(t, c, subset, { ids, label: `${subset} (not in core+sse-c)` });
  });
}

test("every exclusion names a test of core+sse-c or of these subsets", async () => {
  const ids: string[] = [];
  for (const subset of ["core+sse-c", "multipart", "list-v2", "presigned"])
    ids.push(...(await collect(c.conf, subset)));
  assert.deepEqual(unusedExclusions(ids), [], "stale entries in s3-tests-exclusions.ts");
});
