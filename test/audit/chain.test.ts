import assert from "node:assert/strict";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { App, initData } from "../../src/app.ts";
import { keyFingerprint, type Signer, verifyChain } from "../../src/audit/chain.ts";
import { AuditLog, readAuditLog } from "../../src/audit/log.ts";
import { cli, removeDir, tempDir } from "../helpers/atrest.ts";

const pair = generateKeyPairSync("ed25519");
const signer: Signer = { privateKey: pair.privateKey, fingerprint: keyFingerprint(pair.publicKey) };
const trusted = new Map([[signer.fingerprint, pair.publicKey]]);

function write(path: string, key: Buffer, n: number, every = 4): Promise<void> {
  const log = new AuditLog(path, Buffer.from(key), { signer, checkpointEvery: every });
  for (let i = 0; i < n; i++) {
    log.record({ action: "upload", outcome: "success", user: "alice", effectiveUser: "bob", path: `/f${i}`, size: i });
  }
  return log.close();
}

async function lines(path: string): Promise<string[]> {
  return (await readFile(path, "latin1")).split("\n").slice(0, -1);
}

describe("hash-chained audit log", () => {
  let dir: string;
  const key = randomBytes(32);
  before(async () => {
    dir = await tempDir("atrest-audit-");
  });
  after(() => removeDir(dir));

  it("round-trips records and continues the chain across reopen", async () => {
    const path = join(dir, "a.log");
    await write(path, key, 5);
    await write(path, key, 3);
    const records = await readAuditLog(path, key);
    assert.equal(records.length, 8);
    assert.deepEqual(
      records.map((r) => ("path" in r ? r.path : "?")),
      ["/f0", "/f1", "/f2", "/f3", "/f4", "/f0", "/f1", "/f2"],
    );
    assert.equal((records[0] as { effectiveUser?: string }).effectiveUser, "bob");
    const v = verifyChain(path, { publicKeys: trusted });
    assert.equal(v.error, undefined);
    // 5 records + checkpoint after 4 + closing one; 3 more + closing one
    assert.deepEqual([v.records, v.checkpoints, v.unsigned, v.seq], [8, 3, 0, 11]);
    assert.ok(!(await readFile(path, "latin1")).includes("alice"), "records are encrypted on disk");
  });

  it("reports an edited byte at that record", async () => {
    const path = join(dir, "edit.log");
    await write(path, key, 10);
    const ls = await lines(path);
    const l = ls[5] as string;
    const i = 20;
    ls[5] = l.slice(0, i) + (l[i] === "A" ? "B" : "A") + l.slice(i + 1);
    await writeFile(path, `${ls.join("\n")}\n`);
    const v = verifyChain(path, { publicKeys: trusted });
    assert.equal(v.error?.line, 6);
    assert.equal(v.error?.kind, "edited");
  });

  it("reports a deleted record", async () => {
    const path = join(dir, "del.log");
    await write(path, key, 10);
    const ls = await lines(path);
    ls.splice(2, 1);
    await writeFile(path, `${ls.join("\n")}\n`);
    const v = verifyChain(path, { publicKeys: trusted });
    assert.equal(v.error?.line, 3);
    assert.equal(v.error?.kind, "deleted-or-reordered");
  });

  it("reports a cut line and an unsigned tail", async () => {
    const path = join(dir, "cut.log");
    await write(path, key, 10);
    const text = await readFile(path, "latin1");
    await writeFile(path, text.slice(0, text.length - 30));
    assert.equal(verifyChain(path, { publicKeys: trusted }).error?.kind, "truncated");
    const ls = await lines(path);
    await writeFile(path, `${ls.slice(0, 7).join("\n")}\n`); // 4 records, checkpoint, 2 records
    const v = verifyChain(path, { publicKeys: trusted });
    assert.equal(v.error, undefined);
    assert.equal(v.unsigned, 2);
    assert.equal(v.lastCheckpoint?.line, 5);
    // cut back to the first checkpoint: only an anchor from an earlier verify shows it
    const cut = verifyChain(path, { publicKeys: trusted, anchor: { seq: 11, hash: "0".repeat(64) } });
    assert.equal(cut.error?.kind, "truncated");
  });

  it("reports a forged checkpoint signature and a re-chained edit", async () => {
    const path = join(dir, "forge.log");
    await write(path, key, 6);
    const ls = await lines(path);
    const cp = ls[4] as string;
    const sigAt = cp.lastIndexOf(":") + 1;
    ls[4] = `${cp.slice(0, sigAt)}${cp[sigAt] === "A" ? "B" : "A"}${cp.slice(sigAt + 1)}`;
    // re-chain from there so only the signature is wrong (as a forger who can hash but not sign would)
    const { chainHash } = await import("../../src/audit/chain.ts");
    let prev: Buffer = Buffer.from((ls[3] as string).slice(-64), "hex");
    for (let i = 4; i < ls.length; i++) {
      const body = (ls[i] as string).slice(0, -65);
      prev = chainHash(prev, body);
      ls[i] = `${body} ${prev.toString("hex")}`;
    }
    await writeFile(path, `${ls.join("\n")}\n`);
    const v = verifyChain(path, { publicKeys: trusted });
    assert.equal(v.error?.line, 5);
    assert.equal(v.error?.kind, "bad-signature");
    // signed by someone else's key
    const other = generateKeyPairSync("ed25519");
    assert.equal(
      verifyChain(path, { publicKeys: new Map([[keyFingerprint(other.publicKey), other.publicKey]]) }).error?.kind,
      "unknown-key",
    );
  });

  it("folds a legacy v1 prefix into the chain", async () => {
    const path = join(dir, "legacy.log");
    await writeFile(path, "v1:AAAA\nv1:BBBB\n");
    await write(path, key, 2);
    const v = verifyChain(path, { publicKeys: trusted });
    assert.equal(v.error, undefined);
    assert.equal(v.legacy, 2);
    const text = await readFile(path, "latin1");
    await writeFile(path, text.replace("v1:BBBB", "v1:CCCC"));
    assert.equal(verifyChain(path, { publicKeys: trusted }).error?.kind, "edited");
  });
});

describe("atrest audit verify (real App and CLI)", () => {
  let dir: string;
  before(async () => {
    dir = await tempDir("atrest-audit-cli-");
    await initData(dir);
    const app = await App.open(dir);
    await app.addUser({ name: "alice", password: "correct horse" });
    const s = await app.openSession("alice", { protocol: "cli", sessionId: "t1" });
    await s.mkdir("/docs");
    await app.close();
    const again = await App.open(dir); // the chain continues across restarts
    await again.addUser({ name: "bob", password: "battery staple" });
    await again.close();
  });
  after(() => removeDir(dir));

  it("exits 0 on an intact log, tail decrypts it", async () => {
    const { stdout } = await cli(["audit", "verify", "--data", dir]);
    assert.match(stdout, /OK/);
    const tail = await cli(["audit", "tail", "--data", dir]);
    const actions = tail.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l).action);
    assert.deepEqual(actions, ["user.add", "mkdir", "user.add"]);
  });

  it("exits 1 and names the line when a record is deleted, 3 for an unsigned tail", async () => {
    const path = join(dir, "audit", "audit.log");
    const ls = await lines(path);
    await writeFile(join(dir, "deleted.log"), `${[...ls.slice(0, 2), ...ls.slice(3)].join("\n")}\n`);
    await assert.rejects(
      cli(["audit", "verify", "--data", dir, "--file", join(dir, "deleted.log")]),
      (err: { code: number; stdout: string }) => {
        assert.equal(err.code, 1);
        assert.match(err.stdout, /BROKEN at line 3 \(entry 4\): deleted-or-reordered/);
        return true;
      },
    );
    await writeFile(join(dir, "tail.log"), `${ls.slice(0, -1).join("\n")}\n`);
    await assert.rejects(
      cli(["audit", "verify", "--data", dir, "--file", join(dir, "tail.log")]),
      (err: { code: number; stdout: string }) => {
        assert.equal(err.code, 3);
        assert.match(err.stdout, /1 record\(s\) after the last checkpoint/);
        return true;
      },
    );
  });
});

describe("audit verify with the metadata store's high-water mark (real App and CLI)", () => {
  let dir: string;
  let path: string;
  before(async () => {
    dir = await tempDir("atrest-audit-hwm-");
    await initData(dir);
    path = join(dir, "audit", "audit.log");
    for (const name of ["alice", "bob", "carol"]) {
      // each App run ends with a signed checkpoint, which raises the mark
      const app = await App.open(dir);
      await app.addUser({ name, password: "correct horse battery" });
      await app.close();
    }
  });
  after(() => removeDir(dir));

  it("OK on the intact log, and the mark is the last checkpoint", async () => {
    const { stdout } = await cli(["audit", "verify", "--data", dir]);
    assert.match(stdout, /OK/);
    assert.match(stdout, /high-water mark \d+ \(metadata store\): present/);
    const last = /anchor (\d+):([0-9a-f]{64})/.exec(stdout);
    const shown = (await cli(["audit", "highwater", "--data", dir])).stdout;
    assert.match(shown, new RegExp(`entry ${last?.[1]} hash ${last?.[2]}`));
  });

  for (const [name, cut] of [
    [
      "cut back to an earlier checkpoint",
      (ls: string[]) => ls.slice(0, ls.findIndex((l) => l.startsWith("v2:c:")) + 1),
    ],
    ["emptied", () => []],
    ["replaced by a shorter valid chain", undefined],
  ] as const) {
    it(`exits 1 on a log ${name} (without --anchor)`, async () => {
      const original = await readFile(path);
      try {
        if (cut) {
          const ls = await lines(path);
          const kept = cut(ls);
          await writeFile(path, kept.length ? `${kept.join("\n")}\n` : "");
        } else {
          // a fresh chain written by the real writer, signed with the real key: valid, but not this log
          await writeFile(path, "");
          const app = await App.open(dir);
          await app.addUser({ name: "mallory", password: "correct horse battery" });
          // the new chain's checkpoint would raise the mark only beyond the old one: it stays
          await app.close();
        }
        await assert.rejects(cli(["audit", "verify", "--data", dir]), (err: { code: number; stdout: string }) => {
          assert.equal(err.code, 1, err.stdout);
          assert.match(err.stdout, /BROKEN at .*(truncated|edited)/);
          assert.match(err.stdout, /high-water mark says entry \d+ .* the log was cut back, emptied or replaced/);
          return true;
        });
        // a copy checked with --file is judged on its own
        await writeFile(join(dir, "copy.log"), original);
        assert.match((await cli(["audit", "verify", "--data", dir, "--file", join(dir, "copy.log")])).stdout, /OK/);
      } finally {
        await writeFile(path, original);
      }
    });
  }

  it("audit highwater reset (audited) accepts a new chain; the next checkpoint sets the mark again", async () => {
    const original = await readFile(path);
    try {
      await writeFile(path, "");
      await assert.rejects(cli(["audit", "verify", "--data", dir]), { code: 1 });
      assert.match(
        (await cli(["audit", "highwater", "reset", "--as", "root", "--reason", "log moved aside", "--data", dir]))
          .stdout,
        /reset \(was entry \d+\), key manager's mark reset \(was entry \d+\)/,
      );
      const { stdout } = await cli(["audit", "verify", "--data", dir]);
      assert.match(stdout, /OK/);
      assert.match(stdout, /high-water mark \d+ \(metadata store\): present/, "the reset command's own checkpoint");
      const tail = (await cli(["audit", "tail", "--data", dir])).stdout;
      assert.match(
        tail,
        /"action":"audit.config.change".*"detail":"audit high-water mark reset \(was entry \d+\), key manager's mark reset \(was entry \d+\): log moved aside"/,
      );
    } finally {
      await writeFile(path, original);
    }
  });
});
