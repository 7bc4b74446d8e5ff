// A running SFTP adapter over the in-memory vfs, with a client key authorised for user "alice".
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { SFTPWrapper } from "ssh2";
import ssh2 from "ssh2";
import type { AuditEvent } from "../../../src/audit/types.ts";
import { loadOrCreateHostKeys } from "../../../src/protocols/sftp/hostkeys.ts";
import { type SftpServerOptions, startSftpServer } from "../../../src/protocols/sftp/server.ts";
import { MemoryAccounts, type MemoryAccountsOptions } from "../../helpers/memory-vfs.ts";
import { makeClientKey } from "../../helpers/sftp-clients.ts";

export const quietLogger = { info() {}, warn() {}, error() {}, debug() {} };

let hostKeys: Promise<Buffer[]> | undefined;
/** Host keys are generated once per test process (RSA 3072 generation is slow). */
function sharedHostKeys(): Promise<Buffer[]> {
  hostKeys ??= mkdtemp(join(tmpdir(), "atrest-hk-")).then(async (d) => (await loadOrCreateHostKeys(d)).keys);
  return hostKeys;
}

export interface Fixture {
  port: number;
  dir: string;
  keyFile: string;
  accounts: MemoryAccounts;
  audit: AuditEvent[];
  errors: unknown[];
  close(): Promise<void>;
}

export async function startFixture(
  options: Partial<SftpServerOptions> = {},
  accountOptions: Partial<MemoryAccountsOptions> = {},
): Promise<Fixture> {
  const dir = await mkdtemp(join(tmpdir(), "atrest-sftp-test-"));
  const keyFile = await makeClientKey(dir);
  const pub = (await readFile(`${keyFile}.pub`, "utf8")).trim();
  const accounts = new MemoryAccounts({
    users: { alice: { password: "correct horse", keys: [pub] }, bob: { password: "bob-pass" } },
    ...accountOptions,
  });
  const audit: AuditEvent[] = [];
  const errors: unknown[] = [];
  const logger = { ...quietLogger, error: (o: object) => errors.push(o) };
  const server = await startSftpServer({
    accounts,
    hostKeys: await sharedHostKeys(),
    host: "127.0.0.1",
    port: 0,
    logger,
    audit: { record: (e) => audit.push(e) },
    ...options,
  });
  return {
    port: server.port,
    dir,
    keyFile,
    accounts,
    audit,
    errors,
    async close() {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** An ssh2 client with an SFTP channel, logged in with the fixture key. */
export function connect(fx: Fixture, user = "alice"): Promise<{ client: ssh2.Client; sftp: SFTPWrapper }> {
  return readFile(fx.keyFile).then(
    (privateKey) =>
      new Promise((resolve, reject) => {
        const c = new ssh2.Client();
        c.on("error", reject);
        c.on("ready", () => c.sftp((err, s) => (err ? reject(err) : resolve({ client: c, sftp: s }))));
        // Nagle on the client side would add ~40 ms to every request/response round trip.
        const sock = createConnection({ host: "127.0.0.1", port: fx.port, noDelay: true });
        c.connect({ sock, username: user, privateKey });
      }),
  );
}
