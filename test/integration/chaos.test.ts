// A short run of the chaos script (`npm run chaos` runs 100 cycles): kill -9 of the server and of a rewrap during a
// mixed SFTP workload, three times; every acknowledged upload, overwrite, rename and delete survives, operations in
// flight are all-or-nothing, no plaintext or name reaches the disk, and the audit log verifies.
import assert from "node:assert/strict";
import { test } from "node:test";
import { chaos } from "../../chaos/run.ts";

test("3 kill -9 cycles during uploads, overwrites, renames, deletes and a rewrap lose nothing", async () => {
  const lines: string[] = [];
  const r = await chaos({ cycles: 3, minOpsPerCycle: 8, log: (l) => lines.push(l) });
  assert.deepEqual(r.failures, [], lines.join("\n"));
  assert.equal(r.cycles, 3);
  assert.ok(r.committedOps > 20, `only ${r.committedOps} acknowledged operations`);
  assert.ok(r.filesChecked > 10, `only ${r.filesChecked} files checked after the crashes`);
});
