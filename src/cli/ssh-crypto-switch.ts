// ATREST_SSH_CRYPTO=js makes the SFTP server use ssh2's pure-JS ciphers even when its native binding is built (to
// compare the two, or to step around a faulty binding). Imported first by the process entry (./main.ts): ssh2 looks
// for its binding once, when it is first loaded, so the switch must be in place before anything imports ssh2.
import { registerHooks } from "node:module";

if (process.env.ATREST_SSH_CRYPTO === "js") {
  registerHooks({
    resolve(specifier, context, nextResolve) {
      if (specifier.endsWith("/sshcrypto.node")) {
        throw Object.assign(new Error(`ATREST_SSH_CRYPTO=js: ${specifier} not loaded`), { code: "MODULE_NOT_FOUND" });
      }
      return nextResolve(specifier, context);
    },
  });
}
