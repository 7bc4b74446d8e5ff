// Node's on-disk compile cache for the sync client (module.enableCompileCache): a device starts `atrest sync run
// --once` for every step, and each start strips the types of and compiles every module again without it (about
// 0.2 s of CPU and 30 MB of RSS on 2 cores). Only inside the device's existing private state directory (mode 0700,
// ours): a cache in a shared place such as /tmp could be planted by another local user and run as our code.
// Plain JavaScript, so that bin/atrest.js can turn it on before the first TypeScript module loads: whatever is
// stripped before the cache is on is stripped every time, and the first strip loads the stripper itself (amaro's
// WebAssembly, 60-100 ms and 20 MB of RSS). main.ts imports it first too (for `node src/cli/main.ts sync …`).
import { statSync } from "node:fs";
import { enableCompileCache } from "node:module";
import { homedir } from "node:os";
import { join, resolve } from "node:path";

/** @param {string[]} argv */
function stateDir(argv) {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--state" && argv[i + 1]) return argv[i + 1];
    if (a.startsWith("--state=")) return a.slice(8);
  }
  return process.env.ATREST_SYNC_STATE || join(homedir(), ".atrest-sync");
}

const argv = process.argv.slice(2);
if (argv[0] === "sync") {
  const dir = resolve(stateDir(argv));
  try {
    const st = statSync(dir);
    if (st.isDirectory() && (st.mode & 0o077) === 0 && st.uid === process.getuid?.())
      enableCompileCache(join(dir, "compile-cache"));
  } catch {
    // no state directory yet (enrolment): no cache
  }
}
