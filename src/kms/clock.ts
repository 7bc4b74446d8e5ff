// The key manager's clock. Production uses the system time. Multi-process tests (rotation and scheduled destruction
// fall due after days) may move it: with ATREST_TEST_MODE=1, ATREST_TEST_CLOCK_FILE names a file holding an ISO 8601
// time that every KMS process reads as "now" (missing file: system time). Both variables are test-only and ignored
// unless ATREST_TEST_MODE is exactly "1".

import { readFileSync } from "node:fs";

export function kmsClock(env: NodeJS.ProcessEnv = process.env): () => Date {
  const file = env.ATREST_TEST_MODE === "1" ? env.ATREST_TEST_CLOCK_FILE : undefined;
  if (!file) return () => new Date();
  return () => {
    let text: string;
    try {
      text = readFileSync(file, "utf8").trim();
    } catch {
      return new Date();
    }
    const t = Date.parse(text);
    if (Number.isNaN(t)) throw new Error(`ATREST_TEST_CLOCK_FILE ${file} does not hold an ISO 8601 time`);
    return new Date(t);
  };
}
