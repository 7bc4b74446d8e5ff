import { Option } from "commander";
import { App, initData } from "../app.ts";
import { AtrestError } from "../errors.ts";
import type { RemoteKmsSettings } from "../keys/key-manager.ts";

export function dataOption(): Option {
  return new Option("--data <dir>", "data directory").env("ATREST_DATA").default("./data");
}

export function say(line: string): void {
  process.stdout.write(`atrest: ${line}\n`);
}

export async function initCommand(data: string): Promise<void> {
  const { created, warning } = await initData(data);
  say(created ? `initialised ${data}` : `${data} is already initialised`);
  if (warning) process.stderr.write(`\n${warning}\n\n`);
}

/** A remote key manager named by ATREST_KMS / ATREST_KMS_CERT (the server's settings), if any. */
export function kmsFromEnv(): RemoteKmsSettings | undefined {
  const url = process.env.ATREST_KMS;
  if (!url) return undefined;
  const certDir = process.env.ATREST_KMS_CERT;
  if (!certDir) throw new AtrestError("INVALID_INPUT", "ATREST_KMS is set but ATREST_KMS_CERT is not");
  return { url, certDir };
}

/**
 * Opens the data dir (initialising it on first use), runs `fn`, always closes. The key manager is the one in
 * ATREST_KMS, else the one the server recorded in the data dir, else the embedded one.
 */
export async function withApp<T>(data: string, fn: (app: App) => Promise<T>): Promise<T> {
  const kms = kmsFromEnv();
  await initData(data, kms);
  const app = await App.open(data, { kms });
  try {
    return await fn(app);
  } finally {
    await app.close();
  }
}
