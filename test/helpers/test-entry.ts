#!/usr/bin/env node
// The CLI entry for child processes of tests: installs the environment-driven test hooks (./test-hooks.ts), then runs
// the production entry. Production starts src/cli/main.ts (or bin/atrest.js), which installs none.
import { installEnvTestHooks } from "./test-hooks.ts";

installEnvTestHooks();
await import("../../src/cli/main.ts");
