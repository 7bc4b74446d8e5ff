// The server's compile cache: <install root>/.cache/compile, beside the code it caches, which bin/atrest.js hands to
// the server process as NODE_COMPILE_CACHE (on before the first TypeScript module: ./compile-cache.js says why).
// Without it every start strips the types of and compiles every module again and keeps the stripper (amaro's
// WebAssembly) loaded: about 10 MB of an idle server's RSS (docs/operations.md "Memory"). Only when the directory and
// its parent are ours and not writable by others: whoever can write there could plant code, as whoever can write the
// install tree already can. Plain JavaScript with no Node 22+ API: bin/atrest.js may run on an older system Node.
import { mkdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";

/**
 * `{ NODE_COMPILE_CACHE: dir }`, or `{}` when the directory cannot be ours alone (e.g. an install owned by root and
 * run by a service account: the server then starts as before, without the cache).
 * @param {string} root the install's root directory
 * @returns {{ NODE_COMPILE_CACHE?: string }}
 */
export function serverCompileCache(root) {
  const dir = join(root, ".cache", "compile");
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    for (const d of [dir, dirname(dir)]) {
      const st = statSync(d);
      if (!st.isDirectory() || (st.mode & 0o022) !== 0 || st.uid !== process.getuid?.()) return {};
    }
    return { NODE_COMPILE_CACHE: dir };
  } catch {
    return {};
  }
}
