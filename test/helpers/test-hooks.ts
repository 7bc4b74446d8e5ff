// Test hooks driven by the test's environment (src/test-hooks.ts): the production CLI never reads these variables.
// Installed in-process by test/helpers/atrest.ts (so cli() sees them) and in child processes by test-entry.ts.
//   ATREST_TEST_MODE=1 enables them; then
//   ATREST_TEST_CLOCK_FILE=<file>: the key manager's "now" is the ISO 8601 time in the file (missing file: real time)
//   ATREST_TEST_CRASH_<KIND>_AFTER_BATCHES=<n>: a key job (rewrap, reencrypt) kills itself (SIGKILL) after n batches
//   ATREST_TEST_SSE_C_OVER_HTTP=1: the S3 door takes SSE-C requests over plain HTTP from loopback clients
import { readFileSync } from "node:fs";
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
    crashPoint(kind, batch) {
      if (env.ATREST_TEST_MODE !== "1") return;
      const at = Number(env[`ATREST_TEST_CRASH_${kind.toUpperCase()}_AFTER_BATCHES`]);
      if (Number.isInteger(at) && at > 0 && batch >= at) process.kill(process.pid, "SIGKILL");
    },
  });
}
