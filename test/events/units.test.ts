import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { inTimeWindow, matches, mismatch } from "../../src/events/conditions.ts";
import { backoffMs } from "../../src/events/engine.ts";
import type { TriggerEvent } from "../../src/events/event.ts";
import { globMatches, validateGlob } from "../../src/events/glob.ts";
import { parseRule } from "../../src/events/rules.ts";
import { nextCron, nextFire, parseCron, parseInterval } from "../../src/events/schedule.ts";
import { expand, fileFields } from "../../src/events/template.ts";

const upload = (over: Partial<TriggerEvent> = {}): TriggerEvent => ({
  kind: "upload",
  time: "2026-11-23T10:00:00.000Z",
  user: "alice",
  effectiveUser: "alice",
  protocol: "sftp",
  path: "/exchange/in/a.csv",
  size: 1000,
  ...over,
});

describe("globs", () => {
  it("match global paths with minimatch semantics", () => {
    assert.ok(globMatches("/in/a.csv", "/in/*.csv"));
    assert.ok(!globMatches("/in/sub/a.csv", "/in/*.csv"));
    assert.ok(globMatches("/in/sub/a.csv", "/in/**/*.csv"));
    assert.ok(globMatches("/in/b.txt", "/in/{a.csv,b.txt}"));
    assert.ok(!globMatches("/in/.hidden.csv", "/in/*.csv"));
  });
  it("refuse relative and unbalanced patterns with the reason", () => {
    assert.throws(() => validateGlob("in/*.csv"), /bad glob "in\/\*\.csv": must be an absolute path/);
    assert.throws(() => validateGlob("/in/[a.csv"), /unclosed \[/);
    assert.throws(() => validateGlob("/in/{a,b.csv"), /unclosed \{/);
    assert.throws(() => validateGlob("/in/a}.csv"), /unbalanced \}/);
    validateGlob("/in/[}]x/{a,b}/**");
  });
});

describe("schedules", () => {
  it("parse intervals and refuse nonsense", () => {
    assert.equal(parseInterval("90s"), 90_000);
    assert.equal(parseInterval("15m"), 900_000);
    assert.equal(parseInterval("2d"), 172_800_000);
    assert.throws(() => parseInterval("0s"), /bad interval/);
    assert.throws(() => parseInterval("5 minutes"), /bad interval/);
  });
  it("compute the next cron time in UTC", () => {
    const t0 = Date.parse("2026-11-23T10:17:30Z"); // a Monday
    assert.equal(new Date(nextCron(parseCron("*/15 * * * *"), t0)).toISOString(), "2026-11-23T10:30:00.000Z");
    assert.equal(new Date(nextCron(parseCron("0 2 * * *"), t0)).toISOString(), "2026-11-24T02:00:00.000Z");
    assert.equal(new Date(nextCron(parseCron("0 9 * * 6,0"), t0)).toISOString(), "2026-11-28T09:00:00.000Z");
    assert.equal(new Date(nextCron(parseCron("30 4 1 * *"), t0)).toISOString(), "2026-12-01T04:30:00.000Z");
    // both day fields restricted: either matches (POSIX)
    assert.equal(new Date(nextCron(parseCron("0 0 25 * 2"), t0)).toISOString(), "2026-11-24T00:00:00.000Z");
    assert.equal(nextFire({ every: "1h" }, t0), t0 + 3_600_000);
  });
  it("refuse bad cron fields naming the field", () => {
    assert.throws(() => parseCron("61 * * * *"), /minute "61"/);
    assert.throws(() => parseCron("* * *"), /want 5 fields/);
    assert.throws(() => nextCron(parseCron("0 0 31 2 *"), Date.now()), /never matches/);
  });
});

describe("conditions", () => {
  const actor = { groups: ["partners"] };
  it("all present conditions must hold", () => {
    const c = { groups: ["partners"], paths: ["/exchange/in/*.csv"], size: { min: 1, max: 5000 } };
    assert.ok(matches(c, upload(), actor));
    assert.ok(!matches(c, upload(), { groups: ["staff"] }), "non-member");
    assert.ok(!matches(c, upload({ path: "/exchange/out/a.csv" }), actor), "other path");
    assert.ok(!matches(c, upload({ size: 0 }), actor), "too small");
    assert.ok(!matches(c, upload({ size: 5001 }), actor), "too big");
    assert.ok(!matches({ protocols: ["http"] }, upload(), actor), "protocol");
    assert.ok(matches({ users: ["bob", "alice"] }, upload(), actor));
    assert.ok(!matches({ users: ["bob"] }, upload(), actor));
  });
  it("explain the first failing condition", () => {
    const c = { groups: ["partners"], paths: ["/exchange/in/*.csv"], size: { max: 5000 } };
    assert.equal(mismatch(c, upload(), actor), undefined);
    assert.equal(mismatch(c, upload(), { groups: [] }), "alice is not a member of partners");
    assert.equal(mismatch(c, upload({ path: "/x/a.csv" }), actor), "path /x/a.csv matches none of /exchange/in/*.csv");
    assert.equal(mismatch(c, upload({ size: 9000 }), actor), "size 9000 is outside 0..5000");
  });
  it("a rename matches on its target", () => {
    const e = upload({ kind: "rename", path: "/exchange/in/a.tmp", targetPath: "/exchange/in/a.csv" });
    assert.ok(matches({ paths: ["/exchange/in/*.csv"] }, e, actor));
  });
  it("time windows honour days, time zones and midnight", () => {
    const monday10utc = new Date("2026-11-23T10:00:00Z");
    assert.ok(inTimeWindow({ from: "09:00", to: "17:00", days: ["mon"] }, monday10utc));
    assert.ok(!inTimeWindow({ from: "09:00", to: "17:00", days: ["tue"] }, monday10utc));
    // 10:00 UTC is 19:00 in Tokyo
    assert.ok(!inTimeWindow({ from: "09:00", to: "17:00", timeZone: "Asia/Tokyo" }, monday10utc));
    // 22:00-06:00 starting Sunday: Monday 03:00 is inside, Monday 22:30 is not (Monday not listed)
    const w = { from: "22:00", to: "06:00", days: ["sun" as const] };
    assert.ok(inTimeWindow(w, new Date("2026-11-23T03:00:00Z")));
    assert.ok(!inTimeWindow(w, new Date("2026-11-23T22:30:00Z")));
    assert.ok(inTimeWindow(w, new Date("2026-11-22T22:30:00Z")));
  });
});

describe("rule documents", () => {
  const base = { name: "r1", owner: "ops", event: "upload", actions: [{ type: "delete" }] };
  it("parse with defaults", () => {
    const r = parseRule(base);
    assert.equal(r.enabled, true);
    assert.deepEqual(r.retry, { attempts: 5, delaySeconds: 5, maxDelaySeconds: 900 });
    assert.deepEqual(r.conditions, {});
  });
  it("name the first bad field in one line", () => {
    assert.throws(() => parseRule({ ...base, name: "Bad Name" }), /^AtrestError: rule name: use 1-64/);
    assert.throws(() => parseRule({ ...base, event: "uploaded" }), /rule event/);
    assert.throws(() => parseRule({ ...base, actions: [{ type: "explode" }] }), /rule actions\.0\.type/);
    assert.throws(
      () => parseRule({ ...base, actions: [{ type: "retention", path: "/a", olderThanDays: 1, mode: "archive" }] }),
      /archive mode needs archiveTo/,
    );
    assert.throws(() => parseRule({ ...base, conditions: { size: { min: 5, max: 1 } } }), /size\.min is above/);
    assert.throws(() => parseRule({ ...base, colour: "red" }), /rule \(rule\): Unrecognized key/);
  });
});

describe("templates and backoff", () => {
  it("expand file and event fields, refusing unknown ones", () => {
    const f = { ...fileFields("/in/report.final.csv", new Date("2026-11-23T10:01:02Z")), user: "alice" };
    assert.equal(expand("{stem}-{date}{time}.{ext}", f), "report.final-20261123100102.csv");
    assert.equal(expand("{dir}/{name} by {user}", f), "/in/report.final.csv by alice");
    assert.throws(() => expand("{nope}", f), /template field \{nope\}/);
  });
  it("doubles the delay up to the cap", () => {
    const r = { attempts: 5, delaySeconds: 2, maxDelaySeconds: 10 };
    assert.deepEqual(
      [1, 2, 3, 4, 5].map((n) => backoffMs(r, n, () => 0.5)),
      [2000, 4000, 8000, 10000, 10000],
    );
  });
});
