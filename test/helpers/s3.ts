// An atrest server with its S3 door on (plain HTTP on loopback) and users with access keys, for the S3 tests: awscli
// through run(), @aws-sdk/client-s3 through client().
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { S3Client } from "@aws-sdk/client-s3";
import { cli, type RunningServer, startServer, tempDir } from "./atrest.ts";
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
  options: { serverArgs?: string[]; env?: NodeJS.ProcessEnv; before?: (data: string) => Promise<void> } = {},
): Promise<S3Server> {
  const dir = await tempDir(prefix);
  const data = join(dir, "data");
  await cli(["init", "--data", data]);
  const sshKey = await makeClientKey(join(dir, "keys"));
  const config = join(dir, "aws-config");
  await writeFile(config, "[default]\nregion = us-east-1\ns3 =\n  signature_version = s3v4\n");
  const users: S3User[] = [];
  for (const name of userNames) {
    await cli(["user", "add", name, "--public-key", `${sshKey}.pub`, "--data", data]);
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
