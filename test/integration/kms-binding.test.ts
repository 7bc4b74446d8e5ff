// A data directory is bound to its key manager once (`atrest init`, `--kms … --kms-cert …` for a separate one):
// later commands use the recorded binding without flags, only init and server create a data directory, and a
// data directory opened with another key manager (embedded vs remote, or another remote) is refused with a message
// naming both, before any wrapped key is tried.
import assert from "node:assert/strict";
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { cli, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { type KmsSetup, type RunningKms, setupKms, startKms, unsealKms } from "../helpers/kms.ts";

const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );

describe("data directory bound to its key manager", () => {
  let root: string;
  let a: KmsSetup;
  let b: KmsSetup;
  let kms: RunningKms;

  before(async () => {
    root = await tempDir("atrest-kms-binding-");
    a = await setupKms(join(root, "a"), { fs1: "server", alice: "custodian", bob: "custodian" }, 2, 2);
    // a second key manager, never started: the mismatch is found from its CA alone
    b = await setupKms(join(root, "b"), { fs1: "server" }, 2, 2);
    kms = await startKms(a.dir);
    // each custodian counts once (kms init's default): two custodians, one share each
    await unsealKms(kms.url, a.certs.alice as string, [a.shares[0] as string]);
    assert.match(await unsealKms(kms.url, a.certs.bob as string, [a.shares[1] as string]), /unsealed/);
  });
  after(async () => {
    await kms?.stop();
    await removeDir(root);
  });

  it("only init and server create a data directory; other commands name atrest init", async () => {
    const data = join(root, "missing");
    await assert.rejects(cli(["user", "add", "alice", "--password-stdin", "--data", data], "pw 12345678"), {
      code: 2,
      stderr: `atrest: no data directory at ${data}: create it with atrest init --data ${data} (add --kms URL --kms-cert DIR to bind it to a separate key manager)\n`,
    });
    await assert.rejects(cli(["keys", "status", "--data", data]), { code: 2 });
    assert.equal(await exists(data), false, "nothing was created");
  });

  it("init --kms records the key manager: later commands use it without flags", async () => {
    const data = join(root, "remote");
    const init = await cli(["init", "--data", data, "--kms", kms.url, "--kms-cert", a.certs.fs1 as string]);
    assert.match(init.stdout, new RegExp(`initialised ${data} with the key manager at ${kms.url}`));
    assert.equal(await exists(join(data, "kms")), false, "no embedded key manager");
    const recorded = JSON.parse(await readFile(join(data, "kms-remote.json"), "utf8"));
    assert.equal(recorded.url, kms.url);
    assert.match(recorded.caSha256, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    await cli(["user", "add", "alice", "--password-stdin", "--data", data], "alice password 1");
    assert.match((await cli(["user", "list", "--data", data])).stdout, /^alice\t/m);
    // the server too, with no --kms
    const server = await startServer(data);
    try {
      assert.match(server.output(), new RegExp(`key manager: remote ${kms.url}`));
    } finally {
      await server.stop();
    }
  });

  it("another remote key manager (its CA differs) is refused before any key is unwrapped", async () => {
    const data = join(root, "remote");
    const env = { ...process.env, ATREST_KMS: kms.url, ATREST_KMS_CERT: b.certs.fs1 };
    await assert.rejects(cli(["user", "list", "--data", data], undefined, env), (e: Error & { stderr: string }) => {
      assert.match(e.stderr, new RegExp(`^atrest: data directory ${data} is bound to the key manager at ${kms.url}`));
      assert.match(e.stderr, /is another one \(CA sha256 [0-9A-F:]+\)/);
      assert.match(e.stderr, /make a new data directory: atrest init --data DIR --kms /);
      assert.doesNotMatch(e.stderr, /wrapped key failed authentication/);
      return true;
    });
    await assert.rejects(
      startServer(data, ["--kms", kms.url, "--kms-cert", b.certs.fs1 as string]),
      /is bound to the key manager at/,
    );
    // and the binding is unchanged: the recorded one still works
    assert.match((await cli(["user", "list", "--data", data])).stdout, /^alice\t/m);
  });

  it("a data directory on the embedded key manager opened with a remote one says so (and the reverse init)", async () => {
    const data = join(root, "embedded");
    await cli(["init", "--data", data]);
    await cli(["user", "add", "bob", "--password-stdin", "--data", data], "bob password 1");
    const bound = new RegExp(`data directory ${data} is bound to its embedded \\(dev-mode\\) key manager`);
    await assert.rejects(
      startServer(data, ["--kms", kms.url, "--kms-cert", a.certs.fs1 as string]),
      (e: Error) => bound.test(e.message) && !/wrapped key failed/.test(e.message),
    );
    const env = { ...process.env, ATREST_KMS: kms.url, ATREST_KMS_CERT: a.certs.fs1 };
    await assert.rejects(cli(["user", "list", "--data", data], undefined, env), { stderr: bound });
    await assert.rejects(cli(["init", "--data", data, "--kms", kms.url, "--kms-cert", a.certs.fs1 as string]), {
      stderr: bound,
    });
    assert.equal(await exists(join(data, "kms-remote.json")), false);
    assert.match((await cli(["user", "list", "--data", data])).stdout, /^bob\t/m);
  });
});
