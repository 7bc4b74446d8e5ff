// What the postinstall scripts that build native bindings (build-ssh2-binding.ts, build-pkcs11-binding.ts,
// build-gcm-binding.ts) share: their ATREST_*_NATIVE mode (auto, require, skip) and how a failure ends, the pinned
// Node 24 and its headers, npm's node-gyp, an environment in which node-gyp builds against those headers, and a
// rebuild that replaces a working build only with one that passed its check.
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, renameSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";

export const root = join(import.meta.dirname, "..");

export const say = (msg: string) => console.log(`atrest postinstall: ${msg}`);

export interface Step {
  mode: string;
  /** Ends the script: exit 1 under `require` (CI), else 0 with `fallback` said (the build is optional). */
  fail(msg: string): never;
}

/** The step's mode from `envVar` (auto, require, skip); under skip it says `skipped` and exits 0. */
export function step(envVar: string, fallback: string, skipped?: string): Step {
  const mode = process.env[envVar] ?? "auto";
  const fail = (msg: string): never => {
    if (mode === "require") {
      console.error(`atrest postinstall: ${msg} (${envVar}=require)`);
      process.exit(1);
    }
    say(`${msg}; ${fallback}`);
    process.exit(0);
  };
  if (mode === "skip") {
    if (skipped) say(`${envVar}=skip: ${skipped}`);
    process.exit(0);
  }
  return { mode, fail };
}

export function requirePinnedNode(s: Step): void {
  if (Number(process.versions.node.split(".")[0]) < 24) {
    s.fail(`running on Node ${process.version}, not the pinned Node 24 (npm puts node_modules/.bin first on PATH)`);
  }
}

/** The pinned Node's headers: node_modules/node/node_modules/node-<platform>-<arch>, which must hold `header`. */
export function pinnedNodeDir(s: Step, header = join("include", "node", "node.h")): string {
  const nodeDir = join(root, "node_modules", "node", "node_modules", `node-${process.platform}-${process.arch}`);
  if (!existsSync(join(nodeDir, header))) s.fail(`no Node headers under ${nodeDir}`);
  return nodeDir;
}

/**
 * npm hands its bundled node-gyp to scripts as npm_config_node_gyp; run directly, the node-gyp that ships with the npm
 * on PATH.
 */
export function findNodeGyp(s: Step): string {
  let path = process.env.npm_config_node_gyp;
  if (!path) {
    const npm = spawnSync("sh", ["-c", 'readlink -f "$(command -v npm)"'], { encoding: "utf8" }).stdout.trim();
    path = npm ? join(dirname(npm), "..", "node_modules", "node-gyp", "bin", "node-gyp.js") : undefined;
  }
  if (!path || !existsSync(path)) s.fail("node-gyp not found (it ships with npm)");
  return path as string;
}

/**
 * The environment for node-gyp: it lets npm's config in the environment override its command line, and Debian's npm
 * sets nodedir=/usr (/usr/lib/node_modules/npm/npmrc), the system Node 20's headers, so the environment names the
 * pinned headers too; the pinned Node comes first on PATH (node-gyp runs `node -e "require('nan')"`).
 */
export function gypEnv(nodeDir: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^npm_(config|package_config_node_gyp)_(nodedir|target)$/i.test(k)) env[k] = v;
  }
  env.npm_config_nodedir = nodeDir;
  env.npm_config_target = process.version;
  env.PATH = `${dirname(process.execPath)}:${process.env.PATH ?? ""}`;
  return { ...env, ...extra };
}

/**
 * `node-gyp rebuild` of the addon in `dir` against the pinned headers, in a copy beside it: `check` gets the copy's
 * build/ and throws (with why) if the binding there is not fit; only then does the new build/ take the place of the
 * old one, so a running process (another checkout's server sharing node_modules) never finds build/ missing or half
 * written while it builds. A failed build or check removes build/ too, as the step's fallback message says (the
 * loader then takes the fallback instead of a binding of an older Node or source). `checkInPlace`: a binding its
 * loader finds only at its final path is checked there, after the swap.
 */
export function rebuild(
  s: Step,
  o: { dir: string; what: string; nodeDir: string; args?: string[]; env?: NodeJS.ProcessEnv; checkInPlace?: boolean },
  check: (build: string) => void,
): string {
  const gyp = findNodeGyp(s);
  const work = `${o.dir}.atrest-build-${process.pid}`;
  rmSync(work, { recursive: true, force: true });
  const target = join(o.dir, "build");
  const cleanup = () => rmSync(work, { recursive: true, force: true });
  const failed = (msg: string): never => {
    cleanup();
    rmSync(target, { recursive: true, force: true });
    return s.fail(msg);
  };
  cpSync(o.dir, work, { recursive: true, filter: (src) => src !== join(o.dir, "build") });
  const built = spawnSync(
    process.execPath,
    [gyp, "rebuild", `--nodedir=${o.nodeDir}`, `--target=${process.version}`, ...(o.args ?? [])],
    { cwd: work, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], env: gypEnv(o.nodeDir, o.env) },
  );
  if (built.error || built.status !== 0) {
    process.stderr.write(built.stdout ?? "");
    process.stderr.write(built.stderr ?? "");
    failed(`building ${o.what} failed (${built.error?.message ?? `exit ${built.status}`})`);
  }
  const checked = (build: string) => {
    try {
      check(build);
    } catch (err) {
      failed((err as Error).message);
    }
  };
  if (!o.checkInPlace) checked(join(work, "build"));
  // two renames on one file system: the old build/ is never gone before the new one is complete
  const old = `${target}.old-${process.pid}`;
  if (existsSync(target)) renameSync(target, old);
  renameSync(join(work, "build"), target);
  rmSync(old, { recursive: true, force: true });
  cleanup();
  if (o.checkInPlace) checked(target);
  return target;
}
