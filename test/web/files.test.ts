// The web app in Debian's chromium (playwright-core, headless), against a real server: password login, TOTP enrolment
// from the Account page (QR code shown, secret read off the page), then a password + TOTP login; two files uploaded
// through the drop-in picker with per-file and total progress (tus), one downloaded and compared byte for byte,
// renamed and deleted; screenshots at desktop (1280 px) and phone (390 px) width in test-artifacts/.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Page } from "playwright-core";
import { fromBase32, hotp, TOTP_STEP_SECONDS } from "../../src/service/totp.ts";
import { cli, type RunningServer } from "../helpers/atrest.ts";
import { type Chromium, lowContrast, PHONE, shot, startWebApp, stopWebApp, unlabelled } from "../helpers/browser.ts";

const step = () => Math.floor(Date.now() / 1000 / TOTP_STEP_SECONDS);

async function passwordLogin(page: Page, user: string, password: string) {
  await page.getByLabel("User name").fill(user);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
}

describe("web app: login with TOTP, upload, download, rename, delete", () => {
  let dir: string;
  let data: string;
  let server: RunningServer;
  let chrome: Chromium;
  let base: string;

  before(async () => {
    ({ dir, data, server, chrome, base } = await startWebApp("atrest-web-"));
  });
  after(() => stopWebApp({ dir, server, chrome }));

  test("the page is served with a strict CSP and no third-party resource", async () => {
    const ctx = await chrome.context();
    const page = await ctx.newPage();
    const foreign: string[] = [];
    page.on("request", (r) => {
      if (!r.url().startsWith(base) && !r.url().startsWith("data:")) foreign.push(r.url());
    });
    const errors: string[] = [];
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(m.text());
    });
    const res = await page.goto(`${base}/`);
    assert.equal(res?.status(), 200);
    const csp = res?.headers()["content-security-policy"] ?? "";
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    await page.getByLabel("User name").waitFor();
    assert.deepEqual(foreign, []);
    assert.deepEqual(
      errors.filter((e) => !/401/.test(e)),
      [],
      "no console errors but the first session probe's 401",
    );
    await ctx.close();
  });

  test("TOTP enrolment, then password + code; upload two files with progress; download, rename, delete", async () => {
    const ctx = await chrome.context();
    const page = await ctx.newPage();
    await page.goto(`${base}/`);
    await passwordLogin(page, "alice", "alice-password");
    await page.getByRole("navigation", { name: "Breadcrumbs" }).waitFor();

    // enrol TOTP from the Account page
    await page.getByRole("link", { name: "Account" }).click();
    await page.getByRole("button", { name: "Set up two-step login" }).click();
    await page.locator("img.qr").waitFor();
    const secret = (await page.locator("code.secret").textContent())?.trim() ?? "";
    assert.match(secret, /^[A-Z2-7]{32}$/);
    const recovery = await page.locator(".codes code").allTextContents();
    assert.equal(recovery.length, 10);
    await shot(page, "web-totp-enrol-desktop");
    assert.deepEqual(await unlabelled(page), [], "every control of the Account page has a name");
    const key = fromBase32(secret);
    const confirmStep = step();
    await page.getByLabel("Code shown by the app").fill(hotp(key, confirmStep));
    await page.getByRole("button", { name: "Turn on" }).click();
    await page.getByText("Two-step login is on").waitFor();

    // log out; a password alone now leads to the code step
    await page.getByRole("button", { name: "Log out", exact: true }).click();
    await passwordLogin(page, "alice", "alice-password");
    const code = page.getByLabel("Authentication code");
    await code.waitFor();
    await shot(page, "web-login-totp-desktop");
    await code.fill("000000");
    await page.getByRole("button", { name: "Verify" }).click();
    await page.getByRole("alert").waitFor();
    // the confirming code was used once; the next step's code is accepted (±1 step of skew)
    await code.fill(hotp(key, Math.max(confirmStep, step()) + 1));
    await page.getByRole("button", { name: "Verify" }).click();
    await page.getByRole("navigation", { name: "Breadcrumbs" }).waitFor();

    // two files through the picker; sample the total progress bar while they go
    const big = randomBytes(24 << 20);
    const small = randomBytes(300_000);
    const bigFile = join(dir, "big.bin");
    const smallFile = join(dir, "notes.txt");
    await writeFile(bigFile, big);
    await writeFile(smallFile, small);
    await page.evaluate(() => {
      const w = window as unknown as { samples: number[] };
      w.samples = [];
      const tick = () => {
        const p = document.querySelector<HTMLProgressElement>("#upload-total");
        if (p) w.samples.push(p.value / p.max);
        if (w.samples.length < 100_000) requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
    });
    await page.locator('input[data-testid="upload-files"]').setInputFiles([bigFile, smallFile]);
    await page.getByText("Uploaded 2 of 2 files").waitFor({ timeout: 60_000 });
    const samples = await page.evaluate(() => (window as unknown as { samples: number[] }).samples);
    assert.ok(
      samples.some((v) => v > 0 && v < 1),
      `the total bar moved through intermediate values (${samples.length} samples)`,
    );
    assert.equal(samples.at(-1), 1);
    for (const bar of await page.locator(".uploads li progress").all()) {
      assert.equal(await bar.getAttribute("value"), await bar.getAttribute("max"));
    }
    await page.locator('tr[data-name="big.bin"]').waitFor();
    await page.locator('tr[data-name="notes.txt"]').waitFor();
    await shot(page, "web-files-desktop");
    assert.deepEqual(await unlabelled(page), [], "every control of the file browser has a name");
    assert.deepEqual(await lowContrast(page), [], "text contrast at least 4.5:1 (light scheme)");

    // download compares byte for byte
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      page.getByRole("link", { name: "notes.txt" }).click(),
    ]);
    const saved = join(dir, "downloaded.txt");
    await download.saveAs(saved);
    assert.deepEqual(await readFile(saved), small);

    // rename
    const row = page.locator('tr[data-name="notes.txt"]');
    await row.getByLabel("Actions for notes.txt").click();
    await row.getByRole("button", { name: "Rename" }).click();
    await page.getByLabel("New name").fill("renamed.txt");
    await page.getByRole("dialog").getByRole("button", { name: "Rename" }).click();
    await page.locator('tr[data-name="renamed.txt"]').waitFor();
    assert.equal(await page.locator('tr[data-name="notes.txt"]').count(), 0);

    // copy (a new version under a new data key), then the original is deleted
    const r1 = page.locator('tr[data-name="renamed.txt"]');
    await r1.getByLabel("Actions for renamed.txt").click();
    await r1.getByRole("button", { name: "Copy" }).click();
    await page.getByLabel("Destination path").fill("/copied.txt");
    await page.getByRole("dialog").getByRole("button", { name: "Copy" }).click();
    await page.locator('tr[data-name="copied.txt"]').waitFor();

    // delete
    const r2 = page.locator('tr[data-name="renamed.txt"]');
    await r2.getByLabel("Actions for renamed.txt").click();
    await r2.getByRole("button", { name: "Delete" }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Delete" }).click();
    await page.locator('tr[data-name="renamed.txt"]').waitFor({ state: "detached" });

    // search within the folder
    await page.getByLabel("Search in this folder").fill("big");
    assert.equal(await page.locator("tbody tr[data-name]").count(), 1);
    await page.getByLabel("Search in this folder").fill("");

    // pause and resume: uploads throttled to 4 MiB/s so there is time to pause midway
    const cdp = await ctx.newCDPSession(page);
    await cdp.send("Network.enable");
    const throttle = (bps: number) =>
      cdp.send("Network.emulateNetworkConditions", {
        offline: false,
        latency: 0,
        downloadThroughput: -1,
        uploadThroughput: bps,
      });
    await throttle(4 << 20);
    const resumable = randomBytes(20 << 20);
    const resumableFile = join(dir, "resume.bin");
    await writeFile(resumableFile, resumable);
    await page.getByRole("button", { name: "Clear finished" }).click();
    await page.locator('input[data-testid="upload-files"]').setInputFiles([resumableFile]);
    const item = page.locator('.uploads li[data-path="/resume.bin"]');
    const bar = item.locator("progress");
    await page.waitForFunction(() => {
      const p = document.querySelector<HTMLProgressElement>('.uploads li[data-path="/resume.bin"] progress');
      return p !== null && p.value > p.max * 0.15;
    });
    await page.getByRole("button", { name: "Pause /resume.bin" }).click();
    await item.locator(".state", { hasText: "paused" }).waitFor();
    const pausedAt = Number(await bar.getAttribute("value"));
    await page.waitForTimeout(700);
    assert.equal(Number(await bar.getAttribute("value")), pausedAt, "nothing moves while paused");
    assert.ok(pausedAt > 0 && pausedAt < resumable.length, `paused at ${pausedAt}`);
    await shot(page, "web-upload-paused-desktop");
    await throttle(-1);
    await page.getByRole("button", { name: "Resume /resume.bin" }).click();
    await item.locator(".state", { hasText: "done" }).waitFor({ timeout: 60_000 });
    const digest = await page.evaluate(async () => {
      const r = await fetch("/api/v1/files/resume.bin");
      const d = await crypto.subtle.digest("SHA-256", await r.arrayBuffer());
      return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
    });
    assert.equal(digest, createHash("sha256").update(resumable).digest("hex"), "the resumed upload is byte-identical");

    // a folder with a subfolder, through the folder picker
    const tree = join(dir, "project");
    await mkdir(join(tree, "sub"), { recursive: true });
    await writeFile(join(tree, "readme.txt"), "top\n");
    await writeFile(join(tree, "sub", "deep.bin"), randomBytes(70_000));
    await page.locator('input[aria-label="Folder to upload"]').setInputFiles(tree);
    await page.locator('.uploads li[data-path="/project/sub/deep.bin"] .state', { hasText: "done" }).waitFor();
    await page.locator('.uploads li[data-path="/project/readme.txt"] .state', { hasText: "done" }).waitFor();
    await page.getByRole("link", { name: "project/" }).click();
    await page.locator('tr[data-name="readme.txt"]').waitFor();
    await page.getByRole("link", { name: "sub/" }).click();
    await page.locator('tr[data-name="deep.bin"]').waitFor();
    const crumbs = await page.getByRole("navigation", { name: "Breadcrumbs" }).textContent();
    assert.match(crumbs ?? "", /Home.*project.*sub/);
    await page.getByRole("navigation", { name: "Breadcrumbs" }).getByRole("link", { name: "Home" }).click();
    await page.locator('tr[data-name="project"]').waitFor();
    // move the copy into the uploaded folder; its bytes are still the original's
    const c = page.locator('tr[data-name="copied.txt"]');
    await c.getByLabel("Actions for copied.txt").click();
    await c.getByRole("button", { name: "Move" }).click();
    await page.getByLabel("Destination path").fill("/project/copied.txt");
    await page.getByRole("dialog").getByRole("button", { name: "Move" }).click();
    await page.locator('tr[data-name="copied.txt"]').waitFor({ state: "detached" });
    const moved = await page.evaluate(async () => {
      const d = await crypto.subtle.digest(
        "SHA-256",
        await (await fetch("/api/v1/files/project/copied.txt")).arrayBuffer(),
      );
      return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
    });
    assert.equal(moved, createHash("sha256").update(small).digest("hex"), "the moved copy has the original bytes");

    // drag and drop of two files onto the browser
    const dt = await page.evaluateHandle(() => {
      const t = new DataTransfer();
      t.items.add(new File(["dropped one"], "drop-1.txt", { type: "text/plain" }));
      t.items.add(new File(["dropped two"], "drop-2.txt", { type: "text/plain" }));
      return t;
    });
    await page.dispatchEvent("section.files", "dragover", { dataTransfer: dt });
    await page.dispatchEvent("section.files", "drop", { dataTransfer: dt });
    await page.locator('tr[data-name="drop-1.txt"]').waitFor();
    await page.locator('tr[data-name="drop-2.txt"]').waitFor();

    // select several, move them into a folder at once
    await page.getByLabel("Select drop-1.txt").check();
    await page.getByLabel("Select drop-2.txt").check();
    await page.getByRole("region", { name: "Selection" }).getByText("2 selected").waitFor();
    await page.getByRole("button", { name: "Move selected…" }).click();
    await page.getByLabel("Destination folder").fill("/project");
    await page.getByRole("dialog").getByRole("button", { name: "Move" }).click();
    await page.getByText("Moved 2 item(s)").waitFor();
    await page.locator('tr[data-name="drop-1.txt"]').waitFor({ state: "detached" });
    assert.equal(await page.locator('tr[data-name^="drop-"]').count(), 0);

    // the phone layout
    await page.setViewportSize(PHONE);
    await shot(page, "web-files-phone");
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `no horizontal scrolling at 390 px (${overflow} px too wide)`);

    // a recovery code logs in once
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.getByRole("button", { name: "Log out", exact: true }).click();
    await passwordLogin(page, "alice", "alice-password");
    await page.getByLabel("Authentication code").fill(recovery[0]);
    await page.getByRole("button", { name: "Verify" }).click();
    await page.getByRole("navigation", { name: "Breadcrumbs" }).waitFor();
    await page.getByRole("link", { name: "Account" }).click();
    await page.getByText("9 recovery codes left").waitFor();
    await ctx.close();
  });

  test("keyboard only: open a file's actions and rename it; dark scheme keeps the contrast", async () => {
    const ctx = await chrome.browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: "dark" });
    ctx.setDefaultTimeout(60_000);
    const page = await ctx.newPage();
    await page.goto(`${base}/`);
    // alice has TOTP on by now (the test before); a fresh user for this one
    await cli(["user", "add", "kim", "--password-stdin", "--data", data], "kim-password\n");
    await page.keyboard.type("kim");
    await page.keyboard.press("Tab");
    await page.keyboard.type("kim-password");
    await page.keyboard.press("Enter");
    await page.getByRole("navigation", { name: "Breadcrumbs" }).waitFor();
    const k = join(dir, "k.txt");
    await writeFile(k, "kim");
    await page.locator('input[data-testid="upload-files"]').setInputFiles([k]);
    await page.locator('tr[data-name="k.txt"]').waitFor();
    assert.deepEqual(await lowContrast(page), [], "text contrast at least 4.5:1 (dark scheme)");
    await shot(page, "web-files-dark-desktop");
    // Tab to the row's actions, open them with Enter, go to Rename, fill the dialog, submit: no mouse
    await page.getByLabel("Actions for k.txt").focus();
    await page.keyboard.press("Enter");
    await page.keyboard.press("Tab");
    await page.keyboard.press("Enter");
    await page.getByLabel("New name").waitFor();
    assert.equal(await page.evaluate(() => document.activeElement?.id), "target", "the dialog's field has the focus");
    await page.keyboard.press("Control+A");
    await page.keyboard.type("k2.txt");
    await page.keyboard.press("Enter");
    await page.locator('tr[data-name="k2.txt"]').waitFor();
    // Escape closes a dialog
    await page.getByRole("button", { name: "New folder" }).focus();
    await page.keyboard.press("Enter");
    await page.getByRole("dialog").waitFor();
    await page.keyboard.press("Escape");
    await page.getByRole("dialog").waitFor({ state: "detached" });
    await ctx.close();
  });
});
