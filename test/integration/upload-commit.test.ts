// What an upload is, and whether it may happen, is decided when it commits: a refused or broken upload never
// replaces the previous version, quotas hold under concurrency, create vs overwrite is checked at commit, O_EXCL is
// exclusive, SETSTAT needs the overwrite right and is audited. Driven by OpenSSH sftp and a raw ssh2 client (for
// precise packet control: handles held open, connections cut mid-upload).
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { SFTPWrapper } from "ssh2";
import type { Permission } from "../../src/vfs/types.ts";
import { runSftpBatch } from "../helpers/sftp-clients.ts";
import { connect, type Fixture, startFixture, waitFor, within } from "../protocols/sftp/fixture.ts";

let f: Fixture;
before(async () => {
  f = await startFixture();
});
after(() => f.close());

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

function call<T = unknown>(fn: (cb: (err: Error | null | undefined, v?: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v as T))));
}

let users = 0;
/** A new user with the fixture's key, its own home, the given quotas and permissions on `/`. */
async function user(o: { quotaBytes?: number; quotaFiles?: number; perms?: Permission[] } = {}): Promise<string> {
  const name = `u${++users}`;
  await f.app.addUser({
    name,
    publicKeys: [f.publicKey],
    quotaBytes: o.quotaBytes,
    quotaFiles: o.quotaFiles,
    ...(o.perms ? { permissions: { "/": o.perms } } : {}),
  });
  return name;
}

async function local(name: string, data: Buffer): Promise<string> {
  const path = join(f.dir, name);
  await writeFile(path, data);
  return path;
}

const sftpAs = (name: string, commands: string[]) =>
  runSftpBatch({ port: f.port, user: name, keyFile: f.keyFile, commands, timeoutMs: 60_000 });

function uploads(name: string, path: string) {
  return f.audit.filter((e) => e.action === "upload" && e.effectiveUser === name && e.path === path);
}

async function openWrite(sftp: SFTPWrapper, path: string, flags: "w" | "wx" | "a"): Promise<Buffer> {
  return call<Buffer>((cb) => sftp.open(path, flags, cb));
}

async function writeAt(sftp: SFTPWrapper, handle: Buffer, offset: number, data: Buffer): Promise<void> {
  await call((cb) => sftp.write(handle, data, 0, data.length, offset, cb));
}

test("an overwrite beyond the quota fails and the old version stays; a new file over quota is not stored", async () => {
  const name = await user({ quotaBytes: 1_000_000 });
  const old = randomBytes(300_000);
  let r = await sftpAs(name, [`put ${await local("q-old.bin", old)} doc.bin`]);
  assert.equal(r.code, 0, r.stderr);
  const before = await f.quota(name);
  assert.deepEqual([before.usedBytes, before.usedFiles], [300_000, 1]);

  // 1.2 MB replacing 300 kB: over the 1 MB quota (the old version's bytes are credited, it is still too big).
  r = await sftpAs(name, [`put ${await local("q-big.bin", randomBytes(1_200_000))} doc.bin`]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /quota exceeded|Failure/);
  assert.equal(sha(await f.readFile("/doc.bin", name)), sha(old));
  assert.deepEqual(await f.quota(name), before);
  assert.deepEqual(
    uploads(name, "/doc.bin").map((e) => [e.outcome, e.reason]),
    [
      ["success", undefined],
      ["failure", "QUOTA_EXCEEDED"],
    ],
  );

  // A new name over the quota: nothing under that name, nothing counted.
  r = await sftpAs(name, [`put ${await local("q-new.bin", randomBytes(800_000))} new.bin`]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /quota exceeded|Failure/);
  await assert.rejects(f.stat("/new.bin", name), { code: "NOT_FOUND" });
  assert.deepEqual(await f.quota(name), before);
  assert.equal(uploads(name, "/new.bin").at(-1)?.outcome, "failure");

  // Within the quota the overwrite works and is charged as the difference.
  const next = randomBytes(900_000);
  r = await sftpAs(name, [`put ${await local("q-next.bin", next)} doc.bin`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(sha(await f.readFile("/doc.bin", name)), sha(next));
  assert.deepEqual([(await f.quota(name)).usedBytes, (await f.quota(name)).usedFiles], [900_000, 1]);
});

test("three parallel 700 kB uploads under a 1 MB quota: exactly one is stored", async () => {
  const name = await user({ quotaBytes: 1_000_000 });
  const files = await Promise.all([0, 1, 2].map((i) => local(`par-${i}.bin`, randomBytes(700_000))));
  const results = await Promise.all(files.map((p, i) => sftpAs(name, [`put ${p} p${i}.bin`])));
  const ok = results.filter((r) => r.code === 0).length;
  assert.equal(ok, 1, results.map((r) => r.stderr).join("\n"));
  const q = await f.quota(name);
  assert.deepEqual([q.usedBytes, q.usedFiles], [700_000, 1]);
  const listed = await f.list("/", name);
  assert.equal(listed.length, 1);
  assert.equal(listed[0].stat.size, 700_000);
  const outcomes = [0, 1, 2].map((i) => uploads(name, `/p${i}.bin`).at(-1)?.outcome).sort();
  assert.deepEqual(outcomes, ["failure", "failure", "success"]);
});

test("the file quota holds for uploads open at the same time", async () => {
  const name = await user({ quotaFiles: 2 });
  const { client, sftp } = await connect(f, name);
  try {
    const handles: Buffer[] = [];
    for (const i of [0, 1]) handles.push(await openWrite(sftp, `/f${i}`, "w"));
    // Two new files are in flight: a third open is refused before anything is written.
    await assert.rejects(openWrite(sftp, "/f2", "w"), /quota exceeded/);
    for (const h of handles) {
      await writeAt(sftp, h, 0, Buffer.from("x"));
      await call((cb) => sftp.close(h, cb));
    }
    assert.deepEqual([(await f.quota(name)).usedFiles, (await f.quota(name)).usedBytes], [2, 2]);
  } finally {
    client.end();
  }
});

test("a connection lost during an overwrite keeps the old version; audit says failure", async () => {
  const name = await user();
  const old = randomBytes(200_000);
  const r = await sftpAs(name, [`put ${await local("cut-old.bin", old)} cut.bin`]);
  assert.equal(r.code, 0, r.stderr);
  const before = await f.quota(name);
  const { client, sftp } = await connect(f, name);
  const h = await openWrite(sftp, "/cut.bin", "w");
  await writeAt(sftp, h, 0, randomBytes(64 * 1024));
  (client as unknown as { _sock: { destroy(): void } })._sock.destroy();
  await waitFor("the upload to be aborted", () => f.accounts.openWrites(name) === 0);
  assert.equal(sha(await f.readFile("/cut.bin", name)), sha(old));
  assert.deepEqual(await f.quota(name), before);
  const last = uploads(name, "/cut.bin").at(-1);
  assert.equal(last?.outcome, "failure");
  assert.equal(last?.reason, "ABORTED");
});

test("two O_CREAT|O_EXCL opens of one name: the second is refused, and the first still commits", async () => {
  const name = await user();
  const { client, sftp } = await connect(f, name);
  try {
    const h = await openWrite(sftp, "/excl.txt", "wx");
    await assert.rejects(openWrite(sftp, "/excl.txt", "wx"), /exists/);
    await writeAt(sftp, h, 0, Buffer.from("first"));
    await call((cb) => sftp.close(h, cb));
    assert.equal((await f.readFile("/excl.txt", name)).toString(), "first");
    await assert.rejects(openWrite(sftp, "/excl.txt", "wx"), /exists/);
  } finally {
    client.end();
  }
});

test("an O_EXCL create fails at commit when the name was created meanwhile (another process's upload)", async () => {
  const name = await user();
  const { client, sftp } = await connect(f, name);
  try {
    const h = await openWrite(sftp, "/race.txt", "wx");
    await writeAt(sftp, h, 0, Buffer.from("exclusive"));
    const r = await sftpAs(name, [`put ${await local("race.txt", Buffer.from("other"))} race.txt`]);
    assert.equal(r.code, 0, r.stderr);
    await assert.rejects(
      call((cb) => sftp.close(h, cb)),
      /exists/,
    );
    assert.equal((await f.readFile("/race.txt", name)).toString(), "other");
    assert.equal((await f.quota(name)).usedFiles, 1);
  } finally {
    client.end();
  }
});

test("upload-only: a name created by someone else while the upload runs is not replaced at close", async () => {
  const name = await user({ perms: ["list", "download", "upload"] });
  const { client, sftp } = await connect(f, name);
  try {
    const h = await openWrite(sftp, "/drop.csv", "w");
    await writeAt(sftp, h, 0, Buffer.from("late,version"));
    // Another session creates the name first: allowed, it is a create.
    const r = await sftpAs(name, [`put ${await local("drop.csv", Buffer.from("first,version"))} drop.csv`]);
    assert.equal(r.code, 0, r.stderr);
    // The first upload's close is now an overwrite, which this user may not do.
    await assert.rejects(
      call((cb) => sftp.close(h, cb)),
      /permission denied/i,
    );
    assert.equal((await f.readFile("/drop.csv", name)).toString(), "first,version");
    const last = uploads(name, "/drop.csv").at(-1);
    assert.deepEqual([last?.outcome, last?.reason], ["failure", "PERMISSION_DENIED"]);
    assert.deepEqual([(await f.quota(name)).usedFiles, (await f.quota(name)).usedBytes], [1, 13]);
  } finally {
    client.end();
  }
});

test("setstat and chmod need the overwrite right and are audited", async () => {
  const name = await user({ perms: ["list", "download", "upload"] });
  let r = await sftpAs(name, [`put ${await local("attr.txt", Buffer.from("attrs"))} attr.txt`]);
  assert.equal(r.code, 0, r.stderr);
  const before = await f.stat("/attr.txt", name);
  r = await sftpAs(name, ["chmod 600 attr.txt"]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /permission denied/i);
  const { client, sftp } = await connect(f, name);
  try {
    await assert.rejects(
      call((cb) => sftp.utimes("/attr.txt", 1_000_000, 1_000_000, cb)),
      /permission denied/i,
    );
  } finally {
    client.end();
  }
  assert.deepEqual(await f.stat("/attr.txt", name), before);
  const changes = f.audit.filter((e) => e.action === "attrs.change" && e.effectiveUser === name);
  assert.deepEqual(
    changes.map((e) => [e.outcome, e.reason]),
    [
      ["failure", "PERMISSION_DENIED"],
      ["failure", "PERMISSION_DENIED"],
    ],
  );

  // With the right: both change the file and are recorded with what changed.
  const owner = await user();
  r = await sftpAs(owner, [`put ${await local("attr2.txt", Buffer.from("attrs"))} attr.txt`, "chmod 600 attr.txt"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await f.stat("/attr.txt", owner)).mode, 0o600);
  const ok = f.audit.filter((e) => e.action === "attrs.change" && e.effectiveUser === owner);
  assert.deepEqual(
    ok.map((e) => [e.outcome, e.detail]),
    [["success", "mode 0600"]],
  );
});

test("a resumed upload whose file was replaced meanwhile is refused, not spliced onto the new version", async () => {
  const name = await user();
  const r = await sftpAs(name, [`put ${await local("res-a.bin", randomBytes(50_000))} res.bin`]);
  assert.equal(r.code, 0, r.stderr);
  const { client, sftp } = await connect(f, name);
  try {
    const h = await openWrite(sftp, "/res.bin", "a");
    await writeAt(sftp, h, 50_000, randomBytes(1000));
    const newer = randomBytes(10_000);
    const r2 = await sftpAs(name, [`put ${await local("res-b.bin", newer)} res.bin`]);
    assert.equal(r2.code, 0, r2.stderr);
    await assert.rejects(
      within(
        call((cb) => sftp.close(h, cb)),
        20_000,
        "close",
      ),
      /changed while the upload appended/,
    );
    assert.equal(sha(await f.readFile("/res.bin", name)), sha(newer));
  } finally {
    client.end();
  }
});

test("user rm ends the user's live connections; a new user of the same name does not get the old files", async () => {
  const name = await user();
  const r = await sftpAs(name, [`put ${await local("rm-old.bin", Buffer.from("old user's file"))} mine.txt`]);
  assert.equal(r.code, 0, r.stderr);
  const a = await connect(f, name);
  const b = await connect(f, name);
  const h = await openWrite(a.sftp, "/in-flight.bin", "w");
  await writeAt(a.sftp, h, 0, randomBytes(10_000));
  await f.app.removeUser(name);
  // At once, before the server's sweep: the session refuses everything, by user id.
  await assert.rejects(
    call((cb) => b.sftp.readdir("/", cb)),
    /no longer exists|permission denied/i,
  );
  // The server's periodic sweep (every 2 s in `atrest server`) ends both connections.
  assert.equal(await f.login.sweep(), 2);
  await within(Promise.all([a.closed, b.closed]), 10_000, "both connections to close");
  await waitFor("the upload to be aborted", () => f.accounts.openWrites(name) === 0);
  assert.equal(f.login.sessions().filter((s) => s.user === name).length, 0);
  const last = uploads(name, "/in-flight.bin").at(-1);
  assert.equal(last?.outcome, "failure");

  // The old home still holds the removed user's file: a new user of that name is refused, not given it.
  await assert.rejects(f.app.addUser({ name, publicKeys: [f.publicKey] }), /holds files of a removed user/);
  await f.app.addUser({ name, publicKeys: [f.publicKey], home: `/${name}-new` });
  const r2 = await sftpAs(name, ["ls -1a /"]);
  assert.equal(r2.code, 0, r2.stderr);
  assert.doesNotMatch(r2.stdout, /mine\.txt/);
  assert.deepEqual(await f.list("/", name), []);
});
