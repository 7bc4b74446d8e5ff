#!/usr/bin/env node
// Thin launcher so `npx atrest` works: re-exec the TypeScript entry on the pinned Node 24 (type stripping).
// A service manager or container runtime signals this process, not the child: forward the signals, so the server
// shuts down cleanly (last audit checkpoint signed), and end as the child did (its exit code, or its signal).
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { serverCompileCache } from "../src/cli/server-compile-cache.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const pinned = join(root, "node_modules", "node", "bin", "node");
const node = existsSync(pinned) ? pinned : process.execPath;
// The server runs with the process settings of src/cli/server-runtime.json (V8 young generation, glibc malloc arenas;
// docs/operations.md "Memory") and Node's compile cache in the install's .cache; a setting already in the environment
// wins.
const runtime =
  process.argv[2] === "server"
    ? JSON.parse(readFileSync(join(root, "src", "cli", "server-runtime.json"), "utf8"))
    : { nodeFlags: [], env: {} };
if (process.argv[2] === "server") Object.assign(runtime.env, serverCompileCache(root));
// `atrest sync …` runs in this process when this Node strips types itself (a device starts the client at every
// `sync run --once`: a second Node start-up would double its start-up cost), with the compile cache on before the
// first TypeScript module loads (src/cli/compile-cache.js).
if (process.argv[2] === "sync" && process.features.typescript) {
  await import("../src/cli/compile-cache.js");
  await import("../src/cli/main.ts");
} else {
  const child = spawn(node, [...runtime.nodeFlags, join(root, "src", "cli", "main.ts"), ...process.argv.slice(2)], {
    stdio: "inherit",
    env: { ...runtime.env, ...process.env },
  });

  const FORWARDED = ["SIGTERM", "SIGINT", "SIGHUP"];
  for (const signal of FORWARDED) {
    // a terminal's Ctrl-C reaches the whole process group (child included): forwarding it again is harmless
    process.on(signal, () => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    });
  }
  child.on("error", (err) => {
    process.stderr.write(`atrest: cannot start ${node}: ${err.message}\n`);
    process.exit(1);
  });
  child.on("exit", (code, signal) => {
    if (signal) {
      // die of the same signal (a parent sees "killed by SIGTERM", not a made-up exit code)
      for (const s of FORWARDED) process.removeAllListeners(s);
      process.kill(process.pid, signal);
      return;
    }
    process.exit(code ?? 1);
  });
}
