// The web app's files (web/dist, built by scripts/build-web.ts and committed), served from memory on the API's own
// origin: `/` and every page of the app answer index.html, `/assets/<hashed name>` the script and stylesheet. A strict
// Content-Security-Policy allows scripts, styles and requests to this origin only (no inline code, no CDN), so the app
// works offline and an injected string cannot run.
import { readdir, readFile } from "node:fs/promises";
import { extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { FastifyInstance, FastifyReply } from "fastify";
import { HttpProblem } from "./problem.ts";

export const WEB_ROOT = fileURLToPath(new URL("../../../web/dist/", import.meta.url));

export const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join("; ");

const TYPES: Record<string, string> = {
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".html": "text/html; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".woff2": "font/woff2",
  ".json": "application/json",
};

interface Asset {
  body: Buffer;
  type: string;
}

export interface WebApp {
  index: Buffer;
  assets: Map<string, Asset>;
}

/** Reads the built app into memory; undefined when it has not been built (the API still serves). */
export async function loadWebApp(root: string = WEB_ROOT): Promise<WebApp | undefined> {
  let index: Buffer;
  try {
    index = await readFile(join(root, "index.html"));
  } catch {
    return undefined;
  }
  const assets = new Map<string, Asset>();
  const dir = join(root, "assets");
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const type = TYPES[extname(name)];
    if (type) assets.set(name, { body: await readFile(join(dir, name)), type });
  }
  return { index, assets };
}

function secure(reply: FastifyReply): FastifyReply {
  return reply
    .header("content-security-policy", CSP)
    .header("x-frame-options", "DENY")
    .header("referrer-policy", "no-referrer")
    .header("cross-origin-opener-policy", "same-origin")
    .header("permissions-policy", "camera=(), microphone=(), geolocation=()");
}

/**
 * Pages of the app (hash-routed): the start page, a share link's page (/s/<link>, no account needed), and an E2EE sync
 * link's page (/e/<id>#<key>: the key stays in the fragment, the page decrypts).
 */
export const APP_PAGES = ["/", "/s/:link", "/e/:id"];

export function registerWebApp(app: FastifyInstance, web: WebApp | undefined): void {
  const page = async (_req: unknown, reply: FastifyReply) => {
    if (!web) {
      throw new HttpProblem(
        404,
        "NOT_FOUND",
        "the web app is not built (node scripts/build-web.ts); the API is at /api/v1 (/openapi.json)",
      );
    }
    return secure(reply).header("cache-control", "no-cache").type("text/html; charset=utf-8").send(web.index);
  };
  for (const url of APP_PAGES) app.get(url, page as never);
  app.get("/assets/:name", (async (req: { params: { name: string } }, reply: FastifyReply) => {
    const asset = web?.assets.get(req.params.name);
    if (!asset) throw new HttpProblem(404, "NOT_FOUND", `no asset ${req.params.name}`);
    // hashed names: a new build has new names, so a cached copy never goes stale
    return secure(reply)
      .header("cache-control", "public, max-age=31536000, immutable")
      .type(asset.type)
      .send(asset.body);
  }) as never);
}
