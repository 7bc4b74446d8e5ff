// The `atrest pgp …` and `folder add --pgp…` commands as an operator runs them: outputs, exit codes, one-line errors.
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { cli, removeDir, tempDir } from "../helpers/atrest.ts";
import { Gpg } from "../helpers/gpg.ts";

async function fails(args: string[], input?: string): Promise<{ code: number; stderr: string }> {
  try {
    await cli(args, input);
  } catch (err) {
    const e = err as { code: number; stderr: string };
    return { code: e.code, stderr: e.stderr };
  }
  throw new Error(`atrest ${args.join(" ")} succeeded`);
}

describe("atrest pgp CLI", () => {
  let dir: string;
  let data: string[];
  let gpg: Gpg;
  let fpr: string;
  let ca: string;

  before(async () => {
    dir = await tempDir();
    data = ["--data", join(dir, "data")];
    gpg = await Gpg.create();
    fpr = await gpg.generate("Dana <dana@example.com>", "ed25519");
    ca = await gpg.generate("Partner CA <ca@example.net>", "ed25519");
    await gpg.ok(["--default-key", ca, "--quick-sign-key", fpr]);
    await writeFile(join(dir, "dana.asc"), await gpg.exportPublic(fpr));
    await writeFile(join(dir, "ca.asc"), await gpg.exportPublic(ca));
    await cli(["init", ...data]);
    await cli(["user", "add", "dana", "--password-stdin", ...data], "dana password 1");
  });
  after(async () => {
    await gpg.stop();
    await removeDir(dir);
  });

  it("imports, lists, shows and exports a key", async () => {
    const imported = await cli(["pgp", "key", "import", "dana", join(dir, "dana.asc"), ...data]);
    assert.match(imported.stdout, new RegExp(`imported ${fpr} for dana: Dana <dana@example.com>`));
    const list = await cli(["pgp", "key", "list", ...data]);
    assert.match(
      list.stdout,
      new RegExp(`^dana\\t${fpr}\\ted25519\\+cv25519\\tnever\\t-\\tDana <dana@example.com>$`, "m"),
    );
    const show = JSON.parse((await cli(["pgp", "key", "show", fpr.toUpperCase(), "--json", ...data])).stdout);
    assert.equal(show.usable, true);
    assert.equal(show.owner, "dana");
    const exported = (await cli(["pgp", "key", "export", fpr, ...data])).stdout;
    assert.match(exported, /^-----BEGIN PGP PUBLIC KEY BLOCK-----/);
    const again = await gpg.run(["--with-colons", "--import-options", "show-only", "--import"], exported);
    assert.match(again.stdout, new RegExp(`fpr:+${fpr.toUpperCase()}:`));
  });

  it("folder add --pgp checks recipients at once, with a one-line error", async () => {
    const unknown = await fails(["folder", "add", "/out", "--pgp", "nobody", ...data]);
    assert.equal(unknown.stderr.trim().split("\n").length, 1);
    assert.match(unknown.stderr, /^atrest: OpenPGP recipients refused: no such user: nobody$/m);
    const uncertified = await fails(["folder", "add", "/out", "--pgp", "dana", "--pgp-require-certified", ...data]);
    assert.match(uncertified.stderr, new RegExp(`user dana: ${fpr} not certified by a trusted organisation key`));
    const both = await fails(["folder", "add", "/out", "--pgp", "dana", "--pgp-inbound", "encrypted", ...data]);
    assert.equal(both.code, 2);
    const noOrg = await fails(["folder", "add", "/out", "--pgp", "dana", "--pgp-sign", ...data]);
    assert.match(noOrg.stderr, /no organisation OpenPGP key/);

    // Trusting the CA that signed dana's key in gpg makes the certified folder acceptable.
    assert.match(
      (await cli(["pgp", "trust", "add", join(dir, "ca.asc"), ...data])).stdout,
      new RegExp(`trusted ${ca}`),
    );
    assert.match((await cli(["pgp", "trust", "list", ...data])).stdout, new RegExp(`^${ca}\\tadded\\t`, "m"));
    const ok = await cli(["folder", "add", "/out", "--pgp", "dana", "--pgp-require-certified", ...data]);
    assert.match(ok.stdout, /folder \/out: pgp=\{"recipients":\["dana"\],"requireCertified":true\}/);
    await cli(["pgp", "trust", "rm", ca, ...data]);
    assert.match((await cli(["pgp", "key", "list", ...data])).stdout, /\t-\tDana/);

    // The organisation key certifies instead.
    await cli(["pgp", "org-key", "create", ...data]);
    assert.match(
      (await cli(["pgp", "org-key", "certify", fpr, ...data])).stdout,
      new RegExp(`certified ${fpr} \\(dana\\)`),
    );
    await cli(["folder", "add", "/out", "--pgp", "dana", "--pgp-require-certified", "--pgp-sign", ...data]);
  });

  it("key generate refuses a short passphrase and a user who has a key; key rm removes", async () => {
    const short = await fails(["pgp", "key", "generate", "dana", ...data], "short");
    assert.match(short.stderr, /at least 8 characters/);
    const has = await fails(["pgp", "key", "generate", "dana", ...data], "a long enough passphrase");
    assert.match(has.stderr, new RegExp(`already has OpenPGP key\\(s\\) ${fpr}`));
    await cli(["pgp", "key", "rm", fpr, ...data]);
    assert.equal((await cli(["pgp", "key", "list", ...data])).stdout, "");
    const missing = await fails(["pgp", "key", "show", fpr, ...data]);
    assert.match(missing.stderr, new RegExp(`no such OpenPGP key: ${fpr}`));
  });
});
