// Share links against a real server: made by a logged-in user, used without an account by curl and by Node's fetch
// (a child process trusting the server's certificate), with a password, download/upload limits counted atomically
// (10 concurrent downloads of a 3-download link: exactly 3 succeed), a source allow list, revocation; the share follows
// a rename and dies with its file and its owner; every use is audited as job user share:<id>, effective user the
// owner; the link secret never reaches the store or the audit log. Expiry is checked with a clock in the service.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { ShareService } from "../../../src/service/shares.ts";
import { RowSealer } from "../../../src/store/sealing.ts";
import { openSqliteStore } from "../../../src/store/sqlite/index.ts";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../../helpers/atrest.ts";
import { ApiClient, assertProblem } from "../../helpers/https.ts";
import { storeBytes } from "../../helpers/store.ts";

const execFileP = promisify(execFile);

interface Made {
  id: string;
  link: string;
  url: string;
  kind: string;
}

describe("HTTPS API: share links", () => {
  let dir: string;
  let data: string;
  let server: RunningServer;
  let alice: ApiClient;
  let ca: string;
  const base = () => `https://localhost:${server.httpPort}`;

  before(async () => {
    dir = await tempDir("atrest-shares-");
    data = join(dir, "data");
    await cli(["init", "--data", data]);
    await cli(["user", "add", "alice", "--password-stdin", "--data", data], "alice-pw\n");
    await cli(["user", "add", "bob", "--password-stdin", "--data", data], "bob-pw\n");
    server = await startServer(data);
    ca = join(data, "tls", "server.crt");
    alice = await ApiClient.forData(server.httpPort, data);
    assert.equal((await alice.login("alice", "alice-pw")).status, 200);
    for (const p of ["/docs", "/docs/sub", "/drop"]) {
      assert.equal((await alice.req("POST", "/api/v1/fs/mkdir", { json: { path: p } })).status, 201);
    }
    await alice.req("PUT", "/api/v1/files/report.txt", { body: "quarterly figures" });
    await alice.req("PUT", "/api/v1/files/docs/a.txt", { body: "alpha" });
    await alice.req("PUT", "/api/v1/files/docs/sub/b.txt", { body: "bravo" });
  });
  after(async () => {
    await server?.stop();
    await removeDir(dir);
  });

  const share = async (body: Record<string, unknown>, as = alice): Promise<Made> => {
    const r = await as.req("POST", "/api/v1/shares", { json: body });
    assert.equal(r.status, 201, r.body.toString());
    const m = r.json<Made>();
    assert.match(m.link, /^[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{32}$/);
    return m;
  };
  const curl = async (args: string[]) => {
    const { stdout } = await execFileP("curl", ["-sS", "--cacert", ca, "-w", "\n%{http_code}", ...args]);
    const i = stdout.lastIndexOf("\n");
    return { body: stdout.slice(0, i), status: Number(stdout.slice(i + 1)) };
  };
  const audit = async () => (await cli(["audit", "tail", "-n", "2000", "--data", data])).stdout;

  /** Node's own fetch in a child process that trusts the server's certificate (NODE_EXTRA_CA_CERTS). */
  const fetchAll = async (url: string, n: number): Promise<{ status: number; body: string }[]> => {
    const script = `const r = await Promise.all(Array.from({ length: ${n} }, () =>
      fetch(${JSON.stringify(url)}).then(async (x) => ({ status: x.status, body: await x.text() }))));
      process.stdout.write(JSON.stringify(r));`;
    const { stdout } = await execFileP(process.execPath, ["--input-type=module", "-e", script], {
      env: { ...process.env, NODE_EXTRA_CA_CERTS: ca },
    });
    return JSON.parse(stdout) as { status: number; body: string }[];
  };

  test("a file link with a limit of 3 downloads serves exactly 3 of 10 concurrent fetches, audited as share:<id>", async () => {
    const s = await share({ path: "/report.txt", maxDownloads: 3 });
    assert.equal(s.url, `/s/${s.link}`);
    const app = await alice.fresh().req("GET", s.url);
    assert.ok(app.status === 200 || app.status === 404, "the web app's page for the link (404 if not built)");
    const info = await curl([`${base()}/api/v1/s/${s.link}`]);
    assert.equal(info.status, 200);
    assert.deepEqual(
      { ...JSON.parse(info.body), id: undefined },
      {
        id: undefined,
        kind: "file",
        name: "report.txt",
        size: 17,
        owner: "alice",
        expiresAt: null,
        allowDownload: true,
        allowUpload: false,
        downloadsLeft: 3,
        uploadsLeft: null,
      },
    );
    const results = await fetchAll(`${base()}/api/v1/s/${s.link}/download`, 10);
    const ok = results.filter((r) => r.status === 200);
    assert.equal(ok.length, 3, JSON.stringify(results.map((r) => r.status)));
    assert.ok(ok.every((r) => r.body === "quarterly figures"));
    assert.equal(results.filter((r) => r.status === 410).length, 7);
    const list = await alice.req("GET", "/api/v1/shares");
    const mine = list.json<{ shares: { id: string; downloads: number; path: string }[] }>().shares;
    const row = mine.find((x) => x.id === s.id);
    assert.equal(row?.downloads, 3);
    assert.equal(row?.path, "/report.txt");
    assert.ok(!list.body.toString().includes(s.link.split(".")[1]), "the list never shows the link secret");
    const log = await audit();
    const downloads = log
      .split("\n")
      .filter((l) => l.includes('"action":"download"') && l.includes(`"user":"share:${s.id}"`));
    assert.equal(downloads.length, 3, "three downloads, each audited");
    assert.ok(downloads.every((l) => l.includes('"effectiveUser":"alice"')));
    assert.ok(log.includes('"reason":"download limit reached"'), "refused downloads audited");
    assert.match(log, /"action":"share.create"/);
    const secret = s.link.split(".")[1];
    assert.ok(!log.includes(secret), "the link secret is not in the audit log");
    assert.ok(!(await storeBytes(data)).includes(Buffer.from(secret)), "nor in the store");
  });

  test("a folder link with a password: listing, download, zip and the page; wrong links and paths refused", async () => {
    const s = await share({ path: "/docs", password: "open sesame" });
    const api = `${base()}/api/v1/s/${s.link}`;
    const noPw = await curl([`${api}/list`]);
    assert.equal(noPw.status, 401);
    assert.equal(JSON.parse(noPw.body).code, "SHARE_PASSWORD_REQUIRED");
    assert.equal((await curl(["-H", "X-Share-Password: wrong", `${api}/list`])).status, 401);
    const pw = ["-H", "X-Share-Password: open sesame"];
    const list = await curl([...pw, `${api}/list`]);
    assert.equal(list.status, 200, list.body);
    assert.deepEqual(
      JSON.parse(list.body).entries.map((e: { path: string; kind: string }) => [e.path, e.kind]),
      [
        ["/a.txt", "file"],
        ["/sub", "dir"],
      ],
    );
    const b = await curl([...pw, `${api}/download?path=/sub/b.txt`]);
    assert.deepEqual(b, { body: "bravo", status: 200 });
    const range = await curl([...pw, "-r", "1-3", `${api}/download?path=/a.txt`]);
    assert.deepEqual(range, { body: "lph", status: 206 });
    const zipFile = join(dir, "docs.zip");
    await execFileP("curl", ["-sS", "--fail", "--cacert", ca, ...pw, "-o", zipFile, `${api}/zip`]);
    const { stdout: names } = await execFileP("unzip", ["-Z1", zipFile]);
    assert.deepEqual(names.trim().split("\n").sort(), ["a.txt", "sub/", "sub/b.txt"]);
    // nothing outside the shared folder: .. is refused, never resolved
    assert.equal((await curl([...pw, `${api}/download?path=/../report.txt`])).status, 400);
    assert.equal((await curl([...pw, `${api}/download?path=%2F..%2Freport.txt`])).status, 400);
    // a wrong secret for a real id answers like an unknown link
    const [id] = s.link.split(".");
    assert.equal((await curl([...pw, `${base()}/api/v1/s/${id}.${"x".repeat(32)}/list`])).status, 404);
    assert.equal((await curl([`${base()}/api/v1/s/nonsense`])).status, 404);
    // the page: a password form first; once unlocked (cookie) the listing, no password header needed
    const page = await alice.fresh().req("GET", `/api/v1/s/${s.link}/page`);
    assert.equal(page.status, 401);
    assert.match(page.body.toString(), /type="password"/);
    assert.match(String(page.headers["content-security-policy"]), /default-src 'none'/);
    const visitor = alice.fresh();
    const unlock = await visitor.req("POST", `/api/v1/s/${s.link}/unlock`, { json: { password: "open sesame" } });
    assert.equal(unlock.status, 200, unlock.body.toString());
    const set = unlock.headers["set-cookie"];
    const cookie = (Array.isArray(set) ? set[0] : String(set)).split(";")[0];
    assert.match(String(set), /HttpOnly/i);
    const unlocked = await visitor.req("GET", `/api/v1/s/${s.link}/page?path=/sub`, { headers: { cookie } });
    assert.equal(unlocked.status, 200);
    assert.match(unlocked.body.toString(), /b\.txt/);
    assert.equal(
      (await visitor.req("GET", `/api/v1/s/${s.link}/download?path=/a.txt`, { headers: { cookie } })).body.toString(),
      "alpha",
    );
    const log = await audit();
    assert.ok(
      log.includes(
        `"user":"share:${id}","effectiveUser":"alice","target":"${id}","protocol":"http","sourceIp":"127.0.0.1","reason":"bad-password"`,
      ),
    );
  });

  test("an upload-only folder link takes 2 new files, no more, never replaces, and does not list", async () => {
    const s = await share({ path: "/drop", allowUpload: true, allowDownload: false, maxUploads: 2 });
    const api = `${base()}/api/v1/s/${s.link}`;
    const f = join(dir, "upload.bin");
    await writeFile(f, Buffer.alloc(70_000, 7));
    assert.equal((await curl(["-T", f, `${api}/files/one.bin`])).status, 201);
    assert.equal((await curl(["-T", f, `${api}/files/one.bin`])).status, 409, "never replaces");
    assert.equal((await curl(["-T", f, `${api}/files/two.bin`])).status, 201);
    assert.equal((await curl(["-T", f, `${api}/files/three.bin`])).status, 410, "limit of 2 reached");
    assert.equal((await curl([`${api}/list`])).status, 403);
    assert.equal((await curl([`${api}/files/..%2Fx`, "-T", f])).status, 400);
    const listed = await alice.req("GET", "/api/v1/fs/list?path=/drop");
    assert.deepEqual(
      listed.json<{ entries: { name: string; size: number }[] }>().entries.map((e) => [e.name, e.size]),
      [
        ["one.bin", 70_000],
        ["two.bin", 70_000],
      ],
    );
    const log = await audit();
    const uploads = log
      .split("\n")
      .filter(
        (l) =>
          l.includes('"action":"upload"') && l.includes(`"user":"share:${s.id}"`) && l.includes('"outcome":"success"'),
      );
    assert.equal(uploads.length, 2, "two uploads audited as the share");
    assert.ok(uploads.every((l) => l.includes('"effectiveUser":"alice"')));
    // a file cannot take uploads
    assertProblem(await alice.req("POST", "/api/v1/shares", { json: { path: "/report.txt", allowUpload: true } }), 400);
  });

  test("source allow list, revoke, rename followed, delete and owner removal end the share", async () => {
    const far = await share({ path: "/docs/a.txt", allowFrom: ["10.0.0.0/8"] });
    assert.equal((await curl([`${base()}/api/v1/s/${far.link}/download`])).status, 403);
    const near = await share({ path: "/docs/a.txt", allowFrom: ["127.0.0.2"] });
    assert.equal((await alice.fresh("127.0.0.2").req("GET", `/api/v1/s/${near.link}/download`)).status, 200);
    assert.equal((await alice.fresh("127.0.0.3").req("GET", `/api/v1/s/${near.link}/download`)).status, 403);
    assert.equal((await alice.req("DELETE", `/api/v1/shares/${near.id}`)).status, 204);
    assert.equal((await curl([`${base()}/api/v1/s/${near.link}`])).status, 404);
    // bob cannot revoke alice's share
    const bob = alice.fresh();
    assert.equal((await bob.login("bob", "bob-pw")).status, 200);
    assertProblem(await bob.req("DELETE", `/api/v1/shares/${far.id}`), 404);
    // rename: the share follows the file; delete: it dies with it
    const s = await share({ path: "/docs/sub/b.txt" });
    await alice.req("POST", "/api/v1/fs/rename", { json: { from: "/docs/sub/b.txt", to: "/b-renamed.txt" } });
    assert.deepEqual(await curl([`${base()}/api/v1/s/${s.link}/download`]), { body: "bravo", status: 200 });
    assert.equal(JSON.parse((await curl([`${base()}/api/v1/s/${s.link}`])).body).name, "b-renamed.txt");
    await alice.req("DELETE", "/api/v1/files/b-renamed.txt");
    assert.equal((await curl([`${base()}/api/v1/s/${s.link}/download`])).status, 410);
    // a new file at the old name is not what was shared
    await alice.req("PUT", "/api/v1/files/b-renamed.txt", { body: "someone else" });
    assert.equal((await curl([`${base()}/api/v1/s/${s.link}/download`])).status, 404, "forgotten once gone");
    // the owner removed: every share of theirs goes
    const bobs = await share({ path: "/" }, bob);
    assert.equal((await curl([`${base()}/api/v1/s/${bobs.link}/list`])).status, 200);
    await cli(["user", "rm", "bob", "--data", data]);
    assert.equal((await curl([`${base()}/api/v1/s/${bobs.link}/list`])).status, 404);
  });
});

test("ShareService: an expired link is refused as gone", async () => {
  const dir = await tempDir("atrest-shares-unit-");
  const store = openSqliteStore(join(dir, "meta.db"));
  await store.unlock(new RowSealer(Buffer.alloc(32, 1)));
  const user = {
    id: "u1",
    name: "alice",
    passwordHash: null,
    publicKeys: [],
    home: "/alice",
    permissions: {},
    groups: [],
    role: "user" as const,
    kek: null,
    quotaBytes: 0,
    quotaFiles: 0,
    usedBytes: 0,
    usedFiles: 0,
    createdAt: new Date().toISOString(),
  };
  await store.transaction((tx) => tx.insertUser(user));
  let now = 1_800_000_000_000;
  const records: { reason?: string }[] = [];
  const svc = new ShareService({
    store,
    accounts: {
      openSession: async () =>
        ({ stat: async () => ({ kind: "file" }), nodeId: async () => "n1", close: async () => {} }) as never,
    },
    audit: { record: (e) => records.push(e) },
    now: () => now,
  });
  const { link } = await svc.create(
    { user: "alice", role: "user", protocol: "http" },
    { path: "/f", expiresInDays: 1 },
  );
  assert.equal((await svc.open(link, { sourceIp: "127.0.0.1" })).ok, true);
  now += 86_400_000;
  assert.deepEqual(await svc.open(link, { sourceIp: "127.0.0.1" }), { ok: false, why: "gone" });
  assert.equal(records.at(-1)?.reason, "gone");
  await assert.rejects(svc.create({ user: "alice", role: "user", protocol: "http" }, { path: "/f", expiresInDays: 0 }));
  await assert.rejects(
    svc.create({ user: "alice", role: "user", protocol: "http" }, { path: "/f", allowFrom: ["not-an-ip"] }),
  );
  await store.close();
  await removeDir(dir);
});
