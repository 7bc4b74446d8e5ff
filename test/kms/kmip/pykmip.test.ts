// The KMIP port of `kms serve` driven by Debian's python3-pykmip (ProxyKmipClient over TLS, configured by a
// pykmip.conf written here with client certificates from the KMS CA): the key lifecycle, secret data, refusals with
// their KMIP result reasons (untrusted certificate, revoked client, policy denial, destroyed key), Destroy under dual
// control answered as pending, the audit, and malformed TTLV from a raw TLS socket answered without a crash.
import assert from "node:assert/strict";
import { type ChildProcessWithoutNullStreams, execFileSync, spawn } from "node:child_process";
import { createDecipheriv, randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, test } from "node:test";
import { connect, type TLSSocket } from "node:tls";
import { initKmsDir, issueClient } from "../../../src/kms/home.ts";
import { ResultReason, ResultStatus, T } from "../../../src/kms/kmip/tags.ts";
import { decodeTtlv, encodeTtlv, enumv, Fields, int, struct, type Ttlv } from "../../../src/kms/kmip/ttlv.ts";
import { readKmsAudit } from "../../../src/kms/kms-audit.ts";
import { KmsServer } from "../../../src/kms/server/server.ts";
import { ROOT, removeDir, tempDir } from "../../helpers/atrest.ts";

const DRIVER = join(ROOT, "test/kms/kmip/pykmip-driver.py");

type Reply = { ok?: unknown; error?: { status?: string; reason?: string | null; message: string; type?: string } };

/** One ProxyKmipClient connection in a python3 child: send a command, get its JSON reply. */
class PyKmip {
  readonly #proc: ChildProcessWithoutNullStreams;
  readonly #lines: AsyncIterator<string>;

  constructor(conf: string) {
    this.#proc = spawn("/usr/bin/python3", [DRIVER, conf], { stdio: ["pipe", "pipe", "pipe"] });
    this.#lines = createInterface({ input: this.#proc.stdout })[Symbol.asyncIterator]();
    this.#proc.stdin.on("error", () => {}); // a driver whose connection was refused has exited
  }

  async run(cmd: Record<string, unknown>): Promise<Reply> {
    this.#proc.stdin.write(`${JSON.stringify(cmd)}\n`);
    const next = await this.#lines.next();
    if (next.done) throw new Error("pykmip driver exited");
    return JSON.parse(next.value) as Reply;
  }

  async ok(cmd: Record<string, unknown>): Promise<unknown> {
    const r = await this.run(cmd);
    assert.equal(r.error, undefined, `${cmd.op}: ${JSON.stringify(r.error)}`);
    return r.ok;
  }

  async close(): Promise<void> {
    this.#proc.stdin.end();
    if (this.#proc.exitCode === null) await new Promise((r) => this.#proc.once("exit", r));
  }
}

async function writeConf(path: string, port: number, certDir: string, caFile = join(certDir, "ca.crt")) {
  await writeFile(
    path,
    [
      "[client]",
      "host=127.0.0.1",
      `port=${port}`,
      `certfile=${join(certDir, "client.crt")}`,
      `keyfile=${join(certDir, "client.key")}`,
      `ca_certs=${caFile}`,
      "cert_reqs=CERT_REQUIRED",
      "ssl_version=PROTOCOL_SSLv23",
      "do_handshake_on_connect=True",
      "suppress_ragged_eofs=True",
      "",
    ].join("\n"),
  );
}

const b64 = (b: Buffer | string) => Buffer.from(b).toString("base64");

describe("KMIP server with PyKMIP's ProxyKmipClient", () => {
  let root: string;
  let kmsDir: string;
  let server: KmsServer;
  let port: number;
  const clients: PyKmip[] = [];
  const conf = (name: string) => join(root, `${name}.conf`);
  const client = (name: string) => {
    const c = new PyKmip(conf(name));
    clients.push(c);
    return c;
  };

  before(async () => {
    root = await tempDir("atrest-kmip-");
    kmsDir = join(root, "kms");
    await initKmsDir(kmsDir, { dev: true });
    server = await KmsServer.start({ dir: kmsDir, port: 0, schedulerIntervalMs: 0, kmip: { port: 0 } });
    port = server.kmipPort as number;
    for (const name of ["app", "narrow", "dc", "gone"]) {
      await issueClient(kmsDir, name, "server", join(root, "certs", name));
      await writeConf(conf(name), port, join(root, "certs", name));
    }
    const policies = server.service().policies;
    // narrow: may create and read narrow-* objects, nothing else (no get, no encrypt).
    policies.set("narrow", { rules: [{ keys: ["narrow-*"], ops: ["kmip-create", "read"] }] }, "test", new Date());
    // dc: full use of dc-* objects, but destruction only as a dual-control request.
    policies.set(
      "dc",
      {
        rules: [{ keys: ["dc-*"], ops: ["kmip-create", "kmip-get", "kmip-state", "kmip-request-destroy", "read"] }],
      },
      "test",
      new Date(),
    );
  });

  after(async () => {
    for (const c of clients) await c.close();
    await server?.close();
    await removeDir(root);
  });

  test("create → activate → get → encrypt/decrypt → locate → attributes → revoke → destroy", async () => {
    const c = client("app");
    const uid = (await c.ok({ op: "create", length: 256, name: "orders-key" })) as string;
    assert.match(uid, /^kmip-[0-9a-f]{20}$/);
    // Pre-active until activated: no encryption yet.
    const early = await c.run({ op: "encrypt", uid, data: b64("x") });
    assert.equal(early.error?.reason, "ILLEGAL_OPERATION");
    assert.equal(await c.ok({ op: "activate", uid }), uid);
    const key = (await c.ok({ op: "get", uid })) as { type: string; value: string };
    assert.equal(key.type, "SymmetricKey");
    const raw = Buffer.from(key.value, "base64");
    assert.equal(raw.length, 32);

    const plain = randomBytes(1000);
    const enc = (await c.ok({ op: "encrypt", uid, data: b64(plain) })) as { data: string; iv: string };
    const data = Buffer.from(enc.data, "base64");
    const iv = Buffer.from(enc.iv, "base64");
    assert.equal(iv.length, 12);
    assert.equal(data.length, plain.length + 16, "ciphertext followed by the 16-byte GCM tag");
    // Independently: AES-256-GCM under the key Get returned.
    const d = createDecipheriv("aes-256-gcm", raw, iv);
    d.setAuthTag(data.subarray(-16));
    assert.deepEqual(Buffer.concat([d.update(data.subarray(0, -16)), d.final()]), plain);
    assert.equal(await c.ok({ op: "decrypt", uid, data: enc.data, iv: enc.iv }), b64(plain));
    // A second encryption uses a fresh IV.
    const enc2 = (await c.ok({ op: "encrypt", uid, data: b64(plain) })) as { iv: string };
    assert.notEqual(enc2.iv, enc.iv);
    // A flipped ciphertext byte fails authentication.
    const bad = Buffer.from(data);
    bad[3] = (bad[3] as number) ^ 1;
    const tampered = await c.run({ op: "decrypt", uid, data: b64(bad), iv: enc.iv });
    assert.equal(tampered.error?.reason, "CRYPTOGRAPHIC_FAILURE");

    assert.deepEqual(await c.ok({ op: "locate", name: "orders-key" }), [uid]);
    assert.deepEqual(await c.ok({ op: "locate", name: "orders-key", state: "PRE_ACTIVE" }), []);
    assert.ok(((await c.ok({ op: "locate", state: "ACTIVE" })) as string[]).includes(uid));
    const attrs = (await c.ok({ op: "attributes", uid, names: ["State", "Cryptographic Length", "Name"] })) as {
      attributes: Record<string, unknown>;
    };
    assert.deepEqual(attrs.attributes, { State: "ACTIVE", "Cryptographic Length": 256, Name: "orders-key" });

    // An active key cannot be destroyed; revoke first.
    const active = await c.run({ op: "destroy", uid });
    assert.equal(active.error?.reason, "PERMISSION_DENIED");
    await c.ok({ op: "revoke", uid, reason: "CESSATION_OF_OPERATION" });
    // Deactivated: decrypts old data, encrypts no more.
    assert.equal(await c.ok({ op: "decrypt", uid, data: enc.data, iv: enc.iv }), b64(plain));
    assert.equal((await c.run({ op: "encrypt", uid, data: b64("x") })).error?.reason, "ILLEGAL_OPERATION");
    assert.equal(await c.ok({ op: "destroy", uid }), uid);
    const gone = await c.run({ op: "get", uid });
    assert.equal(gone.error?.status, "OPERATION_FAILED");
    assert.equal(gone.error?.reason, "KEY_VALUE_NOT_PRESENT");
    assert.equal(
      (await c.run({ op: "decrypt", uid, data: enc.data, iv: enc.iv })).error?.reason,
      "KEY_VALUE_NOT_PRESENT",
    );
    assert.deepEqual(await c.ok({ op: "locate", name: "orders-key", state: "DESTROYED" }), [uid]);
    const missing = await c.run({ op: "get", uid: "kmip-00000000000000000000" });
    assert.equal(missing.error?.reason, "ITEM_NOT_FOUND");
  });

  test("register secret data and an AES-128 key; Get returns exactly what was registered", async () => {
    const c = client("app");
    const sid = (await c.ok({
      op: "register-secret",
      value: b64("correct horse battery"),
      name: "db-password",
    })) as string;
    const secret = (await c.ok({ op: "get", uid: sid })) as { type: string; value: string };
    assert.equal(secret.type, "SecretData");
    assert.equal(Buffer.from(secret.value, "base64").toString(), "correct horse battery");
    const material = randomBytes(16);
    const kid = (await c.ok({ op: "register-key", length: 128, value: b64(material), name: "legacy-128" })) as string;
    const k = (await c.ok({ op: "get", uid: kid })) as { value: string };
    assert.equal(k.value, b64(material));
    const a = (await c.ok({ op: "attributes", uid: kid, names: ["Cryptographic Length", "State"] })) as {
      attributes: Record<string, unknown>;
    };
    assert.deepEqual(a.attributes, { "Cryptographic Length": 128, State: "PRE_ACTIVE" });
    // The stored values are sealed: neither appears in kms.db.
    const db = await readFile(join(kmsDir, "kms.db"));
    assert.equal(db.indexOf(Buffer.from("correct horse battery")), -1);
    assert.equal(db.indexOf(material), -1);
    // Created AES-128 keys encrypt with AES-128-GCM.
    const uid = (await c.ok({ op: "create", length: 128 })) as string;
    await c.ok({ op: "activate", uid });
    const raw = Buffer.from(((await c.ok({ op: "get", uid })) as { value: string }).value, "base64");
    assert.equal(raw.length, 16);
    const enc = (await c.ok({ op: "encrypt", uid, data: b64("sixteen") })) as { data: string; iv: string };
    const data = Buffer.from(enc.data, "base64");
    const d = createDecipheriv("aes-128-gcm", raw, Buffer.from(enc.iv, "base64"));
    d.setAuthTag(data.subarray(-16));
    assert.equal(Buffer.concat([d.update(data.subarray(0, -16)), d.final()]).toString(), "sixteen");
    assert.equal((await c.run({ op: "create", length: 192 })).error?.reason, "FEATURE_NOT_SUPPORTED");
  });

  test("client policy: denied operations answer Permission Denied; Locate lists only readable objects", async () => {
    const app = client("app");
    const narrow = client("narrow");
    const mine = (await narrow.ok({ op: "create", length: 256, name: "narrow-one" })) as string;
    const denied = await narrow.run({ op: "get", uid: mine });
    assert.equal(denied.error?.reason, "PERMISSION_DENIED");
    assert.match(denied.error?.message ?? "", /may not kmip-get/);
    assert.equal((await narrow.run({ op: "activate", uid: mine })).error?.reason, "PERMISSION_DENIED");
    assert.equal((await narrow.run({ op: "create", length: 256, name: "other" })).error?.reason, "PERMISSION_DENIED");
    const theirs = (await app.ok({ op: "create", length: 256, name: "app-private" })) as string;
    assert.equal((await narrow.run({ op: "attributes", uid: theirs })).error?.reason, "PERMISSION_DENIED");
    const seen = (await narrow.ok({ op: "locate" })) as string[];
    assert.ok(seen.includes(mine));
    assert.ok(!seen.includes(theirs));
  });

  test("Destroy under dual control: answered Operation Pending with the request; destroyed once approved", async () => {
    const c = client("dc");
    const uid = (await c.ok({ op: "create", length: 256, name: "dc-key" })) as string;
    const r = await c.run({ op: "destroy", uid });
    assert.equal(r.error?.status, "OPERATION_PENDING", JSON.stringify(r));
    assert.equal(r.error?.reason, "PERMISSION_DENIED");
    const id = /request (req-[0-9a-f]+)/.exec(r.error?.message ?? "")?.[1];
    assert.ok(id, r.error?.message);
    // Asking again returns the same pending request; the key is still there.
    const again = await c.run({ op: "destroy", uid });
    assert.match(again.error?.message ?? "", new RegExp(id));
    assert.ok(((await c.ok({ op: "get", uid })) as { value: string }).value);
    const svc = server.service();
    svc.approve({ name: "carol", role: "custodian" }, id);
    svc.approve({ name: "dave", role: "custodian" }, id);
    assert.equal(svc.getRequest({ name: "carol", role: "custodian" }, id).status, "executed");
    assert.equal((await c.run({ op: "get", uid })).error?.reason, "KEY_VALUE_NOT_PRESENT");
    const a = (await c.ok({ op: "attributes", uid, names: ["State"] })) as { attributes: Record<string, unknown> };
    assert.deepEqual(a.attributes, { State: "DESTROYED" });
  });

  test("untrusted and revoked certificates are refused", async () => {
    // A certificate from another CA: the TLS handshake fails.
    const other = join(root, "other");
    execFileSync("mkdir", ["-p", other]);
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=intruder",
      ].concat(["-keyout", join(other, "client.key"), "-out", join(other, "client.crt")]),
      { stdio: "ignore" },
    );
    await writeConf(conf("intruder"), port, other, join(root, "certs", "app", "ca.crt"));
    const intruder = client("intruder");
    // Refused in the handshake (TLS 1.2) or at the first read (TLS 1.3 sends the refusal after the client finished).
    const refused = await intruder.run({ op: "create", length: 256 });
    assert.ok(refused.error?.type, JSON.stringify(refused));
    assert.equal(refused.error?.status, undefined, "no KMIP answer reached a client the CA did not certify");

    // A revoked client: TLS passes (the certificate chains to the CA), every request answers Authentication Not
    // Successful.
    const { revokeClient } = await import("../../../src/kms/clients.ts");
    const { KmsDb } = await import("../../../src/kms/db.ts");
    const db = new KmsDb(join(kmsDir, "kms.db"));
    revokeClient(db, "gone", new Date().toISOString());
    db.close();
    await new Promise((r) => setTimeout(r, 300)); // the client directory re-reads at most every 250 ms
    const gone = client("gone");
    const r = await gone.run({ op: "create", length: 256 });
    assert.equal(r.error?.reason, "AUTHENTICATION_NOT_SUCCESSFUL");
    assert.match(r.error?.message ?? "", /revoked/);
  });

  test("every operation is in the KMS audit log, without key material", async () => {
    const c = client("app");
    const uid = (await c.ok({ op: "create", length: 256, name: "audited" })) as string;
    await c.ok({ op: "activate", uid });
    const key = Buffer.from(((await c.ok({ op: "get", uid })) as { value: string }).value, "base64");
    await c.ok({ op: "encrypt", uid, data: b64("audit me") });
    await c.run({ op: "get", uid: "kmip-ffffffffffffffffffff" });
    const records = (await readKmsAudit(kmsDir, server.service().keyring)).filter(
      (x): x is Exclude<typeof x, { integrity: "failed" }> => !("integrity" in x),
    );
    const mine = records.filter((e) => e.keyRef === `kmip:${uid}`);
    assert.deepEqual(
      mine.map((e) => [e.action, e.outcome, e.user, JSON.parse(e.detail ?? "{}").kmip]),
      [
        ["key.create", "success", "app", "create"],
        ["key.state", "success", "app", "activate"],
        ["key.export", "success", "app", "get"],
        ["key.encrypt", "success", "app", "encrypt"],
      ],
    );
    assert.ok(mine.every((e) => e.protocol === "kms" && typeof e.userId === "string"));
    assert.ok(
      records.some((e) => e.action === "key.export" && e.outcome === "failure" && /no such KMIP/.test(e.reason ?? "")),
    );
    const text = JSON.stringify(records);
    for (const form of [key.toString("base64"), key.toString("hex"), key.toString("base64url")]) {
      assert.equal(text.indexOf(form), -1);
    }
  });
});

describe("malformed TTLV over raw mutual TLS", () => {
  let root: string;
  let server: KmsServer;
  let certDir: string;

  before(async () => {
    root = await tempDir("atrest-kmip-raw-");
    const kmsDir = join(root, "kms");
    await initKmsDir(kmsDir, { dev: true });
    server = await KmsServer.start({ dir: kmsDir, port: 0, schedulerIntervalMs: 0, kmip: { port: 0 } });
    certDir = join(root, "certs", "raw");
    await issueClient(kmsDir, "raw", "server", certDir);
  });

  after(async () => {
    await server?.close();
    await removeDir(root);
  });

  async function open(): Promise<TLSSocket> {
    const [key, cert, ca] = await Promise.all(
      ["client.key", "client.crt", "ca.crt"].map((f) => readFile(join(certDir, f))),
    );
    const s = connect({
      host: "127.0.0.1",
      port: server.kmipPort as number,
      key,
      cert,
      ca,
      checkServerIdentity: () => undefined,
    });
    await new Promise<void>((resolve, reject) => {
      s.once("secureConnect", resolve);
      s.once("error", reject);
    });
    return s;
  }

  /** Sends bytes; resolves with the first response message (or null if the server closed without one). */
  function exchange(s: TLSSocket, bytes: Buffer): Promise<Ttlv | null> {
    return new Promise((resolve) => {
      let buf = Buffer.alloc(0);
      const onData = (c: Buffer) => {
        buf = Buffer.concat([buf, c]);
        if (buf.length >= 8) {
          const need = 8 + buf.readUInt32BE(4);
          if (buf.length >= need) {
            s.off("data", onData);
            resolve(decodeTtlv(buf.subarray(0, need)));
          }
        }
      };
      s.on("data", onData);
      s.once("close", () => resolve(null));
      s.write(bytes);
    });
  }

  function resultOf(msg: Ttlv | null): { status: number; reason: number | undefined } | null {
    if (!msg) return null;
    const item = new Fields(msg).structs(T.BatchItem)[0] as Fields;
    return { status: item.one(T.ResultStatus, "enumeration"), reason: item.opt(T.ResultReason, "enumeration") };
  }

  const discover = () =>
    encodeTtlv(
      struct(
        T.RequestMessage,
        struct(
          T.RequestHeader,
          struct(T.ProtocolVersion, int(T.ProtocolVersionMajor, 1), int(T.ProtocolVersionMinor, 2)),
          int(T.BatchCount, 1),
        ),
        struct(T.BatchItem, enumv(T.Operation, 0x1e), struct(T.RequestPayload)),
      ),
    );

  async function stillServes(): Promise<void> {
    const s = await open();
    const r = resultOf(await exchange(s, discover()));
    s.destroy();
    assert.deepEqual(r, { status: ResultStatus.Success, reason: undefined });
  }

  test("a well-formed DiscoverVersions answers 1.2, 1.1, 1.0", async () => {
    const s = await open();
    const msg = await exchange(s, discover());
    s.destroy();
    const payload = new Fields(msg as Ttlv).structs(T.BatchItem)[0]?.struct(T.ResponsePayload) as Fields;
    const versions = payload
      .structs(T.ProtocolVersion)
      .map((v) => `${v.one(T.ProtocolVersionMajor, "integer")}.${v.one(T.ProtocolVersionMinor, "integer")}`);
    assert.deepEqual(versions, ["1.2", "1.1", "1.0"]);
  });

  const good = discover();
  const cases: [string, () => Buffer][] = [
    [
      "inner length runs past its structure",
      () => {
        const b = Buffer.from(good);
        b.writeUInt32BE(0xfff0, 8 + 4); // the Request Header's length
        return b;
      },
    ],
    [
      "an integer that is not 4 bytes",
      () => {
        // Protocol Version Major: header at 8 (msg) + 8 (req header) + 8 (protocol version) = 24
        const b = Buffer.from(good);
        assert.equal(b.readUIntBE(24, 3), T.ProtocolVersionMajor);
        b.writeUInt32BE(8, 28);
        return b;
      },
    ],
    [
      "non-zero padding",
      () => {
        const b = Buffer.from(good);
        b[24 + 8 + 5] = 7;
        return b;
      },
    ],
    [
      "an unknown tag inside the message",
      () => {
        const b = Buffer.from(good);
        b.writeUIntBE(0x42ffee, 24, 3);
        return b;
      },
    ],
    [
      "an extension tag",
      () => {
        const b = Buffer.from(good);
        b.writeUIntBE(0x540001, 24, 3);
        return b;
      },
    ],
    [
      "an unknown item type",
      () => {
        const b = Buffer.from(good);
        b[24 + 3] = 0x0c;
        return b;
      },
    ],
    [
      "structures nested 200 deep",
      () => {
        let inner: Ttlv = struct(T.Attribute);
        for (let i = 0; i < 200; i++) inner = struct(T.Attribute, inner);
        return encodeTtlv(struct(T.RequestMessage, inner));
      },
    ],
    ["a request that is not a Request Message", () => encodeTtlv(struct(T.ResponseMessage))],
    [
      "a batch count that does not match",
      () =>
        encodeTtlv(
          struct(
            T.RequestMessage,
            struct(
              T.RequestHeader,
              struct(T.ProtocolVersion, int(T.ProtocolVersionMajor, 1), int(T.ProtocolVersionMinor, 2)),
              int(T.BatchCount, 3),
            ),
            struct(T.BatchItem, enumv(T.Operation, 0x1e)),
          ),
        ),
    ],
    [
      "protocol version 2.0",
      () =>
        encodeTtlv(
          struct(
            T.RequestMessage,
            struct(
              T.RequestHeader,
              struct(T.ProtocolVersion, int(T.ProtocolVersionMajor, 2), int(T.ProtocolVersionMinor, 0)),
              int(T.BatchCount, 1),
            ),
            struct(T.BatchItem, enumv(T.Operation, 0x1e)),
          ),
        ),
    ],
  ];

  for (const [name, make] of cases) {
    test(`${name}: Invalid Message, and the server keeps serving`, async () => {
      const s = await open();
      const r = resultOf(await exchange(s, make()));
      s.destroy();
      assert.deepEqual(r, { status: ResultStatus.OperationFailed, reason: ResultReason.InvalidMessage });
      await stillServes();
    });
  }

  test("a header announcing a 2 GiB message is refused at once and the connection closed", async () => {
    const s = await open();
    const header = Buffer.alloc(8);
    header.writeUIntBE(T.RequestMessage, 0, 3);
    header[3] = 1;
    header.writeUInt32BE(0x7ffffff8, 4);
    const r = resultOf(await exchange(s, header));
    assert.deepEqual(r, { status: ResultStatus.OperationFailed, reason: ResultReason.InvalidMessage });
    await new Promise((resolve) => (s.closed ? resolve(null) : s.once("close", resolve)));
    await stillServes();
  });

  test("random bytes, a truncated message and an unknown operation never crash the server", async () => {
    for (let i = 0; i < 20; i++) {
      const s = await open();
      const junk = randomBytes(8 + (i % 5) * 16);
      const r = await exchange(s, junk);
      if (r) assert.equal(resultOf(r)?.status, ResultStatus.OperationFailed);
      s.destroy();
    }
    // Truncated: the server waits for the rest; the connection is closed from our side.
    const s = await open();
    s.write(good.subarray(0, good.length - 8));
    await new Promise((r) => setTimeout(r, 50));
    s.destroy();
    const u = await open();
    const unknown = encodeTtlv(
      struct(
        T.RequestMessage,
        struct(
          T.RequestHeader,
          struct(T.ProtocolVersion, int(T.ProtocolVersionMajor, 1), int(T.ProtocolVersionMinor, 2)),
          int(T.BatchCount, 1),
        ),
        struct(T.BatchItem, enumv(T.Operation, 0x21), struct(T.RequestPayload)),
      ),
    );
    assert.deepEqual(resultOf(await exchange(u, unknown)), {
      status: ResultStatus.OperationFailed,
      reason: ResultReason.OperationNotSupported,
    });
    u.destroy();
    await stillServes();
  });
});
