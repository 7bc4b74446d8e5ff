// The web app's upload path: one file uploaded from Debian's chromium through the app (file picker, tus in 64 MiB
// PATCH requests with progress) against `curl -T` of the same file to PUT /api/v1/files on the same server, same run;
// plus the server's peak RSS during the browser upload.
import { execFile } from "node:child_process";
import { createCipheriv, createHash, randomBytes, X509Certificate } from "node:crypto";
import { closeSync, openSync, readFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { freePort, run, spawnTracked, stop, waitForLine } from "./lib/proc.ts";
import { MiB, mbps, ratio, seconds, size } from "./lib/report.ts";
import { startRssSampler } from "./lib/rss.ts";
import type { BenchContext, BenchModule, BenchSection } from "./lib/types.ts";

function randomFile(path: string, bytes: number): void {
  const cipher = createCipheriv("aes-128-ctr", randomBytes(16), randomBytes(16));
  const fd = openSync(path, "w");
  const chunk = Buffer.alloc(4 * MiB);
  for (let left = bytes; left > 0; left -= chunk.length)
    writeSync(fd, cipher.update(chunk.subarray(0, Math.min(left, chunk.length))));
  closeSync(fd);
}

export const web: BenchModule = {
  name: "web",
  title: "Web app upload: chromium through the app (tus) vs curl PUT",
  method: [
    "**Web upload**: one atrest server (HTTPS on a loopback port, its self-signed certificate pinned by both clients). " +
      "A 512 MiB random file uploaded (a) from headless Debian chromium driven by playwright-core through the web app's " +
      "file picker: tus creation, then 64 MiB PATCH requests from XMLHttpRequest (upload progress), timed from picking " +
      "the file to the app showing it done; (b) by `curl -T` to `PUT /api/v1/files/<path>` with the session cookie " +
      "over HTTP/2 and over HTTP/1.1. Interleaved, best of 2. Ratio = browser time / curl time. Server RSS: peak VmRSS of the server process " +
      "during the browser uploads.",
  ],
  async run(ctx: BenchContext): Promise<BenchSection> {
    const bytes = ctx.quick ? 64 * MiB : 512 * MiB;
    const file = join(ctx.tmp, "upload.bin");
    randomFile(file, bytes);
    const node = process.execPath;
    const cli = join(ctx.root, "src", "cli", "main.ts");
    const data = join(ctx.tmp, "data");
    const env = { ...process.env, NODE_ENV: "production" };
    await run(node, [cli, "init", "--data", data], { env });
    await new Promise<void>((resolve, reject) => {
      const child = execFile(node, [cli, "user", "add", "bench", "--password-stdin", "--data", data], { env }, (err) =>
        err ? reject(err) : resolve(),
      );
      child.stdin?.end("bench-password\n");
    });
    const httpPort = await freePort();
    const sftpPort = await freePort();
    const server = spawnTracked(
      node,
      [
        cli,
        "server",
        "--data",
        data,
        "--sftp-port",
        String(sftpPort),
        "--http-port",
        String(httpPort),
        "--host",
        "127.0.0.1",
      ],
      { env },
    );
    try {
      await waitForLine(server, /atrest: https listening on 127\.0\.0\.1:\d+/, 60_000);
      const crt = join(data, "tls", "server.crt");
      const base = `https://localhost:${httpPort}`;
      // curl: log in (cookie jar), then PUT
      const jar = join(ctx.tmp, "jar");
      const login = await run("curl", [
        ...["-sS", "--cacert", crt, "-c", jar, "-H", "content-type: application/json"],
        ...["-d", JSON.stringify({ username: "bench", password: "bench-password" }), `${base}/api/v1/auth/login`],
      ]);
      const csrf = (JSON.parse(login.stdout) as { csrfToken: string }).csrfToken;
      const curl = (n: number, http: "--http2" | "--http1.1") =>
        run("curl", [
          ...["-sS", http, "--cacert", crt, "-b", jar, "-H", `x-csrf-token: ${csrf}`, "-o", "/dev/null"],
          ...["-w", "%{http_code}", "-T", file, `${base}/api/v1/files/curl-${n}${http}.bin`],
        ]);
      // chromium through the app
      const spki = createHash("sha256")
        .update(new X509Certificate(readFileSync(crt)).publicKey.export({ type: "spki", format: "der" }))
        .digest("base64");
      const browser = await chromium.launch({
        executablePath: "/usr/bin/chromium",
        headless: true,
        args: [
          ...["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"],
          ...["--disable-background-networking", "--disable-component-update", "--disable-sync"],
          `--ignore-certificate-errors-spki-list=${spki}`,
        ],
      });
      const times: { browser: number[]; curl: number[]; curl1: number[] } = { browser: [], curl: [], curl1: [] };
      let rssPeak = 0;
      try {
        const page = await (await browser.newContext()).newPage();
        page.setDefaultTimeout(60_000);
        await page.goto(`${base}/`);
        await page.getByLabel("User name").fill("bench");
        await page.getByLabel("Password").fill("bench-password");
        await page.getByRole("button", { name: "Log in" }).click();
        await page.getByRole("navigation", { name: "Breadcrumbs" }).waitFor();
        const runs = ctx.quick ? 1 : 2;
        for (let i = 0; i < runs; i++) {
          for (const http of ["--http2", "--http1.1"] as const) {
            const c = await curl(i, http);
            if (c.stdout !== "201" && c.stdout !== "200") throw new Error(`curl PUT answered ${c.stdout}`);
            (http === "--http2" ? times.curl : times.curl1).push(c.seconds);
            ctx.log(`curl ${http} PUT ${size(bytes)}: ${seconds(c.seconds)} s`);
          }
          const rss = startRssSampler(server.pid as number);
          const start = performance.now();
          await page.locator('input[data-testid="upload-files"]').setInputFiles([file]);
          await page.getByText("Uploaded 1 of 1 files").waitFor({ timeout: 30 * 60_000 });
          const s = (performance.now() - start) / 1000;
          rssPeak = Math.max(rssPeak, rss.stop().peakBytes);
          times.browser.push(s);
          ctx.log(`chromium upload ${size(bytes)}: ${seconds(s)} s`);
          await page.getByRole("button", { name: "Clear finished" }).click();
        }
      } finally {
        await browser.close();
      }
      const b = Math.min(...times.browser);
      const c = Math.min(...times.curl);
      const c1 = Math.min(...times.curl1);
      return {
        table: [
          ["client", "file", "seconds", "MB/s", "÷ curl"],
          ["chromium, web app (tus)", size(bytes), seconds(b), mbps(bytes, b), ratio(b, c)],
          ["curl -T (PUT, HTTP/2)", size(bytes), seconds(c), mbps(bytes, c), "1.00×"],
          ["curl -T (PUT, HTTP/1.1)", size(bytes), seconds(c1), mbps(bytes, c1), ratio(c1, c)],
        ],
        notes: [`server peak RSS during the browser uploads: ${Math.round(rssPeak / MiB)} MiB`],
        summary: [
          `web upload: chromium ${mbps(bytes, b)} MB/s, curl ${mbps(bytes, c)} MB/s (${ratio(b, c)}), server RSS ${Math.round(rssPeak / MiB)} MiB`,
        ],
      };
    } finally {
      await stop(server);
    }
  },
};
