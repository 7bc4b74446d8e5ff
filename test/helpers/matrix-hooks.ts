// Preloaded into every test process of the PostgreSQL matrix (scripts/test-postgres.ts: node --import): installs the
// environment-driven test hooks (./test-hooks.ts) also in test files that never import helpers/atrest.ts, so every
// App they open finds its data dir's schema through ATREST_TEST_META.
import { installEnvTestHooks } from "./test-hooks.ts";

installEnvTestHooks();
