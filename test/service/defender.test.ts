import assert from "node:assert/strict";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { AuditEvent } from "../../src/audit/types.ts";
import {
  BAN_MEMORY_MS,
  banDurationMs,
  DEFAULT_DEFENDER,
  Defender,
  type DefenderSettings,
  liftBans,
} from "../../src/service/defender.ts";
import { LoginService } from "../../src/service/login.ts";
import { hashPassword } from "../../src/service/passwords.ts";
import type { SqliteStore } from "../../src/store/sqlite/index.ts";
import { tempDir } from "../helpers/atrest.ts";
import { openTestStore } from "../helpers/store.ts";

const quiet = { info() {}, warn() {}, error() {}, debug() {} };

describe("brute-force defender", () => {
  let dir: string;
  let store: SqliteStore;
  let now: number;
  let audit: AuditEvent[];
  const sink = { record: (e: AuditEvent) => void audit.push(e) };
  const make = (s: Partial<DefenderSettings> = {}) =>
    new Defender({ ...DEFAULT_DEFENDER, threshold: 3, userThreshold: 5, banSeconds: 60, ...s }, store, sink, () => now);

  before(async () => {
    dir = await tempDir();
    store = await openTestStore(join(dir, "meta.db"));
  });
  after(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });
  const fresh = async () => {
    now = 1_000_000_000_000;
    audit = [];
    for (const b of await store.listBans()) await store.transaction((tx) => tx.deleteBan(b.kind, b.subject));
  };

  it("bans a source IP when its score within the observation window reaches the threshold", async () => {
    await fresh();
    const d = make({ observationSeconds: 100 });
    assert.deepEqual(await d.failure({ ip: "192.0.2.1", user: "a" }), []);
    now += 99_000;
    assert.deepEqual(await d.failure({ ip: "192.0.2.1", user: "b" }), []);
    // the first failure has left the window: 2, not 3
    now += 2_000;
    assert.deepEqual(await d.failure({ ip: "192.0.2.1", user: "c" }), []);
    assert.equal(d.score("ip", "192.0.2.1"), 2);
    const bans = await d.failure({ ip: "192.0.2.1", user: "d" });
    assert.equal(bans.length, 1);
    assert.deepEqual(
      { ...bans[0] },
      {
        kind: "ip",
        subject: "192.0.2.1",
        since: now,
        until: now + 60_000,
        count: 1,
        expiryAudited: false,
      },
    );
    assert.equal((await d.banned({ ip: "192.0.2.1", user: "zed" }))?.subject, "192.0.2.1");
    assert.equal(await d.banned({ ip: "192.0.2.2", user: "zed" }), undefined);
    assert.deepEqual(
      audit.map((e) => [e.action, e.user, e.target]),
      [["defender.ban", "defender", "192.0.2.1"]],
    );
    assert.equal(d.score("ip", "192.0.2.1"), 0, "a ban starts the score from zero");
  });

  it("bans a user name failing from several sources", async () => {
    await fresh();
    const d = make();
    for (let i = 1; i <= 4; i++) assert.deepEqual(await d.failure({ ip: `198.51.100.${i}`, user: "alice" }), []);
    const bans = await d.failure({ ip: "198.51.100.9", user: "alice" });
    assert.deepEqual(
      bans.map((b) => [b.kind, b.subject]),
      [["user", "alice"]],
    );
    assert.equal((await d.banned({ ip: "203.0.113.7", user: "alice" }))?.kind, "user");
    assert.equal(await d.banned({ ip: "203.0.113.7", user: "bob" }), undefined);
  });

  it("weighs events by their score and ignores zero-score ones", async () => {
    await fresh();
    const d = make({ threshold: 4 });
    for (let i = 0; i < 10; i++) await d.failure({ ip: "192.0.2.5" }, 0);
    assert.equal(d.score("ip", "192.0.2.5"), 0);
    await d.failure({ ip: "192.0.2.5" }, 3);
    assert.equal((await d.failure({ ip: "192.0.2.5" }, 1)).length, 1);
  });

  it("never scores or bans the allow list (addresses and CIDRs, IPv4-mapped too)", async () => {
    await fresh();
    const d = make({ allowList: ["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"] });
    for (const ip of ["127.0.0.1", "10.1.2.3", "::ffff:10.9.9.9", "2001:db8::1"]) {
      for (let i = 0; i < 10; i++) assert.deepEqual(await d.failure({ ip, user: `u${i}` }), []);
    }
    assert.equal((await store.listBans()).length, 0);
    assert.equal((await d.failure({ ip: "127.0.0.2" })).length, 0);
    await d.failure({ ip: "127.0.0.2" });
    assert.equal((await d.failure({ ip: "127.0.0.2" })).length, 1, "loopback is not allowed by default");
    assert.throws(() => make({ allowList: ["not-an-ip"] }), /not an IP or CIDR/);
  });

  it("bans expire (audited once) and a repeat ban lasts longer, up to the maximum", async () => {
    await fresh();
    const d = make({ banIncrementPercent: 50, maxBanSeconds: 100 });
    const ban = async () => {
      for (let i = 0; i < 2; i++) await d.failure({ ip: "192.0.2.9" });
      return (await d.failure({ ip: "192.0.2.9" }))[0];
    };
    const first = await ban();
    assert.equal(first.until - first.since, 60_000);
    now = first.until - 1;
    assert.ok(await d.banned({ ip: "192.0.2.9" }));
    await d.sweep();
    assert.equal(audit.filter((e) => e.action === "defender.expire").length, 0);
    now = first.until;
    assert.equal(await d.banned({ ip: "192.0.2.9" }), undefined);
    await d.sweep();
    await d.sweep();
    assert.deepEqual(
      audit.filter((e) => e.action === "defender.expire").map((e) => e.target),
      ["192.0.2.9"],
    );
    const second = await ban();
    assert.equal(second.count, 2);
    assert.equal(second.until - second.since, 90_000);
    now = second.until;
    const third = await ban();
    assert.equal(third.until - third.since, 100_000, "capped at maxBanSeconds");
    assert.equal(banDurationMs({ ...DEFAULT_DEFENDER, banSeconds: 10, banIncrementPercent: 100 }, 4), 80_000);
    // a day after it ended the history is forgotten: the next ban is a first one again
    now = third.until + BAN_MEMORY_MS + 1;
    await d.sweep();
    assert.equal((await ban()).count, 1);
  });

  it("an unban lifts IP and user bans on that subject, audited with the acting user", async () => {
    await fresh();
    const d = make({ threshold: 1, userThreshold: 1 });
    await d.failure({ ip: "192.0.2.20", user: "carol" });
    assert.equal((await store.listBans()).length, 2);
    const lifted = await liftBans(store, sink, { user: "ops", role: "admin", protocol: "cli" }, "192.0.2.20");
    assert.deepEqual(
      lifted.map((b) => b.kind),
      ["ip"],
    );
    assert.equal(await d.banned({ ip: "192.0.2.20" }), undefined);
    assert.ok(await d.banned({ ip: "192.0.2.21", user: "carol" }));
    const unban = audit.find((e) => e.action === "defender.unban");
    assert.equal(unban?.user, "ops");
    assert.equal(unban?.target, "192.0.2.20");
    assert.deepEqual(await liftBans(store, sink, { user: "ops", role: "admin", protocol: "cli" }, "nobody"), []);
  });

  it("a disabled defender neither scores nor refuses", async () => {
    await fresh();
    const d = make({ enabled: false, threshold: 1 });
    assert.deepEqual(await d.failure({ ip: "192.0.2.30" }), []);
    assert.equal((await store.listBans()).length, 0);
  });
});

describe("login service", () => {
  let dir: string;
  let store: SqliteStore;
  let audit: AuditEvent[];
  let login: LoginService;
  let defender: Defender;
  let hash: string;

  before(async () => {
    dir = await tempDir();
    store = await openTestStore(join(dir, "meta.db"));
    hash = await hashPassword("right password");
    audit = [];
    defender = new Defender({ ...DEFAULT_DEFENDER, threshold: 100, userThreshold: 100 }, store, {
      record: (e) => void audit.push(e),
    });
    const { verifyPassword } = await import("../../src/service/passwords.ts");
    login = new LoginService({
      logger: quiet,
      audit: { record: (e) => void audit.push(e) },
      defender,
      accounts: {
        async verifyPassword(user, password) {
          const stored = user === "alice" ? hash : undefined;
          return (await verifyPassword(stored, password)) && stored ? { username: user } : undefined;
        },
        async authorizedKeys(user) {
          return user === "alice" ? ["ssh-ed25519 AAAA alice"] : [];
        },
        async openSession() {
          throw new Error("not used");
        },
      },
    });
  });
  after(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  const attempt = (user: string, password: string, ip = "192.0.2.50") =>
    login.login({
      user,
      protocol: "sftp",
      sessionId: `s-${user}-${Math.random()}`,
      sourceIp: ip,
      credential: { method: "password", password },
    });

  it("an unknown user and a wrong password look the same: answer, audit reason, score, and timing", async () => {
    audit.length = 0;
    const unknown = await attempt("mallory", "guess", "192.0.2.61");
    const wrong = await attempt("alice", "guess", "192.0.2.62");
    assert.deepEqual(unknown, { outcome: "refused" });
    assert.deepEqual(wrong, unknown);
    assert.deepEqual(
      audit.map((e) => [e.action, e.outcome, e.reason, e.method]),
      [
        ["login", "failure", "bad credentials", "password"],
        ["login", "failure", "bad credentials", "password"],
      ],
    );
    assert.equal(defender.score("ip", "192.0.2.61"), defender.score("ip", "192.0.2.62"));
    assert.equal(defender.score("user", "mallory"), defender.score("user", "alice"));
    // argon2 runs for both. The fastest of interleaved attempts is the least disturbed by a loaded machine; skipping
    // argon2 for unknown users would make them ~100x faster, while load noise here reached 4x
    const times: Record<string, number[]> = { mallory: [], alice: [] };
    for (let i = 0; i < 9; i++) {
      for (const user of ["mallory", "alice"]) {
        const start = performance.now();
        await attempt(user, "guess", "192.0.2.63");
        times[user].push(performance.now() - start);
      }
    }
    const [a, b] = [Math.min(...times.mallory), Math.min(...times.alice)];
    assert.ok(a > b / 10 && a < b * 10, `unknown ${a.toFixed(1)} ms vs known ${b.toFixed(1)} ms`);
  });

  it("a banned source is refused before the credential is checked, with the same answer", async () => {
    audit.length = 0;
    const strict = new Defender({ ...DEFAULT_DEFENDER, threshold: 1 }, store, { record: () => {} });
    let checked = 0;
    const l = new LoginService({
      logger: quiet,
      audit: { record: (e) => void audit.push(e) },
      defender: strict,
      accounts: {
        async verifyPassword(user) {
          checked++;
          return user === "alice" ? { username: "alice" } : undefined;
        },
        async authorizedKeys() {
          return [];
        },
        async openSession() {
          throw new Error("not used");
        },
      },
    });
    const req = (user: string) =>
      l.login({
        user,
        protocol: "sftp",
        sessionId: "x",
        sourceIp: "192.0.2.70",
        credential: { method: "password", password: "p" },
      });
    assert.deepEqual(await req("mallory"), { outcome: "refused" });
    assert.equal(checked, 1);
    assert.deepEqual(await req("alice"), { outcome: "refused" });
    assert.equal(checked, 1, "no credential check while banned");
    assert.equal(audit.at(-1)?.reason, "banned");
  });

  it("public keys: a probe is neither success nor failure; the verdict comes from the door's check", async () => {
    audit.length = 0;
    const key = (verdict: "accepted" | "would-accept" | "bad-signature" | "not-authorized") =>
      login.login({
        user: "alice",
        protocol: "sftp",
        sessionId: "k",
        sourceIp: "192.0.2.80",
        credential: { method: "publickey", check: (keys) => (keys.length === 1 ? verdict : "not-authorized") },
      });
    assert.deepEqual(await key("would-accept"), { outcome: "probe" });
    assert.equal(audit.length, 0);
    assert.deepEqual(await key("accepted"), { outcome: "success", user: "alice" });
    assert.deepEqual(
      login.sessions().map((s) => [s.sessionId, s.user, s.protocol, s.sourceIp]),
      [["k", "alice", "sftp", "192.0.2.80"]],
    );
    assert.deepEqual(await key("bad-signature"), { outcome: "refused" });
    assert.deepEqual(
      audit.map((e) => [e.outcome, e.reason]),
      [
        ["success", undefined],
        ["failure", "bad signature"],
      ],
    );
    login.logout("k");
    assert.deepEqual(login.sessions(), []);
    assert.equal(audit.at(-1)?.action, "logout");
  });
});

describe("defender settings", () => {
  it("come from the config file, ATREST_DEFENDER_* (over the file) and default with loopback not allowed", async () => {
    const { loadConfig } = await import("../../src/config/config.ts");
    const base = loadConfig({}, undefined, {});
    assert.deepEqual(base.defender, DEFAULT_DEFENDER);
    assert.deepEqual(base.defender.allowList, []);
    const dir = await tempDir();
    try {
      const file = join(dir, "c.json");
      const { writeFile } = await import("node:fs/promises");
      await writeFile(file, JSON.stringify({ defender: { threshold: 7, allowList: ["10.0.0.0/8"] } }));
      const c = loadConfig({}, file, {
        ATREST_DEFENDER_THRESHOLD: "4",
        ATREST_DEFENDER_ENABLED: "false",
        ATREST_DEFENDER_ALLOW_LIST: "127.0.0.1, ::1",
      });
      assert.equal(c.defender.threshold, 4);
      assert.equal(c.defender.enabled, false);
      assert.deepEqual(c.defender.allowList, ["127.0.0.1", "::1"]);
      assert.equal(loadConfig({}, file, {}).defender.threshold, 7);
      assert.throws(() => loadConfig({}, undefined, { ATREST_DEFENDER_ALLOW_LIST: "nope" }), /defender\.allowList/);
      assert.throws(() => loadConfig({}, undefined, { ATREST_DEFENDER_THRESHOLD: "0" }), /defender\.threshold/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
