// Node's on-disk compile cache for the sync client (module.enableCompileCache): a device starts `atrest sync run
// --once` for every step, and each start strips the types of and compiles every module again without it (about
// 0.2 s of CPU and 30 MB of RSS on 2 cores). Only inside the device's existing private state directory (mode 0700,
// ours): a cache in a shared place such as /tmp could be planted by another local user and run as our code. Imported
// first by main.ts, so it is on before the rest loads.
import { statSync } from "node:fs";
import { enableCompileCache } from "node:module";
import { homedir } from "node:os";
import { join, resolve } from "node:path";

function stateDir(argv: string[]): string {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === "--state" && argv[i + 1]) return argv[i + 1] as string;
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
