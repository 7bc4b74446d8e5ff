// Resident-set-size sampler: reads VmRSS from /proc/<pid>/status every intervalMs (default 100 ms), optionally
// summed over the process's descendants (for servers that fork per connection).
import { readdirSync, readFileSync } from "node:fs";

export interface RssSample {
  /** Peak resident set in bytes over the sampling window. */
  peakBytes: number;
  samples: number;
}

export interface RssSampler {
  stop(): RssSample;
}

/** VmRSS of one process in bytes, or 0 if it is gone. */
export function rssBytes(pid: number): number {
  try {
    const m = readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmRSS:\s+(\d+)\s+kB/m);
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** pid and all its descendants, from /proc/<pid>/stat parent links. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // field 4 (ppid) follows the ")" that closes the command name
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(entry));
      children.set(ppid, list);
    } catch {
      // process exited while scanning
    }
  }
  const out: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.shift() as number;
    out.push(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return out;
}

/** Starts sampling; stop() returns the peak. With tree=true sums RSS over pid and its descendants. */
export function startRssSampler(pid: number, options: { intervalMs?: number; tree?: boolean } = {}): RssSampler {
  const { intervalMs = 100, tree = false } = options;
  let peak = 0;
  let samples = 0;
  const sample = () => {
    const pids = tree ? processTree(pid) : [pid];
    let total = 0;
    for (const p of pids) total += rssBytes(p);
    peak = Math.max(peak, total);
    samples++;
  };
  sample();
  const timer = setInterval(sample, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      sample();
      return { peakBytes: peak, samples };
    },
  };
}
