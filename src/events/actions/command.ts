// Runs a configured program: argv without a shell (no injection through file names), a clean environment (the
// server's own variables, which may hold configuration, are not passed) plus the event fields as ATREST_* variables,
// a timeout that kills it. A non-zero exit fails the step (and is retried like any failure).
import { spawn } from "node:child_process";
import { eventFields } from "../event.ts";
import { expand } from "../template.ts";
import { type ActionContext, type ActionResult, templateFields } from "./context.ts";

/** Event field `effectiveUser` → ATREST_EFFECTIVE_USER. */
function envName(field: string): string {
  return `ATREST_${field.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}

export async function command(ctx: ActionContext): Promise<ActionResult> {
  if (ctx.action.type !== "command") throw new Error("not a command");
  const a = ctx.action;
  const fields = templateFields(ctx);
  const argv = a.argv.map((arg) => expand(arg, fields));
  const env: Record<string, string> = { PATH: process.env.PATH ?? "/usr/bin:/bin", LANG: "C.UTF-8" };
  for (const [k, v] of Object.entries({ rule: ctx.rule.name, ...eventFields(ctx.event) })) env[envName(k)] = v;
  if (ctx.current) env.ATREST_FILE = ctx.current;
  env.ATREST_EXECUTION = ctx.executionId;
  Object.assign(env, a.env);
  const { code, signal, stderr } = await new Promise<{ code: number | null; signal: string | null; stderr: string }>(
    (resolve, reject) => {
      const child = spawn(argv[0], argv.slice(1), {
        env,
        stdio: ["ignore", "ignore", "pipe"],
        timeout: a.timeoutSeconds * 1000,
        killSignal: "SIGKILL",
        signal: ctx.signal,
      });
      let err = "";
      child.stderr.on("data", (d: Buffer) => {
        // keep only the tail: enough to explain a failure in the history
        err = (err + d.toString()).slice(-400);
      });
      child.on("error", reject);
      child.on("close", (c, s) => resolve({ code: c, signal: s, stderr: err }));
    },
  );
  if (code === 0) return { detail: `${argv[0]} exited 0` };
  const why = signal
    ? `killed by ${signal}${signal === "SIGKILL" ? ` (timeout ${a.timeoutSeconds} s?)` : ""}`
    : `exited ${code}`;
  throw new Error(`${argv[0]} ${why}${stderr.trim() ? `: ${stderr.trim().split("\n").pop()}` : ""}`);
}
