// The audit log's high-water mark kept by the key manager (issue 11 item 11), through the real CLI, with the embedded
// key manager and with a separate one (`atrest kms serve`, mTLS): a log cut back to an earlier checkpoint or emptied,
// together with meta.db rolled back (or its mark edited away), is still BROKEN; the file server can raise its mark but
// never lower or reset it; `audit highwater reset` takes a custodian; a key manager that cannot be asked is exit 4.
import assert from "node:assert/strict";
import { copyFile, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, before, describe, it } from "node:test";
import { HIGH_WATER_SETTING, KMS_MARK_LOG } from "../../src/audit/high-water.ts";
import { RemoteKms } from "../../src/kms/api/client.ts";
import { EMBEDDED_CALLER, openEmbeddedKms } from "../../src/kms/embedded.ts";
import { cli, removeDir, tempDir } from "../helpers/atrest.ts";
import { type KmsSetup, type RunningKms, setupKms, startKms, unsealKms } from "../helpers/kms.ts";

interface Failure {
  code: number;
  stdout: string;
  stderr: string;
}

/** meta.db as it is now (the server is not running: no WAL left behind). */
async function saveMeta(data: string, to: string): Promise<void> {
  await copyFile(join(data, "meta.db"), to);
}

async function restoreMeta(data: string, from: string): Promise<void> {
  for (const ext of ["-wal", "-shm"]) await rm(join(data, `meta.db${ext}`), { force: true });
  await copyFile(from, join(data, "meta.db"));
}

function dropStoreMark(data: string): void {
  const db = new DatabaseSync(join(data, "meta.db"));
  db.prepare("DELETE FROM settings WHERE key = ?").run(HIGH_WATER_SETTING);
  db.close();
}

function rollbackScenarios(ctx: () => { data: string; root: string }): void {
  it("verify is OK and names both marks", async () => {
    const { stdout } = await cli(["audit", "verify", "--data", ctx().data]);
    assert.match(stdout, /high-water mark \d+ \(metadata store\): present/);
    assert.match(stdout, /high-water mark \d+ \(key manager\): present/);
    assert.match(stdout, /OK/);
  });

  it("a log cut back to an earlier checkpoint with meta.db rolled back to that time is BROKEN", async () => {
    const { data, root } = ctx();
    const log = join(data, "audit", "audit.log");
    const current = await readFile(log);
    await saveMeta(data, join(root, "meta.now"));
    try {
      await copyFile(join(root, "audit.early"), log);
      await restoreMeta(data, join(root, "meta.early"));
      await assert.rejects(cli(["audit", "verify", "--data", data]), (err: Failure) => {
        assert.equal(err.code, 1, err.stdout);
        assert.match(err.stdout, /BROKEN at .*truncated/);
        assert.match(err.stdout, /the key manager's high-water mark says entry \d+ .* cut back, emptied or replaced/);
        return true;
      });
    } finally {
      await writeFile(log, current);
      await restoreMeta(data, join(root, "meta.now"));
    }
  });

  it("an emptied log with the store's mark deleted is BROKEN", async () => {
    const { data, root } = ctx();
    const log = join(data, "audit", "audit.log");
    const current = await readFile(log);
    await saveMeta(data, join(root, "meta.now"));
    try {
      await writeFile(log, "");
      dropStoreMark(data);
      await assert.rejects(cli(["audit", "verify", "--data", data]), (err: Failure) => {
        assert.equal(err.code, 1, err.stdout);
        assert.match(err.stdout, /BROKEN/);
        assert.match(err.stdout, /key manager's high-water mark says entry/);
        return true;
      });
    } finally {
      await writeFile(log, current);
      await restoreMeta(data, join(root, "meta.now"));
    }
  });
}

/** Three CLI runs, each closing with a signed checkpoint; the log and meta.db kept after the first. */
async function history(data: string, root: string): Promise<void> {
  await cli(["user", "add", "alice", "--password-stdin", "--data", data], "correct horse battery\n");
  await copyFile(join(data, "audit", "audit.log"), join(root, "audit.early"));
  await saveMeta(data, join(root, "meta.early"));
  await cli(["user", "add", "bob", "--password-stdin", "--data", data], "correct horse battery\n");
  await cli(["user", "add", "carol", "--password-stdin", "--data", data], "correct horse battery\n");
}

describe("audit high-water mark at the embedded key manager", () => {
  let root: string;
  let data: string;
  before(async () => {
    root = await tempDir("atrest-hwm-embedded-");
    data = join(root, "data");
    await cli(["init", "--data", data]);
    await history(data, root);
  });
  after(() => removeDir(root));

  rollbackScenarios(() => ({ data, root }));

  it("the server identity raises but never lowers, and may not reset", async () => {
    const kms = await openEmbeddedKms(join(data, "kms"));
    try {
      const mark = await kms.auditMark(KMS_MARK_LOG);
      assert.ok(mark && mark.seq > 1 && mark.client === "embedded");
      await kms.raiseAuditMark(KMS_MARK_LOG, 1, "0".repeat(64));
      assert.deepEqual(await kms.auditMark(KMS_MARK_LOG), mark);
      assert.throws(() => kms.service.resetAuditMark(EMBEDDED_CALLER, "embedded", KMS_MARK_LOG, "x"), {
        code: "PERMISSION_DENIED",
      });
      await assert.rejects(kms.raiseAuditMark(KMS_MARK_LOG, mark.seq, "f".repeat(64)), { code: "CONFLICT" });
    } finally {
      await kms.close();
    }
  });

  it("audit highwater reset (the local custodian, with a reason) accepts a new chain", async () => {
    // the log moved aside for good: the new chain the reset starts is the log from here on
    const log = join(data, "audit", "audit.log");
    {
      await writeFile(log, "");
      await assert.rejects(cli(["audit", "verify", "--data", data]), { code: 1 });
      await assert.rejects(cli(["audit", "highwater", "reset", "--data", data]), /needs --reason/);
      const r = await cli(["audit", "highwater", "reset", "--reason", "log moved aside", "--data", data]);
      assert.match(r.stdout, /reset \(was entry \d+\), key manager's mark reset \(was entry \d+\)/);
      const { stdout } = await cli(["audit", "verify", "--data", data]);
      assert.match(stdout, /OK/);
      assert.match(stdout, /\(key manager\): present/, "the reset command's own checkpoint raised it again");
    }
  });
});

describe("audit high-water mark at a separate key manager (kms serve, mTLS)", () => {
  let root: string;
  let data: string;
  let setup: KmsSetup;
  let kms: RunningKms;
  before(async () => {
    root = await tempDir("atrest-hwm-remote-");
    data = join(root, "data");
    setup = await setupKms(root, { fs1: "server", alice: "custodian", bob: "custodian", eve: "auditor" });
    kms = await startKms(setup.dir);
    await unsealKms(kms.url, setup.certs.alice as string, [setup.shares[0] as string]);
    assert.match(await unsealKms(kms.url, setup.certs.bob as string, [setup.shares[1] as string]), /unsealed/);
    await cli(["init", "--data", data, "--kms", kms.url, "--kms-cert", setup.certs.fs1 as string]);
    await history(data, root);
  });
  after(async () => {
    await kms?.stop();
    await removeDir(root);
  });

  rollbackScenarios(() => ({ data, root }));

  it("a server certificate raises only its own mark, never lowers or resets it; an auditor reads it", async () => {
    const server = await RemoteKms.connect({ url: kms.url, certDir: setup.certs.fs1 as string });
    const auditor = await RemoteKms.connect({ url: kms.url, certDir: setup.certs.eve as string });
    try {
      const mark = await server.auditMark(KMS_MARK_LOG);
      assert.ok(mark && mark.client === "fs1" && mark.seq > 1);
      assert.deepEqual(await server.raiseAuditMark(KMS_MARK_LOG, 1, "0".repeat(64)), mark, "not lowered");
      await assert.rejects(server.resetAuditMark("fs1", KMS_MARK_LOG, "x"), { code: "PERMISSION_DENIED" });
      await assert.rejects(server.auditMark(KMS_MARK_LOG, "someone-else"), { code: "PERMISSION_DENIED" });
      assert.deepEqual(await auditor.auditMark(KMS_MARK_LOG, "fs1"), mark);
      await assert.rejects(auditor.raiseAuditMark(KMS_MARK_LOG, mark.seq + 1, "0".repeat(64)), {
        code: "PERMISSION_DENIED",
      });
    } finally {
      await server.close();
      await auditor.close();
    }
  });

  it("audit highwater reset needs a custodian's certificate", async () => {
    const log = join(data, "audit", "audit.log");
    {
      await writeFile(log, "");
      await assert.rejects(
        cli(["audit", "highwater", "reset", "--reason", "moved aside", "--data", data]),
        /only one of its custodians may reset it/,
      );
      await assert.rejects(
        cli([
          ...["audit", "highwater", "reset", "--reason", "moved aside", "--data", data],
          ...["--custodian-cert", setup.certs.eve as string],
        ]),
        /permission denied: client eve \(role auditor\)/,
      );
      const r = await cli([
        ...["audit", "highwater", "reset", "--reason", "moved aside", "--data", data],
        ...["--custodian-cert", setup.certs.alice as string],
      ]);
      assert.match(r.stdout, /key manager's mark reset \(was entry \d+\)/);
      assert.match((await cli(["audit", "verify", "--data", data])).stdout, /OK/);
    }
  });

  it("verify exits 4 when the key manager cannot be asked", async () => {
    await kms.stop();
    await assert.rejects(cli(["audit", "verify", "--data", data]), (err: Failure) => {
      assert.equal(err.code, 4, err.stdout + err.stderr);
      assert.match(err.stdout, /key manager's high-water mark could not be read/);
      return true;
    });
  });
});
