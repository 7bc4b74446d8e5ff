// File names that are not UTF-8: refused with a clear error, never decoded lossily (two such names would both become
// U+FFFD and one would replace the other). Driven by paramiko (Debian's python3-paramiko), which sends path bytes as
// given.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { run } from "../../helpers/sftp-clients.ts";
import { type Fixture, startFixture } from "./fixture.ts";

let f: Fixture;
before(async () => {
  f = await startFixture();
});
after(() => f.close());

const SCRIPT = String.raw`
import json, sys, paramiko
port, key = int(sys.argv[1]), sys.argv[2]
t = paramiko.Transport(("127.0.0.1", port))
t.connect(username="alice", pkey=paramiko.Ed25519Key.from_private_key_file(key))
s = paramiko.SFTPClient.from_transport(t)
out = {}
def attempt(label, fn):
    try:
        fn()
        out[label] = "ok"
    except Exception as e:
        out[label] = "%s: %s" % (type(e).__name__, e)
def put(name, data):
    def go():
        with s.open(name, "wb") as fh:
            fh.write(data)
    return go
attempt("latin1-e-acute", put(b"/caf\xe9.txt", b"one"))
attempt("latin1-e-grave", put(b"/caf\xe8.txt", b"two"))
attempt("mkdir", lambda: s.mkdir(b"/dir\xff"))
attempt("rename", lambda: (put("/ok.txt", b"ok")(), s.rename("/ok.txt", b"/bad\xc3")))
attempt("utf8", put("/café.txt", b"three"))
out["listing"] = sorted(s.listdir("/"))
print(json.dumps(out))
s.close(); t.close()
`;

test("paramiko: names that are not UTF-8 are refused (open, mkdir, rename); UTF-8 names work byte-exact", async () => {
  const r = await run("/usr/bin/python3", ["-c", SCRIPT, String(f.port), f.keyFile], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as Record<string, string | string[]>;
  for (const k of ["latin1-e-acute", "latin1-e-grave", "mkdir", "rename"]) {
    assert.match(String(out[k]), /not valid UTF-8/, k);
  }
  assert.equal(out.utf8, "ok");
  assert.deepEqual(out.listing, ["café.txt", "ok.txt"]);
  assert.equal((await f.readFile("/café.txt")).toString(), "three");
  assert.equal((await f.readFile("/ok.txt")).toString(), "ok");
  assert.deepEqual([(await f.quota()).usedFiles, (await f.quota()).usedBytes], [2, 7]);
});

test("the vfs refuses names with a lone surrogate (no UTF-8 form) from any door", async () => {
  const s = await f.app.openSession("alice", { protocol: "cli", sessionId: "names-test" });
  try {
    for (const name of ["/x\uD800.txt", "/x\uDC00.txt"]) {
      await assert.rejects(s.openWrite(name, { truncate: true }), { code: "INVALID_PATH" });
      await assert.rejects(s.mkdir(name), { code: "INVALID_PATH" });
    }
    // A well-formed pair (an emoji) is fine.
    await s.mkdir("/\u{1F600}");
    assert.ok((await s.list("/")).some((e) => e.name === "\u{1F600}"));
  } finally {
    await s.close();
  }
});
