// npm postinstall, after build-ssh2-binding.ts: makes sure pkcs11js (the PKCS#11 binding behind the key manager's
// HSM master key, src/kms/hsm-token.ts) loads under the pinned Node 24. It is a Node-API addon, so a build against
// any Node's headers loads; but npm runs its install script only while allowScripts does not gate it, so when
// build/ is missing it is built here, with the pinned Node's headers in the environment (Debian's npm otherwise
// hands node-gyp nodedir=/usr). Failing is not fatal (only `kms init/serve --hsm-*` needs it) unless
// ATREST_PKCS11_NATIVE=require (CI).
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const root = join(import.meta.dirname, "..");
const mode = process.env.ATREST_PKCS11_NATIVE ?? "auto";
const say = (msg: string) => console.log(`atrest postinstall: ${msg}`);
const fail = (msg: string): never => {
  if (mode === "require") {
    console.error(`atrest postinstall: ${msg} (ATREST_PKCS11_NATIVE=require)`);
    process.exit(1);
  }
  say(`${msg}; an HSM master key (kms init --hsm-*) is unavailable until it is built`);
  process.exit(0);
};
if (mode === "skip") process.exit(0);

const require = createRequire(join(root, "package.json"));
let dir = "";
try {
  dir = dirname(require.resolve("pkcs11js/package.json"));
} catch {
  fail("pkcs11js is not installed");
}
const loads = () =>
  spawnSync(process.execPath, ["-e", `new (require(${JSON.stringify(dir)}).PKCS11)()`], { encoding: "utf8" });

if (loads().status !== 0) {
  const nodeDir = join(root, "node_modules", "node", "node_modules", `node-${process.platform}-${process.arch}`);
  const npm = spawnSync("sh", ["-c", 'readlink -f "$(command -v npm)"'], { encoding: "utf8" }).stdout.trim();
  const gyp =
    process.env.npm_config_node_gyp ??
    (npm && join(dirname(npm), "..", "node_modules", "node-gyp", "bin", "node-gyp.js"));
  if (!gyp || !existsSync(gyp)) fail("node-gyp not found (it ships with npm)");
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_config_(nodedir|target)$/i.test(k)) env[k] = v;
  env.npm_config_nodedir = nodeDir;
  env.PATH = `${dirname(process.execPath)}:${process.env.PATH ?? ""}`;
  const built = spawnSync(process.execPath, [gyp, "rebuild", `--nodedir=${nodeDir}`], {
    cwd: dir,
    encoding: "utf8",
    env,
  });
  if (built.status !== 0) {
    process.stderr.write(`${built.stdout ?? ""}${built.stderr ?? ""}`);
    fail(`building pkcs11js failed (exit ${built.status})`);
  }
  const again = loads();
  if (again.status !== 0) fail(`pkcs11js does not load under Node ${process.version}: ${again.stderr.trim()}`);
}
say(`pkcs11js (PKCS#11 for an HSM master key) loads under Node ${process.version}`);
