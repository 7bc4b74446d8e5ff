// Fail-closed audit is closed (issue 11 item 4): with ATREST_AUDIT_FAIL_CLOSED=true and an audit log that cannot be
// written (its own tmpfs, filled up while the server runs), OpenSSH's sftp client finds every operation refused with a
// clear error — downloads before any byte, uploads, renames, mkdir, rm, chmod, touch, and new logins — and nothing
// changes; a refused login is never recorded as a success. Needs root (mount -t tmpfs); skipped otherwise.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cp, mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { cli, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { makeClientKey, runSftpBatch, SSH_OPTS, sha256File } from "../helpers/sftp-clients.ts";

function canMount(): boolean {
  if (process.getuid?.() !== 0) return false;
  return true;
}

/** An OpenSSH sftp session that stays logged in while the test changes the world under it. */
function interactiveSftp(port: number, keyFile: string) {
  const child = spawn(
    "sftp",
    [
      "-b",
      "-",
      "-P",
      String(port),
      ...SSH_OPTS,
      "-i",
      keyFile,
      "-o",
      "BatchMode=yes",
      "-o",
      "IdentitiesOnly=yes",
      "alice@127.0.0.1",
    ],
    { stdio: ["pipe", "pipe", "pipe"] },
  );
  let out = "";
  let err = "";
  child.stdout.on("data", (d) => {
    out += d;
  });
  child.stderr.on("data", (d) => {
    err += d;
  });
  const exited = new Promise<number>((resolve) => child.on("close", (code) => resolve(code ?? 1)));
  return {
    send: (line: string) => child.stdin.write(`${line}\n`),
    async waitFor(re: RegExp, ms = 20_000) {
      const end = Date.now() + ms;
      while (!re.test(out + err)) {
        if (Date.now() > end) throw new Error(`sftp: no ${re} in\n${out}\n${err}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async end() {
      child.stdin.end("bye\n");
      return { code: await exited, stdout: out, stderr: err };
    },
  };
}

/** A paramiko session logged in now; `run()` then tries a mkdir and a download and prints what the server said. */
function paramiko(port: number, keyFile: string) {
  const script = `
import sys, paramiko
t = paramiko.Transport(("127.0.0.1", ${port}))
t.connect(username="alice", pkey=paramiko.Ed25519Key.from_private_key_file(${JSON.stringify(keyFile)}))
s = paramiko.SFTPClient.from_transport(t)
print("READY", flush=True)
sys.stdin.readline()
for name, op in (("mkdir", lambda: s.mkdir("py-dir")), ("open", lambda: print("GOT", len(s.open("a.bin").read(10))))):
    try:
        op()
        print(name + ": ok")
    except Exception as e:
        print(name + ": " + str(e))
t.close()
`;
  const child = spawn("/usr/bin/python3", ["-c", script], { stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (d) => {
    out += d;
  });
  child.stderr.on("data", (d) => {
    out += d;
  });
  const exited = new Promise<void>((resolve) => child.on("close", () => resolve()));
  const ready = new Promise<void>((resolve, reject) => {
    const t = setInterval(() => {
      if (out.includes("READY")) {
        clearInterval(t);
        resolve();
      }
    }, 20);
    exited.then(() => {
      clearInterval(t);
      reject(new Error(`paramiko: ${out}`));
    });
  });
  return {
    ready,
    async run() {
      child.stdin.end("\n");
      await exited;
      return out;
    },
  };
}

describe("fail-closed audit with an unwritable log (OpenSSH sftp)", {
  skip: !canMount() && "needs root to mount a tmpfs",
}, () => {
  let root: string;
  let data: string;
  let auditDir: string;
  let key: string;
  let mounted = false;
  const filler = () => join(auditDir, "filler");

  before(async () => {
    root = await tempDir("atrest-failclosed-");
    data = join(root, "data");
    key = await makeClientKey(root);
    await cli(["init", "--data", data]);
    await cli(["user", "add", "alice", "--public-key", `${key}.pub`, "--data", data]);
    // the audit directory on a small tmpfs of its own, so it can be filled without touching the rest of the machine
    auditDir = join(data, "audit");
    await rename(auditDir, `${auditDir}.orig`);
    await mkdir(auditDir, { mode: 0o700 });
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", auditDir]);
    mounted = true;
    await cp(`${auditDir}.orig`, auditDir, { recursive: true });
  });
  after(async () => {
    if (mounted) execFileSync("umount", ["-l", auditDir]);
    await removeDir(root);
  });

  /** Fills the audit file system to the last byte. */
  async function fill() {
    // dd stops at ENOSPC; what is left is below a page
    try {
      execFileSync("dd", ["if=/dev/zero", `of=${filler()}`, "bs=64k"], { stdio: "ignore" });
    } catch {}
  }

  it("refuses downloads, uploads, renames, mkdir, rm, chmod and logins, changes nothing, and records no false success", async () => {
    const a = join(root, "a.bin");
    const b = join(root, "b.bin");
    const c = join(root, "c.bin");
    for (const f of [a, b, c]) await writeFile(f, randomBytes(300_000));
    const server = await startServer(data, [], { ATREST_AUDIT_FAIL_CLOSED: "true" });
    let session: ReturnType<typeof interactiveSftp> | undefined;
    try {
      const seed = await runSftpBatch({
        port: server.port,
        user: "alice",
        keyFile: key,
        commands: [`put ${a} a.bin`, `put ${b} b.bin`, "mkdir keep"],
      });
      assert.equal(seed.code, 0, seed.stderr);
      // logged in before the log fills up: the operations of a live session must be refused too
      session = interactiveSftp(server.port, key);
      session.send("pwd");
      await session.waitFor(/Remote working directory/);
      const py = paramiko(server.port, key);
      await py.ready;
      await fill();
      const got = join(root, "got.bin");
      for (const cmd of [
        `-get a.bin ${got}`,
        `-put ${c} c.bin`,
        `-put ${c} a.bin`,
        "-rename b.bin z.bin",
        "-mkdir newdir",
        "-rmdir keep",
        "-rm b.bin",
        "-chmod 600 a.bin",
      ]) {
        session.send(cmd);
      }
      const done = await session.end();
      session = undefined;
      // every command failed with the server's message, none succeeded
      // (OpenSSH's client shows the status code; the message the server sends with it is checked with paramiko below)
      const refusals = done.stderr.match(/: Failure$/gm) ?? [];
      assert.equal(refusals.length, 8, `8 refusals expected:\n${done.stderr}`);
      await assert.rejects(stat(got), { code: "ENOENT" }, "no byte of the download reached the client");
      // the message the client gets with the status (paramiko shows it)
      const said = await py.run();
      assert.match(said, /mkdir: .*audit log unavailable: operation refused/, said);
      assert.match(said, /open: .*audit log unavailable: operation refused/, said);
      assert.doesNotMatch(said, /GOT/, "no byte was read");
      // a new login is refused
      const login = await runSftpBatch({ port: server.port, user: "alice", keyFile: key, commands: ["ls"] });
      assert.notEqual(login.code, 0, "login refused while the audit log cannot be written");
      // the server's warning reaches its stderr a moment after the client gave up
      for (let i = 0; i < 100 && !/login refused: audit log cannot be written/.test(server.output()); i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.match(server.output(), /login refused: audit log cannot be written/);

      // the log can be written again: everything is as it was, and the records of the refusals arrive
      await rm(filler());
      const back = join(root, "back.bin");
      const check = await runSftpBatch({
        port: server.port,
        user: "alice",
        keyFile: key,
        commands: ["ls -1", `get a.bin ${back}`],
      });
      assert.equal(check.code, 0, check.stderr);
      const names = check.stdout
        .split("\n")
        .map((l) => l.trim())
        .filter((l) => l && !l.startsWith("sftp>"));
      assert.deepEqual(names.sort(), ["a.bin", "b.bin", "keep"]);
      assert.equal(await sha256File(back), await sha256File(a), "a.bin is the first version");
    } finally {
      if (session) await session.end();
      await server.stop();
    }
    const verify = await cli(["audit", "verify", "--data", data]);
    assert.match(verify.stdout, /OK/);
    const records = (await cli(["audit", "tail", "-n", "200", "--data", data])).stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    const logins = records.filter((r) => r.action === "login");
    // seed, live session, refused, check: the refused one is a failure and never also a success
    const bySession = new Map<string, string[]>();
    for (const r of logins) bySession.set(r.sessionId, [...(bySession.get(r.sessionId) ?? []), r.outcome]);
    for (const [id, outcomes] of bySession) {
      assert.ok(!(outcomes.includes("success") && outcomes.includes("failure")), `${id}: ${outcomes}`);
    }
    assert.ok(logins.some((r) => r.outcome === "failure" && r.reason === "audit unavailable"));
    // login and logout name the effective user (the account the session ran as)
    const ok = logins.filter((r) => r.outcome === "success");
    assert.ok(ok.length >= 2 && ok.every((r) => r.effectiveUser === "alice"), JSON.stringify(ok));
    const logouts = records.filter((r) => r.action === "logout");
    assert.ok(logouts.length >= 2 && logouts.every((r) => r.effectiveUser === "alice"), JSON.stringify(logouts));
    const refused = records.filter((r) => r.outcome === "failure" && r.reason === "AUDIT_UNAVAILABLE");
    assert.ok(
      refused.some((r) => r.action === "download" && r.path === "/a.bin"),
      JSON.stringify(refused),
    );
    assert.ok(refused.some((r) => r.action === "rename" && r.path === "/b.bin"));
    assert.ok(refused.some((r) => r.action === "mkdir" && r.path === "/newdir"));
    // nothing that was refused is recorded as done
    const done = records.filter((r) => r.outcome === "success");
    assert.ok(!done.some((r) => r.action === "rename" || (r.action === "mkdir" && r.path === "/newdir")));
    assert.ok(!done.some((r) => r.action === "upload" && r.path === "/c.bin"));
    // the fail-closed download record: durable before the first byte
    assert.ok(done.some((r) => r.action === "download" && r.detail === "started" && r.path === "/a.bin"));
    assert.ok((await readFile(join(data, "audit", "audit.log"))).length > 0);
  });
});
