// Temp dirs under os.tmpdir()/atrest-bench-*, removed on cleanup.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { removeOnCleanup } from "./cleanup.ts";

export function makeTempDir(prefix = "atrest-bench-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  removeOnCleanup(dir);
  return dir;
}
