// One key job (rewrap, reencrypt, journal replay) at a time per data directory: a lock file holding the owner's pid.
// A lock whose process is gone (crash) is taken over. On a store shared by several nodes (PostgreSQL) the job rows are
// shared too, so the job also takes the store's cluster-wide lease: one key job at a time across every node and every
// data directory's CLI; a holder that dies frees it at once and the next run, on any node, resumes at the job's cursor.
import { closeSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { AtrestError } from "../errors.ts";
import { alive } from "../fsutil/process.ts";
import type { MetaStore } from "../store/types.ts";

export interface JobLock {
  /** Throws once the cluster lease is lost (the store connection holding it broke): another node may take the job. */
  check(): void;
  release(): Promise<void>;
}

/** The lease's name in the store. */
export const KEY_JOB_LEASE = "keyjob";

/** The pid holding the lock in `dir`, if a live process holds it. */
export function lockHolder(dir: string): number | undefined {
  try {
    const pid = Number(readFileSync(join(dir, "job.lock"), "utf8"));
    return Number.isInteger(pid) && pid > 0 && alive(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

export async function acquireJobLock(dir: string, what: string, store?: MetaStore): Promise<JobLock> {
  const local = await acquireLocalLock(dir, what);
  if (!store?.holdLease) return { check() {}, release: async () => local() };
  let lease: Awaited<ReturnType<NonNullable<MetaStore["holdLease"]>>>;
  try {
    lease = await store.holdLease(KEY_JOB_LEASE);
  } catch (err) {
    local();
    throw err;
  }
  if (!lease.held) {
    local();
    const where = lease.holder ? `on node ${lease.holder}` : "on another node";
    throw new AtrestError("EXISTS", `another key job is running ${where}; ${what} waits for it to finish`);
  }
  const held = lease;
  return {
    check() {
      if (held.lost()) {
        throw new AtrestError("EXISTS", `${what} stopped: its lease in the metadata store was lost; run it again`);
      }
    },
    async release() {
      local();
      await held.release();
    },
  };
}

async function acquireLocalLock(dir: string, what: string): Promise<() => void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, "job.lock");
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, "wx", 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      let held = true;
      return () => {
        if (held) rmSync(path, { force: true });
        held = false;
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
