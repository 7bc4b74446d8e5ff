// The key manager's master key in a PKCS#11 token (Debian's SoftHSM 2), driven through the real CLI: `kms init
// --hsm-*` makes a sensitive, non-extractable AES key in the token; `kms serve --hsm-pin-file` unseals with it at
// start; OpenSC's pkcs11-tool, a second PKCS#11 client, finds the key but cannot read it. Wrong PIN, missing token
// and a token whose key is not the one kms.db was sealed under are refused clearly. Master rotation under dual
// control moves every KEK row to a new key in the token.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { RemoteKms } from "../../src/kms/api/client.ts";
import { KmsDb } from "../../src/kms/db.ts";
import { Pkcs11Source } from "../../src/kms/hsm-source.ts";
import { Keyring } from "../../src/kms/keyring.ts";
import { KmsService } from "../../src/kms/service.ts";
import { readSealConfig } from "../../src/kms/unseal.ts";
import { cli, removeDir, tempDir } from "../helpers/atrest.ts";
import { type RunningKms, startKms } from "../helpers/kms.ts";
import { admin, alice, bob, server } from "./fixture.ts";

const run = promisify(execFile);
const LIBRARY = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN = "atrest-test";
const PIN = "4711-pin";
const ctx = { file: "hsm-1", owner: "alice" };

async function fails(args: string[]): Promise<string> {
  const r = await cli(args).then(
    () => undefined,
    (e: { stderr?: string; message: string }) => `${e.stderr ?? ""}${e.message}`,
  );
  assert.ok(r !== undefined, `expected ${args.join(" ")} to fail`);
  return r;
}

describe("master key in a PKCS#11 HSM (SoftHSM 2)", () => {
  let root: string;
  let dir: string;
  let pinFile: string;
  let badPinFile: string;
  let fs1: string;
  let kms: RunningKms | undefined;

  const initToken = async (label: string) => {
    await run("softhsm2-util", ["--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", "so-0000"]);
  };
  const pkcs11Tool = (args: string[]) =>
    run("pkcs11-tool", ["--module", LIBRARY, "--token-label", TOKEN, "--login", "--pin", PIN, ...args]);

  before(async () => {
    root = await tempDir("atrest-hsm-");
    await mkdir(join(root, "tokens"));
    // This test process and every child it starts (the CLI, kms serve, softhsm2-util, pkcs11-tool) see this token dir.
    process.env.SOFTHSM2_CONF = join(root, "softhsm2.conf");
    await writeFile(
      process.env.SOFTHSM2_CONF,
      `directories.tokendir = ${join(root, "tokens")}\nobjectstore.backend = file\nlog.level = ERROR\n`,
    );
    await initToken(TOKEN);
    pinFile = join(root, "pin");
    badPinFile = join(root, "bad-pin");
    await writeFile(pinFile, `${PIN}\n`, { mode: 0o600 });
    await writeFile(badPinFile, "1234\n", { mode: 0o600 });
    dir = join(root, "kms");
    fs1 = join(root, "certs", "fs1");
  });

  after(async () => {
    await kms?.stop();
    await removeDir(root);
  });

  test("kms init --hsm-* generates the master key in the token: sensitive, not extractable, not in kms.db", async () => {
    const init = ["kms", "init", "--data", dir, "--hsm-library", LIBRARY, "--hsm-token", TOKEN];
    assert.match(await fails([...init]), /HSM PIN is needed/);
    assert.match(await fails([...init, "--hsm-pin-file", badPinFile]), /the PIN for token "atrest-test" is wrong/);
    const { stdout } = await cli([...init, "--hsm-pin-file", pinFile]);
    assert.match(stdout, /master key "atrest-master" in HSM token "atrest-test" \(generated in the token/);
    assert.match(await fails([...init, "--hsm-pin-file", pinFile]), /already initialised/);
    assert.equal(existsSync(join(dir, "master.key")), false);
    const db = new KmsDb(join(dir, "kms.db"));
    try {
      assert.deepEqual(
        { ...readSealConfig(db, dir), createdAt: undefined },
        { kind: "pkcs11", library: LIBRARY, tokenLabel: TOKEN, keyLabel: "atrest-master", createdAt: undefined },
      );
    } finally {
      db.close();
    }
    // A second PKCS#11 client sees the key and its protection, and cannot get its value out.
    const listed = (await pkcs11Tool(["--list-objects", "--type", "secrkey"])).stdout;
    assert.match(listed, /label:\s+atrest-master/);
    assert.match(listed, /Access:\s+.*sensitive/);
    assert.match(listed, /never extractable/);
    await assert.rejects(pkcs11Tool(["--read-object", "--type", "secrkey", "--label", "atrest-master"]));
    await cli(["kms", "client", "issue", "fs1", "--role", "server", "--out", fs1, "--data", dir]);
  });

  test("kms serve unseals with the token's PIN; data keys survive a restart; wrong PIN / no PIN refused", async () => {
    assert.match(
      await startKms(dir, 0, ["--hsm-pin-file", badPinFile]).then(
        () => "started",
        (e: Error) => e.message,
      ),
      /the PIN for token "atrest-test" is wrong/,
    );
    const env = process.env.ATREST_HSM_PIN;
    delete process.env.ATREST_HSM_PIN;
    assert.match(
      await startKms(dir).then(
        () => "started",
        (e: Error) => e.message,
      ),
      /give its PIN \(--hsm-pin-file FILE, or ATREST_HSM_PIN\)/,
    );
    if (env !== undefined) process.env.ATREST_HSM_PIN = env;
    kms = await startKms(dir, 0, ["--hsm-pin-file", pinFile]);
    assert.match(kms.output(), /kms is unsealed/);
    let client = await RemoteKms.connect({ url: kms.url, certDir: fs1 });
    const dk = await client.generateDataKey("default", ctx);
    assert.deepEqual(await client.unwrap(dk.wrapped, ctx), dk.plaintext);
    await client.close();
    await kms.stop();
    kms = await startKms(dir, 0, ["--hsm-pin-file", pinFile]);
    client = await RemoteKms.connect({ url: kms.url, certDir: fs1 });
    try {
      assert.deepEqual(await client.unwrap(dk.wrapped, ctx), dk.plaintext);
      const st = await client.status();
      assert.equal(st.kind, "pkcs11");
    } finally {
      await client.close();
      await kms.stop();
      kms = undefined;
    }
  });

  test("a missing token, or a token whose key is not kms.db's master, is refused clearly", async () => {
    const tokens = join(root, "tokens");
    const saved = join(root, "tokens-saved");
    await run("cp", ["-a", tokens, saved]);
    try {
      for (const t of await readdir(tokens)) await rm(join(tokens, t), { recursive: true });
      assert.match(
        await startKms(dir, 0, ["--hsm-pin-file", pinFile]).then(
          () => "started",
          (e: Error) => e.message,
        ),
        /no PKCS#11 token labelled "atrest-test"/,
      );
      // Same token label and key label, another key: the master check in kms.db does not open.
      await initToken(TOKEN);
      await pkcs11Tool(["--keygen", "--key-type", "AES:32", "--label", "atrest-master", "--sensitive"]);
      assert.match(
        await startKms(dir, 0, ["--hsm-pin-file", pinFile]).then(
          () => "started",
          (e: Error) => e.message,
        ),
        /master key does not match the KMS database/,
      );
    } finally {
      await rm(tokens, { recursive: true });
      await run("mv", [saved, tokens]);
    }
  });

  test("master rotation under dual control re-seals every row under a new key in the token", async () => {
    const db = new KmsDb(join(dir, "kms.db"));
    try {
      const config = readSealConfig(db, dir);
      assert.equal(config?.kind, "pkcs11");
      if (config?.kind !== "pkcs11") return;
      const source = new Pkcs11Source(db, config, { pin: PIN });
      const master = await source.autoUnseal();
      const kms = new KmsService(new Keyring(db, master), {
        persistMaster: (m) => source.storeMaster(m),
        newMaster: () => source.newMaster(),
      });
      const dk = kms.generateDataKey(server, "default", ctx);
      const req = kms.requestMasterRotation(admin, "annual");
      kms.approve(alice, req.id);
      assert.equal(kms.approve(bob, req.id).status, "executed");
      kms.close();
      source.seal();
      const rotated = readSealConfig(db, dir);
      assert.ok(rotated?.kind === "pkcs11" && /^atrest-master@\d{8}T\d+Z$/.test(rotated.keyLabel), rotated?.kind);
      // The new key is in the token (sensitive, not extractable); the old one still is until the operator deletes it.
      const listed = (await pkcs11Tool(["--list-objects", "--type", "secrkey"])).stdout;
      assert.match(listed, /label:\s+atrest-master@/);
      const again = new Pkcs11Source(db, rotated, { pin: PIN });
      const svc = new KmsService(new Keyring(db, await again.autoUnseal()));
      assert.deepEqual(svc.unwrap(server, dk.wrapped, ctx).plaintext, dk.plaintext);
      svc.close();
      again.seal();
    } finally {
      db.close();
    }
    // No key material in the KMS directory in the clear: the rows are sealed by the token.
    const dbBytes = await readFile(join(dir, "kms.db"));
    assert.equal(dbBytes.includes(Buffer.from(PIN)), false);
  });
});
