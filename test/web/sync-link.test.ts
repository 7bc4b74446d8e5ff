// An E2EE sync share link opened in chromium by someone without an account (issue 14 item 4): the page decrypts the
// file in the browser and the download is byte for byte what the device synced; the key (URL fragment) never reaches
// the server's log; a cut key, a wrong key and a revoked link each show a clear message and hand out nothing.
// The CLI (`sync link get`) opens the same URL. Screenshots at 1280 and 390 px.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { RunningServer } from "../helpers/atrest.ts";
import { cli } from "../helpers/atrest.ts";
import { type Chromium, lowContrast, PHONE, shot, startWebApp, stopWebApp, unlabelled } from "../helpers/browser.ts";
import { Device } from "../sync/helpers.ts";

describe("web app: E2EE sync share links", () => {
  let dir: string;
  let data: string;
  let server: RunningServer;
  let chrome: Chromium;
  let device: Device;
  let region: string;
  const body = randomBytes(300_000);

  before(async () => {
    ({ dir, data, server, chrome } = await startWebApp("atrest-weblink-"));
    device = new Device(dir, "alice", "laptop");
    await device.enroll(`https://127.0.0.1:${server.httpPort}`, join(data, "tls", "server.crt"), "alice-password");
    region = (await device.run(["region", "create", "papers"])).stdout.trim();
    await writeFile(join(device.dir, "q3 figures.bin"), body);
    await device.sync(region);
  });
  after(() => stopWebApp({ dir, server, chrome }));

  const makeLink = async () =>
    (await device.run(["link", "create", "q3 figures.bin", "--region", region, "--days", "3"])).stdout.trim();

  test("decrypted in the page, downloaded byte for byte; the CLI opens the same URL", async () => {
    const url = await makeLink();
    assert.match(url, /\/e\/[0-9a-f]{32}#[A-Za-z0-9_-]{43}$/);
    const ctx = await chrome.context();
    const page = await ctx.newPage();
    await page.goto(url);
    const button = page.getByRole("button", { name: "Download q3 figures.bin" });
    await button.waitFor();
    await page.getByText("the server never sees").waitFor();
    assert.deepEqual(await unlabelled(page), []);
    assert.deepEqual(await lowContrast(page), []);
    await shot(page, "web-sync-link-desktop");
    const [download] = await Promise.all([page.waitForEvent("download"), button.click()]);
    assert.equal(download.suggestedFilename(), "q3 figures.bin");
    const saved = join(dir, "browser-got.bin");
    await download.saveAs(saved);
    assert.ok((await readFile(saved)).equals(body), "the browser's download differs from the synced file");
    await page.getByText("verified").waitFor();
    const phone = await (await chrome.context(PHONE)).newPage();
    await phone.goto(url);
    await phone.getByRole("button", { name: "Download q3 figures.bin" }).waitFor();
    await shot(phone, "web-sync-link-phone");

    const out = join(dir, "cli-got.bin");
    await cli(["sync", "link", "get", url, "--out", out, "--ca", join(data, "tls", "server.crt")]);
    assert.ok((await readFile(out)).equals(body));
    const key = url.split("#")[1] as string;
    assert.doesNotMatch(server.output(), new RegExp(key.replace(/[-]/g, "\\-")));
  });

  test("a cut key, a wrong key, a revoked link: a clear message, no download", async () => {
    const url = await makeLink();
    const page = await (await chrome.context()).newPage();
    await page.goto(url.split("#")[0] as string);
    await page.getByRole("alert").filter({ hasText: "its key (the part after #) is missing" }).waitFor();
    await page.goto(`${url.split("#")[0]}#${"A".repeat(43)}`);
    await page.getByRole("alert").filter({ hasText: "authentication failed" }).waitFor();
    assert.equal(await page.getByRole("button", { name: /^Download/ }).count(), 0);
    const id = /\/e\/([0-9a-f]{32})/.exec(url)?.[1] as string;
    await device.run(["link", "revoke", id, "--region", region]);
    await page.goto(url);
    await page.getByRole("alert").filter({ hasText: "expired or was revoked" }).waitFor();
    await shot(page, "web-sync-link-revoked");
  });
});
