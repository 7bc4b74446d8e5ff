// Browser sessions kept in the metadata store (sealed): two `atrest server` nodes on one PostgreSQL schema and a
// remote key manager. A session made on node a is accepted by node b (CSRF included); a logout through b ends it on a
// within the recheck period; "log out everywhere" through b ends a's sessions of that user; a restarted node still
// accepts a session made before; the stored row holds neither the cookie nor the CSRF token in the clear; the admin's
// session list on either node shows both nodes' browser sessions, and an SFTP connection to node a with its node's
// name (node a publishes its connections in the store), in the API and on the web page (chromium) of node b, and
// ended through b ("End sessions": node a ends it at its next check).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { RECHECK_MS } from "../../src/protocols/http/sessions.ts";
import { CHECK_MS } from "../../src/service/live-sessions.ts";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { launchChromium, shot, unlabelled } from "../helpers/browser.ts";
import { ApiClient } from "../helpers/https.ts";
import { type RunningKms, setupKms, startKms, unsealKms } from "../helpers/kms.ts";
import { dropTestSchemas, pgSkip, pgUrl, TEST_PG, testSchema } from "../helpers/pg.ts";
import { makeClientKey, SSH_OPTS } from "../helpers/sftp-clients.ts";

const skip = await pgSkip();

describe("browser sessions shared by two nodes on PostgreSQL", skip, () => {
  let root: string;
  let kms: RunningKms;
  let schema: string;
  let samKey: string;
  const nodes: { data: string; server: RunningServer; flags: string[] }[] = [];

  before(async () => {
    root = await tempDir("atrest-pg-sessions-");
    const setup = await setupKms(root, { fs: "server", k1: "custodian", k2: "custodian" });
    kms = await startKms(setup.dir);
    await unsealKms(kms.url, setup.certs.k1 as string, [setup.shares[0] as string]);
    await unsealKms(kms.url, setup.certs.k2 as string, [setup.shares[1] as string]);
    schema = testSchema();
    const meta = pgUrl(schema);
    const kmsFlags = ["--kms", kms.url, "--kms-cert", setup.certs.fs as string];
    for (const id of ["a", "b"]) {
      const data = join(root, `node-${id}`);
      await cli(["init", "--data", data, ...kmsFlags]);
      const flags = [...kmsFlags, "--meta", meta, "--node-id", id];
      nodes.push({ data, server: await startServer(data, flags), flags });
    }
    await cli(["user", "add", "alice", "--password-stdin", "--data", nodes[0]?.data as string], "alice-password\n");
    await cli(
      ["user", "add", "root", "--role", "admin", "--password-stdin", "--data", nodes[0]?.data as string],
      "root-password\n",
    );
    samKey = await makeClientKey(root);
    await cli(["user", "add", "sam", "--public-key", `${samKey}.pub`, "--data", nodes[0]?.data as string]);
  });
  after(async () => {
    for (const n of nodes) await n.server.stop();
    await kms?.stop();
    await dropTestSchemas();
    if (root) await removeDir(root);
  });

  const client = (i: number) => ApiClient.forData(nodes[i]?.server.httpPort as number, nodes[i]?.data as string);
  /** A client of node `i` carrying `from`'s cookie and CSRF token (a browser moved by a load balancer). */
  async function carry(from: ApiClient, i: number): Promise<ApiClient> {
    const c = await client(i);
    c.cookie = from.cookie;
    c.csrf = from.csrf;
    return c;
  }
  async function eventually(what: string, f: () => Promise<boolean>): Promise<void> {
    const until = Date.now() + RECHECK_MS + 5000;
    while (Date.now() < until) {
      if (await f()) return;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.fail(what);
  }

  it("a session made on a is accepted by b, CSRF included; a logout through b ends it on a", async () => {
    const a = await client(0);
    assert.equal((await a.login("alice", "alice-password")).status, 200);
    const b = await carry(a, 1);
    const who = await b.req("GET", "/api/v1/auth/session");
    assert.equal(who.status, 200, who.body.toString());
    assert.equal(who.json<{ user: string }>().user, "alice");
    assert.equal((await b.req("PUT", "/api/v1/files/from-b.txt", { body: "hello" })).status, 201);
    const noCsrf = await carry(a, 1);
    noCsrf.csrf = "wrong";
    assert.equal((await noCsrf.req("PUT", "/api/v1/files/x.txt", { body: "x" })).status, 403);

    // the row in the store: neither the cookie nor the CSRF token in the clear
    const db = new pg.Client({ connectionString: TEST_PG });
    await db.connect();
    try {
      const rows = await db.query(`SELECT key, value FROM "${schema}".settings WHERE key LIKE 'http.session%'`);
      assert.ok(rows.rows.length >= 1);
      const cookie = String(a.cookie).split("=").slice(1).join("=");
      for (const r of rows.rows as { key: string; value: Buffer }[]) {
        const text = `${r.key} ${Buffer.from(r.value).toString("latin1")}`;
        assert.ok(!text.includes(cookie), "cookie value stored");
        assert.ok(!text.includes(String(a.csrf)), "CSRF token stored in the clear");
        assert.ok(!text.includes("alice"), "user name stored in the clear");
      }
    } finally {
      await db.end();
    }

    assert.equal((await b.req("POST", "/api/v1/auth/logout", { json: {} })).status, 204);
    await eventually("node a still accepts the session logged out through b", async () => {
      return (await a.req("GET", "/api/v1/auth/session")).status === 401;
    });
  });

  it("log out everywhere through b ends alice's sessions on a", async () => {
    const a1 = await client(0);
    const a2 = await client(0);
    assert.equal((await a1.login("alice", "alice-password")).status, 200);
    assert.equal((await a2.login("alice", "alice-password")).status, 200);
    const b = await carry(a1, 1);
    assert.equal((await b.req("POST", "/api/v1/auth/logout-all", { json: {} })).status, 200);
    // the cut-off row names the user only by a keyed tag (user names are sealed in the store)
    const db = new pg.Client({ connectionString: TEST_PG });
    await db.connect();
    try {
      const keys = await db.query(`SELECT key FROM "${schema}".settings WHERE key LIKE 'http.sessions.since.%'`);
      assert.equal(keys.rows.length, 1);
      assert.ok(!JSON.stringify(keys.rows).includes("alice"));
    } finally {
      await db.end();
    }
    await eventually("node a still accepts a session ended everywhere through b", async () => {
      return (
        (await a1.req("GET", "/api/v1/auth/session")).status === 401 &&
        (await a2.req("GET", "/api/v1/auth/session")).status === 401
      );
    });
    const again = await client(0);
    assert.equal((await again.login("alice", "alice-password")).status, 200, "a new login works");
    assert.equal((await again.req("GET", "/api/v1/auth/session")).status, 200);
  });

  it("the admin's session list on either node shows the browser sessions of both", async () => {
    const a = await client(0);
    assert.equal((await a.login("alice", "alice-password")).status, 200);
    const admin = await client(1);
    assert.equal((await admin.login("root", "root-password")).status, 200);
    type Listed = { sessionId: string; user: string; protocol: string };
    const listed = async (c: ApiClient) => {
      const r = await c.req("GET", "/api/v1/admin/sessions");
      assert.equal(r.status, 200, r.body.toString());
      assert.ok(!r.body.toString().includes(String(a.csrf)), "a CSRF token in the list");
      return r.json<{ sessions: Listed[] }>().sessions.filter((s) => s.protocol === "http");
    };
    const onB = await listed(admin);
    assert.ok(
      onB.some((s) => s.user === "alice"),
      `node b lists alice's session made on a: ${JSON.stringify(onB)}`,
    );
    assert.ok(onB.some((s) => s.user === "root"));
    const onA = await listed(await carry(admin, 0));
    assert.deepEqual(onA.map((s) => s.sessionId).sort(), onB.map((s) => s.sessionId).sort());
    // ended through a: gone from b's list at once (the list reads the store)
    const alice = (l: Listed[]) => l.filter((s) => s.user === "alice").length;
    assert.equal((await a.req("POST", "/api/v1/auth/logout", { json: {} })).status, 204);
    assert.equal(alice(await listed(admin)), alice(onB) - 1);
  });

  it("an SFTP connection to a is listed on b with its node (API, Sessions page) and ended through b", async () => {
    const a = nodes[0] as { data: string; server: RunningServer };
    const sftp = spawn(
      "sftp",
      [
        ...SSH_OPTS,
        "-P",
        String(a.server.port),
        "-i",
        samKey,
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
      ].concat("sam@127.0.0.1"),
      { stdio: ["pipe", "pipe", "pipe"] },
    );
    const exited = new Promise<void>((resolve) => sftp.once("exit", () => resolve()));
    let out = "";
    sftp.stdout.on("data", (d) => {
      out += d;
    });
    sftp.stderr.on("data", (d) => {
      out += d;
    });
    const admin = await client(1);
    assert.equal((await admin.login("root", "root-password")).status, 200);
    type Listed = { user: string; protocol: string; node?: string };
    const sams = async (c: ApiClient) =>
      (await c.req("GET", "/api/v1/admin/sessions"))
        .json<{ sessions: Listed[] }>()
        .sessions.filter((s) => s.user === "sam");
    const chrome = await launchChromium(nodes[1]?.data as string);
    try {
      await eventually("node b lists sam's SFTP connection to a", async () => {
        assert.equal(sftp.exitCode, null, "sftp ended early");
        return (await sams(admin)).some((s) => s.protocol === "sftp" && s.node === "a");
      });
      // node a lists it too, as it is now
      assert.deepEqual(
        (await sams(await carry(admin, 0))).map((s) => [s.protocol, s.node]),
        [["sftp", "a"]],
      );
      const page = await (await chrome.context()).newPage();
      await page.goto(`https://localhost:${nodes[1]?.server.httpPort}/`);
      await page.getByLabel("User name").fill("root");
      await page.getByLabel("Password").fill("root-password");
      await page.getByRole("button", { name: "Log in" }).click();
      await page.getByRole("link", { name: "Sessions" }).click();
      const row = page.locator("tr", { hasText: "sam" });
      await row.waitFor();
      assert.deepEqual((await row.locator("td").allTextContents()).slice(0, 3), ["sam", "sftp", "a"]);
      assert.ok(await page.getByRole("columnheader", { name: "Node" }).isVisible());
      assert.deepEqual(await unlabelled(page), []);
      await shot(page, "web-admin-sessions-nodes-desktop");
      // "End sessions" through b ends the connection on a (at a's next check), and b's list drops it
      const end = await admin.req("DELETE", "/api/v1/admin/users/sam/sessions");
      assert.equal(end.status, 200, end.body.toString());
      const until = Date.now() + CHECK_MS * 3 + 10_000;
      while (!/Received disconnect/.test(out) && sftp.exitCode === null) {
        assert.ok(Date.now() < until, `node a kept sam's connection ended through b: ${out}`);
        await new Promise((r) => setTimeout(r, 200));
      }
      while ((await sams(admin)).length > 0) {
        assert.ok(Date.now() < until, "the ended connection is still listed on b");
        await new Promise((r) => setTimeout(r, 200));
      }
    } finally {
      await chrome.close();
      sftp.stdin.end();
      await exited;
    }
  });

  it("a restarted node accepts a session made before its restart", async () => {
    const b = await client(1);
    assert.equal((await b.login("alice", "alice-password")).status, 200);
    const n = nodes[0] as { data: string; server: RunningServer; flags: string[] };
    await n.server.stop();
    n.server = await startServer(n.data, n.flags);
    const a = await carry(b, 0);
    const who = await a.req("GET", "/api/v1/auth/session");
    assert.equal(who.status, 200, who.body.toString());
    assert.equal((await a.req("PUT", "/api/v1/files/after-restart.txt", { body: "x" })).status, 201);
  });
});
