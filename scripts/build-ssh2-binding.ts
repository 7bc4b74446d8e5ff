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
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { pinnedNodeDir, rebuild, requirePinnedNode, root, say, step } from "./native-build.ts";

const s = step(
  "ATREST_SSH2_NATIVE",
  "the SFTP server will use ssh2's pure-JS transport crypto",
  "ssh2's native crypto binding not built",
);
requirePinnedNode(s);
const require = createRequire(join(root, "package.json"));
let cryptoDir = "";
try {
  cryptoDir = join(dirname(require.resolve("ssh2/package.json")), "lib", "protocol", "crypto");
} catch {
  s.fail("ssh2 is not installed");
}
const nodeDir = pinnedNodeDir(s);
const objectWrapHeader = join(root, "scripts", "ssh2-binding", "object-wrap.h");
const sshcrypto = (build: string) => join(build, "Release", "sshcrypto.node");

const built = rebuild(
  s,
  {
    dir: cryptoDir,
    what: "ssh2's native crypto binding",
    nodeDir,
    // binding.cc picks OpenSSL 3 APIs (EVP_MAC Poly1305) by this define; ssh2's install.js passes it the same way.
    args: [`--real_openssl_major=${/^\d+/.exec(process.versions.openssl)?.[0] ?? "0"}`],
    // Our node::ObjectWrap in place of Node's (why: scripts/ssh2-binding/object-wrap.h): without it a server aborts
    // when V8 collects a cipher object in a GC that runs with no context entered.
    env: { CXXFLAGS: `${process.env.CXXFLAGS ?? ""} -include ${objectWrapHeader}`.trim() },
  },
  (build) => {
    // Node's own ObjectWrap would have brought in its cleanup hooks (see object-wrap.h): a binding that refers to
    // them aborts servers, so it is not installed and ssh2 keeps its pure-JS crypto.
    if (readFileSync(sshcrypto(build)).includes("RemoveEnvironmentCleanupHook")) {
      throw new Error(
        "the built binding uses Node's ObjectWrap cleanup hooks (the -include of object-wrap.h did not apply)",
      );
    }
    // Loaded in a fresh Node 24 process, as the server will.
    const check = spawnSync(
      process.execPath,
      [
        "-e",
        `const b = require(${JSON.stringify(sshcrypto(build))}); if (!b.AESGCMCipher || !b.ChaChaPolyCipher) process.exit(3)`,
      ],
      { encoding: "utf8" },
    );
    if (check.status !== 0) {
      throw new Error(`the built binding does not load under Node ${process.version}: ${check.stderr.trim()}`);
    }
  },
);
say(`ssh2's native crypto binding built for Node ${process.version} and loads (${sshcrypto(built)})`);
