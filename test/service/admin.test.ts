// Admin use-cases name the acting user: `--as` / ATREST_AS on the CLI, else the OS user; roles are checked.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { App, initData } from "../../src/app.ts";
import type { AuditRecord } from "../../src/audit/types.ts";
import { osUser } from "../../src/service/actor.ts";
import { cli, removeDir, tempDir } from "../helpers/atrest.ts";

describe("admin use-cases", () => {
  let dir: string;
  let data: string;
  before(async () => {
    dir = await tempDir("atrest-admin-");
    data = join(dir, "data");
  });
  after(() => removeDir(dir));

  it("the CLI audits the acting user: --as, ATREST_AS, else the OS user; the target is the effective user", async () => {
    const env = { ...process.env, ATREST_AS: "" };
    await cli(["init", "--data", data]);
    await cli(["user", "add", "carol", "--password-stdin", "--as", "jane", "--data", data], "carol-pass\n", env);
    await cli(["group", "add", "ops", "--data", data], undefined, { ...env, ATREST_AS: "kim" });
    await cli(["folder", "add", "/shared", "--data", data], undefined, env);
    await cli(["user", "rm", "carol", "--data", data], undefined, env);
    const records = (await cli(["audit", "tail", "-n", "50", "--data", data])).stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as AuditRecord);
    const pick = (action: string) => records.find((r) => r.action === action);
    assert.deepEqual(
      ["user.add", "group.change", "folder.change", "user.remove"].map((a) => {
        const r = pick(a);
        return [a, r?.user, r?.role, r?.protocol, r?.effectiveUser ?? r?.target];
      }),
      [
        ["user.add", "jane", "admin", "cli", "carol"],
        ["group.change", "kim", "admin", "cli", "ops"],
        ["folder.change", osUser(), "admin", "cli", "/shared"],
        ["user.remove", osUser(), "admin", "cli", "carol"],
      ],
    );
    assert.ok(!records.some((r) => r.user === "admin"), "no hard-coded admin principal");
  });

  it("checks the actor's role: an auditor may list but not change", async () => {
    await initData(data);
    const app = await App.open(data);
    try {
      const auditor = { user: "eve", role: "auditor" as const, protocol: "http" as const };
      await assert.rejects(app.admin.addUser(auditor, { name: "dave", password: "x" }), {
        code: "PERMISSION_DENIED",
        message: /adding a user needs role admin \(eve is auditor\)/,
      });
      await assert.rejects(app.admin.putFolder(auditor, "/x", {}), { code: "PERMISSION_DENIED" });
      assert.ok(Array.isArray(await app.admin.listUsers(auditor)));
      await assert.rejects(app.admin.listUsers({ ...auditor, role: "user" }), { code: "PERMISSION_DENIED" });
      const seen: AuditRecord[] = [];
      app.audit.onRecord((r) => seen.push(r));
      await app.admin.addUser(
        { user: "web-admin", role: "admin", protocol: "http", sourceIp: "192.0.2.4", sessionId: "s1" },
        { name: "dave", password: "dave-pass" },
      );
      assert.throws(() => app.admin.pgp(auditor), { code: "PERMISSION_DENIED" });
      await app.admin.pgp({ user: "web-admin", role: "admin", protocol: "http" }).createOrgKey({ name: "Example Org" });
      app.audit.flush();
      const org = seen.find((r) => r.action === "pgp.orgkey.create");
      assert.deepEqual([org?.user, org?.role, org?.protocol], ["web-admin", "admin", "http"]);
      const add = seen.find((r) => r.action === "user.add");
      assert.deepEqual(
        [add?.user, add?.protocol, add?.sourceIp, add?.sessionId, add?.effectiveUser],
        ["web-admin", "http", "192.0.2.4", "s1", "dave"],
      );
    } finally {
      await app.close();
    }
  });

  it("user set changes only what it names; a disabled user has no login id and no file session", async () => {
    await cli(["user", "add", "fay", "--password-stdin", "--group", "ops", "--data", data], "fay-pass-long\n");
    await cli(["user", "set", "fay", "--quota-bytes", "100", "--perm", "/:list,download", "--disable", "--data", data]);
    await assert.rejects(cli(["user", "set", "fay", "--data", data]), /nothing to change/);
    const list = JSON.parse((await cli(["user", "list", "--json", "--data", data])).stdout) as Record<
      string,
      unknown
    >[];
    const fay = list.find((u) => u.name === "fay");
    assert.deepEqual([fay?.quotaBytes, fay?.groups, fay?.disabled], [100, ["ops"], true]);
    const app = await App.open(data);
    try {
      assert.equal(await app.userId("fay"), undefined, "no login id: the server's sweep ends fay's connections");
      await assert.rejects(app.openSession("fay", { protocol: "http", sessionId: "x" }), { code: "PERMISSION_DENIED" });
      const admin = { user: "web-admin", role: "admin" as const, protocol: "http" as const };
      const ended: string[] = [];
      const live = { endUser: (name: string) => ended.push(name) };
      const back = await app.admin.changeUser(admin, "fay", { disabled: false, groups: [] }, live);
      assert.deepEqual([back.disabled, back.groups, back.quotaBytes], [undefined, [], 100]);
      assert.equal(typeof (await app.userId("fay")), "string");
      await app.admin.changeUser(admin, "fay", { disabled: true }, live);
      assert.deepEqual(ended, ["fay"], "disabling ends the live connections of this process");
      await assert.rejects(app.admin.changeUser({ ...admin, user: "fay" }, "fay", { disabled: true }), {
        code: "REFUSED",
      });
    } finally {
      await app.close();
    }
  });
});
