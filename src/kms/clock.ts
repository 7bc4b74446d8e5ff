// The key manager's clock: the system time. Tests that need days to pass (rotation and scheduled destruction) install
// a `now` hook in-process (src/test-hooks.ts); the production entry never does, and no environment variable moves it.

import { testHooks } from "../test-hooks.ts";

export function kmsClock(): () => Date {
  return () => testHooks().now?.() ?? new Date();
}
