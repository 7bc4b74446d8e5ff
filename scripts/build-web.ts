// Builds the web app (web/src, Vite + Preact) into web/dist, which the HTTPS door serves at /. The built files are
// committed (a few tens of KB), so `npm ci && npm start` serves the app with no build step and no devDependency;
// test/web/build.test.ts rebuilds into a temporary folder and fails when the committed copy is stale.
// Usage: node scripts/build-web.ts [outDir]
import { fileURLToPath } from "node:url";
import { build } from "vite";

const root = fileURLToPath(new URL("../web/", import.meta.url));

export async function buildWeb(outDir: string = fileURLToPath(new URL("../web/dist/", import.meta.url))) {
  await build({
    root,
    configFile: false,
    logLevel: "warn",
    base: "/",
    publicDir: false,
    oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
    build: {
      outDir,
      emptyOutDir: true,
      assetsDir: "assets",
      // one script and one stylesheet, no inline code: the CSP allows scripts and styles from 'self' only
      assetsInlineLimit: 0,
      modulePreload: { polyfill: false },
      target: "es2022",
      sourcemap: false,
      reportCompressedSize: false,
    },
  });
}

if (import.meta.url === `file://${process.argv[1]}`) await buildWeb(process.argv[2]);
