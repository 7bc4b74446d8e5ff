// s3rver (an S3 implementation from npm, a second one beside atrest's own door) on a loopback port, in this process.
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
