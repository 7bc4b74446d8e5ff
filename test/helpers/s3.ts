// An atrest server with its S3 door on (plain HTTP on loopback) and users with access keys, for the S3 tests: awscli
// through run(), @aws-sdk/client-s3 through client(); startS3Atrest (password users) for the client, conformance and
// bench runs, and a loopback forward proxy for virtual-hosted-style names.
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { createServer as createHttpServer, request as httpRequest } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { S3Client } from "@aws-sdk/client-s3";
import { cli, type RunningServer, removeDir, startServer, tempDir } from "./atrest.ts";
import { makeClientKey, type RunResult, run } from "./sftp-clients.ts";

export interface S3User {
  name: string;
  id: string;
  secret: string;
  env: NodeJS.ProcessEnv;
}

export interface S3Server {
  dir: string;
  data: string;
  server: RunningServer;
  endpoint: string;
  /** The SSH key (path of the private key) the users log in with over SFTP. */
  sshKey: string;
  users: S3User[];
  /** awscli as `user` (default: the first). */
  aws(args: string[], user?: S3User, timeoutMs?: number): Promise<RunResult>;
  /** An SDK client as `user` (default: the first). */
  client(user?: S3User): S3Client;
}

/** `atrest init`, the users (each with an access key), and the server with `--s3-port auto --s3-tls off`. */
export async function startS3(
  prefix: string,
  userNames: string[] = ["alice"],
  options: {
    serverArgs?: string[];
    env?: NodeJS.ProcessEnv;
    before?: (data: string) => Promise<void>;
    /** Extra `atrest user add` arguments per user (e.g. --quota-bytes). */
    userArgs?: Record<string, string[]>;
  } = {},
): Promise<S3Server> {
  const dir = await tempDir(prefix);
  const data = join(dir, "data");
  await cli(["init", "--data", data]);
  const sshKey = await makeClientKey(join(dir, "keys"));
  const config = join(dir, "aws-config");
  await writeFile(config, "[default]\nregion = us-east-1\ns3 =\n  signature_version = s3v4\n");
  const users: S3User[] = [];
  for (const name of userNames) {
    await cli([
      "user",
      "add",
      name,
      "--public-key",
      `${sshKey}.pub`,
      ...(options.userArgs?.[name] ?? []),
      "--data",
      data,
    ]);
    const { stdout } = await cli(["user", "s3-key", "add", name, "--data", data]);
    const id = /access key id: +(\S+)/.exec(stdout)?.[1];
    const secret = /secret access key: +(\S+)/.exec(stdout)?.[1];
    assert.ok(id && secret, stdout);
    users.push({
      name,
      id,
      secret,
      env: {
        ...process.env,
        AWS_ACCESS_KEY_ID: id,
        AWS_SECRET_ACCESS_KEY: secret,
        AWS_CONFIG_FILE: config,
        AWS_SHARED_CREDENTIALS_FILE: join(dir, "none"),
        AWS_EC2_METADATA_DISABLED: "true",
      },
    });
  }
  await options.before?.(data);
  const server = await startServer(data, ["--s3-port", "auto", "--s3-tls", "off", ...(options.serverArgs ?? [])], {
    ...process.env,
    ...options.env,
  });
  for (let i = 0; i < 100 && !/s3 listening/.test(server.output()); i++) await new Promise((r) => setTimeout(r, 100));
  const m = /atrest: s3 listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(server.output());
  assert.ok(m, server.output());
  const endpoint = m[1] as string;
  const first = users[0] as S3User;
  return {
    dir,
    data,
    server,
    endpoint,
    sshKey,
    users,
    aws: (args, user = first, timeoutMs = 120_000) =>
      run("aws", ["--endpoint-url", endpoint, ...args], { env: user.env, timeoutMs }),
    client: (user = first) =>
      new S3Client({
        endpoint,
        region: "us-east-1",
        forcePathStyle: true,
        credentials: { accessKeyId: user.id, secretAccessKey: user.secret },
      }),
  };
}

export interface S3Key {
  id: string;
  secret: string;
}

export interface S3Atrest {
  dir: string;
  data: string;
  server: RunningServer;
  /** The S3 door's port. */
  s3Port: number;
  /** http://127.0.0.1:port */
  endpoint: string;
  keys: Record<string, S3Key>;
  stop(): Promise<void>;
}

/** Adds an access key for `user` (atrest user s3-key add) and returns the id and secret it printed once. */
export async function addS3Key(data: string, user: string): Promise<S3Key> {
  const { stdout } = await cli(["user", "s3-key", "add", user, "--data", data]);
  const id = /access key id: +(\S+)/.exec(stdout)?.[1];
  const secret = /secret access key: +(\S+)/.exec(stdout)?.[1];
  assert.ok(id && secret, stdout);
  return { id, secret };
}

/** The port of the `s3 listening on` line of a server's output (waits for it, up to 30 s). */
export async function s3PortOf(server: RunningServer): Promise<number> {
  for (let i = 0; i < 300 && !/s3 listening/.test(server.output()); i++) await new Promise((r) => setTimeout(r, 100));
  const m = /atrest: s3 listening on https?:\/\/[^\s]+:(\d+)/.exec(server.output());
  assert.ok(m, server.output());
  return Number(m[1]);
}

/**
 * Initialises a data dir, adds `users` (a password each, home /<name>) with one access key each, and starts the
 * server with `--s3-port auto --s3-tls off` plus `extra`.
 */
export async function startS3Atrest(
  options: {
    users?: string[];
    extra?: string[];
    env?: NodeJS.ProcessEnv;
    prefix?: string;
    /** Runs after the users exist, before the server starts (keys, folder rules). */
    setup?: (data: string) => Promise<void>;
  } = {},
): Promise<S3Atrest> {
  const dir = await tempDir(options.prefix ?? "atrest-s3-");
  const data = join(dir, "data");
  await cli(["init", "--data", data]);
  const keys: Record<string, S3Key> = {};
  for (const u of options.users ?? ["alice"]) {
    await cli(["user", "add", u, "--password-stdin", "--data", data], `pw-${u}-0123456789\n`);
    keys[u] = await addS3Key(data, u);
  }
  await options.setup?.(data);
  const server = await startServer(
    data,
    ["--s3-port", "auto", "--s3-tls", "off", ...(options.extra ?? [])],
    options.env,
  );
  const s3Port = await s3PortOf(server);
  return {
    dir,
    data,
    server,
    s3Port,
    endpoint: `http://127.0.0.1:${s3Port}`,
    keys,
    async stop() {
      await server.stop();
      await removeDir(dir);
    },
  };
}

export interface LoopbackProxy {
  /** http://127.0.0.1:port, for HTTP_PROXY or a client's proxy setting. */
  url: string;
  port: number;
  /** The Host header of every request forwarded so far. */
  hosts: string[];
  close(): Promise<void>;
}

/**
 * A forward HTTP proxy that sends every request to 127.0.0.1:`port`, whatever host the client asked for, with the
 * request's headers (Host included, so signatures hold) untouched. It lets clients use virtual-hosted-style names
 * (bucket.s3.localhost) on a machine whose resolver does not map *.localhost to loopback; nothing leaves loopback.
 */
export async function startLoopbackProxy(port: number): Promise<LoopbackProxy> {
  const hosts: string[] = [];
  const server = createHttpServer((req, res) => {
    hosts.push(req.headers.host ?? "");
    // absolute-form (http://host:port/path?query) to origin-form, byte for byte
    const path = /^[a-z]+:\/\/[^/?]*(.*)$/i.exec(req.url ?? "")?.[1] || "/";
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(req.headers)) {
      if (v !== undefined && k !== "proxy-connection") headers[k] = v;
    }
    const up = httpRequest({ host: "127.0.0.1", port, method: req.method, path, headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on("error", () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const p = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${p}`,
    port: p,
    hosts,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
