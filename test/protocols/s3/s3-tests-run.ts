// Runs subsets of ceph/s3-tests (../shared/peers/run-s3-tests.sh) against a fresh `atrest server` with three users'
// key pairs (main, alt, tenant) and the SSE-KMS keys testkey-1/-2 they may name; shared by s3-tests.test.ts
// (core+sse-c) and s3-tests-subsets.test.ts (multipart, list-v2, presigned). A failure outside the documented
// exclusions (./s3-tests-exclusions.ts, docs/s3.md "Conformance") fails the test; the counts are diagnostics.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { TestContext } from "node:test";
import { cli, ROOT } from "../../helpers/atrest.ts";
import { type S3Atrest, startS3Atrest } from "../../helpers/s3.ts";
import { run } from "../../helpers/sftp-clients.ts";
import { EXCLUSIONS, exclusionOf } from "./s3-tests-exclusions.ts";

/** ../shared/peers beside the repository (or ATREST_PEERS). */
function peersDir(): string {
  const candidates = [process.env.ATREST_PEERS, join(ROOT, "..", "shared", "peers"), "/work/shared/peers"];
  for (const c of candidates) if (c && existsSync(join(c, "run-s3-tests.sh"))) return c;
  throw new Error(`ceph/s3-tests runner not found (looked in ${candidates.filter(Boolean).join(", ")})`);
}

export interface CaseResult {
  id: string;
  outcome: "passed" | "failed" | "error" | "skipped";
  message: string;
}

/** The testcases of a pytest --junitxml report. */
export function parseJunit(xml: string): CaseResult[] {
  const out: CaseResult[] = [];
  const unxml = (s: string) =>
    s
      .replace(/&lt;/g, "<")
      .replace(/&gt;/g, ">")
      .replace(/&quot;/g, '"')
      .replace(/&apos;/g, "'")
      .replace(/&#10;/g, "\n")
      .replace(/&amp;/g, "&");
  for (const m of xml.matchAll(/<testcase\b([^>]*?)(\/>|>([\s\S]*?)<\/testcase>)/g)) {
    const name = /\bname="([^"]*)"/.exec(m[1] as string)?.[1] ?? "";
    const body = m[3] ?? "";
    const tag = /<(failure|error|skipped)\b([^>]*)/.exec(body);
    const outcome = tag ? (tag[1] === "failure" ? "failed" : (tag[1] as "error" | "skipped")) : "passed";
    const message = tag ? unxml(/\bmessage="([^"]*)"/.exec(tag[2] as string)?.[1] ?? "") : "";
    // a test that passed but failed in teardown has a passing case and an error case under one name
    const prev = out.find((c) => c.id === unxml(name));
    if (prev) {
      if (outcome !== "passed") Object.assign(prev, { outcome, message });
    } else out.push({ id: unxml(name), outcome, message });
  }
  return out;
}

const USERS = { main: "testid", alt: "altuser", tenant: "tenantuser" } as const;

export interface Conformance {
  s3: S3Atrest;
  /** The s3tests.conf naming the server and the three users' keys. */
  conf: string;
}

/** A fresh server for the suite and its configuration file. */
export async function startConformance(prefix: string): Promise<Conformance> {
  const s3 = await startS3Atrest({
    prefix,
    users: Object.values(USERS),
    // SSE-C over plain HTTP on loopback (the suite runs without TLS here); the region the suite's api_name names
    env: { ATREST_TEST_MODE: "1", ATREST_TEST_SSE_C_OVER_HTTP: "1" },
    extra: ["--s3-region", "default", "--s3-public-access", "allow"],
    async setup(data) {
      // the suite's SSE-KMS key ids (its defaults): keys each user may name in their home
      for (const k of ["testkey-1", "testkey-2"]) await cli(["kms", "key", "create", k, "--data", data]);
      for (const u of Object.values(USERS)) {
        await cli(["folder", "add", `/${u}`, "--allow-key", "testkey-1", "testkey-2", "--data", data]);
      }
    },
  });
  const section = (name: string, user: string, more = "") => {
    const k = s3.keys[user];
    assert.ok(k);
    return `[s3 ${name}]\ndisplay_name = ${user}\nuser_id = ${user}\nemail = ${user}@example.com\naccess_key = ${k.id}\nsecret_key = ${k.secret}\n${more}`;
  };
  const conf = join(s3.dir, "s3tests.conf");
  await writeFile(
    conf,
    [
      `[DEFAULT]\nhost = 127.0.0.1\nport = ${s3.s3Port}\nis_secure = False\nssl_verify = False\n`,
      "[fixtures]\nbucket prefix = atrest-{random}-\niam name prefix = s3-tests-\niam path prefix = /s3-tests/\n",
      section("main", USERS.main, "api_name = default\n"),
      section("alt", USERS.alt),
      section("tenant", USERS.tenant, "tenant = testx\n"),
      // the harness reads these sections even when no IAM test runs
      "[iam]\nemail = iam@example.com\nuser_id = iam\naccess_key = AKIAM000000000000000\nsecret_key = none\ndisplay_name = iam\n",
      "[iam root]\naccess_key = AKIAMROOT00000000000\nsecret_key = none\nuser_id = root\nemail = root@example.com\n",
      "[iam alt root]\naccess_key = AKIAMALTROOT0000000\nsecret_key = none\nuser_id = altroot\nemail = altroot@example.com\n",
    ].join("\n"),
  );
  return { s3, conf };
}

/** The pytest node ids of `subset`. */
export async function collect(conf: string, subset: string): Promise<string[]> {
  const runner = join(peersDir(), "run-s3-tests.sh");
  const collected = await run(runner, [conf, subset, "--collect-only", "-p", "no:warnings"], { timeoutMs: 120_000 });
  const ids = collected.stdout.split("\n").filter((l) => l.includes("::"));
  assert.ok(ids.length > 0, `collected no test:\n${collected.stdout.slice(-2000)}${collected.stderr.slice(-2000)}`);
  return ids;
}

const nameOf = (id: string) => id.slice(id.indexOf("::") + 2);

/**
 * Runs the tests `ids` of `subset` (all of it by default), but those excluded as lacking or client-side ("pending" ones
 * run, so that the day they pass shows), and asserts that every failure is an excluded one.
 */
export async function runConformance(
  t: TestContext,
  c: Conformance,
  subset: string,
  options: { ids: string[]; label?: string; timeoutMs?: number },
): Promise<void> {
  const runner = join(peersDir(), "run-s3-tests.sh");
  const report = join(c.s3.dir, `junit-${subset}.xml`);
  const started = Date.now();
  const all = await collect(c.conf, subset);
  const wanted = new Set(options.ids);
  const notRun = (id: string) => {
    if (!wanted.has(id)) return true;
    const e = exclusionOf(nameOf(id));
    return e !== undefined && e.kind !== "pending";
  };
  // pytest's --deselect takes node id prefixes: an id that starts another one that must run is run too (and its
  // failure is excluded as usual)
  const skipped = all.filter((id) => notRun(id) && !all.some((o) => o !== id && o.startsWith(id) && !notRun(o)));
  const label = options.label ?? subset;
  const expected = all.length - skipped.length;
  if (expected === 0) {
    t.diagnostic(`s3-tests ${label}: every test is excluded`);
    return;
  }
  const r = await run(
    runner,
    [c.conf, subset, "-q", "-p", "no:warnings", `--junitxml=${report}`, ...skipped.flatMap((id) => ["--deselect", id])],
    { timeoutMs: options.timeoutMs ?? 1_750_000 },
  );
  const seconds = ((Date.now() - started) / 1000).toFixed(0);
  assert.ok(
    existsSync(report),
    `no report from pytest (exit ${r.code}):\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-3000)}`,
  );
  const cases = parseJunit(await readFile(report, "utf8"));
  const count = (o: CaseResult["outcome"]) => cases.filter((x) => x.outcome === o).length;
  const excludedNotRun = skipped.filter((id) => wanted.has(id)).length;
  t.diagnostic(
    `s3-tests ${label}: ${options.ids.length} tests, ${excludedNotRun} not run (excluded: lacks, client); of ` +
      `${cases.length} run: ${count("passed")} passed, ${count("failed")} failed, ${count("error")} errors, ` +
      `${count("skipped")} skipped (${seconds} s)`,
  );
  const bad = cases.filter((x) => x.outcome === "failed" || x.outcome === "error");
  t.diagnostic(`failing and excluded (run): ${bad.filter((x) => exclusionOf(x.id)).length}`);
  const nowPassing = cases.filter((x) => x.outcome === "passed" && exclusionOf(x.id));
  if (nowPassing.length > 0) {
    t.diagnostic(
      `excluded but passing now (remove from s3-tests-exclusions.ts): ${nowPassing.map((x) => x.id).join(" ")}`,
    );
  }
  assert.equal(cases.length, expected, `not every selected test ran:\n${r.stdout.slice(-2000)}`);
  const unexpected = bad
    .filter((x) => !exclusionOf(x.id))
    .map((x) => `${x.id} (${x.outcome}): ${x.message.slice(0, 300)}`);
  assert.deepEqual(unexpected, [], `s3-tests failing outside the exclusions:\n${unexpected.join("\n")}`);
}

/** Exclusion entries that name no test of `ids` (stale entries). */
export function unusedExclusions(ids: string[]): string[] {
  const names = ids.map(nameOf);
  return EXCLUSIONS.flatMap((e) => e.tests).filter(
    (p) => !names.some((n) => (p.endsWith("*") ? n.startsWith(p.slice(0, -1)) : n === p)),
  );
}
