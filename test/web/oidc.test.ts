// OIDC login in chromium: the login page offers the provider's button (GET /api/v1/auth/oidc), a click goes through
// oidc-provider (started here on loopback TLS; its interactions answered by the test: which account logs in) and back
// to the app logged in, with the user created at first login and their mapped group. Screenshot of the login page.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { createServer as createNetServer } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import Provider from "oidc-provider";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../helpers/atrest.ts";
import { type Chromium, launchChromium, shot, unlabelled } from "../helpers/browser.ts";

const execFileP = promisify(execFile);

async function freePort(): Promise<number> {
  const s = createNetServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

describe("web app: OIDC login", () => {
  let dir: string;
  let data: string;
  let idp: Server;
  let server: RunningServer;
  let chrome: Chromium;
  let base: string;

  before(async () => {
    dir = await tempDir("atrest-weboidc-");
    const key = join(dir, "idp.key");
    const crt = join(dir, "idp.crt");
    await execFileP("openssl", [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"],
      ...["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
      ...["-keyout", key, "-out", crt],
    ]);
    let handler: (q: import("node:http").IncomingMessage, s: import("node:http").ServerResponse) => void = (_q, s) =>
      s.end();
    idp = createServer({ key: await readFile(key), cert: await readFile(crt) }, (q, s) => handler(q, s));
    await new Promise<void>((r) => idp.listen(0, "127.0.0.1", r));
    const issuer = `https://localhost:${(idp.address() as AddressInfo).port}`;
    const port = await freePort();
    const redirect = `https://localhost:${port}/api/v1/auth/oidc/callback`;
    const provider = new Provider(issuer, {
      clients: [
        {
          client_id: "atrest",
          client_secret: "idp-client-secret",
          redirect_uris: [redirect],
          response_types: ["code"],
          grant_types: ["authorization_code"],
        },
      ],
      pkce: { required: () => true },
      scopes: ["openid", "profile", "groups"],
      claims: { openid: ["sub"], profile: ["preferred_username"], groups: ["groups"] },
      findAccount: async (_ctx: unknown, sub: string) => ({
        accountId: sub,
        claims: async () => ({ sub, preferred_username: "olga", groups: ["finance-team"] }),
      }),
      cookies: { keys: ["oidc-web-test-cookie-key"] },
      features: { devInteractions: { enabled: false } },
      interactions: { url: (_ctx: unknown, i: { uid: string }) => `/interaction/${i.uid}` },
    } as never);
    const cb = provider.callback();
    handler = (req, res) => {
      if (!req.url?.startsWith("/interaction/")) return void cb(req, res);
      void (async () => {
        const details = (await provider.interactionDetails(req, res)) as unknown as {
          prompt: { name: string; details: { missingOIDCClaims?: string[] } };
          params: { client_id: string; scope: string };
          session?: { accountId: string };
        };
        if (details.prompt.name === "login") {
          await provider.interactionFinished(
            req,
            res,
            { login: { accountId: "olga-sub" } },
            {
              mergeWithLastSubmission: false,
            },
          );
          return;
        }
        const grant = new provider.Grant({ accountId: details.session?.accountId, clientId: details.params.client_id });
        grant.addOIDCScope(details.params.scope);
        if (details.prompt.details.missingOIDCClaims) grant.addOIDCClaims(details.prompt.details.missingOIDCClaims);
        await provider.interactionFinished(
          req,
          res,
          { consent: { grantId: await grant.save() } },
          {
            mergeWithLastSubmission: true,
          },
        );
      })().catch((err) => {
        res.statusCode = 500;
        res.end(String(err));
      });
    };
    data = join(dir, "data");
    await cli(["init", "--data", data]);
    const config = join(dir, "config.json");
    await writeFile(
      config,
      JSON.stringify({
        oidc: {
          issuer,
          clientId: "atrest",
          redirectUri: redirect,
          scopes: ["openid", "profile", "groups"],
          groupMap: { "finance-team": "finance" },
          provision: "auto",
          label: "Example SSO",
        },
      }),
    );
    server = await startServer(data, ["--http-port", String(port), "--config", config], {
      NODE_EXTRA_CA_CERTS: crt,
      ATREST_OIDC_CLIENT_SECRET: "idp-client-secret",
    });
    base = `https://localhost:${server.httpPort}`;
    chrome = await launchChromium(data, [crt]);
  });
  after(async () => {
    await chrome?.close();
    await server?.stop();
    await new Promise((r) => idp?.close(r));
    await removeDir(dir);
  });

  test("the provider's button logs in through the provider and back; the user is created with the mapped group", async () => {
    const ctx = await chrome.context();
    const page = await ctx.newPage();
    await page.goto(`${base}/#/account`);
    const sso = page.getByRole("link", { name: "Log in with Example SSO" });
    await sso.waitFor();
    assert.deepEqual(await unlabelled(page), []);
    await shot(page, "web-login-oidc-desktop");
    await sso.click();
    await page.getByRole("heading", { name: "Account: olga" }).waitFor();
    assert.equal(new URL(page.url()).origin, base);
    assert.equal(new URL(page.url()).hash, "#/account", "back where the login started");
    const users = JSON.parse((await cli(["user", "list", "--json", "--data", data])).stdout) as {
      name: string;
      groups: string[];
    }[];
    assert.deepEqual(users.find((u) => u.name === "olga")?.groups, ["finance"]);
    // the session works for changes too (CSRF token from /auth/session)
    await page.getByRole("link", { name: "Files" }).click();
    await page.getByRole("button", { name: "New folder" }).click();
    await page.getByLabel("Folder name").fill("from-sso");
    await page.getByRole("dialog").getByRole("button", { name: "Create" }).click();
    await page.locator('tr[data-name="from-sso"]').waitFor();
    await ctx.close();
  });
});
