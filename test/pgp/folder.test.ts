// PGP folders through the vfs session (the path every protocol takes): encryption as the data streams in, inbound
// checks, refusals that store nothing. gpg 2.2 decrypts and verifies what is stored.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { App, initData } from "../../src/app.ts";
import type { AuditRecord } from "../../src/audit/types.ts";
import type { VfsSession } from "../../src/vfs/types.ts";
import { removeDir, tempDir } from "../helpers/atrest.ts";
import { Gpg } from "../helpers/gpg.ts";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

async function put(s: VfsSession, path: string, data: Buffer, chunk = 65_536): Promise<void> {
  const h = await s.openWrite(path, { truncate: true });
  try {
    for (let i = 0; i < data.length; i += chunk) await h.write(i, data.subarray(i, i + chunk));
  } catch (err) {
    await h.abort(false);
    throw err;
  }
  await h.close();
}

async function get(s: VfsSession, path: string): Promise<Buffer> {
  const h = await s.openRead(path);
  const parts: Buffer[] = [];
  for (let at = 0; at < h.size; ) {
    const b = await h.read(at, 1 << 20);
    parts.push(b);
    at += b.length;
  }
  await h.close();
  return Buffer.concat(parts);
}

describe("PGP folders through the vfs", () => {
  let dir: string;
  let app: App;
  let gpg: Gpg;
  let alice: VfsSession;
  let finance: string;
  const records: AuditRecord[] = [];

  before(async () => {
    dir = await tempDir();
    await initData(join(dir, "data"));
    app = await App.open(join(dir, "data"));
    await app.addUser({ name: "alice", password: "x".repeat(12), home: "/" });
    await app.addUser({ name: "fin", password: "x".repeat(12), groups: ["finance"] });
    gpg = await Gpg.create();
    finance = await gpg.generate("Finance <fin@example.com>", "rsa3072");
    await app.pgp.import("fin", await gpg.exportPublic(finance));
    await app.pgp.createOrgKey({ name: "Example Corp", email: "pgp@example.com" });
    await gpg.importKey((await app.pgp.org.requirePublicKey()).armor());
    await app.putFolder("/outbox", { pgp: { recipients: ["@finance"], sign: true } });
    await app.putFolder("/inbox", { pgp: { inbound: "encrypted" } });
    await app.putFolder("/signed-in", { pgp: { inbound: "signed" } });
    alice = await app.openSession("alice", { protocol: "cli", sessionId: "t" });
    app.audit.onRecord((e) => records.push(e));
  });
  after(async () => {
    await alice.close();
    await app.close();
    await gpg.stop();
    await removeDir(dir);
  });

  it("stores the OpenPGP message under the client's name; gpg decrypts it and reports the org signature", async () => {
    const data = randomBytes(1_500_000);
    await put(alice, "/outbox/report.csv", data);
    const stored = await get(alice, "/outbox/report.csv");
    assert.equal((await alice.stat("/outbox/report.csv")).size, stored.length);
    assert.notEqual(sha(stored), sha(data));
    const file = join(dir, "report.pgp");
    await writeFile(file, stored);
    const r = await gpg.decrypt(file, `${file}.out`);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /GOODSIG/);
    assert.equal(sha(await readFile(`${file}.out`)), sha(data));
  });

  it("unsigned folder (direct SEIPD v1 writer): odd write sizes across 1 MiB parts decrypt in gpg", async () => {
    await app.putFolder("/drop", { pgp: { recipients: ["fin"] } });
    const data = randomBytes(2_500_000);
    await put(alice, "/drop/data.bin", data, 100_003);
    const file = join(dir, "drop.pgp");
    await writeFile(file, await get(alice, "/drop/data.bin"));
    const r = await gpg.decrypt(file, `${file}.out`);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /GOODSIG/);
    assert.equal(sha(await readFile(`${file}.out`)), sha(data));
  });

  it("resume (append) is refused; a move into the folder from outside is refused", async () => {
    await assert.rejects(alice.openWrite("/outbox/report.csv", { truncate: false }), /resuming .* not supported/);
    await put(alice, "/plain.txt", Buffer.from("plaintext"));
    await assert.rejects(alice.rename("/plain.txt", "/outbox/plain.txt", false), /cannot move a file into the OpenPGP/);
    // Inside the folder, renames work.
    await alice.rename("/outbox/report.csv", "/outbox/report-2024.csv", false);
    assert.ok((await alice.stat("/outbox/report-2024.csv")).size > 0);
  });

  it("a refused recipient stores nothing", async () => {
    await app.putFolder("/broken", { pgp: { recipients: ["alice"] } });
    await assert.rejects(put(alice, "/broken/x.bin", randomBytes(10)), /user alice has no OpenPGP key/);
    await assert.rejects(alice.stat("/broken/x.bin"), /no such file/);
    await app.audit.flush(); // the file server's audit log commits in groups: listeners see records once written
    const why = records.find((e) => e.action === "pgp.verify" && e.path === "/broken/x.bin");
    assert.equal(why?.outcome, "failure");
    assert.match(why?.reason ?? "", /user alice has no OpenPGP key/);
  });

  it("inbound: a gpg-encrypted upload (binary and armored) is accepted as is; plaintext is refused", async () => {
    const src = join(dir, "partner.txt");
    await writeFile(src, randomBytes(200_000));
    await gpg.ok(["--trust-model", "always", "-r", finance, "-o", `${src}.gpg`, "-e", src]);
    await gpg.ok(["--trust-model", "always", "--armor", "-r", finance, "-o", `${src}.asc`, "-e", src]);
    for (const ext of ["gpg", "asc"]) {
      const message = await readFile(`${src}.${ext}`);
      await put(alice, `/inbox/partner.txt.${ext}`, message, 1000);
      assert.equal(sha(await get(alice, `/inbox/partner.txt.${ext}`)), sha(message));
    }
    await assert.rejects(put(alice, "/inbox/plain.csv", Buffer.from("a,b,c\n1,2,3\n")), /not an OpenPGP-encrypted/);
    await assert.rejects(alice.stat("/inbox/plain.csv"), /no such file/);
    // A signed but not encrypted message is not encrypted.
    await gpg.ok(["-u", finance, "-o", `${src}.sig`, "--sign", src]);
    await assert.rejects(
      put(alice, "/inbox/signed.gpg", await readFile(`${src}.sig`)),
      /plaintext \(signed or literal\)/,
    );
    // Truncated: refused at close.
    const message = await readFile(`${src}.gpg`);
    await assert.rejects(put(alice, "/inbox/cut.gpg", message.subarray(0, message.length - 10)), /truncated/);
    await assert.rejects(alice.stat("/inbox/cut.gpg"), /no such file/);
    // Every check is in the audit: accepted ones name the recipients' key ids, refused ones say why.
    await app.audit.flush();
    const checks = records.filter((e) => e.action === "pgp.verify" && e.path?.startsWith("/inbox/"));
    const ok = checks.filter((e) => e.outcome === "success");
    assert.deepEqual(
      ok.map((e) => e.path),
      ["/inbox/partner.txt.gpg", "/inbox/partner.txt.asc"],
    );
    assert.match(ok[1].detail ?? "", /^encrypted \(armored\): recipients [0-9a-f]{16}$/);
    const refused = checks.filter((e) => e.outcome === "failure").map((e) => [e.path, e.reason]);
    assert.equal(refused.length, 3);
    assert.match(String(refused[0][1]), /not an OpenPGP-encrypted message/);
  });

  it("inbound signed: a message signed by a stored key is accepted; unknown signer or encrypted refused", async () => {
    const src = join(dir, "statement.txt");
    await writeFile(src, randomBytes(300_000));
    await gpg.ok(["-u", finance, "-o", `${src}.sig`, "--sign", src]);
    const signed = await readFile(`${src}.sig`);
    await put(alice, "/signed-in/statement.txt.gpg", signed);
    assert.equal(sha(await get(alice, "/signed-in/statement.txt.gpg")), sha(signed));

    const stranger = await gpg.generate("Stranger <x@example.net>", "ed25519");
    await gpg.ok(["-u", stranger, "-o", `${src}.x.sig`, "--sign", src]);
    await assert.rejects(put(alice, "/signed-in/x.gpg", await readFile(`${src}.x.sig`)), /signed by a known key/);
    await assert.rejects(alice.stat("/signed-in/x.gpg"), /no such file/);

    await gpg.ok(["--trust-model", "always", "-r", finance, "-o", `${src}.enc`, "-e", src]);
    await assert.rejects(put(alice, "/signed-in/e.gpg", await readFile(`${src}.enc`)), /it is encrypted/);
    await assert.rejects(put(alice, "/signed-in/p.txt", Buffer.from("hello")), /signed by a known key/);
    await app.audit.flush();
    const verified = records.find((e) => e.action === "pgp.verify" && e.path === "/signed-in/statement.txt.gpg");
    assert.equal(verified?.outcome, "success");
    assert.equal(verified?.target, finance);
  });
});
