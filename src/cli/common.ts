import { Option } from "commander";
import { App, initData } from "../app.ts";

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

/** Opens the data dir (initialising it on first use), runs `fn`, always closes. */
export async function withApp<T>(data: string, fn: (app: App) => Promise<T>): Promise<T> {
  await initData(data);
  const app = await App.open(data);
  try {
    return await fn(app);
  } finally {
    await app.close();
  }
}
