#!/usr/bin/env node
// The process entry: the CLI itself is runCli (./run.ts), which tests also call in-process.
// First: decides whether ssh2 may load its native binding (ATREST_SSH_CRYPTO), before anything imports ssh2.
import "./ssh-crypto-switch.ts";
import { processIo, runCli } from "./run.ts";

// Everything atrest writes (keys, metadata, blobs, logs) is private to the service account.
process.umask(0o077);

process.exitCode = await runCli(process.argv.slice(2), processIo());
