// npm postinstall: builds atrest's AES-256-GCM binding (native/gcm: OpenSSL EVP calls that seal and open container
// segments into the caller's buffer) against the headers of the pinned Node 24 (the `node` package), whose binary
// exports the OpenSSL it links, and checks in a fresh Node process that it loads and agrees with node:crypto.
// Without it containers are sealed and opened by node:crypto (src/crypto/gcm-native.ts), the same bytes at about
// half the speed.
//
// Exit status: 0 when the binding loads, or when it could not be built and ATREST_GCM_NATIVE is not "require";
// ATREST_GCM_NATIVE=require (CI) makes a failed build fail `npm ci`; ATREST_GCM_NATIVE=skip builds nothing.
import { spawnSync } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";

const root = join(import.meta.dirname, "..");
const mode = process.env.ATREST_GCM_NATIVE ?? "auto";
const say = (msg: string) => console.log(`atrest postinstall: ${msg}`);

function fail(msg: string): never {
  if (mode === "require") {
    console.error(`atrest postinstall: ${msg} (ATREST_GCM_NATIVE=require)`);
    process.exit(1);
  }
  say(`${msg}; containers will be sealed with node:crypto`);
  process.exit(0);
}

if (mode === "skip") {
  say("ATREST_GCM_NATIVE=skip: atrest's GCM binding not built");
  process.exit(0);
}
if (Number(process.versions.node.split(".")[0]) < 24) {
  fail(`running on Node ${process.version}, not the pinned Node 24 (npm puts node_modules/.bin first on PATH)`);
}
const sourceDir = join(root, "native", "gcm");
const nodeDir = join(root, "node_modules", "node", "node_modules", `node-${process.platform}-${process.arch}`);
if (!existsSync(join(nodeDir, "include", "node", "node_api.h"))) fail(`no Node headers under ${nodeDir}`);

// npm hands its bundled node-gyp to scripts as npm_config_node_gyp; run directly, the node-gyp that ships with the
// npm on PATH.
function findNodeGyp(): string | undefined {
  if (process.env.npm_config_node_gyp) return process.env.npm_config_node_gyp;
  const npm = spawnSync("sh", ["-c", 'readlink -f "$(command -v npm)"'], { encoding: "utf8" }).stdout.trim();
  const path = npm && join(dirname(npm), "..", "node_modules", "node-gyp", "bin", "node-gyp.js");
  return path && existsSync(path) ? path : undefined;
}
const gyp = findNodeGyp();
if (!gyp) fail("node-gyp not found (it ships with npm)");

// Debian's npm sets nodedir=/usr (the system Node's headers) and node-gyp lets npm's config in the environment
// override its command line, so the environment names the pinned headers too. The OpenSSL headers come from the
// same directory, so they match the OpenSSL in the Node binary that loads the binding.
const env: NodeJS.ProcessEnv = {};
for (const [k, v] of Object.entries(process.env)) {
  if (!/^npm_(config|package_config_node_gyp)_(nodedir|target)$/i.test(k)) env[k] = v;
}
env.npm_config_nodedir = nodeDir;
env.npm_config_target = process.version;
env.PATH = `${dirname(process.execPath)}:${process.env.PATH ?? ""}`;
rmSync(join(sourceDir, "build"), { recursive: true, force: true });
const built = spawnSync(process.execPath, [gyp, "rebuild", `--nodedir=${nodeDir}`, `--target=${process.version}`], {
  cwd: sourceDir,
  encoding: "utf8",
  stdio: ["ignore", "pipe", "pipe"],
  env,
});
if (built.error || built.status !== 0) {
  process.stderr.write(built.stdout ?? "");
  process.stderr.write(built.stderr ?? "");
  fail(`building atrest's GCM binding failed (${built.error?.message ?? `exit ${built.status}`})`);
}

// Load it in a fresh Node process, as the server will: gcm-native.ts checks it against node:crypto as it loads.
const check = spawnSync(
  process.execPath,
  [
    "--input-type=module",
    "-e",
    `import { containerCrypto } from ${JSON.stringify(join(root, "src", "crypto", "gcm-native.ts"))};
     const c = containerCrypto(); if (!c.native) { console.error(c.describe); process.exit(3); }`,
  ],
  { encoding: "utf8", env: { ...process.env, ATREST_CONTAINER_CRYPTO: "" } },
);
if (check.status !== 0) fail(`the built binding does not work under Node ${process.version}: ${check.stderr.trim()}`);
say(
  `atrest's GCM binding built for Node ${process.version} and agrees with node:crypto (${join(sourceDir, "build", "Release", "atrest_gcm.node")})`,
);
