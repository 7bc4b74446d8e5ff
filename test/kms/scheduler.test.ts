import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { kmsClock } from "../../src/kms/clock.ts";
import { KmsDb } from "../../src/kms/db.ts";
import { Keyring } from "../../src/kms/keyring.ts";
import { KmsScheduler } from "../../src/kms/scheduler.ts";
import { KmsService } from "../../src/kms/service.ts";
import { installTestHooks } from "../../src/test-hooks.ts";
import { envClock } from "../helpers/test-hooks.ts";
import { DAY, isErr, openFixture, operator, server } from "./fixture.ts";

const ctx = { fileId: "f-1" };

describe("scheduler: automatic rotation", () => {
  it("fires when the cryptoperiod elapses; old wraps still unwrap, new wraps use the new version", async () => {
    const f = await openFixture();
    try {
      f.kms.createKey(operator, "auto", { rotation: "auto", rotationDays: 30 });
      const old = f.kms.generateDataKey(server, "auto", ctx);
      const scheduler = new KmsScheduler(f.kms);
      f.clock.advanceDays(29);
      assert.deepEqual(scheduler.tick()?.rotated, []);
      f.clock.advanceDays(1);
      assert.deepEqual(scheduler.tick()?.rotated, ["kek:auto:v2"]);
      assert.deepEqual(scheduler.tick()?.rotated, []); // once per period
      const fresh = f.kms.generateDataKey(server, "auto", ctx);
      assert.equal(fresh.keyRef, "kek:auto:v2");
      assert.deepEqual(f.kms.unwrap(server, old.wrapped, ctx).plaintext, old.plaintext);
      const info = f.kms.getKey(operator, "auto");
      assert.equal(info.rotation.nextRotationAt, new Date(f.clock.t + 30 * DAY).toISOString());
      const audit = f.events.find((e) => e.action === "key.rotate" && e.user === "kms-scheduler");
      assert.equal(audit?.keyRef, "kek:auto:v2");
      assert.match(audit?.detail ?? "", /"trigger":"cryptoperiod"/);
      // manual and none keys are left alone
      f.kms.createKey(operator, "man");
      f.clock.advanceDays(400);
      const run = scheduler.tick();
      assert.deepEqual(run?.rotated, ["kek:auto:v3"]); // a late scheduler rotates once, not once per missed period
      assert.equal(f.kms.getKey(operator, "man").currentVersion, 1);
    } finally {
      await f.close();
    }
  });

  it("due time comes from stored timestamps: survives a restart and two schedulers rotate once", async () => {
    const f = await openFixture();
    try {
      f.kms.createKey(operator, "persist", { rotation: "auto", rotationDays: 10 });
      f.clock.advanceDays(10);
      // a second process on the same database, opened after the due time
      const db2 = new KmsDb(join(f.dir, "kms.db"));
      const other = new KmsService(new Keyring(db2, Buffer.from(f.master), { now: f.clock.now, refreshMs: 0 }));
      try {
        const a = new KmsScheduler(other).tick();
        const b = new KmsScheduler(f.kms).tick();
        assert.deepEqual([...(a?.rotated ?? []), ...(b?.rotated ?? [])], ["kek:persist:v2"]);
        assert.equal(f.kms.getKey(operator, "persist").currentVersion, 2);
      } finally {
        other.close();
        db2.close();
      }
    } finally {
      await f.close();
    }
  });

  it("imported keys never auto-rotate; errors are reported, not thrown", async () => {
    const f = await openFixture();
    try {
      assert.throws(
        () => f.kms.keyring.createKey("byok", { material: Buffer.alloc(32, 1), rotation: "auto", rotationDays: 1 }),
        isErr("INVALID_INPUT", /imported/),
      );
      const errors: unknown[] = [];
      const s = new KmsScheduler(f.kms, { onError: (e) => errors.push(e) });
      f.kms.close();
      assert.equal(s.tick(), undefined);
      assert.match(String(errors[0]), /closed/);
    } finally {
      await f.close();
    }
  });
});

describe("test clock", () => {
  it("the test helper honours ATREST_TEST_CLOCK_FILE only with ATREST_TEST_MODE=1", async () => {
    const f = await openFixture();
    try {
      const file = join(f.dir, "clock");
      await writeFile(file, "2031-05-06T07:08:09Z\n");
      assert.equal(
        envClock({ ATREST_TEST_MODE: "1", ATREST_TEST_CLOCK_FILE: file })()?.toISOString(),
        "2031-05-06T07:08:09.000Z",
      );
      assert.equal(envClock({ ATREST_TEST_CLOCK_FILE: file })(), undefined);
      assert.equal(envClock({ ATREST_TEST_MODE: "1", ATREST_TEST_CLOCK_FILE: join(f.dir, "none") })(), undefined);
      await writeFile(file, "yesterday");
      assert.throws(() => envClock({ ATREST_TEST_MODE: "1", ATREST_TEST_CLOCK_FILE: file })(), /ISO 8601/);
    } finally {
      await f.close();
    }
  });

  it("the key manager's clock is the system time unless a test installs a hook in-process", () => {
    const clock = kmsClock();
    assert.ok(Math.abs(clock().getTime() - Date.now()) < 5000);
    const remove = installTestHooks({ now: () => new Date("2040-01-01T00:00:00Z") });
    try {
      assert.equal(clock().toISOString(), "2040-01-01T00:00:00.000Z");
    } finally {
      remove();
    }
    assert.ok(Math.abs(clock().getTime() - Date.now()) < 5000);
  });
});
