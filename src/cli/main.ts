#!/usr/bin/env node
// The process entry: the CLI itself is runCli (./run.ts), which tests also call in-process.
// First: the compile cache, then whether ssh2 may load its native binding (ATREST_SSH_CRYPTO), before anything
// imports ssh2.
import "./compile-cache.js";
import "./ssh-crypto-switch.ts";

// Everything atrest writes (keys, metadata, blobs, logs) is private to the service account.
process.umask(0o077);

const argv = process.argv.slice(2);
if (argv[0] === "sync") {
  // the sync client loads only what it needs: on a device, start-up time and memory are the user's (half the RSS and
  // a fraction of the start-up of the whole CLI, which loads every server module)
  const { runSyncCli } = await import("./sync.ts");
  process.exitCode = await runSyncCli(argv);
} else {
  const { processIo, runCli } = await import("./run.ts");
  process.exitCode = await runCli(argv, processIo());
}
