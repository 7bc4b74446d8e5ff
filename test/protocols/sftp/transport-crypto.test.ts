// SSH transport crypto: ssh2's native binding (built by scripts/build-ssh2-binding.ts at npm ci) and the pure-JS
// fallback (ATREST_SSH_CRYPTO=js). Every cipher and MAC the server offers moves a file both ways with OpenSSH's sftp
// and with paramiko, hash-checked, in both modes; the server's start line says which crypto it uses.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { transportCrypto } from "../../../src/protocols/sftp/fastcrypto.ts";
import { cli, ROOT, type RunningServer, removeDir, startServer, tempDir } from "../../helpers/atrest.ts";
import { makeClientKey, run, runSftpBatch, sha256File } from "../../helpers/sftp-clients.ts";

// CI (and anyone who sets ATREST_EXPECT_NATIVE_SSH=1) must have the binding that `npm ci` builds.
const expectNative = process.env.ATREST_EXPECT_NATIVE_SSH === "1" || process.env.CI === "true";
const bindingLoads = (() => {
  try {
    createRequire(import.meta.url)("ssh2/lib/protocol/crypto/build/Release/sshcrypto.node");
    return true;
  } catch {
    return false;
  }
})();

// ssh2's MACs for the non-AEAD ciphers, all offered by default.
const MACS = [
  "hmac-sha2-256-etm@openssh.com",
  "hmac-sha2-512-etm@openssh.com",
  "hmac-sha1-etm@openssh.com",
  "hmac-sha2-256",
  "hmac-sha2-512",
  "hmac-sha1",
];
const AEAD = /gcm|chacha/;
// paramiko 2.12 (Debian 12) speaks the CTR ciphers and these MACs only; its AEAD support came later.
const PARAMIKO_CIPHERS = /^aes(128|192|256)-ctr$/;
const PARAMIKO_MACS = new Set([
  "hmac-sha2-256",
  "hmac-sha2-512",
  "hmac-sha2-256-etm@openssh.com",
  "hmac-sha2-512-etm@openssh.com",
  "hmac-sha1",
]);

test("the native binding is built and correct for every cipher when it is expected (CI)", {
  skip: !expectNative && !bindingLoads && "binding not built here and not expected (set ATREST_EXPECT_NATIVE_SSH=1)",
}, async () => {
  const t = await transportCrypto();
  assert.equal(t.native, true, "ssh2's native crypto binding is not loaded: npm ci did not build it for Node 24");
  assert.deepEqual(t.broken, [], `the binding disagrees with ssh2's JS ciphers: ${t.broken.join(", ")}`);
  assert.ok(t.ciphers.includes("chacha20-poly1305@openssh.com"));
  assert.ok(t.ciphers.includes("aes128-gcm@openssh.com"));
  // Node's ObjectWrap (Node >= 23) removes a cleanup hook in its destructor and aborts the process when V8 collects
  // the object outside a context; the build swaps in scripts/ssh2-binding/object-wrap.h, which has none.
  const file = createRequire(import.meta.url).resolve("ssh2/lib/protocol/crypto/build/Release/sshcrypto.node");
  assert.equal(
    (await readFile(file)).includes("RemoveEnvironmentCleanupHook"),
    false,
    "binding built with Node's ObjectWrap",
  );
});

let dir: string;
let data: string;
let key: string;
let local: string;
let localHash: string;
before(async () => {
  dir = await tempDir("atrest-transport-");
  data = join(dir, "data");
  key = await makeClientKey(dir);
  await cli(["init", "--data", data]);
  await cli(["user", "add", "alice", "--public-key", `${key}.pub`, "--data", data]);
  local = join(dir, "payload.bin");
  // Crosses many SSH packets and SFTP requests, ends off any block boundary.
  await writeFile(local, randomBytes(3 * 1024 * 1024 + 4321));
  localHash = await sha256File(local);
});
after(() => removeDir(dir));

const modes = [
  { name: "native", env: {}, expect: /sftp transport crypto: native \(/, skip: !bindingLoads },
  {
    name: "pure-JS (ATREST_SSH_CRYPTO=js)",
    env: { ATREST_SSH_CRYPTO: "js" },
    expect: /sftp transport crypto: pure-JS/,
    skip: false,
  },
];

for (const mode of modes) {
  describe(`transport crypto ${mode.name}`, { skip: mode.skip && "ssh2's native binding is not built here" }, () => {
    let server: RunningServer;
    before(async () => {
      server = await startServer(data, [], mode.env);
    });
    after(() => server?.stop());

    test("the start line names the transport crypto", async () => {
      // It follows the listening line that startServer waits for.
      for (let i = 0; i < 100 && !/sftp transport crypto:/.test(server.output()); i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.match(server.output(), mode.expect);
      assert.doesNotMatch(server.output(), /not offered/);
    });

    test("OpenSSH sftp: every cipher (and every MAC with a non-AEAD cipher) puts and gets the file intact", async () => {
      const ciphers = (await transportCrypto()).ciphers;
      assert.ok(ciphers.includes("chacha20-poly1305@openssh.com"), "OpenSSH's default cipher must be offered");
      const combos: [string, string | undefined][] = [];
      for (const c of ciphers) {
        if (AEAD.test(c)) combos.push([c, undefined]);
        else combos.push(...MACS.map((m): [string, string] => [c, m]));
      }
      for (const [cipher, mac] of combos) {
        const back = join(dir, `back-${cipher}-${mac ?? "aead"}`);
        const name = `ossh-${cipher}-${mac ?? "aead"}.bin`;
        // -c on the command line wins over the SSH_OPTS cipher; sftp has no -m, MACs= is not in SSH_OPTS.
        const args = ["-c", cipher, ...(mac ? ["-o", `MACs=${mac}`] : []), "-v"];
        const r = await runSftpBatch({
          port: server.port,
          user: "alice",
          keyFile: key,
          args,
          commands: [`put ${local} ${name}`, `get ${name} ${back}`, `rm ${name}`],
        });
        const label = `${cipher} ${mac ?? ""}`;
        assert.equal(
          r.code,
          0,
          `${label}: ${r.stderr
            .split("\n")
            .filter((l) => !l.startsWith("debug1"))
            .join("\n")}`,
        );
        assert.match(
          r.stderr,
          new RegExp(
            `kex: server->client cipher: ${cipher.replace(/[.@]/g, "\\$&")} MAC: ${mac ? mac.replace(/[.@]/g, "\\$&") : "<implicit>"}`,
          ),
          label,
        );
        assert.equal(await sha256File(back), localHash, label);
        await removeDir(back);
      }
    });

    test("paramiko: every cipher and MAC it shares with the server puts and gets the file intact", async () => {
      const ciphers = (await transportCrypto()).ciphers.filter((c) => PARAMIKO_CIPHERS.test(c));
      assert.ok(ciphers.length >= 3);
      const pairs = ciphers.flatMap((c) => MACS.filter((m) => PARAMIKO_MACS.has(m)).map((m) => `${c},${m}`));
      const r = await run(
        "/usr/bin/python3",
        [join(ROOT, "test", "helpers", "paramiko-sftp.py"), String(server.port), "alice", key, local, ...pairs],
        { timeoutMs: 240_000 },
      );
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stdout.trim().split("\n");
      assert.equal(lines.length, pairs.length, r.stdout + r.stderr);
      for (const [i, line] of lines.entries()) {
        const [cipher, mac] = pairs[i].split(",");
        assert.equal(line, `${cipher} ${mac} ${localHash}`);
      }
    });
  });
}
