// The fuzz targets (./targets.ts) as a short pass in `npm test`; `npm run fuzz` runs 1,000,000 inputs per target.
import { describe, it } from "node:test";
import { runTarget, TARGETS } from "./targets.ts";

const RUNS = Number(process.env.ATREST_PROPERTY_RUNS ?? 500);

describe("fuzz targets (short pass)", () => {
  for (const t of TARGETS) it(t.name, () => runTarget(t, t.slow ? Math.ceil(RUNS / 10) : RUNS));
});
