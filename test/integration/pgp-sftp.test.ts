// OpenPGP folders end to end: the real atrest CLI and server, OpenSSH sftp as the client, GnuPG 2.2 as the recipient.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { after, before, describe, it } from "node:test";
import * as openpgp from "openpgp";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { GPG_PASSPHRASE, Gpg } from "../helpers/gpg.ts";
import { randomStream } from "../helpers/random-file.ts";
import { makeClientKey, runSftpBatch, sha256File } from "../helpers/sftp-clients.ts";

/** The server's resident set; throws where it cannot be read (no /proc), so the memory check never passes vacuously. */
async function rssKiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kib = Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1]);
  if (!(kib > 0)) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return kib;
}

// Big enough that holding it (or its ciphertext) in memory would show well above the warm-up upload's peak; the
// 200 MB-1 GiB loads are bench/pgp.ts (`npm run bench pgp`).
const BIG = 128 * 1024 * 1024;
const WARM = 16 * 1024 * 1024;

describe("OpenPGP folders over SFTP (OpenSSH sftp → atrest → gpg --decrypt)", () => {
  let dir: string;
  let data: string;
  let key: string;
  let gpg: Gpg;
  let finance: string;
  let org: string;
  let server: RunningServer;
  const canary = `CANARY-${randomBytes(12).toString("hex")}`;
  const sftp = (commands: string[]) =>
    runSftpBatch({ port: server.port, user: "partner", keyFile: key, commands, timeoutMs: 300_000 });

  before(async () => {
    dir = await tempDir();
    data = join(dir, "data");
    key = await makeClientKey(dir);
    gpg = await Gpg.create();
    finance = await gpg.generate("Finance <finance@example.com>", "ed25519");
    await writeFile(join(dir, "finance.asc"), await gpg.exportPublic(finance));
    const d = ["--data", data];
    await cli(["init", ...d]);
    await cli(["user", "add", "partner", "--public-key", `${key}.pub`, ...d]);
    await cli(["user", "add", "fin", "--group", "finance", "--password-stdin", ...d], "fin password 123");
    await cli(["pgp", "key", "import", "fin", join(dir, "finance.asc"), ...d]);
    const created = await cli([
      "pgp",
      "org-key",
      "create",
      "--name",
      "Example Corp",
      "--email",
      "pgp@example.com",
      ...d,
    ]);
    org = /organisation key ([0-9a-f]{40})/.exec(created.stdout)?.[1] ?? "";
    assert.ok(org, created.stdout);
    await gpg.importKey((await cli(["pgp", "org-key", "export", ...d])).stdout);
    await cli(["folder", "add", "/partner/outbox", "--pgp", "@finance", "--pgp-sign", ...d]);
    await cli(["folder", "add", "/partner/inbox", "--pgp-inbound", "encrypted", ...d]);
    server = await startServer(data);
  });
  after(async () => {
    await server?.stop();
    await gpg.stop();
    await removeDir(dir);
  });

  it("0 B, 1 MB, 16 MiB and 128 MiB uploads are stored as OpenPGP messages that gpg decrypts (sha256), signed by the org", async () => {
    const files: [string, number][] = [
      ["empty.bin", 0],
      ["one.bin", 1_000_000],
      ["warm.bin", WARM],
      ["big.bin", BIG],
    ];
    for (const [name, size] of files) await pipeline(randomStream(size), createWriteStream(join(dir, name)));
    // Peak RSS while uploading: first a 1 MB and a warm-up file (the pipeline's buffers and allocator high-water),
    // then the big one. Streaming keeps the second peak within 3/4 of the size difference of the first (measured:
    // +50 MiB for +112 MiB, garbage collected late); buffering the file would add at least the whole difference.
    const pid = server.proc.pid as number;
    const upload = async (names: string[]): Promise<number> => {
      let peak = await rssKiB(pid);
      let samples = 0;
      let sampleError: unknown;
      const sampler = setInterval(() => {
        rssKiB(pid).then(
          (kib) => {
            peak = Math.max(peak, kib);
            samples++;
          },
          (err) => {
            sampleError ??= err;
          },
        );
      }, 25);
      const put = await sftp(names.map((name) => `put ${join(dir, name)} outbox/${name}`));
      clearInterval(sampler);
      assert.equal(put.code, 0, `${put.stderr}\n${server.output()}`);
      assert.equal(sampleError, undefined);
      assert.ok(samples >= 3, `RSS sampled ${samples} times during the upload of ${names.join(", ")}`);
      return peak;
    };
    const warm = await upload(["empty.bin", "one.bin", "warm.bin"]);
    const peak = await upload(["big.bin"]);
    const grownMiB = Math.round((peak - warm) / 1024);
    console.log(
      `pgp-sftp: server RSS peak ${Math.round(warm / 1024)} MiB (warm-up), ${Math.round(peak / 1024)} MiB (${BIG / 1024 / 1024} MiB upload)`,
    );
    assert.ok(
      peak - warm < ((BIG - WARM) / 1024) * 0.75,
      `server RSS peak grew by ${grownMiB} MiB from the ${WARM / 1024 / 1024} MiB to the ${BIG / 1024 / 1024} MiB upload`,
    );

    const got = await sftp(files.map(([name]) => `get outbox/${name} ${join(dir, name)}.pgp`));
    assert.equal(got.code, 0, got.stderr);
    for (const [name] of files) {
      const out = join(dir, `${name}.out`);
      const r = await gpg.decrypt(join(dir, `${name}.pgp`), out);
      assert.equal(r.code, 0, `${name}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`VALIDSIG ${org.toUpperCase()}`), name);
      assert.equal(await sha256File(out), await sha256File(join(dir, name)), name);
    }
    // Resume into a PGP folder is refused (OpenSSH prints the status text; the server's message names the folder).
    await writeFile(join(dir, "two.bin"), randomBytes(2_000_000));
    const reput = await sftp([`reput ${join(dir, "two.bin")} outbox/one.bin`]);
    assert.notEqual(reput.code, 0);
    assert.match(reput.stderr, /unsupported/i);
  });

  it("inbound folder: a gpg-encrypted upload is accepted, a plaintext upload is refused and not stored", async () => {
    const src = join(dir, "statement.csv");
    await writeFile(src, "account,amount\n1,2\n".repeat(1000));
    await gpg.ok(["--trust-model", "always", "-r", finance, "-o", `${src}.gpg`, "-e", src]);
    const ok = await sftp([`put ${src}.gpg inbox/statement.csv.gpg`]);
    assert.equal(ok.code, 0, ok.stderr);
    const refused = await sftp([`put ${src} inbox/statement.csv`]);
    assert.notEqual(refused.code, 0);
    // OpenSSH's sftp prints the status code's text, not the server's message; the audit has the reason.
    assert.match(refused.stderr, /Permission denied/);
    const ls = await sftp(["ls -1 inbox"]);
    assert.match(ls.stdout, /statement\.csv\.gpg/);
    assert.doesNotMatch(ls.stdout, /statement\.csv\s*$/m);
    const back = await sftp([`get inbox/statement.csv.gpg ${src}.back`]);
    assert.equal(back.code, 0, back.stderr);
    assert.equal(await sha256File(`${src}.back`), await sha256File(`${src}.gpg`));
    const audit = (await cli(["audit", "tail", "-n", "200", "--data", data])).stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
      .filter((e) => e.action === "pgp.verify");
    assert.deepEqual(
      audit.map((e) => [e.path, e.outcome, e.user]),
      [
        ["/inbox/statement.csv.gpg", "success", "partner"],
        ["/inbox/statement.csv", "failure", "partner"],
      ],
    );
    assert.match(
      audit[1].reason,
      /not an OpenPGP-encrypted message: unexpected packet type|not an OpenPGP packet stream/,
    );
  });

  it("on-demand key: generated for a user, private key printed once (gpg decrypts for it), only the public key kept", async () => {
    const gen = await cli(["pgp", "key", "generate", "partner", "--data", data], "partner's passphrase 42");
    assert.match(gen.stdout, /^-----BEGIN PGP PRIVATE KEY BLOCK-----/);
    assert.match(gen.stderr, /shown once and not kept/);
    const priv = await openpgp.readPrivateKey({ armoredKey: gen.stdout });
    assert.equal(priv.isDecrypted(), false, "the handed-out key is passphrase-protected");
    const fpr = priv.getFingerprint();
    const list = JSON.parse((await cli(["pgp", "key", "list", "--json", "--data", data])).stdout);
    assert.deepEqual(
      list.filter((k: { ownerName: string }) => k.ownerName === "partner").map((k: { source: string }) => k.source),
      ["generated"],
    );
    // A folder for the user's own key; the user can decrypt what lands there with the handed-out key.
    await cli(["folder", "add", "/partner/mine", "--pgp", "partner", "--data", data]);
    await new Promise((r) => setTimeout(r, 1100)); // the server's folder cache (1 s)
    const src = join(dir, "secret.txt");
    await writeFile(src, `${canary}\n`.repeat(2000));
    const put = await sftp([`put ${src} mine/secret.txt`, `put ${src} outbox/canary.txt`]);
    assert.equal(put.code, 0, put.stderr);
    const got = await sftp([`get mine/secret.txt ${src}.pgp`]);
    assert.equal(got.code, 0, got.stderr);
    const decrypted = await openpgp.decrypt({
      message: await openpgp.readMessage({ binaryMessage: await readFile(`${src}.pgp`) }),
      decryptionKeys: await openpgp.decryptKey({ privateKey: priv, passphrase: "partner's passphrase 42" }),
      format: "binary",
    });
    assert.equal(Buffer.from(decrypted.data as Uint8Array).toString(), `${canary}\n`.repeat(2000));
    const audit = (await cli(["audit", "tail", "-n", "200", "--data", data])).stdout;
    assert.match(audit, new RegExp(`"action":"pgp.key.generate".*"target":"${fpr}"`));
  });

  it("data dir scan: no plaintext of PGP-folder files, no private key of any recipient", async () => {
    await server.stop();
    const secrets: Buffer[] = [Buffer.from(canary), Buffer.from("PRIVATE KEY BLOCK")];
    // The recipient's secret key material (gpg's key, unlocked here only to know what to look for).
    const exported = (await gpg.ok(["--armor", "--export-secret-keys", finance])).stdout;
    const unlocked = await openpgp.decryptKey({
      privateKey: await openpgp.readPrivateKey({ armoredKey: exported }),
      passphrase: GPG_PASSPHRASE,
    });
    for (const packet of [unlocked.keyPacket, ...unlocked.subkeys.map((s) => s.keyPacket)]) {
      const params = (packet as unknown as { privateParams?: Record<string, Uint8Array> }).privateParams ?? {};
      for (const v of Object.values(params)) if (v.length >= 16) secrets.push(Buffer.from(v));
    }
    assert.ok(secrets.length >= 4);
    let scanned = 0;
    for (const e of await readdir(data, { withFileTypes: true, recursive: true })) {
      if (!e.isFile()) continue;
      const bytes = await readFile(join(e.parentPath, e.name));
      scanned++;
      for (const s of secrets) assert.equal(bytes.indexOf(s), -1, `secret found in ${join(e.parentPath, e.name)}`);
    }
    assert.ok(scanned >= 5, `scanned ${scanned} files`);
    server = await startServer(data);
  });
});
