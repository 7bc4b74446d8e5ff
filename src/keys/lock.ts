// One key job (rewrap, reencrypt, journal replay) at a time per data directory: a lock file holding the owner's pid.
// A lock whose process is gone (crash) is taken over.
import { closeSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { AtrestError } from "../errors.ts";
import { alive } from "../fsutil/process.ts";

export interface JobLock {
  release(): void;
}

/** The pid holding the lock in `dir`, if a live process holds it. */
export function lockHolder(dir: string): number | undefined {
  try {
    const pid = Number(readFileSync(join(dir, "job.lock"), "utf8"));
    return Number.isInteger(pid) && pid > 0 && alive(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

export async function acquireJobLock(dir: string, what: string): Promise<JobLock> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, "job.lock");
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, "wx", 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      let held = true;
      return {
        release() {
          if (held) rmSync(path, { force: true });
          held = false;
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const holder = lockHolder(dir);
      if (holder !== undefined && holder !== process.pid) {
        throw new AtrestError("EXISTS", `another key job is running (pid ${holder}); ${what} waits for it to finish`);
      }
      rmSync(path, { force: true }); // left by a crashed job
    }
  }
  throw new AtrestError("EXISTS", `cannot take the key job lock in ${dir}`);
}
