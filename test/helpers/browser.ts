// Debian's chromium driven by playwright-core for the web app's tests: headless, a fresh profile per launch
// (playwright's launch() makes a new temporary --user-data-dir itself and refuses one in args), no background network, and the server's self-signed certificate trusted by its SPKI pin (not by ignoring errors).
// Screenshots go to test-artifacts/ (gitignored).
import { createHash, X509Certificate } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { cli, ROOT, type RunningServer, removeDir, startServer, tempDir } from "./atrest.ts";

export const ARTIFACTS = join(ROOT, "test-artifacts");
export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

export interface Chromium {
  browser: Browser;
  /** A fresh context (no cookies) with the viewport given. */
  context(viewport?: { width: number; height: number }): Promise<BrowserContext>;
  close(): Promise<void>;
}

async function spkiPin(certFile: string): Promise<string> {
  const cert = new X509Certificate(await readFile(certFile));
  const der = cert.publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(der).digest("base64");
}

/** `extraCerts`: more certificate files to trust by pin (another server the test starts, e.g. an OIDC provider). */
export async function launchChromium(data: string, extraCerts: string[] = []): Promise<Chromium> {
  const pins = await Promise.all([join(data, "tls", "server.crt"), ...extraCerts].map(spkiPin));
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      `--ignore-certificate-errors-spki-list=${pins.join(",")}`,
    ],
  });
  return {
    browser,
    context: async (viewport = DESKTOP) => {
      const ctx = await browser.newContext({ viewport, acceptDownloads: true });
      // the suite runs beside others on a loaded machine: a minute before a wait gives up
      ctx.setDefaultTimeout(60_000);
      return ctx;
    },
    close: async () => {
      await browser.close();
    },
  };
}

/** Saves a full-page screenshot as test-artifacts/<name>.png. */
export async function shot(page: Page, name: string): Promise<string> {
  await mkdir(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** Form controls and buttons on the page that have no accessible name (no label, aria-label or text). */
export async function unlabelled(page: Page): Promise<string[]> {
  return page.evaluate(() => {
    const out: string[] = [];
    for (const el of document.querySelectorAll<HTMLElement>("input, select, textarea, button, summary, a[href]")) {
      if (el.closest("[hidden]") || (el as HTMLInputElement).type === "hidden") continue;
      const id = el.id;
      const named =
        (id && document.querySelector(`label[for="${CSS.escape(id)}"]`)) ||
        el.getAttribute("aria-label") ||
        el.getAttribute("aria-labelledby") ||
        el.closest("label") ||
        ((el.tagName === "BUTTON" || el.tagName === "A" || el.tagName === "SUMMARY") && el.textContent?.trim());
      if (!named) out.push(el.outerHTML.slice(0, 120));
    }
    return out;
  });
}

/**
 * Text whose colour against its effective background is below WCAG AA (4.5:1, or 3:1 for large text: 24 px, or
 * 18.66 px bold), as "ratio text" lines. Backgrounds are the nearest opaque ancestor's (white at the root).
 */
export async function lowContrast(page: Page): Promise<string[]> {
  return page.evaluate(() => {
    const parse = (c: string): [number, number, number, number] => {
      const m = /rgba?\(([^)]+)\)/.exec(c);
      if (!m) return [0, 0, 0, 1];
      const p = m[1]
        .split(/[ ,/]+/)
        .filter(Boolean)
        .map(Number);
      return [p[0], p[1], p[2], p[3] ?? 1];
    };
    const lum = ([r, g, b]: number[]) => {
      const f = (v: number) => {
        const s = v / 255;
        return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
      };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const bgOf = (el: Element | null): number[] => {
      for (let e = el; e; e = e.parentElement) {
        const c = parse(getComputedStyle(e).backgroundColor);
        if (c[3] > 0.5) return c;
      }
      return parse(getComputedStyle(document.documentElement).backgroundColor || "rgb(255,255,255)");
    };
    const out: string[] = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    const seen = new Set<Element>();
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const el = n.parentElement;
      if (!el || seen.has(el) || !n.textContent?.trim() || el.closest("svg, [hidden], .sr-only, option")) continue;
      seen.add(el);
      const cs = getComputedStyle(el);
      if (cs.visibility === "hidden" || cs.display === "none" || el.getClientRects().length === 0) continue;
      const fg = parse(cs.color);
      const bg = bgOf(el);
      const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
      const ratio = (a + 0.05) / (b + 0.05);
      const size = Number.parseFloat(cs.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(cs.fontWeight) >= 700);
      const disabled = (el as HTMLButtonElement).disabled === true;
      if (!disabled && ratio < (large ? 3 : 4.5)) out.push(`${ratio.toFixed(2)} ${n.textContent.trim().slice(0, 40)}`);
    }
    return out;
  });
}

export interface WebApp {
  dir: string;
  data: string;
  server: RunningServer;
  chrome: Chromium;
  /** https://localhost:<port> of the server's HTTPS door. */
  base: string;
}

/** A new data dir with alice (password `alice-password`), a server on it, and a chromium that trusts its certificate. */
export async function startWebApp(prefix: string): Promise<WebApp> {
  const dir = await tempDir(prefix);
  const data = join(dir, "data");
  await cli(["init", "--data", data]);
  await cli(["user", "add", "alice", "--password-stdin", "--data", data], "alice-password\n");
  const server = await startServer(data);
  const chrome = await launchChromium(data);
  return { dir, data, server, chrome, base: `https://localhost:${server.httpPort}` };
}

export async function stopWebApp(app: Partial<WebApp>): Promise<void> {
  await app.chrome?.close();
  await app.server?.stop();
  if (app.dir) await removeDir(app.dir);
}
