// TOTP required by an administrator, in chromium: the admin turns it on for a user from the Users page; a member of a
// group that requires it logs in with a password, gets only the enrolment (QR code, secret, recovery codes) until a
// first code is confirmed, then the app opens, and the Account page says it cannot be turned off.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fromBase32, hotp, TOTP_STEP_SECONDS } from "../../src/service/totp.ts";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { type Chromium, launchChromium, PHONE, shot, unlabelled } from "../helpers/browser.ts";

describe("web app: TOTP required by the administrator", () => {
  let dir: string;
  let data: string;
  let server: RunningServer;
  let chrome: Chromium;
  let base: string;

  before(async () => {
    dir = await tempDir("atrest-webtotpreq-");
    data = join(dir, "data");
    await cli(["init", "--data", data]);
    await cli(["group", "add", "finance", "--require-totp", "--data", data]);
    await cli(["user", "add", "root", "--role", "admin", "--password-stdin", "--data", data], "root-password\n");
    await cli(["user", "add", "bob", "--group", "finance", "--password-stdin", "--data", data], "bob-password\n");
    await cli(["user", "add", "alice", "--password-stdin", "--data", data], "alice-password\n");
    server = await startServer(data);
    base = `https://localhost:${server.httpPort}`;
    chrome = await launchChromium(data);
  });
  after(async () => {
    await chrome?.close();
    await server?.stop();
    await removeDir(dir);
  });

  const login = async (user: string, viewport?: { width: number; height: number }) => {
    const page = await (await chrome.context(viewport)).newPage();
    await page.goto(`${base}/`);
    await page.getByLabel("User name").fill(user);
    await page.getByLabel("Password").fill(`${user}-password`);
    await page.getByRole("button", { name: "Log in" }).click();
    return page;
  };

  test("the admin requires it of alice; bob (group finance) must enrol before anything else", async () => {
    const admin = await login("root");
    await admin.getByRole("link", { name: "Users" }).click();
    await admin.getByRole("button", { name: "Require TOTP for alice" }).click();
    await admin.getByRole("button", { name: "Stop requiring TOTP for alice" }).waitFor();
    await admin.getByRole("link", { name: "Groups" }).click();
    await admin.locator('tr[data-key="finance"]', { hasText: "yes" }).waitFor();
    await admin.context().close();

    const page = await login("bob", PHONE);
    await page.getByText("Your account needs two-step login before anything else.").waitFor();
    assert.equal(await page.getByRole("navigation", { name: "Sections" }).count(), 0, "no other section yet");
    await page.getByRole("button", { name: "Set up two-step login" }).click();
    const secret = (await page.locator("code.secret").textContent())?.trim() ?? "";
    assert.match(secret, /^[A-Z2-7]{32}$/);
    assert.deepEqual(await unlabelled(page), []);
    await shot(page, "web-totp-required-phone");
    await page
      .getByLabel("Code shown by the app")
      .fill(hotp(fromBase32(secret), Math.floor(Date.now() / 1000 / TOTP_STEP_SECONDS)));
    await page.getByRole("button", { name: "Turn on" }).click();
    await page.getByRole("navigation", { name: "Breadcrumbs" }).waitFor();
    await page.getByRole("link", { name: "Account" }).click();
    await page.getByText("An administrator requires it for your account, so it cannot be turned off.").waitFor();
    await page.context().close();
  });
});
