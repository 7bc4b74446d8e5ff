// The admin, custodian and auditor sides of the web app in chromium against a real server: an admin lists and adds
// users, changes one (quota, groups, disabled and enabled again) and ends their sessions; custodian carol creates and rotates a key, sets it to rotate every 30 days, and asks to destroy its old version, cannot approve her own
// request, and custodians dave and erin approve it in their own browsers until it runs (the version is scheduled for
// destruction); a rewrap job runs with its progress shown; the auditor filters the audit log (failed logins of one
// user) and sees the charts and SIEM delivery pages. Screenshots at 1280 and 390 px in test-artifacts/.
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Page } from "playwright-core";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { type Chromium, launchChromium, lowContrast, PHONE, shot, unlabelled } from "../helpers/browser.ts";
import { ApiClient } from "../helpers/https.ts";

describe("web app: admin, custodian and auditor pages", () => {
  let dir: string;
  let data: string;
  let server: RunningServer;
  let chrome: Chromium;
  let base: string;
  let siem: Server;
  let siemBytes = 0;

  const users: [string, string][] = [
    ["root", "admin"],
    ["carol", "custodian"],
    ["dave", "custodian"],
    ["erin", "custodian"],
    ["frank", "auditor"],
    ["alice", "user"],
  ];

  before(async () => {
    dir = await tempDir("atrest-webroles-");
    data = join(dir, "data");
    await cli(["init", "--data", data]);
    for (const [name, role] of users) {
      await cli(["user", "add", name, "--role", role, "--password-stdin", "--data", data], `${name}-password\n`);
    }
    // a SIEM receiver (RFC 6587 octet-counted syslog over TCP) that only counts what it gets
    siem = createServer((sock) => sock.on("data", (b) => (siemBytes += b.length)));
    await new Promise<void>((r) => siem.listen(0, "127.0.0.1", r));
    const config = join(dir, "config.json");
    const port = (siem.address() as { port: number }).port;
    const dest = { name: "soc", transport: "tcp", host: "127.0.0.1", port, format: "rfc5424" };
    await writeFile(config, JSON.stringify({ audit: { destinations: [dest] } }));
    server = await startServer(data, ["--config", config]);
    base = `https://localhost:${server.httpPort}`;
    chrome = await launchChromium(data);
  });
  after(async () => {
    await chrome?.close();
    await server?.stop();
    siem?.close();
    await removeDir(dir);
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

  test("admin: users listed, one added; groups, folders, bans and sessions pages", async () => {
    const page = await as("root");
    await page.getByRole("link", { name: "Users" }).click();
    await page.locator('tr[data-key="carol"]').waitFor();
    const form = page.getByRole("form", { name: "Add a user" });
    await form.getByLabel("Name", { exact: true }).fill("gina");
    await form.getByLabel("Password (8+ characters)").fill("gina-password");
    await form.getByRole("button", { name: "Add user" }).click();
    await page.locator('tr[data-key="gina"]').waitFor();
    await shot(page, "web-admin-users-desktop");
    assert.deepEqual(await unlabelled(page), []);
    assert.deepEqual(await lowContrast(page), []);
    await page.getByRole("link", { name: "Folders" }).click();
    const ff = page.getByRole("form", { name: "Set a folder's key" });
    await ff.getByLabel("Folder path (global)").fill("/finance");
    await ff.getByLabel("Key (KEK name)").fill("default");
    await ff.getByRole("button", { name: "Save folder" }).click();
    await page.locator('tr[data-key="/finance"]').waitFor();
    await page.getByRole("link", { name: "Sessions" }).click();
    await page.locator("td", { hasText: "root" }).first().waitFor();
    await page.getByRole("link", { name: "Bans" }).click();
    await page.getByText("No bans.").waitFor();
    await page.setViewportSize(PHONE);
    await page.getByRole("link", { name: "Users" }).click();
    await page.locator('tr[data-key="gina"]').waitFor();
    await shot(page, "web-admin-users-phone");
    await page.context().close();
  });

  test("admin: changes a user, disables and enables them, ends their sessions", async () => {
    const alice = await ApiClient.forData(server.httpPort, data);
    assert.equal((await alice.login("alice", "alice-password")).status, 200);
    const page = await as("root");
    await page.getByRole("link", { name: "Users" }).click();
    const row = page.locator('tr[data-key="alice"]');
    await row.getByRole("button", { name: "Change alice" }).click();
    let dlg = page.getByRole("dialog");
    await dlg.getByLabel("Quota, bytes (0: unlimited)").fill("1000000");
    await dlg.getByLabel("Groups (comma-separated)").fill("eng, ops");
    await dlg.getByLabel(/^Disabled/).check();
    await shot(page, "web-admin-user-change-desktop");
    await dlg.getByRole("button", { name: "Save changes" }).click();
    await row.getByRole("cell", { name: "disabled", exact: true }).waitFor();
    await row.getByRole("cell", { name: "eng, ops" }).waitFor();
    assert.equal((await alice.req("GET", "/api/v1/fs/list")).status, 401, "disabling ended alice's session");
    await row.getByRole("button", { name: "Change alice" }).click();
    dlg = page.getByRole("dialog");
    await dlg.getByLabel(/^Disabled/).uncheck();
    await dlg.getByRole("button", { name: "Save changes" }).click();
    await row.getByRole("cell", { name: "enabled", exact: true }).waitFor();
    assert.equal((await alice.login("alice", "alice-password")).status, 200, "enabled again");

    await page.getByRole("link", { name: "Sessions" }).click();
    const live = page.locator("tr", { hasText: "alice" }).first();
    await live.getByRole("button", { name: "End sessions" }).click();
    await page.getByRole("dialog").getByRole("button", { name: "End sessions" }).click();
    await page.getByRole("dialog").waitFor({ state: "detached" });
    assert.equal((await alice.req("GET", "/api/v1/fs/list")).status, 401, "the admin ended alice's session");
    // the list reloads after the dialog closes (a store read): wait for that reload, not for the old list's root row
    await page.locator("tr", { hasText: "alice" }).first().waitFor({ state: "detached", timeout: 15_000 });
    await page.locator("tr", { hasText: "root" }).first().waitFor();
    assert.equal(await page.locator("tr", { hasText: "alice" }).count(), 0);
    assert.deepEqual(await unlabelled(page), []);
    assert.deepEqual(await lowContrast(page), []);
    await page.setViewportSize(PHONE);
    await page.getByRole("link", { name: "Users" }).click();
    await page.locator('tr[data-key="alice"]').getByRole("button", { name: "Change alice" }).click();
    await shot(page, "web-admin-user-change-phone");
    await page.context().close();
  });

  test("custodians: a destroy request approved by two others runs; the requester cannot approve it", async () => {
    const alice = await ApiClient.forData(server.httpPort, data);
    assert.equal((await alice.login("alice", "alice-password")).status, 200);
    assert.equal((await alice.req("PUT", "/api/v1/files/a.txt", { body: "a file to ask about" })).status, 201);
    const carol = await as("carol");
    await carol.getByLabel("Key name").fill("doomed");
    await carol.getByRole("button", { name: "Create key" }).click();
    await carol.locator('tr[data-key="doomed"]').waitFor();
    await carol.getByRole("button", { name: "Rotate doomed" }).click();
    await carol.getByText("Rotated doomed: v2").waitFor();
    await carol.getByRole("button", { name: "Rotation policy of doomed" }).click();
    const rot = carol.getByRole("dialog");
    await rot.getByLabel("Policy").selectOption("auto");
    await rot.getByLabel("Period, days (1-3650)").fill("30");
    await rot.getByRole("button", { name: "Save policy" }).click();
    await carol
      .locator('tr[data-key="doomed"]')
      .getByText(/^auto every 30 d, next /)
      .waitFor();
    await carol.locator('tr[data-key="doomed"]').getByRole("button", { name: "Destroy…" }).click();
    const dlg = carol.getByRole("dialog");
    await dlg.getByLabel("Version (empty: every version)").selectOption("1");
    await dlg.getByLabel("Waiting period, days (7-30)").fill("7");
    await dlg.getByLabel("Reason (shown to the approvers)").fill("retired after the 2026 rotation");
    await dlg.getByRole("button", { name: "Ask for destruction" }).click();
    const created = await carol.getByText(/Request \S+ created/).textContent();
    const id = /Request (\S+) created/.exec(created ?? "")?.[1] ?? "";
    assert.ok(id, created ?? "");

    // her own request: the key manager refuses her approval
    await carol.getByRole("link", { name: "Requests" }).click();
    const mine = carol.locator(`tr[data-key="${id}"]`);
    await mine.getByRole("button", { name: "Approve" }).click();
    await carol.getByRole("dialog").getByLabel("Justification (audited)").fill("mine");
    await carol.getByRole("dialog").getByRole("button", { name: "Approve" }).click();
    await carol.getByRole("dialog").getByRole("alert").waitFor();
    await carol.context().close();

    for (const [i, who] of ["dave", "erin"].entries()) {
      const page = await as(who);
      await page.getByRole("link", { name: "Requests" }).click();
      const row = page.locator(`tr[data-key="${id}"]`);
      await row.waitFor();
      assert.match((await row.textContent()) ?? "", new RegExp(`${i}/2`));
      if (i === 1) {
        await shot(page, "web-custodian-requests-desktop");
        assert.deepEqual(await unlabelled(page), []);
        assert.deepEqual(await lowContrast(page), []);
      }
      await row.getByRole("button", { name: "Approve" }).click();
      await page.getByRole("dialog").getByLabel("Justification (audited)").fill(`checked by ${who}`);
      await page.getByRole("dialog").getByRole("button", { name: "Approve" }).click();
      await page.getByText(new RegExp(`Request ${id}: ${i === 0 ? "pending" : "executed"}`)).waitFor();
      if (i === 1) {
        await page.getByLabel("Show").selectOption("");
        await page.locator(`tr[data-key="${id}"]`, { hasText: "executed" }).waitFor();
        await page.getByRole("link", { name: "Keys" }).click();
        const key = page.locator('tr[data-key="doomed"]');
        await key.waitFor();
        assert.match((await key.textContent()) ?? "", /v1.*to be destroyed/);
        await shot(page, "web-custodian-keys-desktop");
        // one custodian may stop it during the waiting period
        await key.getByRole("button", { name: "Cancel destruction of v1" }).click();
        await page.getByText("Destruction of doomed v1 cancelled.").waitFor();
        await key.getByText("to be destroyed").waitFor({ state: "detached" });

        // a rewrap job, its progress polled until done
        await page.getByRole("link", { name: "Jobs" }).click();
        const jf = page.getByRole("form", { name: "Start a job" });
        await jf.getByLabel("Key").fill("default");
        await jf.getByRole("button", { name: "Start job" }).click();
        await page.locator(".jobs li", { hasText: "done" }).waitFor();
        await page.getByRole("link", { name: "Who can decrypt" }).click();
        await page.getByLabel("File path (global, e.g. /alice/report.pdf)").fill("/alice/a.txt");
        await page.getByRole("button", { name: "Look up" }).click();
        await page.locator(".report dd", { hasText: "kek:default:v" }).first().waitFor();
        assert.match((await page.locator(".report").textContent()) ?? "", /owner\s*alice/);
        await page.setViewportSize(PHONE);
        await shot(page, "web-custodian-who-phone");
      }
      await page.context().close();
    }
  });

  test("custodians: destroying a version that still has files needs the loss accepted, asking and approving", async () => {
    const carol = await as("carol");
    const key = carol.locator('tr[data-key="default"]');
    await key.getByRole("button", { name: "Destroy…" }).click();
    const dlg = carol.getByRole("dialog");
    await dlg.getByLabel("Waiting period, days (7-30)").fill("7");
    await dlg.getByLabel("Reason (shown to the approvers)").fill("everything under default");
    await dlg.getByRole("button", { name: "Ask for destruction" }).click();
    const alert = dlg.getByRole("alert");
    await alert.waitFor();
    // alice's a.txt (the custodian test above) and the server's own service keys
    assert.match((await alert.textContent()) ?? "", /would make unreadable for good 1 file\(s\) under kek:default:v1/);
    await shot(carol, "web-custodian-destroy-refused-desktop");
    await dlg.getByLabel("I accept that these files are lost (audited)").check();
    await dlg.getByRole("button", { name: "Ask for destruction" }).click();
    const created = await carol.getByText(/Request \S+ created/).textContent();
    const id = /Request (\S+) created/.exec(created ?? "")?.[1] ?? "";
    assert.ok(id, created ?? "");
    await carol.context().close();

    const dave = await as("dave");
    await dave.getByRole("link", { name: "Requests" }).click();
    await dave.locator(`tr[data-key="${id}"]`).getByRole("button", { name: "Approve" }).click();
    const d = dave.getByRole("dialog");
    await d.getByLabel("Justification (audited)").fill("checked by dave");
    await d.getByRole("button", { name: "Approve" }).click();
    await d.getByRole("alert").waitFor();
    assert.match((await d.getByRole("alert").textContent()) ?? "", /1 file\(s\) under kek:default:v1/);
    assert.deepEqual(await unlabelled(dave), []);
    await d.getByLabel("I accept that these files are lost (audited)").check();
    await d.getByRole("button", { name: "Approve" }).click();
    await dave.getByText(new RegExp(`Request ${id}: pending`)).waitFor();
    await dave.context().close();
    // one rejection ends it: default stays
    const erin = await ApiClient.forData(server.httpPort, data);
    assert.equal((await erin.login("erin", "erin-password")).status, 200);
    const rej = await erin.req("POST", `/api/v1/keys/requests/${id}/reject`, { json: { reason: "no" } });
    assert.equal(rej.json<{ status: string }>().status, "rejected");
  });

  test("auditor: filters the audit log, sees charts and SIEM delivery", async () => {
    // failed logins to find: two for mallory (unknown), one for alice
    const api = await ApiClient.forData(server.httpPort, data);
    for (const u of ["mallory", "mallory", "alice"]) assert.equal((await api.login(u, "wrong")).status, 401);
    const page = await as("frank");
    await page.locator("tbody tr").first().waitFor();
    const filters = page.getByRole("form", { name: "Audit filters" });
    await filters.getByLabel("User").fill("mallory");
    await filters.getByLabel("Event").fill("login");
    await filters.getByLabel("Outcome").selectOption("failure");
    await filters.getByRole("button", { name: "Apply filters" }).click();
    await page.getByText("2 record(s), newest first").waitFor();
    const rows = page.locator("tbody tr");
    assert.equal(await rows.count(), 2);
    for (const r of await rows.all()) assert.match((await r.textContent()) ?? "", /login.*failure.*mallory/);
    await shot(page, "web-audit-desktop");
    assert.deepEqual(await unlabelled(page), []);
    assert.deepEqual(await lowContrast(page), []);
    // by path (alice's upload in the custodian test, recorded in her view) and by time (nothing a minute from now)
    await filters.getByLabel("User").fill("");
    await filters.getByLabel("Outcome").selectOption("");
    await filters.getByLabel("Event").fill("upload");
    await filters.getByLabel("Path starts with").fill("/a.t");
    await filters.getByRole("button", { name: "Apply filters" }).click();
    await page.getByText("1 record(s), newest first").waitFor();
    assert.match((await page.locator("tbody tr").first().textContent()) ?? "", /upload.*success.*alice.*\/a\.txt/);
    const later = new Date(Date.now() + 60_000);
    const local = new Date(later.getTime() - later.getTimezoneOffset() * 60_000).toISOString().slice(0, 19);
    await filters.getByLabel("From").fill(local);
    await filters.getByRole("button", { name: "Apply filters" }).click();
    await page.getByText("0 record(s), newest first").waitFor();
    await filters.getByLabel("From").fill("");
    await filters.getByLabel("Path starts with").fill("");
    await filters.getByLabel("Event").fill("");
    await filters.getByLabel("Outcome").selectOption("success");
    await filters.getByRole("button", { name: "Apply filters" }).click();
    await page.locator("tbody tr", { hasText: "frank" }).first().waitFor();
    assert.equal(await page.locator("tbody tr", { hasText: "failure" }).count(), 0);

    await page.getByRole("link", { name: "Charts" }).click();
    await page.getByRole("img", { name: /Logins/ }).waitFor();
    // every login of this test: 3 refused above, and the successful ones of the browsers
    await page.locator("#logins-t", { hasText: /failed: 3\)/ }).waitFor();
    await page
      .locator("figure", { hasText: "Failed logins by source address" })
      .locator("svg text", { hasText: "127.0.0.1" })
      .waitFor();
    await shot(page, "web-audit-charts-desktop");
    await page.setViewportSize(PHONE);
    await shot(page, "web-audit-charts-phone");
    await page.getByRole("link", { name: "SIEM delivery" }).click();
    await page.getByText(/Audit log: \d+ entries, writable/).waitFor();
    const soc = page.locator('tr[data-key="soc"]');
    await soc.waitFor();
    const cells = await soc.locator("td").allTextContents();
    assert.equal(cells[1], "yes", cells.join(" | "));
    assert.ok(Number(cells[2]) > 10, `events sent: ${cells.join(" | ")}`);
    assert.ok(siemBytes > 1000, `the receiver got ${siemBytes} bytes`);
    await shot(page, "web-audit-delivery-desktop");
    await page.context().close();
  });
});
