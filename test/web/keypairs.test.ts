// Own key pairs from the Account page in chromium (seed 002): an SSH key pair generated on the server, its private key
// downloaded once as id_ed25519 (OpenSSH format under the passphrase: ssh-keygen -y needs it and gives the listed
// public key), then OpenSSH sftp logs in with it; an OpenPGP pair downloaded armored, read by gpg, its fingerprint
// the listed one; the SSH key removed again.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmod, copyFile, readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import type { RunningServer } from "../helpers/atrest.ts";
import { type Chromium, shot, startWebApp, stopWebApp, unlabelled } from "../helpers/browser.ts";
import { runSftpBatch } from "../helpers/sftp-clients.ts";

const execFileP = promisify(execFile);

describe("web app: own SSH and OpenPGP key pairs", () => {
  let dir: string;
  let server: RunningServer;
  let chrome: Chromium;
  let base: string;

  before(async () => {
    ({ dir, server, chrome, base } = await startWebApp("atrest-webkeys-"));
  });
  after(() => stopWebApp({ dir, server, chrome }));

  test("generate an SSH key (private key downloaded once, works with ssh-keygen), an OpenPGP key, remove the SSH key", async () => {
    const ctx = await chrome.context();
    const page = await ctx.newPage();
    await page.goto(`${base}/#/account`);
    await page.getByLabel("User name").fill("alice");
    await page.getByLabel("Password").fill("alice-password");
    await page.getByRole("button", { name: "Log in" }).click();
    const ssh = page.getByRole("form", { name: "New SSH key pair" });
    await ssh.waitFor();
    assert.deepEqual(await unlabelled(page), []);
    await ssh.getByLabel("Passphrase for the private key (8+ characters)").fill("correct horse");
    await ssh.getByLabel("Passphrase again").fill("different");
    await ssh.getByRole("button", { name: "Generate SSH key" }).click();
    await ssh.getByRole("alert").filter({ hasText: "differ" }).waitFor();
    await ssh.getByLabel("Passphrase again").fill("correct horse");
    await ssh.getByLabel("Comment (e.g. laptop)").fill("laptop");
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      ssh.getByRole("button", { name: "Generate SSH key" }).click(),
    ]);
    assert.equal(download.suggestedFilename(), "id_ed25519");
    const keyFile = join(dir, "id_ed25519");
    await download.saveAs(keyFile);
    await chmod(keyFile, 0o600);
    assert.match(await readFile(keyFile, "utf8"), /^-----BEGIN OPENSSH PRIVATE KEY-----/);
    const note = (await page.getByText(/SSH key SHA256:\S+ added/).textContent()) ?? "";
    const fingerprint = /SSH key (SHA256:\S+) added/.exec(note)?.[1] ?? "";
    await page.locator(".token", { hasText: fingerprint }).waitFor();
    assert.equal(await ssh.getByLabel("Passphrase again").inputValue(), "", "the passphrase does not stay in the page");
    // the passphrase protects it; with it, ssh-keygen derives the same key the account lists
    await assert.rejects(execFileP("ssh-keygen", ["-y", "-P", "wrong passphrase", "-f", keyFile]));
    const pub = (await execFileP("ssh-keygen", ["-y", "-P", "correct horse", "-f", keyFile])).stdout.trim();
    const fp = (await execFileP("ssh-keygen", ["-l", "-E", "sha256", "-f", keyFile])).stdout;
    assert.ok(fp.includes(fingerprint), `${fp} vs ${fingerprint}`);
    assert.match(pub, /^ssh-ed25519 /);
    // OpenSSH sftp logs in with it (a copy with the passphrase taken off, so no prompt is needed)
    const clear = join(dir, "id_clear");
    await copyFile(keyFile, clear);
    await chmod(clear, 0o600);
    await execFileP("ssh-keygen", ["-p", "-P", "correct horse", "-N", "", "-f", clear]);
    const login = await runSftpBatch({ port: server.port, user: "alice", keyFile: clear, commands: ["pwd"] });
    assert.equal(login.code, 0, login.stderr);

    const pgp = page.getByRole("form", { name: "New OpenPGP key pair" });
    await pgp.getByLabel("Passphrase for the private key (8+ characters)").fill("another passphrase");
    await pgp.getByLabel("Passphrase again").fill("another passphrase");
    await pgp.getByLabel("E-mail (optional)").fill("alice@example.org");
    const [asc] = await Promise.all([
      page.waitForEvent("download"),
      pgp.getByRole("button", { name: "Generate OpenPGP key" }).click(),
    ]);
    const ascFile = join(dir, "alice-private.asc");
    await asc.saveAs(ascFile);
    assert.match(await readFile(ascFile, "utf8"), /-----BEGIN PGP PRIVATE KEY BLOCK-----/);
    const gnupg = join(dir, "gnupg");
    await execFileP("mkdir", ["-m", "700", gnupg]);
    const listed = await execFileP("gpg", ["--homedir", gnupg, "--batch", "--show-keys", "--with-colons", ascFile]);
    const gpgFpr = /^fpr:+([0-9A-F]{40}):/m.exec(listed.stdout)?.[1] ?? "";
    assert.ok(gpgFpr);
    await page.locator(".token", { hasText: "alice@example.org" }).waitFor();
    assert.match(
      ((await page.locator(".token", { hasText: "alice@example.org" }).textContent()) ?? "").toUpperCase(),
      new RegExp(gpgFpr),
    );
    await shot(page, "web-account-keys-desktop");

    await page.getByRole("button", { name: `Remove SSH key ${fingerprint}` }).click();
    await page.locator(".token", { hasText: fingerprint }).waitFor({ state: "detached" });
    await ctx.close();
  });
});
