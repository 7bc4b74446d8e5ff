// User key pairs (seed 002) over HTTPS: the server generates an Ed25519 SSH key pair (OpenSSH format, aes256-ctr +
// bcrypt-pbkdf under the passphrase) and an OpenPGP key pair (armored, passphrase-protected), answers each private key
// once and keeps only the public half: OpenSSH reads the private key only with the passphrase and logs in with it
// (sftp -i), gpg imports the OpenPGP key and decrypts a file stored in a PGP folder for the user. Neither private key
// is in the store or the audit log.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmod, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../../helpers/atrest.ts";
import { GPG_PASSPHRASE, Gpg } from "../../helpers/gpg.ts";
import { ApiClient, assertProblem } from "../../helpers/https.ts";
import { run, SSH_OPTS } from "../../helpers/sftp-clients.ts";

const execFileP = promisify(execFile);

describe("HTTPS API: user key pairs", () => {
  let dir: string;
  let data: string;
  let server: RunningServer;
  let alice: ApiClient;
  const secrets: string[] = [];

  before(async () => {
    dir = await tempDir("atrest-keypairs-");
    data = join(dir, "data");
    await cli(["init", "--data", data]);
    await cli(["user", "add", "alice", "--password-stdin", "--data", data], "alice-pw\n");
    server = await startServer(data);
    alice = await ApiClient.forData(server.httpPort, data);
    assert.equal((await alice.login("alice", "alice-pw")).status, 200);
  });
  after(async () => {
    await server?.stop();
    await removeDir(dir);
  });

  test("SSH: an encrypted OpenSSH private key, handed out once; OpenSSH sftp logs in with it", async () => {
    const passphrase = "ssh passphrase 1";
    assertProblem(await alice.req("POST", "/api/v1/account/keys/ssh", { json: { passphrase: "short" } }), 400);
    const r = await alice.req("POST", "/api/v1/account/keys/ssh", { json: { passphrase, comment: "alice laptop" } });
    assert.equal(r.status, 201, r.body.toString());
    const { privateKey, publicKey, fingerprint } = r.json<{
      privateKey: string;
      publicKey: string;
      fingerprint: string;
    }>();
    assert.match(privateKey, /^-----BEGIN OPENSSH PRIVATE KEY-----\n/);
    assert.match(publicKey, /^ssh-ed25519 AAAA\S+ alice laptop$/);
    secrets.push(privateKey.split("\n")[3]);
    const key = join(dir, "id_ed25519");
    await writeFile(key, privateKey);
    await chmod(key, 0o600);
    const wrong = await run("ssh-keygen", ["-y", "-P", "wrong passphrase", "-f", key]);
    assert.notEqual(wrong.code, 0, "encrypted: the wrong passphrase does not open it");
    const { stdout } = await execFileP("ssh-keygen", ["-y", "-P", passphrase, "-f", key]);
    assert.equal(stdout.trim().split(" ").slice(0, 2).join(" "), publicKey.split(" ").slice(0, 2).join(" "));
    const { stdout: fp } = await execFileP("ssh-keygen", ["-l", "-f", key]);
    assert.ok(fp.includes(fingerprint), `${fp} names ${fingerprint}`);
    // OpenSSH sftp with the key, the passphrase given by an askpass helper
    const askpass = join(dir, "askpass.sh");
    await writeFile(askpass, `#!/bin/sh\nprintf '%s\\n' '${passphrase}'\n`);
    await chmod(askpass, 0o700);
    const batch = join(dir, "batch");
    await writeFile(batch, "pwd\n");
    const sftp = await run(
      "sftp",
      [
        "-o",
        "BatchMode=no",
        "-o",
        "PasswordAuthentication=no",
        "-o",
        "KbdInteractiveAuthentication=no",
        "-o",
        "IdentitiesOnly=yes",
        "-i",
        key,
        "-b",
        batch,
        "-P",
        String(server.port),
        ...SSH_OPTS,
        "alice@127.0.0.1",
      ],
      { env: { ...process.env, SSH_ASKPASS: askpass, SSH_ASKPASS_REQUIRE: "force" }, timeoutMs: 30_000 },
    );
    assert.equal(sftp.code, 0, sftp.stderr);
    const list = (await alice.req("GET", "/api/v1/account/keys")).json<{ ssh: { fingerprint: string }[] }>();
    assert.deepEqual(
      list.ssh.map((k) => k.fingerprint),
      [fingerprint],
    );
    const audit = (await cli(["audit", "tail", "-n", "100", "--data", data])).stdout;
    assert.match(audit, /"action":"login","outcome":"success","user":"alice","protocol":"sftp","method":"publickey"/);
    assert.match(audit, /"detail":"ssh key generated \(ed25519\); private key handed out once, not kept"/);
    // removed: the key no longer logs in
    assert.equal(
      (await alice.req("DELETE", `/api/v1/account/keys/ssh/${encodeURIComponent(fingerprint)}`)).status,
      204,
    );
    assert.deepEqual((await alice.req("GET", "/api/v1/account/keys")).json<{ ssh: unknown[] }>().ssh, []);
  });

  test("OpenPGP: an armored protected key, handed out once; gpg decrypts a file from the user's PGP folder", async () => {
    const r = await alice.req("POST", "/api/v1/account/keys/pgp", {
      json: { passphrase: GPG_PASSPHRASE, email: "alice@example.org" },
    });
    assert.equal(r.status, 201, r.body.toString());
    const { privateKey, key } = r.json<{ privateKey: string; key: { fingerprint: string; source: string } }>();
    assert.match(privateKey, /^-----BEGIN PGP PRIVATE KEY BLOCK-----/);
    assert.equal(key.source, "generated");
    secrets.push(privateKey.split("\n").filter((l) => l.length >= 60)[4] ?? "");
    assertProblem(await alice.req("POST", "/api/v1/account/keys/pgp", { json: { passphrase: GPG_PASSPHRASE } }), 409);
    await cli(["folder", "add", "/alice/secure", "--pgp", "alice", "--data", data]);
    await new Promise((res) => setTimeout(res, 1100)); // the server's folder cache (1 s)
    const put = await alice.req("PUT", "/api/v1/files/secure/doc.txt", { body: "top secret figures\n" });
    assert.equal(put.status, 201, put.body.toString());
    const got = await alice.req("GET", "/api/v1/files/secure/doc.txt");
    assert.ok(!got.body.includes(Buffer.from("top secret")), "stored as an OpenPGP message");
    const file = join(dir, "doc.txt.gpg");
    await writeFile(file, got.body);
    const gpg = await Gpg.create();
    try {
      await gpg.importKey(privateKey);
      const out = join(dir, "doc.txt");
      const dec = await gpg.decrypt(file, out);
      assert.equal(dec.code, 0, dec.stderr);
      assert.equal(await readFile(out, "utf8"), "top secret figures\n");
    } finally {
      await gpg.stop();
    }
    const audit = (await cli(["audit", "tail", "-n", "200", "--data", data])).stdout;
    assert.match(audit, new RegExp(`"action":"pgp.key.generate".*"target":"${key.fingerprint}"`));
  });

  test("no private key in the store, the data dir or the audit log", async () => {
    await server.stop();
    const needles = secrets.filter((s) => s.length >= 40).map((s) => Buffer.from(s));
    assert.equal(needles.length, 2);
    needles.push(Buffer.from("PRIVATE KEY"));
    const walk = async (d: string): Promise<string[]> => {
      const out: string[] = [];
      for (const e of await readdir(d, { withFileTypes: true })) {
        const p = join(d, e.name);
        if (e.isDirectory()) out.push(...(await walk(p)));
        else out.push(p);
      }
      return out;
    };
    for (const f of await walk(data)) {
      const buf = await readFile(f);
      for (const n of needles) assert.ok(!buf.includes(n), `${f} holds part of a private key`);
    }
    server = await startServer(data);
  });
});
