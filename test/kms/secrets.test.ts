// Application secrets over the real HTTPS + mTLS server and through `atrest kms secret …` (the CLI against the
// service): versions, read by name and version under a client policy of secret globs, rotation reminders (listed as
// due, one warning audit event per version), every read audited without the value, removal shreds, sealed at rest
// (the value is not in kms.db), and a master rotation keeps every version readable.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { AtrestError } from "../../src/errors.ts";
import { KmsAppClient } from "../../src/kms/api/apps-client.ts";
import { initKmsDir, issueClient } from "../../src/kms/home.ts";
import { readKmsAudit } from "../../src/kms/kms-audit.ts";
import { KmsServer } from "../../src/kms/server/server.ts";
import { cli, removeDir, tempDir } from "../helpers/atrest.ts";
import { testKmsStore } from "./fixture.ts";

const code = (c: string) => (e: unknown) => e instanceof AtrestError && e.code === c;
const DAY = 86_400_000;

describe("application secrets (HTTPS + mTLS, KmsAppClient, atrest kms secret)", () => {
  let root: string;
  let kmsDir: string;
  let clockFile: string;
  let server: KmsServer;
  let url: string;
  let drupal: KmsAppClient;
  let other: KmsAppClient;
  let oscar: KmsAppClient;
  const certs = (n: string) => join(root, "certs", n);
  const setClock = (d: Date) => writeFile(clockFile, d.toISOString());

  before(async () => {
    root = await tempDir("atrest-kms-secrets-");
    kmsDir = join(root, "kms");
    clockFile = join(root, "clock");
    process.env.ATREST_TEST_MODE = "1";
    process.env.ATREST_TEST_CLOCK_FILE = clockFile;
    await setClock(new Date("2026-12-01T00:00:00Z"));
    await initKmsDir(kmsDir, { dev: true, ...testKmsStore() });
    server = await KmsServer.start({ dir: kmsDir, port: 0, schedulerIntervalMs: 0 });
    url = `https://127.0.0.1:${server.port}`;
    for (const [n, role] of [
      ["drupal", "server"],
      ["other", "server"],
      ["oscar", "operator"],
    ] as const) {
      await issueClient(kmsDir, n, role, certs(n));
    }
    drupal = await KmsAppClient.connect({ url, certDir: certs("drupal") });
    other = await KmsAppClient.connect({ url, certDir: certs("other") });
    oscar = await KmsAppClient.connect({ url, certDir: certs("oscar") });
    server
      .service()
      .policies.set(
        "drupal",
        { rules: [{ secrets: ["drupal.*"], ops: ["read-secret", "list-secrets"] }] },
        "test",
        new Date(),
      );
    server.service().policies.set("other", { rules: [{ keys: ["default"], ops: ["encrypt"] }] }, "test", new Date());
  });

  after(async () => {
    await drupal?.close();
    await other?.close();
    await oscar?.close();
    await server?.close();
    delete process.env.ATREST_TEST_MODE;
    delete process.env.ATREST_TEST_CLOCK_FILE;
    await removeDir(root);
  });

  test("put → versions → get by name and version; a client reads only what its policy names", async () => {
    const v1 = await oscar.putSecret("drupal.mail-api-key", "key-one-d41d8cd9");
    assert.equal(v1.currentVersion, 1);
    const v2 = await oscar.putSecret("drupal.mail-api-key", "key-two-8f00b204", 30);
    assert.equal(v2.currentVersion, 2);
    assert.equal(v2.rotateAfterDays, 30);
    await oscar.putSecret("billing.db-password", "hunter2-but-longer");

    const cur = await drupal.getSecret("drupal.mail-api-key");
    assert.equal(cur.version, 2);
    assert.equal(cur.value.toString(), "key-two-8f00b204");
    assert.equal((await drupal.getSecret("drupal.mail-api-key", 1)).value.toString(), "key-one-d41d8cd9");
    await assert.rejects(drupal.getSecret("drupal.mail-api-key", 3), code("NOT_FOUND"));
    await assert.rejects(drupal.getSecret("billing.db-password"), (e: unknown) => {
      assert.ok(e instanceof AtrestError && e.code === "PERMISSION_DENIED");
      assert.match(e.message, /client drupal \(role server\) may not read-secret on secret billing\.db-password/);
      return true;
    });
    // A policy without secret rules grants no secret; a server role cannot write.
    await assert.rejects(other.getSecret("drupal.mail-api-key"), code("PERMISSION_DENIED"));
    await assert.rejects(drupal.putSecret("drupal.mail-api-key", "x"), code("PERMISSION_DENIED"));
    // Listing is narrowed to the policy's globs and never carries a value.
    const listed = await drupal.listSecrets();
    assert.deepEqual(
      listed.map((s) => s.name),
      ["drupal.mail-api-key"],
    );
    assert.ok(!JSON.stringify(await oscar.listSecrets()).includes("key-two"));
    const vs = await oscar.secretVersions("drupal.mail-api-key");
    assert.deepEqual(
      vs.versions.map((v) => [v.version, v.createdBy, v.destroyed]),
      [
        [1, "oscar", false],
        [2, "oscar", false],
      ],
    );
    // Sealed at rest: the value's bytes are nowhere in kms.db or its WAL.
    for (const f of ["kms.db", "kms.db-wal"]) {
      const bytes = await readFile(join(kmsDir, f)).catch(() => Buffer.alloc(0));
      assert.equal(bytes.indexOf("key-two-8f00b204"), -1, f);
    }
    await assert.rejects(oscar.putSecret("Bad Name", "x"), code("INVALID_INPUT"));
    await assert.rejects(oscar.putSecret("drupal.empty", ""), code("INVALID_INPUT"));
  });

  test("rotation reminders: due after rotate-after days, listed, warned once per version in the audit", async () => {
    await setClock(new Date(Date.parse("2026-12-01T00:00:00Z") + 31 * DAY));
    const due = await oscar.listSecrets(true);
    assert.deepEqual(
      due.map((s) => s.name),
      ["drupal.mail-api-key"],
    );
    assert.equal((await drupal.getSecret("drupal.mail-api-key")).rotationDue, true);
    assert.deepEqual(server.service().runScheduled().secretsDue, ["drupal.mail-api-key"]);
    assert.equal(server.service().runScheduled().secretsDue, undefined, "warned once");
    // A new version resets the reminder.
    await oscar.putSecret("drupal.mail-api-key", "key-three-aa11");
    assert.deepEqual(await oscar.listSecrets(true), []);
    const s = (await oscar.listSecrets()).find((x) => x.name === "drupal.mail-api-key");
    assert.equal(s?.rotateAfterDays, 30, "the reminder is kept across versions");
  });

  test("the CLI against the service: put from stdin (never argv), get, list --due, versions, rm", async () => {
    const remote = (cert: string) => ["--kms", url, "--kms-cert", certs(cert)];
    const value = `conn=postgres://app:${randomBytes(12).toString("hex")}@db/prod`;
    const put = await cli(
      ["kms", "secret", "put", "drupal.db-url", "--rotate-after", "90", ...remote("oscar")],
      `${value}\n`,
    );
    assert.match(put.stderr + put.stdout, /stored secret drupal\.db-url v1 \(rotate by 2027-/);
    const got = await cli(["kms", "secret", "get", "drupal.db-url", ...remote("drupal")]);
    assert.equal(got.stdout, value, "exact bytes, the piped newline dropped");
    const list = await cli(["kms", "secret", "list", "--json", ...remote("oscar")]);
    const parsed = JSON.parse(list.stdout) as { name: string; rotateAfterDays?: number }[];
    assert.equal(parsed.find((x) => x.name === "drupal.db-url")?.rotateAfterDays, 90);
    assert.ok(!list.stdout.includes(value));
    const versions = await cli(["kms", "secret", "versions", "drupal.db-url", ...remote("oscar")]);
    assert.match(versions.stdout, /drupal\.db-url\tv1\t.*by oscar \(current\)/);
    await assert.rejects(cli(["kms", "secret", "get", "billing.db-password", ...remote("drupal")]), (e: unknown) => {
      assert.match((e as { stderr: string }).stderr, /may not read-secret on secret billing\.db-password/);
      return true;
    });
    const rm = await cli(["kms", "secret", "rm", "drupal.db-url", ...remote("oscar")]);
    assert.match(rm.stderr + rm.stdout, /removed secret drupal\.db-url \(1 version\(s\) shredded\)/);
    await assert.rejects(drupal.getSecret("drupal.db-url"), code("NOT_FOUND"));
    // A removed name can be written again; its old versions stay shredded.
    await oscar.putSecret("drupal.db-url", "fresh");
    const vs = await oscar.secretVersions("drupal.db-url");
    assert.deepEqual(
      vs.versions.map((v) => [v.version, v.destroyed]),
      [
        [1, true],
        [2, false],
      ],
    );
    await assert.rejects(drupal.getSecret("drupal.db-url", 1), code("KEY_UNAVAILABLE"));
  });

  test("every read is audited with name and version, never the value; due warnings are in the log", async () => {
    const records = await readKmsAudit(kmsDir, server.service().keyring);
    const ok = records.filter((x): x is Exclude<typeof x, { integrity: "failed" }> => !("integrity" in x));
    assert.equal(ok.length, records.length);
    const reads = ok.filter((r) => r.action === "secret.read" && r.user === "drupal" && r.outcome === "success");
    assert.ok(reads.some((r) => r.target === "secret:drupal.mail-api-key:v1"));
    assert.ok(reads.some((r) => r.target === "secret:drupal.mail-api-key:v2"));
    assert.ok(
      ok.some(
        (r) =>
          r.action === "secret.read" &&
          r.outcome === "failure" &&
          r.target === "secret:billing.db-password" &&
          !r.keyRef,
      ),
    );
    const warn = ok.filter((r) => r.action === "secret.rotation-due");
    assert.equal(warn.length, 1);
    assert.equal(warn[0]?.target, "secret:drupal.mail-api-key:v2");
    assert.ok(ok.some((r) => r.action === "secret.write" && r.user === "oscar"));
    assert.ok(ok.some((r) => r.action === "secret.delete" && r.target === "secret:drupal.db-url"));
    const text = JSON.stringify(ok);
    for (const v of ["key-one-d41d8cd9", "key-two-8f00b204", "hunter2-but-longer", "postgres://"]) {
      assert.ok(!text.includes(v), v);
      assert.ok(!text.includes(Buffer.from(v).toString("base64")), v);
    }
  });

  test("a master rotation re-seals every secret version", async () => {
    const ring = server.service().keyring;
    ring.rotateMaster(randomBytes(32), () => {});
    assert.equal((await drupal.getSecret("drupal.mail-api-key", 1)).value.toString(), "key-one-d41d8cd9");
    assert.equal((await drupal.getSecret("drupal.mail-api-key")).value.toString(), "key-three-aa11");
  });

  test("the CLI on a data directory's embedded key manager: put, get, versions, list --due, rm", async () => {
    const data = join(root, "data");
    await cli(["init", "--data", data]);
    const local = ["--data", data, "--as", "carol"];
    await cli(["kms", "secret", "put", "partner.sftp-password", "--rotate-after", "1", ...local], "first\n");
    await cli(["kms", "secret", "put", "partner.sftp-password", ...local], "second\r\n");
    assert.equal((await cli(["kms", "secret", "get", "partner.sftp-password", ...local])).stdout, "second");
    assert.equal(
      (await cli(["kms", "secret", "get", "partner.sftp-password", "--version", "1", ...local])).stdout,
      "first",
    );
    const versions = await cli(["kms", "secret", "versions", "partner.sftp-password", ...local]);
    assert.match(versions.stdout, /v1\t.*by local:carol\n/);
    assert.match(versions.stdout, /v2\t.*by local:carol \(current\)/);
    // the shared test clock is 31 days on: a fresh version is not due, its reminder (kept) is 1 day out
    assert.equal((await cli(["kms", "secret", "list", "--due", ...local])).stdout, "");
    await assert.rejects(cli(["kms", "secret", "put", "partner.empty", ...local], ""), (e: unknown) => {
      assert.match((e as { stderr: string }).stderr, /empty value/);
      return true;
    });
    await cli(["kms", "secret", "rm", "partner.sftp-password", ...local]);
    assert.equal((await cli(["kms", "secret", "list", ...local])).stdout, "");
  });
});
