// npm postinstall: builds atrest's AES-256-GCM binding (native/gcm: OpenSSL EVP calls that seal and open container
// segments into the caller's buffer) against the headers of the pinned Node 24 (the `node` package), whose binary
// exports the OpenSSL it links, and checks in a fresh Node process that it loads and agrees with node:crypto.
// Without it containers are sealed and opened by node:crypto (src/crypto/gcm-native.ts), the same bytes at about
// half the speed.
//
// Exit status: 0 when the binding loads, or when it could not be built and ATREST_GCM_NATIVE is not "require";
// ATREST_GCM_NATIVE=require (CI) makes a failed build fail `npm ci`; ATREST_GCM_NATIVE=skip builds nothing.
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { pinnedNodeDir, rebuild, requirePinnedNode, root, say, step } from "./native-build.ts";

const s = step("ATREST_GCM_NATIVE", "containers will be sealed with node:crypto", "atrest's GCM binding not built");
requirePinnedNode(s);
// The OpenSSL headers come from the same directory, so they match the OpenSSL in the Node binary that loads it.
const nodeDir = pinnedNodeDir(s, join("include", "node", "node_api.h"));
const built = rebuild(
  s,
  { dir: join(root, "native", "gcm"), what: "atrest's GCM binding", nodeDir, checkInPlace: true },
  () => {
    // Loaded in a fresh Node process, as the server will (from its one path): gcm-native.ts checks it against
    // node:crypto as it loads.
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
    if (check.status !== 0) {
      throw new Error(`the built binding does not work under Node ${process.version}: ${check.stderr.trim()}`);
    }
  },
);
say(
  `atrest's GCM binding built for Node ${process.version} and agrees with node:crypto (${join(built, "Release", "atrest_gcm.node")})`,
);
