// The receiver goes away while uploads continue, atrest restarts in the middle, the receiver comes back: every audit
// record arrives exactly once and in order (checked against the records in the hash-chained log).
//
// The outage lasts OUTAGE_S seconds (default 12; ATREST_TEST_OUTAGE_S=30 runs the 30 s). 12 s is enough to
// prove the behaviour: with retryMaxMs 1000 the sender goes through its whole backoff ladder and ~10 refused reconnects
// at the cap (the cap is reached after 2 s), the spool is the audit log itself (nothing in memory grows with the
// outage), and the atrest restart happens inside the outage. A longer outage only repeats the capped retry.
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type Receiver, splitSyslog, startRsyslog } from "../audit/receivers.ts";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { makeClientKey, runSftpBatch } from "../helpers/sftp-clients.ts";

const OUTAGE_S = Number(process.env.ATREST_TEST_OUTAGE_S ?? 12);

/** Sequence numbers of the records (not checkpoints) in the log, read without the key. */
async function recordSeqs(log: string): Promise<number[]> {
  const text = await readFile(log, "latin1");
  return [...text.matchAll(/^v2:r:(\d+):/gm)].map((m) => Number(m[1]));
}

describe("SIEM outage and atrest restart", () => {
  let dir: string;
  let data: string;
  let key: string;
  let rs: Receiver;

  before(async () => {
    dir = await tempDir("atrest-siem-outage-");
    data = join(dir, "data");
    key = await makeClientKey(dir);
    rs = await startRsyslog(join(dir, "rsyslog"));
    await cli(["init", "--data", data]);
    await cli(["user", "add", "alice", "--public-key", `${key}.pub`, "--data", data]);
  });
  after(async () => {
    await rs?.stop();
    await removeDir(dir);
  });

  test(`receiver down ${OUTAGE_S} s while uploads continue, atrest restarted meanwhile: all records once, in order`, async () => {
    const config = join(dir, "siem.json");
    await writeFile(
      config,
      JSON.stringify({
        audit: {
          destinations: [
            { name: "siem", transport: "tcp", host: "127.0.0.1", port: rs.port, format: "cef", retryMaxMs: 1000 },
          ],
        },
      }),
    );
    const local = join(dir, "f.txt");
    await writeFile(local, "payload\n");
    let n = 0;
    const upload = async (server: RunningServer) => {
      n++;
      const r = await runSftpBatch({
        port: server.port,
        user: "alice",
        keyFile: key,
        commands: [`put ${local} /f${n}.txt`],
      });
      assert.equal(r.code, 0, r.stderr);
    };
    const received = async () =>
      (await rs.lines()).map((l) => Number(/externalId=(\d+)/.exec(splitSyslog(l).msg)?.[1]));

    let server = await startServer(data, ["--config", config]);
    for (let i = 0; i < 3; i++) await upload(server);
    // user.add, audit.config.change, then login/upload/logout per upload
    await rs.waitFor(2 + 3 * 3);

    await rs.stop();
    const outageEnd = Date.now() + OUTAGE_S * 1000;
    const restartAt = Date.now() + (OUTAGE_S * 1000) / 2;
    let restarted = false;
    while (Date.now() < outageEnd) {
      await upload(server);
      if (!restarted && Date.now() >= restartAt) {
        const stats = JSON.parse((await cli(["audit", "stats", "--json", "--data", data])).stdout);
        const d = stats.destinations[0];
        assert.equal(stats.live, true);
        assert.equal(d.connected, false);
        assert.match(d.lastError, /^connection refused by 127\.0\.0\.1:\d+$/);
        assert.ok(d.backlog > 0, "records wait in the spool");
        await server.stop(); // graceful: the cursor is saved
        server = await startServer(data, ["--config", config]);
        restarted = true;
      }
    }
    assert.ok(restarted);
    await rs.start();
    for (let i = 0; i < 2; i++) await upload(server);
    await server.stop();

    const expected = await recordSeqs(join(data, "audit", "audit.log"));
    const deadline = Date.now() + 20_000;
    let got = await received();
    while (got.length < expected.length && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      got = await received();
    }
    assert.ok(n >= 8, `uploads during the outage: ${n - 5}`);
    assert.equal(new Set(got).size, got.length, `duplicates: ${got.filter((s, i) => got.indexOf(s) !== i)}`);
    assert.deepEqual(got, expected, "every record of the log exactly once, in log order");
    const lines = await rs.lines();
    const uploads = lines.filter((l) => splitSyslog(l).msgid === "upload").map((l) => /filePath=(\S+)/.exec(l)?.[1]);
    assert.deepEqual(
      uploads,
      Array.from({ length: n }, (_, i) => `/f${i + 1}.txt`),
    );
  });
});
