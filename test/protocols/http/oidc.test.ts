// OIDC login against a real provider: oidc-provider started here on loopback over TLS (its certificate trusted by the
// server through NODE_EXTRA_CA_CERTS), with interactions answered by the test (which account logs in). A client that
// follows redirects with a cookie jar per host plays the browser: authorization code + PKCE (the provider requires
// it), state and nonce; the group claim maps to an atrest group; users are created at first login (provision auto)
// or must exist (provision existing); a forged, replayed or foreign state is refused and audited as a failed login
// with method oidc, like any refused login; with two nodes on one PostgreSQL store and key manager, a login started
// on one finishes on the other (its state travels in the sealed cookie).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { createServer, request, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { createServer as createNetServer } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import Provider from "oidc-provider";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "../../helpers/atrest.ts";
import { setupKms, startKms, unsealKms } from "../../helpers/kms.ts";
import { dropTestSchemas, pgSkip, pgUrl, testSchema } from "../../helpers/pg.ts";

const pgSkipped = await pgSkip();

const execFileP = promisify(execFile);

interface Account {
  username: string;
  groups: string[];
}

async function freePort(): Promise<number> {
  const s = createNetServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

/** A browser, more or less: follows redirects, keeps cookies per host:port, trusts the given CAs. */
class Browser {
  readonly jar = new Map<string, Map<string, string>>();
  readonly ca: string[];
  constructor(ca: string[]) {
    this.ca = ca;
  }
  cookies(u: URL): string {
    return [...(this.jar.get(u.host) ?? new Map()).entries()].map(([k, v]) => `${k}=${v}`).join("; ");
  }
  get(url: string): Promise<{ status: number; location?: string; body: string; url: URL }> {
    const u = new URL(url);
    return new Promise((resolve, reject) => {
      const req = request(
        u,
        { method: "GET", ca: this.ca, agent: false, headers: { cookie: this.cookies(u) }, servername: "localhost" },
        (res) => {
          const set = res.headers["set-cookie"] ?? [];
          const jar = this.jar.get(u.host) ?? new Map<string, string>();
          for (const c of set) {
            const [pair, ...attrs] = c.split(";");
            const i = pair.indexOf("=");
            const name = pair.slice(0, i).trim();
            const value = pair.slice(i + 1).trim();
            if (value === "" || attrs.some((a) => /max-age=0\b/i.test(a) || /expires=Thu, 01 Jan 1970/i.test(a)))
              jar.delete(name);
            else jar.set(name, value);
          }
          this.jar.set(u.host, jar);
          let body = "";
          res.on("data", (d: Buffer) => {
            body += d.toString();
          });
          res.on("end", () => resolve({ status: res.statusCode ?? 0, location: res.headers.location, body, url: u }));
        },
      );
      req.on("error", reject);
      req.end();
    });
  }
  /** GETs `url` and follows redirects; returns every hop. */
  async follow(url: string, max = 20, stopAt?: string) {
    const hops = [];
    let next: string | undefined = url;
    for (let i = 0; i < max && next; i++) {
      if (stopAt && new URL(next).pathname === stopAt) return { hops, stopped: next };
      const r = await this.get(next);
      hops.push(r);
      next = r.status >= 300 && r.status < 400 && r.location ? new URL(r.location, r.url).href : undefined;
    }
    return { hops, stopped: undefined };
  }
}

describe("HTTPS API: OIDC login", () => {
  let dir: string;
  let idp: Server;
  let issuer: string;
  let idpCa: string;
  let nextAccount = "carol-sub";
  const accounts: Record<string, Account> = {
    "carol-sub": { username: "carol", groups: ["finance-team", "unmapped"] },
    "dave-sub": { username: "dave", groups: [] },
    "bad-sub": { username: "Not A Name!", groups: [] },
  };

  before(async () => {
    dir = await tempDir("atrest-oidc-");
    const key = join(dir, "idp.key");
    const crt = join(dir, "idp.crt");
    await execFileP("openssl", [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-days",
      "2",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
      "-keyout",
      key,
      "-out",
      crt,
    ]);
    idpCa = await readFile(crt, "utf8");
    let handler: (req: import("node:http").IncomingMessage, res: import("node:http").ServerResponse) => void = (
      _q,
      s,
    ) => s.end();
    idp = createServer({ key: await readFile(key), cert: idpCa }, (q, s) => handler(q, s));
    await new Promise<void>((r) => idp.listen(0, "127.0.0.1", r));
    issuer = `https://localhost:${(idp.address() as AddressInfo).port}`;
    // the redirect URIs of both atrest servers below are registered up front
    redirects.push(`https://localhost:${await freePort()}/api/v1/auth/oidc/callback`);
    redirects.push(`https://localhost:${await freePort()}/api/v1/auth/oidc/callback`);
    // the cluster test's public callback (node a's port; node b is reached as if through a load balancer)
    redirects.push(`https://localhost:${await freePort()}/api/v1/auth/oidc/callback`);
    const provider = new Provider(issuer, {
      clients: [
        {
          client_id: "atrest",
          client_secret: "idp-client-secret",
          redirect_uris: redirects,
          response_types: ["code"],
          grant_types: ["authorization_code"],
        },
      ],
      pkce: { required: () => true },
      scopes: ["openid", "profile", "groups"],
      claims: { openid: ["sub"], profile: ["preferred_username"], groups: ["groups"] },
      findAccount: async (_ctx: unknown, sub: string) => ({
        accountId: sub,
        claims: async () => ({ sub, preferred_username: accounts[sub].username, groups: accounts[sub].groups }),
      }),
      cookies: { keys: ["oidc-test-cookie-key"] },
      features: { devInteractions: { enabled: false } },
      interactions: { url: (_ctx: unknown, i: { uid: string }) => `/interaction/${i.uid}` },
    } as never);
    const cb = provider.callback();
    handler = (req, res) => {
      if (!req.url?.startsWith("/interaction/")) return void cb(req, res);
      void (async () => {
        const details = (await provider.interactionDetails(req, res)) as unknown as {
          prompt: { name: string; details: { missingOIDCScope?: string[]; missingOIDCClaims?: string[] } };
          params: { client_id: string; scope: string };
          session?: { accountId: string };
        };
        if (details.prompt.name === "login") {
          await provider.interactionFinished(
            req,
            res,
            { login: { accountId: nextAccount } },
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
  });
  after(async () => {
    await new Promise((r) => idp?.close(r));
    await removeDir(dir);
  });
  const redirects: string[] = [];

  async function server(n: number, provision: "auto" | "existing"): Promise<{ s: RunningServer; data: string }> {
    const data = join(dir, `data-${n}`);
    await cli(["init", "--data", data]);
    const port = Number(new URL(redirects[n]).port);
    const config = join(dir, `config-${n}.json`);
    await writeFile(
      config,
      JSON.stringify({
        oidc: {
          issuer,
          clientId: "atrest",
          redirectUri: redirects[n],
          scopes: ["openid", "profile", "groups"],
          groupMap: { "finance-team": "finance" },
          provision,
        },
      }),
    );
    const s = await startServer(data, ["--http-port", String(port), "--config", config], {
      NODE_EXTRA_CA_CERTS: join(dir, "idp.crt"),
      ATREST_OIDC_CLIENT_SECRET: "idp-client-secret",
    });
    return { s, data };
  }

  const login = async (b: Browser, port: number) => {
    return (await b.follow(`https://localhost:${port}/api/v1/auth/oidc/login?next=/files`)).hops;
  };
  const session = async (b: Browser, port: number) => {
    const r = await b.get(`https://localhost:${port}/api/v1/auth/session`);
    return { status: r.status, body: r.status === 200 ? (JSON.parse(r.body) as { user: string }) : undefined };
  };

  test("provision auto: code + PKCE + state + nonce, the user is created with the mapped group, then logged in", async () => {
    const { s, data } = await server(0, "auto");
    try {
      const atrestCa = await readFile(join(data, "tls", "server.crt"), "utf8");
      const b = new Browser([atrestCa, idpCa]);
      const info = await b.get(`https://localhost:${s.httpPort}/api/v1/auth/oidc`);
      assert.equal(JSON.parse(info.body).enabled, true);
      nextAccount = "carol-sub";
      const hops = await login(b, s.httpPort);
      const auth = new URL(hops[0].location ?? "");
      assert.equal(auth.origin, issuer);
      assert.equal(auth.searchParams.get("code_challenge_method"), "S256");
      assert.ok(auth.searchParams.get("code_challenge"));
      assert.ok(auth.searchParams.get("state"));
      assert.ok(auth.searchParams.get("nonce"));
      const last = hops.at(-1);
      assert.equal(
        last?.url.pathname,
        "/files",
        JSON.stringify(hops.map((h) => [h.status, h.url.href, h.body.slice(0, 200)])),
      );
      assert.deepEqual((await session(b, s.httpPort)).body?.user, "carol");
      const users = JSON.parse((await cli(["user", "list", "--json", "--data", data])).stdout) as {
        name: string;
        groups: string[];
      }[];
      assert.deepEqual(users.find((u) => u.name === "carol")?.groups, ["finance"]);
      // carol's files work like anyone's
      const put = await b.get(`https://localhost:${s.httpPort}/api/v1/fs/list?path=/`);
      assert.equal(put.status, 200);
      // the group claim changes at the provider: the mapped groups follow at the next login
      accounts["carol-sub"].groups = [];
      const b2 = new Browser([atrestCa, idpCa]);
      await login(b2, s.httpPort);
      assert.equal((await session(b2, s.httpPort)).body?.user, "carol");
      const after = JSON.parse((await cli(["user", "list", "--json", "--data", data])).stdout) as {
        name: string;
        groups: string[];
      }[];
      assert.deepEqual(after.find((u) => u.name === "carol")?.groups, []);
      // a claim that is no user name is refused
      nextAccount = "bad-sub";
      const b3 = new Browser([atrestCa, idpCa]);
      const bad = await login(b3, s.httpPort);
      assert.equal(bad.at(-1)?.status, 401);
      const audit = (await cli(["audit", "tail", "-n", "500", "--data", data])).stdout;
      assert.match(audit, /"action":"login","outcome":"success","user":"carol","protocol":"http","method":"oidc"/);
      assert.match(audit, /"action":"user.add".*"user":"oidc:localhost:\d+".*"effectiveUser":"carol"/);
      assert.match(audit, /"method":"oidc","reason":"preferred_username is not a valid user name"/);
    } finally {
      await s.stop();
    }
  });

  test("provision existing: unknown users are refused; forged, replayed and foreign states are refused and audited", async () => {
    const { s, data } = await server(1, "existing");
    try {
      await cli(["user", "add", "dave", "--password-stdin", "--data", data], "dave-pw\n");
      const atrestCa = await readFile(join(data, "tls", "server.crt"), "utf8");
      nextAccount = "carol-sub";
      const b = new Browser([atrestCa, idpCa]);
      assert.equal((await login(b, s.httpPort)).at(-1)?.status, 401, "carol does not exist here");
      assert.equal((await session(b, s.httpPort)).status, 401);
      nextAccount = "dave-sub";
      const d = new Browser([atrestCa, idpCa]);
      const hops = await login(d, s.httpPort);
      assert.equal((await session(d, s.httpPort)).body?.user, "dave");
      // replay the provider's redirect back (same code and state): the state was used up
      const callback = hops.find((h) => h.url.pathname === "/api/v1/auth/oidc/callback");
      assert.ok(callback);
      assert.equal((await d.get(callback.url.href)).status, 401);
      // a forged state
      const forged = await d.get(`https://localhost:${s.httpPort}/api/v1/auth/oidc/callback?code=x&state=forged`);
      assert.equal(forged.status, 401);
      // login CSRF: the attacker runs the flow in their browser and has the victim's browser open the callback
      const attacker = new Browser([atrestCa, idpCa]);
      const { stopped } = await attacker.follow(
        `https://localhost:${s.httpPort}/api/v1/auth/oidc/login`,
        20,
        "/api/v1/auth/oidc/callback",
      );
      assert.ok(stopped, "the attacker's flow reaches the callback");
      const victim = new Browser([atrestCa, idpCa]);
      assert.equal((await victim.get(stopped)).status, 401, "no login started in this browser");
      // a victim with a login of their own under way: the attacker's state is not theirs
      await victim.follow(`https://localhost:${s.httpPort}/api/v1/auth/oidc/login`, 20, "/api/v1/auth/oidc/callback");
      assert.equal((await victim.get(stopped)).status, 401);
      assert.equal((await session(victim, s.httpPort)).status, 401, "the victim is not logged in as the attacker");
      const audit = (await cli(["audit", "tail", "-n", "500", "--data", data])).stdout;
      assert.match(audit, /"user":"carol","protocol":"http","method":"oidc","reason":"unknown user"/);
      assert.match(audit, /"method":"oidc","reason":"unknown or expired state"/);
      assert.match(audit, /"method":"oidc","reason":"state does not match this browser"/);
    } finally {
      await s.stop();
    }
  });

  test("a login started on node a finishes on node b (one PostgreSQL store, one key manager)", pgSkipped, async () => {
    const root = await tempDir("atrest-oidc-nodes-");
    const setup = await setupKms(root, { fs: "server", alice: "custodian", bob: "custodian" });
    const kms = await startKms(setup.dir);
    const nodes: RunningServer[] = [];
    try {
      await unsealKms(kms.url, setup.certs.alice as string, [setup.shares[0] as string]);
      await unsealKms(kms.url, setup.certs.bob as string, [setup.shares[1] as string]);
      const kmsFlags = ["--kms", kms.url, "--kms-cert", setup.certs.fs as string];
      const meta = pgUrl(testSchema());
      const config = join(root, "config.json");
      const oidcConfig = { issuer, clientId: "atrest", redirectUri: redirects[2], scopes: ["openid", "profile"] };
      await writeFile(config, JSON.stringify({ oidc: { ...oidcConfig, provision: "auto" } }));
      const cas = [idpCa];
      for (const [id, port] of [
        ["a", Number(new URL(redirects[2] as string).port)],
        ["b", await freePort()],
      ] as const) {
        const data = join(root, `node-${id}`);
        await cli(["init", "--data", data, ...kmsFlags]);
        const flags = [...kmsFlags, "--meta", meta, "--node-id", id, "--http-port", String(port), "--config", config];
        nodes.push(
          await startServer(data, flags, {
            NODE_EXTRA_CA_CERTS: join(dir, "idp.crt"),
            ATREST_OIDC_CLIENT_SECRET: "idp-client-secret",
          }),
        );
        cas.push(await readFile(join(data, "tls", "server.crt"), "utf8"));
      }
      const [a, b] = nodes as [RunningServer, RunningServer];
      nextAccount = "dave-sub";
      const browser = new Browser(cas);
      const { stopped } = await browser.follow(
        `https://localhost:${a.httpPort}/api/v1/auth/oidc/login?next=/files`,
        20,
        "/api/v1/auth/oidc/callback",
      );
      assert.ok(stopped, "the provider sends the browser back");
      // the load balancer sends the way back to node b: the same cookies, another process
      const toB = new URL(stopped);
      toB.port = String(b.httpPort);
      browser.jar.set(toB.host, new Map(browser.jar.get(new URL(stopped).host)));
      const back = await browser.get(toB.href);
      assert.equal(back.status, 303, back.body);
      assert.equal((await session(browser, b.httpPort)).body?.user, "dave", "logged in on node b");
    } finally {
      for (const n of nodes) await n.stop();
      await kms.stop();
      await dropTestSchemas();
      await removeDir(root);
    }
  });
});
