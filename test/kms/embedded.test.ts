import assert from "node:assert/strict";
import { createDecipheriv } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { after, before, describe, it } from "node:test";
import type { AuditEvent } from "../../src/audit/types.ts";
import { AtrestError, IntegrityError, KeyUnavailableError } from "../../src/errors.ts";
import { encodeContext } from "../../src/kms/api/wrapped.ts";
import { SCHEMA_VERSION } from "../../src/kms/db.ts";
import { DEV_MODE_WARNING, initEmbeddedKms, openEmbeddedKms } from "../../src/kms/embedded.ts";

const ctxA = { fileId: "f-1", owner: "alice", folder: "/hr" };
const ctxB = { fileId: "f-2", owner: "alice", folder: "/hr" };

let root: string;
before(async () => {
  root = await mkdtemp(join(tmpdir(), "atrest-kms-"));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});
let n = 0;
const freshDir = () => join(root, `kms-${n++}`);

async function withKms<T>(fn: (kms: Awaited<ReturnType<typeof openEmbeddedKms>>, dir: string) => Promise<T>) {
  const dir = freshDir();
  await initEmbeddedKms(dir);
  const kms = await openEmbeddedKms(dir);
  try {
    return await fn(kms, dir);
  } finally {
    await kms.close();
  }
}

function isErr(cls: new (...a: never[]) => Error, re?: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${(e as Error)?.name}: ${(e as Error)?.message}`);
    if (re) assert.match((e as Error).message, re);
    return true;
  };
}

describe("init", () => {
  it("creates dir 0700, master.key 0600, kms.db, and warns loudly", async () => {
    const dir = freshDir();
    const r = await initEmbeddedKms(dir);
    assert.equal(r.created, true);
    assert.equal(r.warning, DEV_MODE_WARNING);
    assert.match(r.warning ?? "", /DEV MODE.*beside the data.*Shamir/s);
    assert.equal((await stat(dir)).mode & 0o777, 0o700);
    assert.equal((await stat(join(dir, "master.key"))).mode & 0o777, 0o600);
    assert.equal((await stat(join(dir, "kms.db"))).mode & 0o077, 0);
  });

  it("is idempotent: a second init keeps the same master key and KEKs", async () => {
    const dir = freshDir();
    await initEmbeddedKms(dir);
    const keyBefore = await readFile(join(dir, "master.key"));
    let kms = await openEmbeddedKms(dir);
    const dk = await kms.generateDataKey("default", ctxA);
    await kms.close();

    const r = await initEmbeddedKms(dir);
    assert.equal(r.created, false);
    assert.deepEqual(await readFile(join(dir, "master.key")), keyBefore);
    kms = await openEmbeddedKms(dir);
    try {
      assert.deepEqual(await kms.unwrap(dk.wrapped, ctxA), dk.plaintext);
      const keys = await kms.listKeys();
      assert.deepEqual(
        keys.map((k) => [k.name, k.currentVersion, k.versions.length]),
        [["default", 1, 1]],
      );
    } finally {
      await kms.close();
    }
  });

  it("concurrent inits agree on one master key", async () => {
    const dir = freshDir();
    const rs = await Promise.all([initEmbeddedKms(dir), initEmbeddedKms(dir), initEmbeddedKms(dir)]);
    assert.ok(rs.some((r) => r.created));
    const kms = await openEmbeddedKms(dir);
    await kms.close();
  });

  it("concurrent inits from separate processes agree", async () => {
    const dir = freshDir();
    const { execFile } = await import("node:child_process");
    const url = new URL("../../src/kms/embedded.ts", import.meta.url).href;
    const code = `const m = await import(${JSON.stringify(url)}); await m.initEmbeddedKms(${JSON.stringify(dir)});`;
    const run = () =>
      new Promise<void>((res, rej) =>
        execFile(process.execPath, ["--input-type=module", "-e", code], (err, _o, stderr) =>
          err ? rej(new Error(stderr)) : res(),
        ),
      );
    await Promise.all([run(), run(), run(), run()]);
    const kms = await openEmbeddedKms(dir);
    assert.equal((await kms.listKeys()).length, 1);
    await kms.close();
  });

  it("schema is versioned; a newer schema is refused", async () => {
    const dir = freshDir();
    await initEmbeddedKms(dir);
    const db = new DatabaseSync(join(dir, "kms.db"));
    assert.equal((db.prepare("PRAGMA user_version").get() as { user_version: number }).user_version, SCHEMA_VERSION);
    db.exec("PRAGMA user_version = 99");
    db.close();
    await assert.rejects(openEmbeddedKms(dir), (e: unknown) => (e as AtrestError).code === "UNSUPPORTED");
  });

  it("refuses to mint a new master key when kms.db exists without master.key", async () => {
    const dir = freshDir();
    await initEmbeddedKms(dir);
    await rm(join(dir, "master.key"));
    await assert.rejects(initEmbeddedKms(dir), isErr(KeyUnavailableError, /missing/));
  });

  it("open before init says to run atrest init", async () => {
    await assert.rejects(openEmbeddedKms(freshDir()), isErr(KeyUnavailableError, /run atrest init/));
  });

  it("open with a different master key is refused", async () => {
    const a = freshDir();
    const b = freshDir();
    await initEmbeddedKms(a);
    await initEmbeddedKms(b);
    await writeFile(join(a, "master.key"), await readFile(join(b, "master.key")), { mode: 0o600 });
    await assert.rejects(openEmbeddedKms(a), isErr(KeyUnavailableError, /does not match/));
  });

  it("refuses a world-readable master.key", async () => {
    const dir = freshDir();
    await initEmbeddedKms(dir);
    const { chmod } = await import("node:fs/promises");
    await chmod(join(dir, "master.key"), 0o644);
    await assert.rejects(openEmbeddedKms(dir), isErr(KeyUnavailableError, /chmod 600/));
  });
});

describe("wrap / unwrap", () => {
  it("round trips and names its key", () =>
    withKms(async (kms) => {
      const dk = await kms.generateDataKey("default", ctxA);
      assert.equal(dk.plaintext.length, 32);
      assert.equal(dk.keyRef, "kek:default:v1");
      assert.equal(kms.keyRefOf(dk.wrapped), "kek:default:v1");
      assert.equal(dk.wrapped.length, 69 + "default".length);
      assert.equal(dk.wrapped.subarray(0, 4).toString(), "AKW1");
      const dek = await kms.unwrap(dk.wrapped, { folder: "/hr", owner: "alice", fileId: "f-1" }); // key order irrelevant
      assert.deepEqual(dek, dk.plaintext);
      const dk2 = await kms.generateDataKey("default", ctxA);
      assert.notDeepEqual(dk2.plaintext, dk.plaintext);
      assert.notDeepEqual(dk2.wrapped.subarray(16, 28), dk.wrapped.subarray(16, 28)); // fresh nonce
    }));

  it("fails with IntegrityError under another context", () =>
    withKms(async (kms) => {
      const dk = await kms.generateDataKey("default", ctxA);
      await assert.rejects(kms.unwrap(dk.wrapped, ctxB), isErr(IntegrityError, /kek:default:v1/));
      await assert.rejects(kms.unwrap(dk.wrapped, {}), isErr(IntegrityError));
      await assert.rejects(kms.unwrap(dk.wrapped, { ...ctxA, extra: "" }), isErr(IntegrityError));
    }));

  it("context encoding is unambiguous", () => {
    assert.notDeepEqual(encodeContext({ a: "bc" }), encodeContext({ ab: "c" }));
    assert.notDeepEqual(encodeContext({ a: "b", c: "d" }), encodeContext({ a: "b\u0000c" }));
    assert.deepEqual(encodeContext({ x: "1", y: "2" }), encodeContext({ y: "2", x: "1" }));
    assert.throws(() => encodeContext({ a: "\ud800" }), isErr(AtrestError, /well-formed/));
    assert.throws(() => encodeContext({ a: 1 } as never), isErr(AtrestError, /string/));
  });

  it("detects any flipped bit, truncation and extension", () =>
    withKms(async (kms) => {
      const dk = await kms.generateDataKey("default", ctxA);
      for (let i = 0; i < dk.wrapped.length; i++) {
        const t = Buffer.from(dk.wrapped);
        t[i] ^= 0x01;
        await assert.rejects(
          kms.unwrap(t, ctxA),
          (e: unknown) => e instanceof IntegrityError || e instanceof KeyUnavailableError,
          `byte ${i}`,
        );
      }
      await assert.rejects(kms.unwrap(dk.wrapped.subarray(0, dk.wrapped.length - 1), ctxA), isErr(IntegrityError));
      await assert.rejects(kms.unwrap(Buffer.concat([dk.wrapped, Buffer.alloc(1)]), ctxA), isErr(IntegrityError));
    }));

  it("keyRefOf rejects malformed blobs", () =>
    withKms(async (kms) => {
      const dk = await kms.generateDataKey("default", ctxA);
      for (const bad of [
        Buffer.alloc(0),
        Buffer.from("AKW2"),
        dk.wrapped.subarray(0, 20),
        Buffer.concat([dk.wrapped, Buffer.alloc(3)]),
      ]) {
        assert.throws(() => kms.keyRefOf(bad), isErr(IntegrityError));
      }
      const upper = Buffer.from(dk.wrapped);
      upper[5] = "D".charCodeAt(0);
      assert.throws(() => kms.keyRefOf(upper), isErr(IntegrityError));
      const v0 = Buffer.from(dk.wrapped);
      v0.writeUInt32BE(0, 5 + 7);
      assert.throws(() => kms.keyRefOf(v0), isErr(IntegrityError));
    }));

  it("a blob re-labelled to another key fails", () =>
    withKms(async (kms) => {
      await kms.createKey("defaulx");
      const dk = await kms.generateDataKey("default", ctxA);
      const t = Buffer.from(dk.wrapped);
      t.write("defaulx", 5, "ascii");
      assert.equal(kms.keyRefOf(t), "kek:defaulx:v1");
      await assert.rejects(kms.unwrap(t, ctxA), isErr(IntegrityError));
    }));
});

describe("keys", () => {
  it("rotate: new DEKs use v2, old and new both unwrap, listKeys shows versions", () =>
    withKms(async (kms) => {
      const old = await kms.generateDataKey("default", ctxA);
      const info = await kms.rotateKey("default");
      assert.equal(info.currentVersion, 2);
      const neu = await kms.generateDataKey("default", ctxB);
      assert.equal(neu.keyRef, "kek:default:v2");
      assert.equal(kms.keyRefOf(neu.wrapped), "kek:default:v2");
      assert.equal(kms.keyRefOf(old.wrapped), "kek:default:v1");
      assert.deepEqual(await kms.unwrap(old.wrapped, ctxA), old.plaintext);
      assert.deepEqual(await kms.unwrap(neu.wrapped, ctxB), neu.plaintext);
      const [def] = await kms.listKeys();
      assert.equal(def.name, "default");
      assert.equal(def.currentVersion, 2);
      assert.equal(def.minDecryptionVersion, 1);
      assert.deepEqual(
        def.versions.map((v) => [v.version, v.state]),
        [
          [1, "active"],
          [2, "active"],
        ],
      );
      assert.ok(!Number.isNaN(Date.parse(def.versions[0].createdAt)));
    }));

  it("rewrap moves a DEK to the current version", () =>
    withKms(async (kms) => {
      const old = await kms.generateDataKey("default", ctxA);
      await kms.rotateKey("default");
      const r = await kms.rewrap(old.wrapped, ctxA);
      assert.equal(r.keyRef, "kek:default:v2");
      assert.deepEqual(await kms.unwrap(r.wrapped, ctxA), old.plaintext);
    }));

  it("raising min_decryption_version retires old versions", () =>
    withKms(async (kms) => {
      const old = await kms.generateDataKey("default", ctxA);
      await kms.rotateKey("default");
      const neu = await kms.generateDataKey("default", ctxA);
      const info = await kms.setMinDecryptionVersion("default", 2);
      assert.equal(info.minDecryptionVersion, 2);
      await assert.rejects(kms.unwrap(old.wrapped, ctxA), isErr(KeyUnavailableError, /kek:default:v1.*minimum/));
      assert.deepEqual(await kms.unwrap(neu.wrapped, ctxA), neu.plaintext);
      await assert.rejects(kms.setMinDecryptionVersion("default", 3), isErr(AtrestError, /1 to 2/));
      await assert.rejects(kms.setMinDecryptionVersion("default", 0), isErr(AtrestError));
    }));

  it("createKey, duplicate, unknown and invalid names", () =>
    withKms(async (kms) => {
      const info = await kms.createKey("hr.payroll-2025_a");
      assert.deepEqual([info.name, info.currentVersion], ["hr.payroll-2025_a", 1]);
      const dk = await kms.generateDataKey("hr.payroll-2025_a", ctxA);
      assert.equal(dk.keyRef, "kek:hr.payroll-2025_a:v1");
      await assert.rejects(kms.createKey("hr.payroll-2025_a"), (e: unknown) => (e as AtrestError).code === "EXISTS");
      await assert.rejects(kms.generateDataKey("nope", ctxA), isErr(KeyUnavailableError, /unknown key: kek:nope/));
      await assert.rejects(kms.rotateKey("nope"), (e: unknown) => (e as AtrestError).code === "NOT_FOUND");
      for (const bad of ["", "Upper", "-x", ".x", "a/b", "a b", "x".repeat(64), "é"]) {
        await assert.rejects(kms.createKey(bad), (e: unknown) => (e as AtrestError).code === "INVALID_INPUT", bad);
        await assert.rejects(
          kms.generateDataKey(bad, ctxA),
          (e: unknown) => (e as AtrestError).code === "INVALID_INPUT",
        );
      }
      await kms.createKey("x".repeat(63));
      const names = (await kms.listKeys()).map((k) => k.name);
      assert.deepEqual(names, ["default", "hr.payroll-2025_a", "x".repeat(63)]);
    }));

  it("unwrap of a blob naming an unknown key or version is KeyUnavailable", () =>
    withKms(async (kms) => {
      await kms.createKey("gone");
      const dk = await kms.generateDataKey("gone", ctxA);
      const t = Buffer.from(dk.wrapped);
      t.writeUInt32BE(9, 5 + 4);
      await assert.rejects(kms.unwrap(t, ctxA), isErr(KeyUnavailableError, /kek:gone:v9/));
      const other = freshDir();
      await initEmbeddedKms(other);
      const kms2 = await openEmbeddedKms(other);
      await assert.rejects(kms2.unwrap(dk.wrapped, ctxA), isErr(KeyUnavailableError, /unknown key: kek:gone:v1/));
      await kms2.close();
    }));

  it("refuses destroyed versions and non-active current versions", async () => {
    const dir = freshDir();
    await initEmbeddedKms(dir);
    let kms = await openEmbeddedKms(dir);
    const dk = await kms.generateDataKey("default", ctxA);
    await kms.close();
    // No destroy operation yet (quorum approval, later issue): set the state directly as it would.
    const db = new DatabaseSync(join(dir, "kms.db"));
    db.exec("UPDATE key_versions SET state = 'destroyed', sealed = NULL WHERE name = 'default' AND version = 1");
    db.close();
    kms = await openEmbeddedKms(dir);
    try {
      await assert.rejects(kms.unwrap(dk.wrapped, ctxA), isErr(KeyUnavailableError, /kek:default:v1 is destroyed/));
      await assert.rejects(
        kms.generateDataKey("default", ctxA),
        isErr(KeyUnavailableError, /cannot encrypt: it is destroyed/),
      );
    } finally {
      await kms.close();
    }
  });
});

describe("persistence and at-rest protection", () => {
  it("reopens from disk and sees keys made by another instance", async () => {
    const dir = freshDir();
    await initEmbeddedKms(dir);
    const a = await openEmbeddedKms(dir, { refreshMs: 0 });
    const b = await openEmbeddedKms(dir, { refreshMs: 0 });
    try {
      const dk1 = await a.generateDataKey("default", ctxA);
      await b.rotateKey("default"); // e.g. the CLI while the server runs
      await b.createKey("finance");
      const dk2 = await a.generateDataKey("default", ctxA);
      assert.equal(dk2.keyRef, "kek:default:v2", "running instance picks up another process's rotation");
      await b.setMinDecryptionVersion("default", 2);
      await assert.rejects(a.unwrap(dk1.wrapped, ctxA), isErr(KeyUnavailableError));
      await a.generateDataKey("finance", ctxA);
      await b.setMinDecryptionVersion("default", 1);
      assert.deepEqual(await a.unwrap(dk1.wrapped, ctxA), dk1.plaintext);
    } finally {
      await a.close();
      await b.close();
    }
    const c = await openEmbeddedKms(dir);
    try {
      const keys = await c.listKeys();
      assert.deepEqual(
        keys.map((k) => [k.name, k.currentVersion]),
        [
          ["default", 2],
          ["finance", 1],
        ],
      );
    } finally {
      await c.close();
    }
  });

  it("kms files contain no KEK plaintext; sealed rows are bound to name and version", async () => {
    const dir = freshDir();
    await initEmbeddedKms(dir);
    const kms = await openEmbeddedKms(dir);
    await kms.rotateKey("default");
    await kms.createKey("other");
    const dk = await kms.generateDataKey("default", ctxA);
    await kms.close();

    // Recover the KEKs the way an attacker holding master.key would, straight from the documented formats.
    const masterFile = await readFile(join(dir, "master.key"));
    const master = masterFile.subarray(5, 37);
    const db = new DatabaseSync(join(dir, "kms.db"));
    const rows = db.prepare("SELECT name, version, sealed FROM key_versions").all() as {
      name: string;
      version: number;
      sealed: Uint8Array;
    }[];
    const kekAad = (name: string, v: number) => {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(v);
      return Buffer.concat([Buffer.from("atrest-kek\0"), Buffer.from([name.length]), Buffer.from(name), b]);
    };
    const unseal = (sealed: Buffer, name: string, v: number) => {
      const d = createDecipheriv("aes-256-gcm", master, sealed.subarray(0, 12));
      d.setAAD(kekAad(name, v));
      d.setAuthTag(sealed.subarray(44));
      return Buffer.concat([d.update(sealed.subarray(12, 44)), d.final()]);
    };
    const keks = new Map<string, Buffer>();
    for (const r of rows) keks.set(`${r.name}:${r.version}`, unseal(Buffer.from(r.sealed), r.name, r.version));
    assert.equal(keks.size, 3);

    // Prove they are the real KEKs: decrypt the DEK from the documented wrapped format.
    const w = dk.wrapped;
    const h = 9 + 7;
    const d = createDecipheriv("aes-256-gcm", keks.get("default:2") as Buffer, w.subarray(h, h + 12));
    d.setAAD(Buffer.concat([w.subarray(0, h), encodeContext(ctxA)]));
    d.setAuthTag(w.subarray(h + 44));
    assert.deepEqual(Buffer.concat([d.update(w.subarray(h + 12, h + 44)), d.final()]), dk.plaintext);

    // Swapping sealed rows between versions fails authentication.
    const v1 = rows.find((r) => r.name === "default" && r.version === 1) as { sealed: Uint8Array };
    assert.throws(() => unseal(Buffer.from(v1.sealed), "default", 2));
    db.close();

    const files = (await readdir(dir, { withFileTypes: true, recursive: true })).filter((e) => e.isFile());
    assert.ok(files.some((e) => e.name === "kms-audit.log"));
    for (const e of files) {
      const f = join(e.parentPath, e.name);
      if (e.name === "master.key") continue;
      const bytes = await readFile(f);
      for (const [ref, kek] of keks) assert.equal(bytes.indexOf(kek), -1, `${ref} plaintext found in ${f}`);
      assert.equal(bytes.indexOf(master), -1, `master key found in ${f}`);
    }
  });

  it("swapping sealed rows in the db is detected on use", async () => {
    const dir = freshDir();
    await initEmbeddedKms(dir);
    let kms = await openEmbeddedKms(dir);
    await kms.rotateKey("default");
    await kms.close();
    const db = new DatabaseSync(join(dir, "kms.db"));
    db.exec(
      "UPDATE key_versions SET sealed = (SELECT sealed FROM key_versions WHERE name = 'default' AND version = 1) WHERE name = 'default' AND version = 2",
    );
    db.close();
    kms = await openEmbeddedKms(dir);
    try {
      await assert.rejects(kms.generateDataKey("default", ctxA), isErr(IntegrityError, /kek:default:v2/));
    } finally {
      await kms.close();
    }
  });
});

describe("audit and lifecycle", () => {
  it("audits every operation with ref and context, never key bytes", async () => {
    const dir = freshDir();
    await initEmbeddedKms(dir);
    const events: AuditEvent[] = [];
    const kms = await openEmbeddedKms(dir, {
      auditLog: { record: (e) => events.push(e) },
      now: () => new Date("2030-01-02T03:04:05Z"),
    });
    const dk = await kms.generateDataKey("default", ctxA);
    await kms.unwrap(dk.wrapped, ctxA);
    await assert.rejects(kms.unwrap(dk.wrapped, ctxB));
    const info = await kms.rotateKey("default");
    assert.equal(info.versions[1].createdAt, "2030-01-02T03:04:05.000Z");
    await kms.close();
    const detail = (e: AuditEvent) => JSON.parse(e.detail ?? "{}") as { op: string; context?: unknown };
    assert.deepEqual(
      events.map((e) => [detail(e).op, e.keyRef, e.outcome]),
      [
        ["generate-data-key", "kek:default:v1", "success"],
        ["unwrap", "kek:default:v1", "success"],
        ["unwrap", "kek:default:v1", "failure"],
        ["rotate", "kek:default:v2", "success"],
      ],
    );
    assert.deepEqual(detail(events[0]).context, ctxA);
    assert.deepEqual(detail(events[2]).context, ctxB);
    const text = JSON.stringify(events);
    assert.ok(!text.includes(dk.plaintext.toString("hex")) && !text.includes(dk.plaintext.toString("base64")));
  });

  it("a throwing audit sink fails the operation (fail closed)", async () => {
    const dir = freshDir();
    await initEmbeddedKms(dir);
    const kms = await openEmbeddedKms(dir, {
      auditLog: {
        record: () => {
          throw new Error("audit down");
        },
      },
      failClosed: true,
    });
    await assert.rejects(kms.generateDataKey("default", ctxA), /audit log cannot be written/);
    await kms.close();
  });

  it("close makes the provider unusable", async () => {
    const dir = freshDir();
    await initEmbeddedKms(dir);
    const kms = await openEmbeddedKms(dir);
    const dk = await kms.generateDataKey("default", ctxA);
    await kms.close();
    await kms.close();
    await assert.rejects(kms.unwrap(dk.wrapped, ctxA));
    await assert.rejects(kms.generateDataKey("default", ctxA));
  });
});
