// Two processes, as in production: `atrest kms serve` (Shamir-sealed, unsealed by two custodians through
// `atrest kms unseal`) and `atrest server --kms … --kms-cert …`; OpenSSH sftp moves the files. The key manager going
// away makes uncached reads fail with "key manager unavailable" and corrupts nothing; back and unsealed, all is well.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { cp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import ssh2 from "ssh2";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { type KmsSetup, type RunningKms, setupKms, startKms, unsealKms } from "../helpers/kms.ts";
import { makeClientKey, run, runSftpBatch, sha256File } from "../helpers/sftp-clients.ts";

/** The SFTP status message for reading `path` (OpenSSH's client prints only "Failure"; ssh2 shows the message). */
async function readError(port: number, keyFile: string, path: string): Promise<string> {
  const c = new ssh2.Client();
  try {
    const sftp = await new Promise<ssh2.SFTPWrapper>((resolve, reject) => {
      c.on("error", reject);
      c.on("ready", () => c.sftp((err, s) => (err ? reject(err) : resolve(s))));
      readFile(keyFile).then((privateKey) => c.connect({ host: "127.0.0.1", port, username: "alice", privateKey }));
    });
    return await new Promise<string>((resolve) =>
      sftp.readFile(path, (err) => resolve(err ? err.message : "no error")),
    );
  } finally {
    c.end();
  }
}

async function countFiles(dir: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) n++;
  return n;
}

describe("file server on a separate key manager (mTLS)", () => {
  let root: string;
  let data: string;
  let key: string;
  let setup: KmsSetup;
  let kms: RunningKms;
  let server: RunningServer;
  let env: NodeJS.ProcessEnv;
  const files = new Map<string, string>();
  const sftp = (commands: string[]) =>
    runSftpBatch({ port: server.port, user: "alice", keyFile: key, commands, timeoutMs: 60_000 });
  const put = async (name: string, size = 200_000) => {
    const local = join(root, name);
    await writeFile(local, randomBytes(size));
    files.set(name, await sha256File(local));
    const r = await sftp([`put ${local} ${name}`]);
    assert.equal(r.code, 0, r.stderr);
  };
  const getOk = async (name: string) => {
    const back = join(root, `${name}.back`);
    const r = await sftp([`get ${name} ${back}`]);
    assert.equal(r.code, 0, `${name}: ${r.stderr}`);
    assert.equal(await sha256File(back), files.get(name), name);
  };

  before(async () => {
    root = await tempDir("atrest-kms-int-");
    data = join(root, "data");
    key = await makeClientKey(root);
    setup = await setupKms(root, { fs1: "server", op: "operator", alice: "custodian", bob: "custodian" });
    kms = await startKms(setup.dir);
    assert.match(await unsealKms(kms.url, setup.certs.alice as string, [setup.shares[0] as string]), /1\/2/);
    assert.match(await unsealKms(kms.url, setup.certs.bob as string, [setup.shares[2] as string]), /unsealed/);
    env = { ...process.env, ATREST_KMS: kms.url, ATREST_KMS_CERT: setup.certs.fs1 };
    await cli(["init", "--data", data, "--kms", kms.url, "--kms-cert", setup.certs.fs1 as string]);
    // bound by init: no --kms or ATREST_KMS needed from here on
    await cli(["user", "add", "alice", "--public-key", `${key}.pub`, "--data", data]);
    server = await startServer(data, ["--kms", kms.url, "--kms-cert", setup.certs.fs1 as string]);
  });
  after(async () => {
    await server?.stop();
    await kms?.stop();
    await removeDir(root);
  });

  it("serves SFTP with every key from the remote key manager; no key material in the data dir", async () => {
    assert.match(server.output(), new RegExp(`key manager: remote ${kms.url.replace(/\./g, "\\.")}`));
    assert.doesNotMatch(server.output(), /DEV MODE/);
    await put("a.bin");
    await put("b.bin", 70_000);
    await getOk("a.bin");
    const entries = await readdir(data);
    assert.ok(!entries.includes("kms"), `no embedded key manager in ${entries.join(",")}`);
    assert.ok(entries.includes("kms-remote.json"));
    const who = JSON.parse((await cli(["keys", "who-can-decrypt", "/alice/b.bin", "--json", "--data", data])).stdout);
    assert.equal(who.keyRef, "kek:default:v1");
    assert.equal(who.keyManager, `remote ${kms.url}`);
    assert.equal(who.keyState, "active");
  });

  it("SSH host keys are sealed under the remote key manager: no private key on disk, same keys after a restart", async () => {
    const scan = async () => {
      const r = await run("ssh-keyscan", ["-p", String(server.port), "-t", "ed25519,rsa", "127.0.0.1"], {
        timeoutMs: 20_000,
      });
      assert.equal(r.code, 0, r.stderr);
      // "[127.0.0.1]:PORT type base64": the port changes with the restart, the keys must not
      return r.stdout
        .split("\n")
        .filter((l) => l && !l.startsWith("#"))
        .map((l) => l.split(" ").slice(1).join(" "))
        .sort();
    };
    const before = await scan();
    assert.equal(before.length, 2, before.join("\n"));
    for (const e of await readdir(data, { withFileTypes: true, recursive: true })) {
      if (!e.isFile()) continue;
      const body = (await readFile(join(e.parentPath, e.name))).toString("latin1");
      assert.doesNotMatch(body, /PRIVATE KEY|openssh-key-v1|b3BlbnNzaC1rZXktdjE/, `${e.name} holds a private key`);
    }
    const fps = (out: string) => out.match(/host key (ED25519|RSA) SHA256:\S+/g);
    const printed = fps(server.output());
    await server.stop();
    server = await startServer(data, ["--kms", kms.url, "--kms-cert", setup.certs.fs1 as string]);
    assert.deepEqual(await scan(), before, "ssh-keyscan sees the same host keys (known_hosts stays valid)");
    assert.deepEqual(fps(server.output()), printed);
  });

  it("key manager down: an uncached download fails with 'key manager unavailable', an upload leaves nothing; back + unsealed: works", async () => {
    // A fresh server process: nothing cached. Read a.bin once (now cached), leave b.bin uncached.
    await server.stop();
    server = await startServer(data, ["--kms", kms.url, "--kms-cert", setup.certs.fs1 as string]);
    await getOk("a.bin");
    const port = kms.port;
    await kms.kill();
    const blobsBefore = await countFiles(join(data, "blobs"));

    await getOk("a.bin"); // its DEK is in the cache (dekCacheSeconds)
    const r = await sftp([`get b.bin ${join(root, "b.fail")}`]);
    assert.notEqual(r.code, 0);
    assert.match(await readError(server.port, key, "/b.bin"), /key manager unavailable/);
    const up = await sftp([`put ${join(root, "a.bin")} c.bin`]);
    assert.notEqual(up.code, 0, "upload refused while the key manager is away");
    const ls = await sftp(["ls -1"]);
    assert.doesNotMatch(ls.stdout, /c\.bin/);
    assert.equal(await countFiles(join(data, "blobs")), blobsBefore, "no blob written");
    assert.equal(await countFiles(join(data, "tmp")), 0, "no temp file left");
    // The audit key lives in the key manager too: unreadable while it is away.
    await assert.rejects(cli(["audit", "tail", "-n", "30", "--data", data], undefined, env), /key manager unavailable/);

    kms = await startKms(setup.dir, port);
    await unsealKms(kms.url, setup.certs.alice as string, [setup.shares[1] as string]);
    await unsealKms(kms.url, setup.certs.bob as string, [setup.shares[2] as string]);
    await getOk("b.bin");
    await put("c.bin");
    await getOk("c.bin");
    const records = (await cli(["audit", "tail", "-n", "40", "--data", data], undefined, env)).stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    const failed = records.find((e) => e.action === "download" && e.outcome === "failure" && e.path === "/b.bin");
    assert.equal(failed?.reason, "KEY_UNAVAILABLE");
  });

  it("rotation over the key manager service: retire v1, old files fail until keys rewrap, then read", async () => {
    const asOp = ["--kms", kms.url, "--kms-cert", setup.certs.op as string];
    assert.match((await cli(["kms", "key", "rotate", "default", ...asOp])).stdout, /kek:default:v2/);
    await new Promise((r) => setTimeout(r, 300));
    await put("d.bin");
    const who = JSON.parse((await cli(["keys", "who-can-decrypt", "/alice/d.bin", "--json", "--data", data])).stdout);
    assert.equal(who.keyRef, "kek:default:v2");
    await cli(["kms", "key", "policy", "default", "--min-decryption-version", "2", ...asOp]);
    // A fresh server (empty DEK cache) cannot even start: its service keys are on v1 too.
    await server.stop();
    await assert.rejects(
      startServer(data, ["--kms", kms.url, "--kms-cert", setup.certs.fs1 as string]),
      /below the minimum decryption version/,
    );
    const rewrap = JSON.parse((await cli(["keys", "rewrap", "--json", "--data", data])).stdout);
    const def = rewrap.keys.find((k: { key: string }) => k.key === "default");
    assert.equal(def.done, 3, JSON.stringify(rewrap));
    assert.equal(def.failed, 0);
    assert.ok(rewrap.serviceKeys.includes("metadata.key"));
    server = await startServer(data, ["--kms", kms.url, "--kms-cert", setup.certs.fs1 as string]);
    for (const name of ["a.bin", "b.bin", "c.bin", "d.bin"]) await getOk(name);
    const status = (await cli(["keys", "status", "--data", data])).stdout;
    assert.match(status, /^kek:default:v2\t4\tcurrent$/m);
  });

  it("the data directory copied elsewhere, without the key manager: nothing starts, nothing decrypts, no plaintext", async () => {
    const canary = Buffer.from(`CANARY-${randomBytes(8).toString("hex")}`);
    const local = join(root, "canary.txt");
    await writeFile(local, Buffer.concat([canary, randomBytes(1000), canary]));
    files.set("canary-file-name.txt", await sha256File(local));
    assert.equal((await sftp([`put ${local} canary-file-name.txt`])).code, 0);
    await server.stop();
    const stolen = join(root, "stolen");
    await cp(data, stolen, { recursive: true });
    // As a thief has it on another machine: the client certificate never was in the data dir.
    await writeFile(
      join(stolen, "kms-remote.json"),
      JSON.stringify({ url: kms.url, certDir: join(root, "not-copied") }),
    );
    const mustNotStart = async (dir: string, why: RegExp) => {
      const started = await startServer(dir).then(
        (s) => s,
        (e: Error) => e,
      );
      if (!(started instanceof Error)) await started.stop();
      assert.ok(started instanceof Error, "a server started on the stolen copy");
      assert.match(started.message, why);
    };
    await mustNotStart(stolen, /cannot read the KMS client certificate/);
    // Without the remote record the server falls back to a fresh embedded key manager, which knows none of the keys.
    await rm(join(stolen, "kms-remote.json"));
    await mustNotStart(stolen, /unknown key|failed authentication/);
    await assert.rejects(cli(["audit", "tail", "--data", stolen]));
    for (const entry of await readdir(stolen, { withFileTypes: true, recursive: true })) {
      if (!entry.isFile()) continue;
      const bytes = await readFile(join(entry.parentPath, entry.name));
      assert.equal(bytes.indexOf(canary), -1, `canary plaintext in ${entry.name}`);
      assert.equal(bytes.indexOf(Buffer.from("canary-file-name")), -1, `file name in ${entry.name}`);
    }
    server = await startServer(data, ["--kms", kms.url, "--kms-cert", setup.certs.fs1 as string]);
    await getOk("canary-file-name.txt");
  });
});
