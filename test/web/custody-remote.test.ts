// Custodians in chromium with a remote key manager (`atrest kms serve` as its own process): each makes a custody key
// in the browser (WebCrypto, non-extractable, kept in IndexedDB), the key manager's operator certifies its public key
// with the CLI, the custodian pastes the certificate; then an operator's destroy request is approved by two
// custodians in their own browsers, each confirming the call their key signs, until the key manager runs it.
// Screenshots at 1280 and 390 px in test-artifacts/.
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Page } from "playwright-core";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { type Chromium, launchChromium, lowContrast, PHONE, shot, unlabelled } from "../helpers/browser.ts";
import { type KmsSetup, type RunningKms, setupKms, startKms, unsealKms } from "../helpers/kms.ts";

describe("web app: custodians sign their decisions for a remote key manager", () => {
  let root: string;
  let setup: KmsSetup;
  let kms: RunningKms;
  let server: RunningServer;
  let chrome: Chromium;
  let base: string;
  let requestId: string;
  const kmsAs = (who: string) => ["--kms", kms.url, "--kms-cert", setup.certs[who] as string];

  before(async () => {
    root = await tempDir("atrest-webcustody-");
    setup = await setupKms(root, { fs1: "server", olga: "operator", keeper1: "custodian", keeper2: "custodian" });
    kms = await startKms(setup.dir);
    await unsealKms(kms.url, setup.certs.keeper1 as string, [setup.shares[0] as string]);
    await unsealKms(kms.url, setup.certs.keeper2 as string, [setup.shares[1] as string]);
    const data = join(root, "data");
    await cli(["init", "--data", data, ...kmsAs("fs1")]);
    for (const u of ["carol", "dave"]) {
      await cli(["user", "add", u, "--role", "custodian", "--password-stdin", "--data", data], `${u}-password\n`);
    }
    server = await startServer(data);
    base = `https://localhost:${server.httpPort}`;
    chrome = await launchChromium(data);
    await cli(["kms", "key", "create", "old", ...kmsAs("olga")]);
    const asked = await cli([
      "kms",
      "key",
      "destroy",
      "old",
      "--waiting-days",
      "7",
      "--reason",
      "retired",
      ...kmsAs("olga"),
    ]);
    requestId = /request (req-[0-9a-f]+)/.exec(asked.stdout)?.[1] as string;
    assert.ok(requestId, asked.stdout);
  });
  after(async () => {
    await chrome?.close();
    await server?.stop();
    await kms?.stop();
    await removeDir(root);
  });

  async function as(user: string, viewport?: { width: number; height: number }): Promise<Page> {
    const ctx = await chrome.context(viewport);
    const page = await ctx.newPage();
    await page.goto(`${base}/`);
    await page.getByLabel("User name").fill(user);
    await page.getByLabel("Password").fill(`${user}-password`);
    await page.getByRole("button", { name: "Log in" }).click();
    await page.getByRole("button", { name: "Log out", exact: true }).waitFor();
    return page;
  }

  /** The custodian makes a key in the browser; the operator certifies its public key; the certificate goes in. */
  async function enrol(page: Page, user: string): Promise<void> {
    await page.getByRole("link", { name: "Keys" }).click();
    await page.getByRole("button", { name: "Make my custody key" }).click();
    const pub = page.getByLabel("Public key (for the key manager's operator)");
    await pub.waitFor();
    const pem = await pub.inputValue();
    assert.match(pem, /^-----BEGIN PUBLIC KEY-----/);
    const file = join(root, `${user}.pub.pem`);
    await writeFile(file, pem);
    const out = join(root, "web-certs", user);
    await cli([
      "kms",
      "client",
      "issue",
      user,
      "--role",
      "custodian",
      "--public-key",
      file,
      "--out",
      out,
      "--data",
      setup.dir,
    ]);
    await page
      .getByLabel("Certificate issued for this key (client.crt)")
      .fill(await readFile(join(out, "client.crt"), "utf8"));
    await page.getByRole("button", { name: "Add certificate" }).click();
    await page.getByText("Certificate added: your calls to the key manager are signed by this key.").waitFor();
  }

  test("two custodians approve a destroy in their browsers; each signature is confirmed first", async () => {
    for (const [i, who] of ["carol", "dave"].entries()) {
      const page = await as(who, i === 1 ? PHONE : undefined);
      const confirms: string[] = [];
      page.on("dialog", (d) => {
        confirms.push(d.message());
        d.accept().catch(() => {});
      });
      await enrol(page, who);
      if (i === 0) {
        await shot(page, "web-custody-key-desktop");
        assert.deepEqual(await unlabelled(page), []);
        assert.deepEqual(await lowContrast(page), []);
      }
      await page.getByRole("link", { name: "Requests" }).click();
      const row = page.locator(`tr[data-key="${requestId}"]`);
      await row.waitFor();
      assert.match((await row.textContent()) ?? "", new RegExp(`${i}/2`));
      await row.getByRole("button", { name: "Approve" }).click();
      await page.getByRole("dialog").getByLabel("Justification (audited)").fill(`checked by ${who}`);
      await page.getByRole("dialog").getByRole("button", { name: "Approve" }).click();
      await page.getByText(new RegExp(`Request ${requestId}: ${i === 0 ? "pending" : "executed"}`)).waitFor();
      if (i === 1) await shot(page, "web-custody-signed-approve-phone");
      // every confirmation named the call and this person
      assert.ok(
        confirms.some((m) => m.includes(`POST /v1/requests/${requestId}/approve`)),
        confirms.join("\n"),
      );
      assert.ok(confirms.every((m) => m.includes(`as ${who}`)));
      // reads (the request list) were signed without asking
      assert.ok(
        confirms.every((m) => !m.includes("GET /v1/")),
        confirms.join("\n"),
      );
      await page.context().close();
    }
    const listed = JSON.parse(
      (await cli(["kms", "request", "list", "--status", "executed", "--json", ...kmsAs("olga")])).stdout,
    ) as { id: string; approvals: { custodian: string }[] }[];
    assert.deepEqual(
      listed.find((r) => r.id === requestId)?.approvals.map((a) => a.custodian),
      ["carol", "dave"],
    );
  });
});
