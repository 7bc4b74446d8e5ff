// The process settings the server is meant to run with (server-runtime.json: V8 flags, glibc malloc environment).
// bin/atrest.js and `npm start` apply them; a server started another way (a unit file calling node itself) would
// run without them and use markedly more memory (docs/operations.md, "Memory"), so the server says which are missing.
import { readFileSync } from "node:fs";

export interface ServerRuntime {
  nodeFlags: string[];
  env: Record<string, string>;
}

export function serverRuntime(): ServerRuntime {
  return JSON.parse(readFileSync(new URL("./server-runtime.json", import.meta.url), "utf8")) as ServerRuntime;
}

/**
 * The settings of `runtime` this process does not have: a V8 flag counts as present with any value (by name, in the
 * command line or NODE_OPTIONS), an environment variable when it is set at all (the operator's value wins).
 */
export function missingRuntimeSettings(
  runtime: ServerRuntime = serverRuntime(),
  execArgv: readonly string[] = process.execArgv,
  env: NodeJS.ProcessEnv = process.env,
): string[] {
  const given = [...execArgv, ...(env.NODE_OPTIONS ?? "").split(/\s+/)].map((a) => a.split("=")[0].replace(/_/g, "-"));
  const missing: string[] = [];
  for (const flag of runtime.nodeFlags) if (!given.includes(flag.split("=")[0].replace(/_/g, "-"))) missing.push(flag);
  for (const [name, value] of Object.entries(runtime.env))
    if (env[name] === undefined) missing.push(`${name}=${value}`);
  return missing;
}
