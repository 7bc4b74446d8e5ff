// A running SFTP adapter over the real application: a temp data dir with sqlite metadata, encrypted blobs, the
// embedded KMS and the audit log, users "alice" (password + the fixture's client key) and "bob" (password).
//
// Every wait in these tests is bounded: a wait that never ends makes node:test cancel the test at --test-timeout
// without running its `finally`, and the fixture it leaks (a listening server) then keeps the test process alive
// forever. As a last line of defence every fixture still open when the file's tests end is closed by an after() hook.
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after } from "node:test";
import type { SFTPWrapper } from "ssh2";
import ssh2 from "ssh2";
import { App, initData } from "../../../src/app.ts";
import type { AuditRecord } from "../../../src/audit/log.ts";
import { type HostKeyVault, loadOrCreateHostKeys } from "../../../src/protocols/sftp/hostkeys.ts";
import { type SftpServer, type SftpServerOptions, startSftpServer } from "../../../src/protocols/sftp/server.ts";
import type { Accounts, UserAuth } from "../../../src/service/accounts.ts";
import { DEFAULT_DEFENDER, Defender, type DefenderSettings } from "../../../src/service/defender.ts";
import { LoginService } from "../../../src/service/login.ts";
import type {
  DirEntry,
  FileStat,
  OpenWriteOptions,
  QuotaInfo,
  ReadHandle,
  SessionInfo,
  SetAttrs,
  VfsSession,
  WriteHandle,
} from "../../../src/vfs/types.ts";
import { makeClientKey } from "../../helpers/sftp-clients.ts";

export const quietLogger = { info() {}, warn() {}, error() {}, debug() {} };

/** Resolves or rejects with `p`, or rejects after `ms` with a message naming what was awaited. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `cond` every 20 ms; fails with `what` in the message when it is not true within `ms`. */
export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A vault in memory: the fixture's host keys live only as long as the test process. */
export function memoryVault(): HostKeyVault {
  const m = new Map<string, Buffer>();
  return {
    get: async (name) => m.get(name),
    putIfAbsent: async (name, value) => {
      if (!m.has(name)) m.set(name, Buffer.from(value));
      return m.get(name) as Buffer;
    },
  };
}

let hostKeys: Promise<Buffer[]> | undefined;
/** Host keys are generated once per test process (RSA 3072 generation is slow). */
function sharedHostKeys(): Promise<Buffer[]> {
  hostKeys ??= mkdtemp(join(tmpdir(), "atrest-hk-")).then(async (d) => {
    try {
      return (await loadOrCreateHostKeys(d, memoryVault())).keys;
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });
  return hostKeys;
}

/** A write handle that counts itself out of `session.openWrites` once closed or aborted. */
function recordedWrite(session: RecordedSession, handle: WriteHandle): WriteHandle {
  let open = true;
  const done = () => {
    if (open) session.openWrites--;
    open = false;
  };
  session.openWrites++;
  return {
    get size() {
      return handle.size;
    },
    write: (offset, data) => handle.write(offset, data),
    close: (attrs) => handle.close(attrs).finally(done),
    abort: (keep) => handle.abort(keep).finally(done),
  };
}

/** The real app's VfsSession, with what the tests observe about it: open uploads and whether close() ran. */
export class RecordedSession implements VfsSession {
  readonly inner: VfsSession;
  readonly info: SessionInfo;
  closed = false;
  openWrites = 0;

  constructor(inner: VfsSession, info: SessionInfo) {
    this.inner = inner;
    this.info = info;
  }

  get username(): string {
    return this.inner.username;
  }
  stat(path: string): Promise<FileStat> {
    return this.inner.stat(path);
  }
  list(path: string): Promise<DirEntry[]> {
    return this.inner.list(path);
  }
  mkdir(path: string): Promise<void> {
    return this.inner.mkdir(path);
  }
  rmdir(path: string): Promise<void> {
    return this.inner.rmdir(path);
  }
  remove(path: string): Promise<void> {
    return this.inner.remove(path);
  }
  rename(from: string, to: string, overwrite: boolean): Promise<void> {
    return this.inner.rename(from, to, overwrite);
  }
  setMtime(path: string, mtime: number): Promise<void> {
    return this.inner.setMtime(path, mtime);
  }
  setAttrs(path: string, attrs: SetAttrs): Promise<void> {
    return this.inner.setAttrs(path, attrs);
  }
  symlink(target: string, link: string): Promise<void> {
    return this.inner.symlink(target, link);
  }
  openRead(path: string): Promise<ReadHandle> {
    return this.inner.openRead(path);
  }
  async openWrite(path: string, options: OpenWriteOptions): Promise<WriteHandle> {
    return recordedWrite(this, await this.inner.openWrite(path, options));
  }
  quota(): Promise<QuotaInfo> {
    return this.inner.quota();
  }
  async close(): Promise<void> {
    this.closed = true;
    await this.inner.close();
  }
}

/** Instrumentation, not a stand-in: every call goes to the real App; the sessions it opens are recorded. */
export class RecordingAccounts implements Accounts {
  readonly app: App;
  readonly sessions: RecordedSession[] = [];

  constructor(app: App) {
    this.app = app;
  }

  verifyPassword(username: string, password: string): Promise<UserAuth | undefined> {
    return this.app.verifyPassword(username, password);
  }
  authorizedKeys(username: string): Promise<string[]> {
    return this.app.authorizedKeys(username);
  }
  userId(username: string): Promise<string | undefined> {
    return this.app.userId(username);
  }
  async openSession(username: string, info: SessionInfo): Promise<VfsSession> {
    const s = new RecordedSession(await this.app.openSession(username, info), info);
    this.sessions.push(s);
    return s;
  }

  /** Uploads open right now over all sessions of `username`. */
  openWrites(username: string): number {
    return this.sessions.filter((s) => s.username === username).reduce((n, s) => n + s.openWrites, 0);
  }
}

export interface Fixture {
  port: number;
  /** Scratch directory for the tests' local files; the data directory is `data` below it. */
  dir: string;
  /** The atrest data directory (kms, meta.db, blobs, audit). */
  data: string;
  keyFile: string;
  /** alice's authorised public key (OpenSSH one-line format). */
  publicKey: string;
  app: App;
  accounts: RecordingAccounts;
  /** The service's login the adapter calls (with the defender when the options asked for one). */
  login: LoginService;
  server: SftpServer;
  /** Every audit record the app wrote since the users were added (vfs operations included). */
  audit: AuditRecord[];
  /** What the adapter logged at error level. */
  errors: unknown[];
  /** Reads back through a separate session on the real vfs (decrypting, as a download would). */
  readFile(path: string, user?: string): Promise<Buffer>;
  stat(path: string, user?: string): Promise<FileStat>;
  list(path: string, user?: string): Promise<DirEntry[]>;
  quota(user?: string): Promise<QuotaInfo>;
  /** The on-disk blob holding the current version of `path`. */
  blobPath(path: string, user?: string): Promise<string>;
  /** Stops the SFTP server only (idempotent); the app stays open for inspection. */
  stopServer(): Promise<void>;
  /** Server, then app, then the directory. Idempotent. */
  close(): Promise<void>;
}

const open = new Set<Fixture>();
after(async () => {
  await Promise.allSettled([...open].map((f) => f.close()));
});

let inspections = 0;

export interface FixtureOptions extends Partial<SftpServerOptions> {
  /** Turns the brute-force defender on with these settings over the defaults (off unless given). */
  defender?: Partial<DefenderSettings>;
  /** The defender's clock. */
  clock?: () => number;
  /** Runs before the data directory is initialised (e.g. to put blobs/ and tmp/ on a small file system). */
  prepareData?: (data: string) => Promise<void>;
}

export async function startFixture(options: FixtureOptions = {}): Promise<Fixture> {
  const dir = await mkdtemp(join(tmpdir(), "atrest-sftp-test-"));
  const data = join(dir, "data");
  const keyFile = await makeClientKey(dir);
  const publicKey = (await readFile(`${keyFile}.pub`, "utf8")).trim();
  await options.prepareData?.(data);
  await initData(data);
  const app = await App.open(data);
  let server: SftpServer | undefined;
  let stopping: Promise<void> | undefined;
  let closing: Promise<void> | undefined;
  const stopServer = () => {
    stopping ??= server ? server.close() : Promise.resolve();
    return stopping;
  };
  const close = () => {
    closing ??= (async () => {
      try {
        await stopServer();
      } finally {
        open.delete(fixture);
        await app.close();
        await rm(dir, { recursive: true, force: true });
      }
    })();
    return closing;
  };

  const withSession = async <T>(user: string, fn: (s: VfsSession) => Promise<T>): Promise<T> => {
    const s = await app.openSession(user, { protocol: "cli", sessionId: `test-inspect-${++inspections}` });
    try {
      return await fn(s);
    } finally {
      await s.close();
    }
  };

  const audit: AuditRecord[] = [];
  const errors: unknown[] = [];
  const accounts = new RecordingAccounts(app);
  const fixture: Fixture = {
    port: 0,
    dir,
    data,
    keyFile,
    publicKey,
    app,
    accounts,
    login: undefined as unknown as LoginService,
    get server(): SftpServer {
      if (!server) throw new Error("server not started");
      return server;
    },
    audit,
    errors,
    readFile: (path, user = "alice") =>
      withSession(user, async (s) => {
        const h = await s.openRead(path);
        try {
          const parts: Buffer[] = [];
          for (let off = 0; off < h.size; ) {
            const b = await h.read(off, 1 << 20);
            if (b.length === 0) throw new Error(`${path}: read returned nothing at ${off} of ${h.size}`);
            parts.push(b);
            off += b.length;
          }
          return Buffer.concat(parts);
        } finally {
          await h.close();
        }
      }),
    stat: (path, user = "alice") => withSession(user, (s) => s.stat(path)),
    list: (path, user = "alice") => withSession(user, (s) => s.list(path)),
    quota: (user = "alice") => withSession(user, (s) => s.quota()),
    async blobPath(path, user = "alice") {
      const row = await app.store.getUser(user);
      if (!row) throw new Error(`no user ${user}`);
      const node = await app.vfs.tree.resolve(await app.vfs.tree.ensureDirs(row.home), path);
      if (!node.blobId) throw new Error(`${path} has no blob`);
      return join(data, "blobs", node.blobId.slice(0, 2), node.blobId);
    },
    stopServer,
    close,
  };
  open.add(fixture);
  try {
    await app.addUser({ name: "alice", password: "correct horse", publicKeys: [publicKey] });
    await app.addUser({ name: "bob", password: "bob-pass" });
    app.audit.onRecord((e) => audit.push(e));
    const logger = { ...quietLogger, error: (o: object) => errors.push(o) };
    const defender = options.defender
      ? new Defender({ ...DEFAULT_DEFENDER, ...options.defender }, app.store, app.audit, options.clock)
      : undefined;
    fixture.login = new LoginService({ accounts, logger, audit: app.audit, defender });
    server = await startSftpServer({
      login: fixture.login,
      hostKeys: await sharedHostKeys(),
      host: "127.0.0.1",
      port: 0,
      logger,
      ...options,
    });
    fixture.port = server.port;
  } catch (err) {
    await close();
    throw err;
  }
  return fixture;
}

export interface Connected {
  client: ssh2.Client;
  sftp: SFTPWrapper;
  /** Settles when the client's connection has closed (listened for from the start, so it cannot be missed). */
  closed: Promise<void>;
}

/**
 * An ssh2 client with an SFTP channel, logged in with the fixture key. Rejects when the connection ends before the
 * SFTP channel is up: ssh2 emits only 'close', no 'error', when the server drops it after the SSH handshake but
 * before 'ready' (e.g. an idle timeout firing during login), and waiting for 'ready' alone then waits forever.
 */
export async function connect(
  fx: Fixture,
  user = "alice",
  timeoutMs = 30_000,
  algorithms?: ssh2.ConnectConfig["algorithms"],
): Promise<Connected> {
  const privateKey = await readFile(fx.keyFile);
  const c = new ssh2.Client();
  const closed = new Promise<void>((resolve) => c.once("close", () => resolve()));
  const up = new Promise<SFTPWrapper>((resolve, reject) => {
    c.on("error", reject);
    c.once("close", () => reject(new Error(`connection closed before the SFTP channel was up (user ${user})`)));
    c.on("ready", () => {
      try {
        c.sftp((err, s) => (err ? reject(err) : resolve(s)));
      } catch (err) {
        reject(err);
      }
    });
    // Nagle on the client side would add ~40 ms to every request/response round trip.
    const sock = createConnection({ host: "127.0.0.1", port: fx.port, noDelay: true });
    c.connect({ sock, username: user, privateKey, readyTimeout: timeoutMs, algorithms });
  });
  try {
    const sftp = await within(up, timeoutMs, `an SFTP session as ${user}`);
    return { client: c, sftp, closed };
  } catch (err) {
    c.destroy();
    throw err;
  }
}
