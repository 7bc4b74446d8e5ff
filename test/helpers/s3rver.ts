// s3rver (an S3 implementation from npm, a second one beside atrest's own door) on a loopback port, in this process.
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { tempDir } from "./atrest.ts";

interface S3rverServer {
  run(): Promise<{ port: number }>;
  close(): Promise<void>;
}

const S3rver = createRequire(import.meta.url)("s3rver") as new (o: Record<string, unknown>) => S3rverServer;

export interface RunningS3rver {
  endpoint: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
  dir: string;
  /** The server's process (startS3rverProcess), for CPU figures. */
  pid?: number;
  close(): Promise<void>;
}

export async function startS3rver(buckets: string[]): Promise<RunningS3rver> {
  const dir = await tempDir("atrest-s3rver-");
  const server = new S3rver({
    address: "127.0.0.1",
    port: 0,
    silent: true,
    directory: dir,
    configureBuckets: buckets.map((name) => ({ name })),
  });
  const { port } = await server.run();
  return {
    endpoint: `http://127.0.0.1:${port}`,
    credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" },
    dir,
    close: () => server.close(),
  };
}

/** s3rver in a child process of its own (`node test/helpers/s3rver.ts <dir> <bucket>…`): a test that loads it with
 * hundreds of requests keeps its own event loop free for its clients. */
export async function startS3rverProcess(buckets: string[]): Promise<RunningS3rver> {
  const dir = await tempDir("atrest-s3rver-");
  const proc = spawn(process.execPath, [import.meta.filename, dir, ...buckets], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const port = await new Promise<number>((resolve, reject) => {
    let out = "";
    proc.stdout.on("data", (c: Buffer) => {
      out += c.toString();
      const m = /s3rver listening on (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    proc.once("exit", (code) => reject(new Error(`s3rver exited with ${code}`)));
  });
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  return {
    endpoint: `http://127.0.0.1:${port}`,
    credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" },
    dir,
    ...(proc.pid ? { pid: proc.pid } : {}),
    close: async () => {
      proc.kill("SIGTERM");
      await exited;
    },
  };
}

if (process.argv[1] === import.meta.filename) {
  const [dir, ...buckets] = process.argv.slice(2);
  const server = new S3rver({
    address: "127.0.0.1",
    port: 0,
    silent: true,
    directory: dir,
    configureBuckets: buckets.map((name) => ({ name })),
  });
  const { port } = await server.run();
  process.stdout.write(`s3rver listening on ${port}\n`);
  process.on("SIGTERM", () => void server.close().then(() => process.exit(0)));
}
