// Share links in the web app (chromium): alice shares a file with a password and a one-download limit; a fresh browser
// context with no account opens the link, is refused a wrong password, downloads the file byte for byte, and is
// refused a second download; a folder shared with uploads takes a file from that context; alice's Shares page
// shows the use and revokes a link, after which it opens no more. Screenshots at 1280 and 390 px.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Page } from "playwright-core";
import type { RunningServer } from "../helpers/atrest.ts";
import { type Chromium, lowContrast, PHONE, shot, startWebApp, stopWebApp, unlabelled } from "../helpers/browser.ts";

describe("web app: share links", () => {
  let dir: string;
  let server: RunningServer;
  let chrome: Chromium;
  let base: string;

  before(async () => {
    ({ dir, server, chrome, base } = await startWebApp("atrest-webshare-"));
  });
  after(() => stopWebApp({ dir, server, chrome }));

  async function share(page: Page, name: string, fill: (dlg: ReturnType<Page["getByRole"]>) => Promise<void>) {
    const row = page.locator(`tr[data-name="${name}"]`);
    await row.getByLabel(`Actions for ${name}`).click();
    await row.getByRole("button", { name: "Share" }).click();
    const dlg = page.getByRole("dialog");
    await fill(dlg);
    await dlg.getByRole("button", { name: "Create link" }).click();
    const url = await dlg.getByLabel("Share link", { exact: true }).inputValue();
    await dlg.getByRole("button", { name: "Close" }).click();
    return url;
  }

  test("a password-protected one-download file link, an upload folder link, use counts and revoke", async () => {
    const ctx = await chrome.context();
    const page = await ctx.newPage();
    await page.goto(`${base}/`);
    await page.getByLabel("User name").fill("alice");
    await page.getByLabel("Password").fill("alice-password");
    await page.getByRole("button", { name: "Log in" }).click();
    const body = randomBytes(150_000);
    const file = join(dir, "report.bin");
    await writeFile(file, body);
    await page.locator('input[data-testid="upload-files"]').setInputFiles([file]);
    await page.locator('tr[data-name="report.bin"]').waitFor();
    await page.getByRole("button", { name: "New folder" }).click();
    await page.getByLabel("Folder name").fill("inbox");
    await page.getByRole("dialog").getByRole("button", { name: "Create" }).click();
    await page.locator('tr[data-name="inbox"]').waitFor();

    const fileLink = await share(page, "report.bin", async (dlg) => {
      await dlg.getByLabel("Password (optional)").fill("s3same pass");
      await dlg.getByLabel("Downloads allowed (empty: unlimited)").fill("1");
      await dlg.getByLabel("Expires after (days, empty: never)").fill("7");
    });
    assert.match(fileLink, new RegExp(`^${base}/s/[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$`));
    const dirLink = await share(page, "inbox", async (dlg) => {
      await dlg.getByLabel("Others may upload into this folder").check();
    });

    // someone without an account, in a fresh context
    const anon = await chrome.context();
    const guest = await anon.newPage();
    await guest.goto(fileLink);
    await guest.getByLabel("Password", { exact: true }).fill("wrong");
    await guest.getByRole("button", { name: "Open" }).click();
    await guest.getByRole("alert").filter({ hasText: "Wrong password" }).waitFor();
    await guest.getByLabel("Password", { exact: true }).fill("s3same pass");
    await guest.getByRole("button", { name: "Open" }).click();
    const dl = guest.getByRole("link", { name: "Download report.bin" });
    await dl.waitFor();
    await guest.getByText("Shared by alice").waitFor();
    assert.deepEqual(await unlabelled(guest), []);
    assert.deepEqual(await lowContrast(guest), []);
    await shot(guest, "web-share-file-desktop");
    const [download] = await Promise.all([guest.waitForEvent("download"), dl.click()]);
    const saved = join(dir, "got.bin");
    await download.saveAs(saved);
    assert.deepEqual(await readFile(saved), body);
    const again = await guest.evaluate(
      async (href) => (await fetch(href)).status,
      (await dl.getAttribute("href")) ?? "",
    );
    assert.equal(again, 410, "the one download is used up");

    await guest.goto(dirLink);
    const up = join(dir, "from-guest.txt");
    await writeFile(up, "hello from outside\n");
    await guest.getByLabel("Upload files into this folder").setInputFiles([up]);
    await guest.locator('tr[data-name="from-guest.txt"]').waitFor();
    await guest.setViewportSize(PHONE);
    await shot(guest, "web-share-folder-phone");

    // the owner sees the upload, the use, and revokes the file link
    await page.locator('tr[data-name="inbox"]').getByRole("link").click();
    await page.locator('tr[data-name="from-guest.txt"]').waitFor();
    await page.getByRole("link", { name: "Shares" }).click();
    const fileRow = page.locator("tr", { hasText: "/report.bin" });
    await fileRow.waitFor();
    assert.match((await fileRow.textContent()) ?? "", /password.*1 of 1/);
    await shot(page, "web-shares-desktop");
    await fileRow.getByRole("button", { name: /Revoke/ }).click();
    await fileRow.waitFor({ state: "detached" });
    await guest.goto(fileLink);
    await guest.getByRole("alert").waitFor();
    assert.equal(await guest.getByRole("link", { name: "Download report.bin" }).count(), 0);
    await anon.close();
    await ctx.close();
  });
});
