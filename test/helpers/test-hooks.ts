// Test hooks driven by the test's environment (src/test-hooks.ts): the production CLI never reads these variables.
// Installed in-process by test/helpers/atrest.ts (so cli() sees them) and in child processes by test-entry.ts.
//   ATREST_TEST_MODE=1 enables them; then
//   ATREST_TEST_CLOCK_FILE=<file>: the key manager's "now" is the ISO 8601 time in the file (missing file: real time)
//   ATREST_TEST_CRASH_<KIND>_AFTER_BATCHES=<n>: a key job (rewrap, reencrypt) kills itself (SIGKILL) after n batches
//   ATREST_TEST_SSE_C_OVER_HTTP=1: the S3 door takes SSE-C requests over plain HTTP from loopback clients
//   ATREST_TEST_META=<postgres:// URL of a database>: every data dir that names no metadata store gets a schema of
//   its own there (the PostgreSQL test matrix, scripts/test-postgres.ts)
import { createHash } from "node:crypto";
import { readFileSync, realpathSync } from "node:fs";
import { resolve } from "node:path";
import { installTestHooks } from "../../src/test-hooks.ts";

/** The clock an environment asks for (read on every call, so a test may set the variables later). */
export function envClock(env: NodeJS.ProcessEnv = process.env): () => Date | undefined {
  return () => {
    const file = env.ATREST_TEST_MODE === "1" ? env.ATREST_TEST_CLOCK_FILE : undefined;
    if (!file) return undefined;
    let text: string;
    try {
      text = readFileSync(file, "utf8").trim();
    } catch {
      return undefined;
    }
    const t = Date.parse(text);
    if (Number.isNaN(t)) throw new Error(`ATREST_TEST_CLOCK_FILE ${file} does not hold an ISO 8601 time`);
    return new Date(t);
  };
}

export function installEnvTestHooks(env: NodeJS.ProcessEnv = process.env): () => void {
  return installTestHooks({
    now: envClock(env),
    sseCOverHttp: () => env.ATREST_TEST_MODE === "1" && env.ATREST_TEST_SSE_C_OVER_HTTP === "1",
    metaStore: (root) => matrixStore(env, root),
    crashPoint(kind, batch) {
      if (env.ATREST_TEST_MODE !== "1") return;
      const at = Number(env[`ATREST_TEST_CRASH_${kind.toUpperCase()}_AFTER_BATCHES`]);
      if (Number.isInteger(at) && at > 0 && batch >= at) process.kill(process.pid, "SIGKILL");
    },
  });
}

/** The matrix's schema for a data dir: named after its real path, so every process on the directory finds it. */
function matrixStore(env: NodeJS.ProcessEnv, root: string): string | undefined {
  const base = env.ATREST_TEST_META;
  if (!base) return undefined;
  let path = resolve(root);
  try {
    path = realpathSync(path);
  } catch {
    // not created yet: the same name as the resolved path then
  }
  const u = new URL(base);
  u.searchParams.set("schema", `d_${createHash("sha256").update(path).digest("hex").slice(0, 24)}`);
  return u.toString();
}
