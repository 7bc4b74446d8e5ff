// The short variant of `npm run bench -- load`: 20 concurrent sessions x 10 small uploads with the default limits,
// every upload committed and audited, none refused.
import assert from "node:assert/strict";
import { test } from "node:test";
import { percentile, runLoad } from "../../helpers/load.ts";
import { startFixture } from "./fixture.ts";

test("20 concurrent sessions x 10 uploads: no errors, every file committed and audited", async (t) => {
  const f = await startFixture();
  try {
    const r = await runLoad({
      port: f.port,
      user: () => "alice",
      privateKeyFile: f.keyFile,
      sessions: 20,
      uploadsPerSession: 10,
      bytesPerUpload: 4096,
      path: (i, j) => `/load-${i}-${j}.bin`,
      // under the per-source limit of unauthenticated connections (8)
      connectConcurrency: 4,
    });
    assert.equal(r.errors, 0, r.errorMessages.join("; "));
    assert.equal(r.uploads, 200);
    t.diagnostic(`p50 ${percentile(r.latencies, 50).toFixed(1)} ms, p99 ${percentile(r.latencies, 99).toFixed(1)} ms`);
    const names = (await f.list("/")).map((e) => e.name).filter((n) => n.startsWith("load-"));
    assert.equal(names.length, 200);
    const st = await f.stat("/load-19-9.bin");
    assert.equal(st.size, 4096);
    const uploads = f.audit.filter(
      (e) => e.action === "upload" && e.outcome === "success" && e.path?.startsWith("/load-"),
    );
    assert.equal(uploads.length, 200);
  } finally {
    await f.close();
  }
});
