// Process-wide cleanup: every spawned child and temp dir is registered here and torn down on normal exit, on an
// uncaught error and on SIGINT/SIGTERM. Handlers are synchronous so they also run from process 'exit'.
import { rmSync } from "node:fs";

type Cleanup = () => void;

const cleanups = new Set<Cleanup>();
let installed = false;
let ran = false;

/** Registers a synchronous cleanup; returns a function that unregisters it. */
export function onCleanup(fn: Cleanup): () => void {
  install();
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}

/** Runs every registered cleanup once, newest first. Safe to call more than once. */
export function runCleanups(): void {
  if (ran) return;
  ran = true;
  for (const fn of [...cleanups].reverse()) {
    try {
      fn();
    } catch {
      // best effort: keep tearing the rest down
    }
  }
  cleanups.clear();
}

/** Removes a directory tree on cleanup. */
export function removeOnCleanup(dir: string): () => void {
  return onCleanup(() => rmSync(dir, { recursive: true, force: true }));
}

function install(): void {
  if (installed) return;
  installed = true;
  process.on("exit", runCleanups);
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(signal, () => {
      process.stderr.write(`\nbench: ${signal}, cleaning up\n`);
      runCleanups();
      process.exit(signal === "SIGINT" ? 130 : 143);
    });
  }
}
