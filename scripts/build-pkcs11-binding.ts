// npm postinstall, after build-ssh2-binding.ts: makes sure pkcs11js (the PKCS#11 binding behind the key manager's
// HSM master key, src/kms/hsm-token.ts) loads under the pinned Node 24. It is a Node-API addon, so a build against
// any Node's headers loads; but npm runs its install script only while allowScripts does not gate it, so when
// build/ is missing it is built here, with the pinned Node's headers in the environment (Debian's npm otherwise
// hands node-gyp nodedir=/usr). Failing is not fatal (only `kms init/serve --hsm-*` needs it) unless
// ATREST_PKCS11_NATIVE=require (CI).
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { pinnedNodeDir, rebuild, root, say, step } from "./native-build.ts";

const s = step("ATREST_PKCS11_NATIVE", "an HSM master key (kms init --hsm-*) is unavailable until it is built");
const require = createRequire(join(root, "package.json"));
let dir = "";
try {
  dir = dirname(require.resolve("pkcs11js/package.json"));
} catch {
  s.fail("pkcs11js is not installed");
}
/** Loads pkcs11js (from `dir`, whose build/ it finds itself) in a fresh Node process; throws why it does not. */
const loads = (from: string) => {
  const r = spawnSync(process.execPath, ["-e", `new (require(${JSON.stringify(from)}).PKCS11)()`], {
    encoding: "utf8",
  });
  if (r.status !== 0) throw new Error(`pkcs11js does not load under Node ${process.version}: ${r.stderr.trim()}`);
};

try {
  loads(dir);
} catch {
  // checked at its own path: its index.js finds build/Release from there
  rebuild(s, { dir, what: "pkcs11js", nodeDir: pinnedNodeDir(s), checkInPlace: true }, () => loads(dir));
}
say(`pkcs11js (PKCS#11 for an HSM master key) loads under Node ${process.version}`);
