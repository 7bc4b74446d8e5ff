// Golden tests for the SIEM encoders: expected strings written by hand from the specs (CEF rev 25 "Character
// Encoding", LEEF 2.0 "LEEF event components", RFC 5424 §6), for events with hostile values and both users.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { cefHeader, cefValue, encodeCef } from "../../src/audit/encoders/cef.ts";
import { encodeEcsJson } from "../../src/audit/encoders/ecs-json.ts";
import { encodeLeef, leefDelimiterField } from "../../src/audit/encoders/leef.ts";
import { encodeRfc5424, headerField, sdValue } from "../../src/audit/encoders/rfc5424.ts";
import { ACTIONS, type AuditRecord, ecs } from "../../src/audit/types.ts";

const time = "2026-11-23T10:24:38.123Z";
const ms = 1795429478123;
// path with = \ | newline ] and " in it; effective user with | and ^ (the LEEF delimiter below); non-ASCII job user
const nastyPath = '/in/a=b\\c|d\ne]"f.txt';
const upload: AuditRecord = {
  time,
  action: "upload",
  outcome: "success",
  user: "jörg",
  effectiveUser: "svc|bot^x",
  protocol: "sftp",
  sourceIp: "::ffff:192.0.2.7",
  sessionId: "s-1",
  path: nastyPath,
  size: 1234,
  keyRef: "kek:default:v2",
};
const loginFail: AuditRecord = {
  time,
  action: "login",
  outcome: "failure",
  user: "mallory\tx",
  protocol: "sftp",
  sourceIp: "2001:db8::1",
  sessionId: "c7",
  method: "password",
  reason: "bad password",
};

describe("CEF", () => {
  it("escapes header | and \\, extension = \\ and newlines", () => {
    assert.equal(cefHeader("Acme|Corp\\x=y"), "Acme\\|Corp\\\\x=y");
    assert.equal(cefValue("a=b\\c|d\ne\rf"), "a\\=b\\\\c|d\\ne\\rf");
  });
  it("encodes an upload with both users, key ref and a hostile path", () => {
    assert.equal(
      encodeCef(upload, { vendor: "Acme|Sec\\", product: "atrest" }, { seq: 7 }),
      "CEF:0|Acme\\|Sec\\\\|atrest|0.1.0|upload|File upload|3|" +
        `rt=${ms} act=upload outcome=success suser=jörg src=192.0.2.7 app=sftp proto=TCP ` +
        String.raw`fname=a\=b\\c|d\ne]"f.txt filePath=/in/a\=b\\c|d\ne]"f.txt fsize=1234 externalId=7 ` +
        String.raw`msg=File upload success: jörg as svc|bot^x /in/a\=b\\c|d\ne]"f.txt ` +
        "cs1=svc|bot^x cs1Label=effectiveUser cs2=kek:default:v2 cs2Label=keyRef cs3=s-1 cs3Label=sessionId",
    );
  });
  it("encodes a failed login from IPv6 (c6a2) with method and reason", () => {
    assert.equal(
      encodeCef(loginFail),
      "CEF:0|atrest|atrest|0.1.0|login|Login|5|" +
        `rt=${ms} act=login outcome=failure suser=mallory\tx c6a2=2001:db8::1 c6a2Label=sourceIPv6Address ` +
        "app=sftp proto=TCP msg=Login failure: mallory\tx (bad password) " +
        "cs1=mallory\tx cs1Label=effectiveUser cs3=c7 cs3Label=sessionId cs4=password cs4Label=authMethod " +
        "cs6=bad password cs6Label=reason",
    );
  });
  it("names the target user of an IAM event in duser and the role in spriv", () => {
    const r: AuditRecord = { time, action: "user.add", outcome: "success", user: "root", role: "admin", target: "bob" };
    assert.equal(
      encodeCef(r),
      `CEF:0|atrest|atrest|0.1.0|user.add|User add|6|rt=${ms} act=user.add outcome=success suser=root spriv=admin ` +
        "duser=bob msg=User add success: root bob cs1=root cs1Label=effectiveUser",
    );
  });
});

describe("LEEF 2.0", () => {
  it("writes the delimiter as itself or xHH", () => {
    assert.equal(leefDelimiterField("^"), "^");
    assert.equal(leefDelimiterField("\t"), "x09");
    assert.equal(leefDelimiterField("|"), "x7C");
  });
  it("encodes an upload with ^ as delimiter, replacing it (and newlines) in values", () => {
    assert.equal(
      encodeLeef({ ...upload }, { delimiter: "^", vendor: "Ac|me" }, { seq: 7 }),
      "LEEF:2.0|Ac_me|atrest|0.1.0|upload|^|" +
        "devTime=2026-11-23T10:24:38.123Z^devTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSSX^cat=file^sev=3^action=upload^" +
        "outcome=success^usrName=jörg^effectiveUser=svc|bot_x^src=192.0.2.7^proto=sftp^sessionId=s-1^" +
        'resource=/in/a=b\\c|d e]"f.txt^filePath=/in/a=b\\c|d e]"f.txt^fileSize=1234^keyRef=kek:default:v2^seq=7',
    );
  });
  it("encodes a failed login with the default tab delimiter (x09) and identSrc", () => {
    assert.equal(
      encodeLeef(loginFail),
      "LEEF:2.0|atrest|atrest|0.1.0|login|x09|" +
        [
          "devTime=2026-11-23T10:24:38.123Z",
          "devTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSSX",
          "cat=authentication",
          "sev=5",
          "action=login",
          "outcome=failure",
          "usrName=mallory_x",
          "effectiveUser=mallory_x",
          "src=2001:db8::1",
          "identSrc=2001:db8::1",
          "proto=sftp",
          "sessionId=c7",
          "authMethod=password",
          "reason=bad password",
        ].join("\t"),
    );
  });
  it("uses a space when the delimiter is _ and refuses =", () => {
    assert.match(encodeLeef({ ...upload, effectiveUser: "a_b" }, { delimiter: "_" }), /_effectiveUser=a b_/);
    assert.throws(() => encodeLeef(upload, { delimiter: "=" }), RangeError);
  });
});

describe("RFC 5424", () => {
  it('escapes " \\ and ] in SD values only', () => {
    assert.equal(sdValue('a"b\\c]d=e'), 'a\\"b\\\\c\\]d=e');
  });
  it("keeps header fields PRINTUSASCII within their length, NILVALUE when empty", () => {
    assert.equal(headerField("my host é", 255), "my_host__");
    assert.equal(headerField(undefined, 48), "-");
    assert.equal(headerField("", 48), "-");
    assert.equal(headerField("x".repeat(40), 32), "x".repeat(32));
  });
  it("encodes an upload: PRI 110 (audit, informational), SD with escapes, BOM before a UTF-8 MSG", () => {
    // the line break in the path becomes U+FFFD in the SD value: LF-framed transports would split the message there
    assert.equal(
      encodeRfc5424(upload, { hostname: "files-1", procId: 4242 }, { seq: 7 }),
      "<110>1 2026-11-23T10:24:38.123Z files-1 atrest 4242 upload " +
        '[atrest@32473 action="upload" outcome="success" user="jörg" effectiveUser="svc|bot^x" ' +
        'srcIp="::ffff:192.0.2.7" protocol="sftp" sessionId="s-1" path="/in/a=b\\\\c|d\uFFFDe\\]\\"f.txt" size="1234" ' +
        'keyRef="kek:default:v2" seq="7"] \uFEFFFile upload success: jörg as svc|bot^x /in/a=b\\c|d e]"f.txt',
    );
  });
  it("encodes a failed login: PRI 109 (notice), NILVALUE host and procid, ASCII MSG without BOM", () => {
    assert.equal(
      encodeRfc5424(loginFail),
      "<109>1 2026-11-23T10:24:38.123Z - atrest - login " +
        '[atrest@32473 action="login" outcome="failure" user="mallory\tx" effectiveUser="mallory\tx" ' +
        'srcIp="2001:db8::1" protocol="sftp" sessionId="c7" method="password" reason="bad password"] ' +
        "Login failure: mallory\tx (bad password)",
    );
  });
  it("uses the given facility and enterprise number; a destroy is critical", () => {
    const r: AuditRecord = { time, action: "key.destroy", outcome: "success", user: "c1", keyRef: "kek:k:v1" };
    assert.match(encodeRfc5424(r, { facility: 10, enterpriseNumber: 99999 }), /^<82>1 .* key\.destroy \[atrest@99999 /);
  });
});

describe("ECS", () => {
  it("maps both users, source, action, outcome, category and file fields", () => {
    const line = encodeEcsJson(upload, { seq: 7 });
    assert.ok(!line.includes("\n"));
    assert.deepEqual(JSON.parse(line), {
      "@timestamp": time,
      ecs: { version: "8.11.0" },
      event: {
        kind: "event",
        action: "upload",
        outcome: "success",
        category: ["file"],
        type: ["creation"],
        severity: 3,
        sequence: 7,
      },
      user: { name: "jörg", effective: { name: "svc|bot^x" } },
      message: `File upload success: jörg as svc|bot^x ${nastyPath}`,
      source: { ip: "::ffff:192.0.2.7" },
      network: { protocol: "sftp" },
      file: { path: nastyPath, size: 1234 },
      atrest: { session_id: "s-1", key_ref: "kek:default:v2" },
    });
  });
  it("has an entry for every action (the compiler checks the table; this checks the mapping runs)", () => {
    for (const action of Object.keys(ACTIONS) as (keyof typeof ACTIONS)[]) {
      const doc = ecs({ time, action, outcome: "failure", user: "u" });
      assert.equal(doc.user.effective.name, "u");
      assert.ok(["authentication", "file", "iam", "configuration"].includes(doc.event.category[0] as string));
    }
  });
});
