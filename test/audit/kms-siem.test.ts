// The key manager's own audit log shipped to real SIEM receivers with the file server's pipeline (destinations,
// formats, filters, spool): `atrest kms serve --kms-config` (a child process, Shamir-sealed, unsealed by custodians) to
// rsyslog over TCP as CEF, in order, nothing before the unseal lost, resumed without duplicates after a restart; the
// in-process server to syslog-ng over TLS as ECS with an event filter. Never a plaintext or secret value on the wire.
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { KmsAppClient } from "../../src/kms/api/apps-client.ts";
import { initKmsDir, issueClient } from "../../src/kms/home.ts";
import { KmsServer } from "../../src/kms/server/server.ts";
import { removeDir, tempDir } from "../helpers/atrest.ts";
import { setupKms, startKms, unsealKms } from "../helpers/kms.ts";
import { makeCa, splitSyslog, startRsyslog, startSyslogNg, syslogNgRoot, type TestCa } from "./receivers.ts";

function cefFields(line: string): Record<string, string> {
  const { msg } = splitSyslog(line);
  assert.match(msg, /^CEF:0\|/);
  const out: Record<string, string> = { name: msg.split("|")[5] as string };
  for (const m of msg
    .split("|")
    .slice(7)
    .join("|")
    .matchAll(/(\w+)=((?:\\.|[^\\=])*?)(?= \w+=|$)/g)) {
    out[m[1] as string] = (m[2] as string).replace(/\\(.)/g, "$1");
  }
  return out;
}

const SECRET_VALUE = "siem-must-never-see-this-4c1d";

describe("KMS audit to the SIEM (real receivers)", () => {
  let root: string;
  let ca: TestCa;

  before(async () => {
    root = await tempDir("atrest-kms-siem-");
    ca = await makeCa(join(root, "pki"), "ca");
  });
  after(() => removeDir(root));

  test("kms serve --kms-config → rsyslog (TCP, CEF): every KMS event in order, the sealed-time ones too, no duplicates after a restart", async () => {
    const dir = join(root, "rs");
    const rs = await startRsyslog(join(dir, "rsyslog"));
    const setup = await setupKms(dir, { webapp: "server", oscar: "operator", alice: "custodian", bob: "custodian" });
    const config = join(dir, "kms-config.json");
    await writeFile(
      config,
      JSON.stringify({
        audit: {
          destinations: [{ name: "arcsight", transport: "tcp", host: "127.0.0.1", port: rs.port, format: "cef" }],
        },
      }),
    );
    let kms = await startKms(setup.dir, 0, ["--kms-config", config]);
    try {
      assert.match(kms.output(), /kms audit shipped to arcsight \(tcp 127\.0\.0\.1:\d+ cef\)/);
      await unsealKms(kms.url, setup.certs.alice as string, [setup.shares[0] as string]);
      await unsealKms(kms.url, setup.certs.bob as string, [setup.shares[1] as string]);
      const oscar = await KmsAppClient.connect({ url: kms.url, certDir: setup.certs.oscar as string });
      const app = await KmsAppClient.connect({ url: kms.url, certDir: setup.certs.webapp as string });
      await oscar.putSecret("webapp.token", SECRET_VALUE);
      const { ciphertext } = await app.encrypt("default", SECRET_VALUE, { row: "1" });
      await app.decrypt("default", ciphertext, { row: "1" });
      assert.equal((await app.getSecret("webapp.token")).value.toString(), SECRET_VALUE);
      await oscar.close();
      await app.close();
      const lines = await rs.waitFor(7);
      const events = lines.map(cefFields);
      const seqs = events.map((e) => Number(e.externalId));
      assert.deepEqual(
        seqs,
        seqs.map((_, i) => i + 1),
        "the whole chain, in order, from seq 1",
      );
      const names = events.map((e) => e.name);
      // unseal share 1 was submitted while sealed: buffered, then written and shipped after the unseal
      assert.ok(names.includes("Key manager unseal"), names.join(","));
      for (const n of ["Secret write", "Encrypt", "Decrypt", "Secret read"]) assert.ok(names.includes(n), n);
      const read = events.find((e) => e.name === "Secret read");
      assert.equal(read?.suser, "webapp");
      const text = lines.join("\n");
      assert.ok(!text.includes(SECRET_VALUE) && !text.includes(Buffer.from(SECRET_VALUE).toString("base64")));
      assert.ok(!text.includes(ciphertext.split(":")[3] as string));

      // Restart: the cursor in the KMS directory's audit spool means nothing is sent twice.
      const before = lines.length;
      await kms.stop();
      kms = await startKms(setup.dir, 0, ["--kms-config", config]);
      await unsealKms(kms.url, setup.certs.alice as string, [setup.shares[0] as string]);
      await unsealKms(kms.url, setup.certs.bob as string, [setup.shares[2] as string]);
      const after = await rs.waitFor(before + 2);
      const all = after.map((l) => Number(cefFields(l).externalId));
      // Strictly increasing: nothing sent twice, nothing out of order. (The log's closing checkpoint takes a sequence
      // number of its own and is not an event, hence one gap at the restart.)
      assert.ok(
        all.every((n, i) => i === 0 || n > (all[i - 1] as number)),
        all.join(","),
      );
      assert.deepEqual(all.slice(0, before), seqs);
      assert.ok(after.slice(before).some((l) => cefFields(l).name === "Key manager unseal"));
    } finally {
      await kms.stop();
      await rs.stop();
    }
  });

  test("in-process server → syslog-ng (TLS, ECS) with an event filter: only secret reads and decrypts", {
    skip: syslogNgRoot() ? false : "syslog-ng not extracted (.ci/run)",
  }, async () => {
    const dir = join(root, "sng");
    const sng = await startSyslogNg(join(dir, "syslog-ng"), ca);
    await initKmsDir(join(dir, "kms"), { dev: true });
    const server = await KmsServer.start({
      dir: join(dir, "kms"),
      port: 0,
      schedulerIntervalMs: 0,
      audit: {
        failClosed: false,
        destinations: [
          {
            name: "elastic",
            transport: "tls",
            host: "127.0.0.1",
            port: sng.port,
            format: "ecs",
            ca: ca.ca,
            filter: { events: ["secret.read", "key.decrypt"] },
          },
        ],
      },
    });
    try {
      await issueClient(join(dir, "kms"), "webapp", "server", join(dir, "webapp"));
      const app = await KmsAppClient.connect({ url: `https://127.0.0.1:${server.port}`, certDir: join(dir, "webapp") });
      const operator = { name: "oscar", role: "operator" } as const;
      server.service().putSecret(operator, "webapp.token", Buffer.from(SECRET_VALUE));
      const { ciphertext } = await app.encrypt("default", "x", {});
      await app.decrypt("default", ciphertext, {});
      await app.getSecret("webapp.token");
      await app.close();
      const lines = await sng.waitFor(2);
      const docs = lines.map(
        (l) => JSON.parse(splitSyslog(l).msg) as { event: { action: string }; user: { name: string } },
      );
      assert.deepEqual(docs.map((d) => d.event.action).sort(), ["key.decrypt", "secret.read"]);
      assert.ok(docs.every((d) => d.user.name === "webapp"));
      assert.ok(!lines.join("\n").includes(SECRET_VALUE));
    } finally {
      await server.close();
      await sng.stop();
    }
  });
});
