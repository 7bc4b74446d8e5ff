// Test hooks are out of production (issue 11 item 14): the production entry honours no test variable, and nothing in
// src/ reads one.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { cli, PRODUCTION_CLI, ROOT, removeDir, tempDir } from "./helpers/atrest.ts";

const execFileP = promisify(execFile);

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sources(p)));
    else if (e.name.endsWith(".ts") || e.name.endsWith(".js")) out.push(p);
  }
  return out;
}

describe("test hooks in a production run", () => {
  let dir: string;
  let data: string;
  before(async () => {
    dir = await tempDir("atrest-hooks-");
    data = join(dir, "data");
    await cli(["init", "--data", data]);
  });
  after(() => removeDir(dir));

  it("no production source reads an ATREST_TEST_ variable", async () => {
    const files = [...(await sources(join(ROOT, "src"))), join(ROOT, "bin", "atrest.js")];
    const readers: string[] = [];
    for (const f of files) if ((await readFile(f, "utf8")).includes("ATREST_TEST_")) readers.push(f);
    assert.deepEqual(readers, []);
  });

  it("ATREST_TEST_MODE with a clock file does not move the production CLI's key manager clock", async () => {
    const clock = join(dir, "clock");
    await writeFile(clock, "2099-01-01T00:00:00Z");
    // no hook installed in the child: it is the production entry, with the variables an attacker would set
    const env = { ...process.env, ATREST_TEST_MODE: "1", ATREST_TEST_CLOCK_FILE: clock };
    const run = (args: string[]) =>
      execFileP(process.execPath, [PRODUCTION_CLI, ...args, "--data", data], { cwd: ROOT, env });
    await run(["kms", "key", "create", "hr"]);
    const asked = await run(["kms", "key", "destroy", "hr", "--waiting-days", "7", "--reason", "x", "--as", "olga"]);
    const id = /request (req-[0-9a-f]+)/.exec(asked.stdout)?.[1];
    assert.ok(id, asked.stdout);
    await run(["kms", "approve", id, "--as", "alice"]);
    const two = await run(["kms", "approve", id, "--as", "bob"]);
    const when = /destruction scheduled for (\S+)/.exec(two.stdout)?.[1];
    assert.ok(when, two.stdout);
    const due = Date.parse(when) - Date.now();
    assert.ok(Math.abs(due - 7 * 86_400_000) < 600_000, `scheduled ${when}: the real clock + 7 days`);
    const shown = JSON.parse((await run(["kms", "key", "show", "hr", "--json"])).stdout);
    assert.notEqual(shown.versions[0].state, "destroyed");
  });
});
