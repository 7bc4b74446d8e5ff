// Every audit output format against hostile input (issue 11 item 11): random records whose user names, paths, reasons
// and details carry control characters, separators (| = \ tab ] "), line breaks, terminal escapes (ESC, C1 CSI),
// Unicode line separators and bidi overrides. Each encoding is parsed back with a parser for its format (written from
// the format's spec for CEF and LEEF, JSON.parse for ECS and the CLI's JSON view, RFC 5424 by rsyslog's mmpstrucdata
// in the real-receiver test) and must give back exactly the fields it was given (controls shown as U+FFFD where the
// format has no escape), on one line, with no byte a terminal or a line-framed transport acts on.
import assert from "node:assert/strict";
import { createConnection } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { encodeCef } from "../../src/audit/encoders/cef.ts";
import { encodeEcsJson } from "../../src/audit/encoders/ecs-json.ts";
import { encodeLeef } from "../../src/audit/encoders/leef.ts";
import { encodeRfc5424 } from "../../src/audit/encoders/rfc5424.ts";
import { ACTIONS, type AuditAction, type AuditRecord } from "../../src/audit/types.ts";
import { renderMatch } from "../../src/cli/audit.ts";
import { removeDir, tempDir } from "../helpers/atrest.ts";

export const RUNS = Number(process.env.ATREST_PROPERTY_RUNS ?? 300);

/** Characters an attacker would put in a file name or a user name, mixed with ordinary text. */
const HOSTILE = [
  "\n",
  "\r",
  "\r\n",
  "\t",
  "\u0000",
  "\u001b[31m",
  "\u001b]0;owned\u0007",
  "\u009b2J",
  "\u0085",
  "\u2028",
  "\u2029",
  "\u202e",
  "\u2066",
  "\u007f",
  "\u000b",
  "\u000c",
  "|",
  "=",
  "\\",
  "]",
  '"',
  "^",
  " ",
  "  ",
  " -> ",
  "cs1=",
  "usrName=",
  '" x="',
  "]<14>1 ",
  "\ufeff",
  "\ufffd",
  "é",
  "🔥",
];
export const hostileString = fc
  .array(
    fc.oneof(fc.constantFrom(...HOSTILE), fc.string({ maxLength: 6 }), fc.string({ unit: "binary", maxLength: 4 })),
    {
      maxLength: 12,
    },
  )
  .map((parts) => parts.join(""));

const actions = Object.keys(ACTIONS) as AuditAction[];
export const hostileRecord: fc.Arbitrary<AuditRecord> = fc.record(
  {
    time: fc.constant("2026-11-23T10:24:38.123Z"),
    action: fc.constantFrom(...actions),
    outcome: fc.constantFrom("success" as const, "failure" as const),
    user: hostileString,
    effectiveUser: hostileString,
    role: hostileString,
    protocol: fc.constantFrom("sftp" as const, "cli" as const, "kms" as const),
    sourceIp: fc.constantFrom("192.0.2.7", "2001:db8::1", "::ffff:198.51.100.2"),
    sessionId: hostileString,
    path: hostileString.map((s) => `/${s}`),
    targetPath: hostileString.map((s) => `/${s}`),
    size: fc.nat(),
    keyRef: hostileString,
    method: hostileString,
    reason: hostileString,
    target: hostileString,
    detail: hostileString,
  },
  { requiredKeys: ["time", "action", "outcome", "user"] },
);

// biome-ignore lint/suspicious/noControlCharactersInRegex: the point is to find them
const UNSAFE = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: the point is to find them
const UNSAFE_G = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
/** What a value must read back as in a format without an escape for controls. */
const shown = (s: string) => s.replace(UNSAFE_G, "\ufffd");
/** CEF escapes CR and LF (\r \n); the other controls have no escape. */
const cefShown = (s: string) => s.replace(UNSAFE_G, (c) => (c === "\r" || c === "\n" ? c : "\ufffd"));

function assertOneSafeLine(line: string): void {
  assert.doesNotMatch(line, UNSAFE, `unsafe character in ${JSON.stringify(line)}`);
}

/** CEF per the ArcSight spec: 7 header fields split on unescaped `|`, then key=value pairs split on unescaped `=`. */
export function parseCef(line: string): { header: string[]; ext: Map<string, string> } {
  const header: string[] = [];
  let cur = "";
  let i = 0;
  for (; i < line.length && header.length < 7; i++) {
    const c = line[i] as string;
    if (c === "\\" && (line[i + 1] === "|" || line[i + 1] === "\\")) {
      cur += line[++i];
    } else if (c === "|") {
      header.push(cur);
      cur = "";
    } else cur += c;
  }
  const rest = line.slice(i);
  // keys are [A-Za-z0-9]+ preceded by a space (or the start); a value runs until the next unescaped " key="
  const ext = new Map<string, string>();
  const re = /(?:^| )([A-Za-z0-9]+)=/g;
  const starts: { key: string; at: number; end: number }[] = [];
  for (let m = re.exec(rest); m; m = re.exec(rest)) {
    // a match whose `=` is escaped is not a key (the value holds `\=`); count backslashes before it
    let bs = 0;
    for (let j = m.index + m[0].length - 2; j >= 0 && rest[j] === "\\"; j--) bs++;
    if (bs % 2 === 1) continue;
    starts.push({ key: m[1] as string, at: m.index + m[0].length, end: m.index });
  }
  starts.forEach((s, k) => {
    const raw = rest.slice(s.at, k + 1 < starts.length ? (starts[k + 1] as { end: number }).end : rest.length);
    ext.set(
      s.key,
      raw.replace(/\\(.)/g, (_m, ch: string) => (ch === "n" ? "\n" : ch === "r" ? "\r" : ch)),
    );
  });
  return { header, ext };
}

/** LEEF 2.0: 6 header fields split on `|`, then attributes split on the delimiter, key=value at the first `=`. */
export function parseLeef(line: string): { header: string[]; attrs: Map<string, string> } {
  // header fields hold no `|` (the encoder replaces it), so the first six pipes end them
  const header: string[] = [];
  let at = 0;
  for (let k = 0; k < 6; k++) {
    const bar = line.indexOf("|", at);
    header.push(line.slice(at, bar));
    at = bar + 1;
  }
  const rest = line.slice(at);
  const field = header[5] as string;
  const d = /^x[0-9A-F]{2}$/.test(field) ? String.fromCharCode(Number.parseInt(field.slice(1), 16)) : field;
  const attrs = new Map<string, string>();
  for (const kv of rest.split(d)) {
    const eq = kv.indexOf("=");
    attrs.set(kv.slice(0, eq), kv.slice(eq + 1));
  }
  return { header, attrs };
}

describe("audit encoders against hostile input (fast-check)", () => {
  it("CEF: one safe line; the spec's parser gets every field back", () => {
    fc.assert(
      fc.property(hostileRecord, (r) => {
        const line = encodeCef(r, {}, { seq: 7 });
        assertOneSafeLine(line);
        const { header, ext } = parseCef(line);
        assert.equal(header.length, 7);
        assert.equal(header[4], r.action);
        assert.equal(ext.get("suser"), cefShown(r.user));
        if (r.path !== undefined) assert.equal(ext.get("filePath"), cefShown(r.path));
        if (r.reason !== undefined) assert.equal(ext.get("cs6"), cefShown(r.reason));
        if (r.targetPath !== undefined) assert.equal(ext.get("cs5"), cefShown(r.targetPath));
        assert.equal(ext.get("externalId"), "7");
        assert.equal(ext.get("outcome"), r.outcome);
      }),
      { numRuns: RUNS },
    );
  });

  it("LEEF (tab and ^ delimiters): one safe line; attributes split cleanly and read back", () => {
    fc.assert(
      fc.property(hostileRecord, fc.constantFrom("\t", "^", "|"), (r, delimiter) => {
        const line = encodeLeef(r, { delimiter });
        assertOneSafeLine(line);
        const { header, attrs } = parseLeef(line);
        assert.equal(header[4], r.action);
        const rep = "_";
        const leef = (s: string) =>
          shown(
            s
              .replace(/\r\n|[\r\n]/g, (m) => (m === "\r\n" ? "  " : " "))
              .split(delimiter)
              .join(rep),
          );
        assert.equal(attrs.get("usrName"), leef(r.user));
        assert.equal(attrs.get("outcome"), r.outcome);
        if (r.reason !== undefined) assert.equal(attrs.get("reason"), leef(r.reason));
      }),
      { numRuns: RUNS },
    );
  });

  it("RFC 5424: one safe line; SD params unescape to the values", () => {
    fc.assert(
      fc.property(hostileRecord, (r) => {
        const line = encodeRfc5424(r, { hostname: "h" }, { seq: 3 });
        assertOneSafeLine(line);
        const params = parseSd(line);
        assert.equal(params.get("user"), shown(r.user));
        if (r.path !== undefined) assert.equal(params.get("path"), shown(r.path));
        if (r.detail !== undefined) assert.equal(params.get("detail"), shown(r.detail));
        assert.equal(params.get("seq"), "3");
      }),
      { numRuns: RUNS },
    );
  });

  it("ECS JSON and the CLI's JSON view: one safe line; JSON.parse gives the exact values", () => {
    fc.assert(
      fc.property(hostileRecord, (r) => {
        const ecs = encodeEcsJson(r, { seq: 1 });
        assertOneSafeLine(ecs);
        const doc = JSON.parse(ecs);
        assert.equal(doc.user.name, r.user);
        if (r.path !== undefined) assert.equal(doc.file.path, r.path);
        const view = renderMatch({ seq: 1, record: r }, "json");
        assertOneSafeLine(view);
        assert.deepEqual(JSON.parse(view), { seq: 1, ...r });
      }),
      { numRuns: RUNS },
    );
  });

  it("the CLI's text view (atrest audit tail/logins/file): no terminal escape, no line break, columns intact", () => {
    fc.assert(
      fc.property(hostileRecord, (r) => {
        const text = renderMatch({ seq: 1, record: r }, "text");
        assertOneSafeLine(text);
        assert.doesNotMatch(text, /\t/, "a tab is shown as \\t");
        // the four leading columns are whole: time, action, outcome, then the user (plain or a JSON string)
        const cols = text.split("  ", 3);
        assert.equal(cols[0], r.time);
        assert.equal(cols[1], r.action);
        assert.equal(cols[2], r.outcome);
        const who = text.slice(cols.join("  ").length + 2);
        const user = who.startsWith('"')
          ? JSON.parse(who.slice(0, jsonEnd(who)))
          : who.split("  ")[0]?.split(" as ")[0];
        assert.equal(user, r.user);
      }),
      { numRuns: RUNS },
    );
  });
});

/** Where the JSON string at the start of `s` ends. */
function jsonEnd(s: string): number {
  for (let i = 1; i < s.length; i++) {
    if (s[i] === "\\") i++;
    else if (s[i] === '"') return i + 1;
  }
  return s.length;
}

/** RFC 5424 §6.3.3: PARAM-NAME="PARAM-VALUE" with \" \\ \] escaped. */
function parseSd(line: string): Map<string, string> {
  const start = line.indexOf("[");
  const out = new Map<string, string>();
  const re = / ([A-Za-z]+)="((?:[^"\\\]]|\\["\\\]])*)"/y;
  let i = line.indexOf(" ", start);
  for (;;) {
    re.lastIndex = i;
    const m = re.exec(line);
    if (!m) break;
    out.set(m[1] as string, (m[2] as string).replace(/\\(["\\\]])/g, "$1"));
    i = re.lastIndex;
  }
  assert.equal(line[i], "]", `SD ends where the parser stopped: ${line.slice(i, i + 20)}`);
  return out;
}

describe("RFC 5424 with hostile values through a real rsyslog (imtcp, octet-counting; mmpstrucdata)", () => {
  let dir: string;
  let rs: { port: number; out: string; stop(): Promise<void>; waitFor(n: number, ms?: number): Promise<string[]> };
  before(async () => {
    dir = await tempDir("atrest-hostile-");
    rs = await startParsingRsyslog(dir);
  });
  after(async () => {
    await rs?.stop();
    await removeDir(dir);
  });

  it("rsyslog parses every message into the SD params that were sent, one message each", async () => {
    const records = fc.sample(hostileRecord, { numRuns: 200, seed: 42 });
    const lines = records.map((r, i) => encodeRfc5424(r, { hostname: "h" }, { seq: i + 1 }));
    const sock = createConnection({ host: "127.0.0.1", port: rs.port });
    await new Promise<void>((res, rej) => sock.once("connect", res).once("error", rej));
    for (const l of lines) {
      const b = Buffer.from(l, "utf8");
      sock.write(`${b.length} `);
      sock.write(b);
    }
    sock.end();
    const got = await rs.waitFor(records.length, 30_000);
    assert.equal(got.length, records.length, "one parsed message per record, none split");
    got.forEach((json, i) => {
      const r = records[i] as AuditRecord;
      const sd = JSON.parse(json)["atrest@32473"];
      assert.equal(sd.seq, String(i + 1));
      assert.equal(sd.user, shown(r.user));
      if (r.path !== undefined) assert.equal(sd.path, shown(r.path));
      if (r.reason !== undefined) assert.equal(sd.reason, shown(r.reason));
    });
  });
});

async function startParsingRsyslog(dir: string) {
  const { freePort } = await import("./receivers.ts");
  const { mkdir, writeFile, readFile } = await import("node:fs/promises");
  const { spawn } = await import("node:child_process");
  await mkdir(join(dir, "work"), { recursive: true });
  const port = await freePort();
  const out = join(dir, "parsed.log");
  const conf = join(dir, "rsyslog.conf");
  await writeFile(
    conf,
    [
      `global(workDirectory="${dir}/work" maxMessageSize="64k" parser.escapeControlCharactersOnReceive="off")`,
      'module(load="imtcp")',
      'module(load="mmpstrucdata")',
      `template(name="sd" type="string" string="%$!rfc5424-sd%\\n")`,
      `ruleset(name="siem" queue.type="Direct") { action(type="mmpstrucdata" sd_name.lowercase="off") action(type="omfile" file="${out}" template="sd") }`,
      `input(type="imtcp" port="${port}" address="127.0.0.1" ruleset="siem")`,
      "",
    ].join("\n"),
  );
  const proc = spawn("rsyslogd", ["-n", "-f", conf, "-i", join(dir, "rsyslogd.pid")], { stdio: "ignore" });
  const deadline = Date.now() + 15_000;
  for (;;) {
    const ok = await new Promise<boolean>((res) => {
      const s = createConnection({ host: "127.0.0.1", port });
      s.once("connect", () => {
        s.destroy();
        res(true);
      });
      s.once("error", () => res(false));
    });
    if (ok) break;
    if (Date.now() > deadline || proc.exitCode !== null) throw new Error("rsyslogd did not start");
    await new Promise((r) => setTimeout(r, 50));
  }
  const lines = async () => (await readFile(out, "utf8").catch(() => "")).split("\n").filter((l) => l.length > 0);
  return {
    port,
    out,
    async waitFor(n: number, ms = 20_000) {
      const end = Date.now() + ms;
      for (;;) {
        const got = await lines();
        if (got.length >= n || Date.now() > end) return got;
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async stop() {
      if (proc.exitCode !== null) return;
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGTERM");
      await exited;
    },
  };
}
