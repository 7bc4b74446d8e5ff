import { stat } from "node:fs/promises";
import { join } from "node:path";
import { Option } from "commander";
import { App, dataPaths, initData } from "../app.ts";
import { AtrestError } from "../errors.ts";
import {
  checkKeyManagerBinding,
  REMOTE_KMS_FILE,
  type RemoteKmsSettings,
  remoteKmsFor,
  writeRemoteKms,
} from "../keys/key-manager.ts";
import { type OpenedKeyManager, openKeyManager } from "../wiring/key-manager.ts";

export function dataOption(): Option {
  return new Option("--data <dir>", "data directory").env("ATREST_DATA").default("./data");
}

export function say(line: string): void {
  process.stdout.write(`atrest: ${line}\n`);
}

/**
 * `atrest init`: the data dir and its key manager, the embedded one (dev mode) or, with `kms`, a remote one recorded
 * in the data dir (kms-remote.json) so that every later command and the server use it without flags.
 */
export async function initCommand(data: string, kms?: Partial<RemoteKmsSettings>): Promise<void> {
  const remote = kms?.url ? await remoteKmsFor(data, kms) : undefined;
  if (kms?.certDir && !remote) throw new AtrestError("INVALID_INPUT", "--kms-cert needs --kms URL");
  if (remote) await checkKeyManagerBinding(data, dataPaths(data).kms, remote);
  const { created, warning } = await initData(data, remote);
  if (remote) {
    await writeRemoteKms(data, remote);
    say(`initialised ${data} with the key manager at ${remote.url}`);
    return;
  }
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
 * Before a command opens `data`: it must exist (only `init` and `server` create one, so a typo or a missing
 * `init --kms` never makes a dev-mode key manager by accident) and `kms` must be the key manager it is bound to.
 */
export async function requireData(data: string, kms: RemoteKmsSettings | undefined): Promise<void> {
  const paths = dataPaths(data);
  const made = await Promise.all([paths.kms, paths.meta, join(data, REMOTE_KMS_FILE)].map((p) => exists(p)));
  if (!made.includes(true)) {
    throw new AtrestError(
      "INVALID_INPUT",
      `no data directory at ${data}: create it with atrest init --data ${data} ` +
        "(add --kms URL --kms-cert DIR to bind it to a separate key manager)",
    );
  }
  await checkKeyManagerBinding(data, paths.kms, kms);
  await initData(data, kms);
}

function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** The data directory's key manager alone (no store, no App), for commands that need only it; always closed. */
export async function withKeyManager<T>(data: string, fn: (opened: OpenedKeyManager) => Promise<T>): Promise<T> {
  const kms = kmsFromEnv();
  await requireData(data, kms);
  const opened = await openKeyManager(data, dataPaths(data).kms, await remoteKmsFor(data, kms));
  try {
    return await fn(opened);
  } finally {
    await opened.keys.close();
  }
}

/**
 * Opens an existing data dir, runs `fn`, always closes. The key manager is the one in ATREST_KMS (if it is the one
 * the data dir is bound to), else the one recorded in the data dir, else the embedded one.
 */
export async function withApp<T>(data: string, fn: (app: App) => Promise<T>): Promise<T> {
  const kms = kmsFromEnv();
  await requireData(data, kms);
  const app = await App.open(data, { kms });
  try {
    return await fn(app);
  } finally {
    await app.close();
  }
}
