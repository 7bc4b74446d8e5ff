// Retention: deletes (or archives, keeping the relative layout) every file under a path whose modification time is
// older than N days by the engine's clock. Runs as the rule owner, typically from a schedule rule. Directories are
// kept. A rerun after a crash simply finds fewer files.

import type { ActionContext, ActionResult } from "./context.ts";
import { joinPath } from "./context.ts";

const DAY_MS = 86_400_000;

export async function retention(ctx: ActionContext): Promise<ActionResult> {
  if (ctx.action.type !== "retention") throw new Error("not a retention");
  const a = ctx.action;
  const cutoff = ctx.now() - a.olderThanDays * DAY_MS;
  if ((await ctx.fs.kind(a.path)) !== "dir") return { detail: `${a.path} does not exist` };
  let count = 0;
  let bytes = 0;
  const walk = async (dir: string, rel: string): Promise<void> => {
    for (const entry of await ctx.fs.list(dir)) {
      if (ctx.signal.aborted) throw new Error("stopped");
      const path = joinPath(dir, entry.name);
      const relPath = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.stat.kind === "dir") {
        await walk(path, relPath);
        continue;
      }
      if (entry.stat.mtime >= cutoff) continue;
      if (a.mode === "archive" && a.archiveTo) {
        const target = joinPath(a.archiveTo, relPath);
        await ctx.fs.ensureDir(target.slice(0, target.lastIndexOf("/")) || "/");
        await ctx.fs.rename(path, target, true);
      } else {
        await ctx.fs.remove(path);
      }
      count++;
      bytes += entry.stat.size;
    }
  };
  await walk(a.path, "");
  const verb = a.mode === "archive" ? `archived to ${a.archiveTo}` : "deleted";
  return { detail: `${count} file(s), ${bytes} bytes ${verb} (older than ${a.olderThanDays} d)` };
}
