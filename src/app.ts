// Wires the layers together for one data directory: embedded KMS, metadata store, blobs, vfs, accounts, audit.
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { raiseHighWater, raiseKmsHighWater } from "./audit/high-water.ts";
import { AuditLog } from "./audit/log.ts";
import { AtrestError } from "./errors.ts";
import { TriggerEngine } from "./events/engine.ts";
import { pgpApi } from "./events/pgp.ts";
import { sweepTempTree } from "./fsutil/durable.ts";
import { checkpointSigner } from "./keys/checkpoint-signer.ts";
import {
  DEFAULT_DEK_CACHE_ENTRIES,
  DEFAULT_DEK_CACHE_SECONDS,
  DekCache,
  isKeyStateWatcher,
  withDekCache,
} from "./keys/dek-cache.ts";
import {
  checkKeyManagerBinding,
  type RemoteKmsSettings,
  readRemoteKms,
  remoteKmsFor,
  writeRemoteKms,
} from "./keys/key-manager.ts";
import { lockHolder } from "./keys/lock.ts";
import type { KeyManager } from "./keys/provider.ts";
import { recoverRewrap } from "./keys/rewrap.ts";
import { serviceKey } from "./keys/service-keys.ts";
import { type EmbeddedKms, initEmbeddedKms } from "./kms/embedded.ts";
import { type Logger, silentLogger } from "./logger.ts";
import { pgpWriteFilter } from "./pgp/folder.ts";
import { PgpKeyStore } from "./pgp/keystore.ts";
import type { Accounts, UserAuth } from "./service/accounts.ts";
import { type Actor, cliActor } from "./service/actor.ts";
import { Admin } from "./service/admin.ts";
import { verifyPassword } from "./service/passwords.ts";
import { S3Keys } from "./service/s3-keys.ts";
import type { NewUser } from "./service/users.ts";
import { requireUser } from "./service/users.ts";
import { RowSealer } from "./store/sealing.ts";
import type { FolderOptions, FolderRow, GroupOptions, GroupRow, MetaStore, UserRow } from "./store/types.ts";
import { Session } from "./vfs/session.ts";
import type { SessionInfo, VfsSession } from "./vfs/types.ts";
import { META_CONTEXT, META_KEY_SETTING, Vfs } from "./vfs/vfs.ts";
import { type BlobStoreChoice, openBlobStore, recordBlobStore } from "./wiring/blob-store.ts";
import { type OpenedKeyManager, openKeyManager } from "./wiring/key-manager.ts";
import {
  type MetaStoreChoice,
  metaStoreRestore,
  openMetaStore,
  recordedNodeId,
  recordMetaStore,
} from "./wiring/meta-store.ts";

export const AUDIT_KEY_SETTING = "audit.key";
export const AUDIT_CONTEXT = { purpose: "audit" };

export interface DataPaths {
  root: string;
  kms: string;
  meta: string;
  hostKeys: string;
  /** Key jobs: lock and rewrap journal. */
  keys: string;
  audit: string;
}

export function dataPaths(root: string): DataPaths {
  return {
    root,
    kms: join(root, "kms"),
    meta: join(root, "meta.db"),
    hostKeys: join(root, "hostkeys"),
    keys: join(root, "keys"),
    audit: join(root, "audit", "audit.log"),
  };
}

/**
 * The metadata store of a data directory: the one place that knows which driver it uses (server and CLI alike):
 * `choice`, else ATREST_META, else what the server recorded in the directory, else its SQLite file.
 */
export function openStore(paths: DataPaths, choice?: MetaStoreChoice): MetaStore {
  return openMetaStore(paths.root, paths.meta, choice);
}

/** Restoring a backup: whether the data directory has a store, and how a `snapshot()` file becomes its store. */
export function storeRestore(paths: DataPaths): {
  exists(): Promise<boolean>;
  install(snapshot: string): Promise<void>;
} {
  return metaStoreRestore(paths.root, paths.meta);
}

/**
 * Creates the data directory and, unless it uses a remote key manager (`remote`, or recorded in the directory), the
 * dev-mode embedded key manager. Idempotent.
 */
export async function initData(
  root: string,
  remote?: RemoteKmsSettings,
): Promise<{ created: boolean; warning?: string }> {
  const paths = dataPaths(root);
  await mkdir(root, { recursive: true, mode: 0o700 });
  if (remote || (await readRemoteKms(root))) return { created: false };
  return initEmbeddedKms(paths.kms);
}

export interface AppOptions {
  logger?: Logger;
  /** DEK cache bounds (DESIGN §3); 0 turns it off. Defaults: 300 s, 10,000 entries. */
  dekCacheSeconds?: number;
  dekCacheEntries?: number;
  /** New files' data keys made per key manager call (vfs/dek-pool.ts); 1 = one call (and KMS record) per file. */
  dekPoolBatch?: number;
  /**
   * Remove unfinished uploads and unreferenced blobs at open. Only the server does this, at its start: an admin
   * command running beside a live server must not delete the server's uploads in progress.
   */
  sweep?: boolean;
  /**
   * Follow the key manager's key state changes and drop the affected cached DEKs at once (the server; a short-lived
   * command has nothing cached worth the long poll).
   */
  followKeyStates?: boolean;
  /** A remote key manager (`atrest kms serve`); default: the one recorded in the data dir, else the embedded one. */
  kms?: RemoteKmsSettings;
  /** The metadata store (`--meta`); default: ATREST_META, else the one recorded in the data dir, else SQLite. */
  meta?: MetaStoreChoice;
  /** The blob store (`--blobs`); default: ATREST_BLOBS, else the one recorded in the data dir, else `<data>/blobs`. */
  blobs?: BlobStoreChoice;
}

export class App implements Accounts {
  readonly paths: DataPaths;
  readonly store: MetaStore;
  /** The key manager, without the DEK cache (admin commands, rewrap). */
  readonly keys: KeyManager;
  /** The embedded key manager, when that is the one in use. */
  readonly embedded: EmbeddedKms | undefined;
  readonly dekCache: DekCache;
  /** Where the keys live, for reports: the embedded key manager's directory or the remote key manager's URL. */
  readonly keyManagerLocation: string;
  readonly vfs: Vfs;
  /** OpenPGP keys; PGP folders are its write filter on the vfs. */
  readonly pgp: PgpKeyStore;
  readonly audit: AuditLog;
  readonly logger: Logger;
  /** Trigger rules and their queue; intake runs in every process, the worker only after `triggers.start()`. */
  /** This node's id among several on one store (audit records, high-water marks); undefined for a lone node. */
  readonly node: string | undefined;
  readonly triggers: TriggerEngine;
  #admin: Admin | undefined;
  /** The high-water mark write in flight (audit/high-water.ts), awaited before the store closes. */
  #highWater: Promise<void> = Promise.resolve();
  #s3Keys: S3Keys | undefined;

  private constructor(
    paths: DataPaths,
    store: MetaStore,
    opened: OpenedKeyManager,
    dekCache: DekCache,
    vfs: Vfs,
    audit: AuditLog,
    logger: Logger,
    node: string | undefined,
  ) {
    this.node = node;
    this.paths = paths;
    this.store = store;
    this.keys = opened.keys;
    this.embedded = opened.embedded;
    this.dekCache = dekCache;
    this.keyManagerLocation = opened.location;
    this.vfs = vfs;
    this.audit = audit;
    this.logger = logger;
    // every signed checkpoint raises the log's high-water mark in the metadata store and at the key manager: `audit
    // verify` then notices a log cut back to an earlier checkpoint or emptied, even with meta.db rolled back too
    audit.onCheckpoint((seq, hash) => {
      this.#highWater = this.#highWater
        .then(() =>
          Promise.all([
            raiseHighWater(store, seq, hash, node).catch((err) =>
              logger.warn({ err }, "audit high-water mark not recorded in the metadata store"),
            ),
            raiseKmsHighWater(opened.keys, seq, hash, node).catch((err) =>
              logger.warn({ err }, "audit high-water mark not recorded by the key manager"),
            ),
          ]),
        )
        .then(() => undefined);
    });
    this.pgp = new PgpKeyStore(store, vfs.keys, audit);
    vfs.writeFilters.register(pgpWriteFilter(this.pgp));
    const pgp = pgpApi(this.pgp);
    this.triggers = new TriggerEngine({
      store,
      keys: opened.keys,
      audit,
      logger,
      openSession: (user, info) => this.openSession(user, info),
      pgp: () => pgp,
    });
  }

  static async open(root: string, options: AppOptions | Logger = {}): Promise<App> {
    const o: AppOptions = "info" in options ? { logger: options as Logger } : (options as AppOptions);
    const logger = o.logger ?? silentLogger;
    const paths = dataPaths(root);
    const remote = await remoteKmsFor(root, o.kms);
    await checkKeyManagerBinding(root, paths.kms, o.kms);
    const opened = await openKeyManager(root, paths.kms, remote);
    const keys = opened.keys;
    const store = openStore(paths, o.meta);
    // the node that writes this data directory's audit log (several nodes on one store): the server's, else the one
    // the server recorded here (a CLI command writes into the same log)
    const node = o.meta?.nodeId ?? recordedNodeId(root);
    if (o.meta?.url) await recordMetaStore(root, o.meta.url);
    const blobs = await openBlobStore(root, o.blobs);
    if (o.blobs?.url) await recordBlobStore(root, o.blobs);
    const audit = new AuditLog(
      paths.audit,
      await serviceKey(store, keys, AUDIT_KEY_SETTING, "default", AUDIT_CONTEXT),
      {
        signer: await checkpointSigner(store, keys),
        // one locked write per event-loop turn; the SIEM pipeline and fail-closed (admit) build on it
        groupCommit: true,
        ...(node ? { node } : {}),
      },
    );
    const dekCache = new DekCache({
      maxAgeMs: (o.dekCacheSeconds ?? DEFAULT_DEK_CACHE_SECONDS) * 1000,
      maxEntries: o.dekCacheEntries ?? DEFAULT_DEK_CACHE_ENTRIES,
    });
    const cached: KeyManager = withDekCache<KeyManager>(keys, dekCache);
    if (o.followKeyStates && dekCache.enabled && isKeyStateWatcher(keys)) {
      dekCache.follow(keys, (key, entries) =>
        logger.info({ key: `kek:${key}`, entries }, "key state changed at the key manager: cached data keys dropped"),
      );
    }
    if (o.sweep) {
      // temp files of durable writes (audit cursors, key manager files, kms-remote.json) that a crash left behind;
      // blobs/ has its own sweep (Vfs.open) and far too many entries to list here
      const temps = await sweepTempTree(root, 3, ["blobs"]);
      if (temps > 0) logger.warn({ removed: temps }, "removed temp files left by an interrupted write");
    }
    if (o.sweep && lockHolder(paths.keys) === undefined) {
      // A rewrap that crashed may have left headers half-written: finish them before serving (journal.ts).
      const repaired = await recoverRewrap({ store, blobs, keys, dir: paths.keys });
      if (repaired > 0) logger.warn({ repaired }, "finished an interrupted key rewrap");
    }
    const metaKey = await serviceKey(store, cached, META_KEY_SETTING, "default", META_CONTEXT);
    // users, groups and folders are sealed rows under keys derived from the metadata key (store/sealing.ts)
    await store.unlock(new RowSealer(metaKey));
    const vfs = await Vfs.open({
      store,
      blobs,
      keys: cached,
      audit,
      logger,
      metaKey,
      sweep: o.sweep ?? false,
      dekPoolBatch: o.dekPoolBatch,
    });
    if (o.kms) await writeRemoteKms(root, o.kms);
    return new App(paths, store, opened, dekCache, vfs, audit, logger, node);
  }

  /** The embedded key manager for key administration in tests and dev mode; remote key managers are run apart. */
  get embeddedKms(): EmbeddedKms {
    if (!this.embedded) {
      throw new AtrestError("UNSUPPORTED", `keys are administered on the key manager (${this.keyManagerLocation})`);
    }
    return this.embedded;
  }

  /** Admin use-cases (service/admin.ts); the methods below call them as `actor`, default the CLI's (the OS user). */
  get admin(): Admin {
    this.#admin ??= new Admin({ store: this.store, vfs: this.vfs, audit: this.audit, pgp: this.pgp });
    return this.#admin;
  }

  /** S3 access keys (service/s3-keys.ts). */
  get s3Keys(): S3Keys {
    this.#s3Keys ??= new S3Keys(this.store, this.vfs.keys, this.audit);
    return this.#s3Keys;
  }

  s3Secret(accessKeyId: string): Promise<{ username: string; secret: Buffer } | undefined> {
    return this.s3Keys.open(accessKeyId);
  }

  addUser(input: NewUser, actor: Actor = cliActor()): Promise<UserRow> {
    return this.admin.addUser(actor, input);
  }

  removeUser(name: string, actor: Actor = cliActor()): Promise<void> {
    return this.admin.removeUser(actor, name);
  }

  putGroup(name: string, options: GroupOptions, actor: Actor = cliActor()): Promise<GroupRow> {
    return this.admin.putGroup(actor, name, options);
  }

  removeGroup(name: string, actor: Actor = cliActor()): Promise<void> {
    return this.admin.removeGroup(actor, name);
  }

  putFolder(path: string, options: FolderOptions, actor: Actor = cliActor()): Promise<FolderRow> {
    return this.admin.putFolder(actor, path, options);
  }

  removeFolder(path: string, actor: Actor = cliActor()): Promise<void> {
    return this.admin.removeFolder(actor, path);
  }

  async verifyPassword(username: string, password: string): Promise<UserAuth | undefined> {
    const user = await this.store.getUser(username);
    const ok = await verifyPassword(user?.passwordHash, password);
    return ok && user ? { username: user.name } : undefined;
  }

  async userId(username: string): Promise<string | undefined> {
    const user = await this.store.getUser(username);
    return user?.disabled ? undefined : user?.id;
  }

  async authorizedKeys(username: string): Promise<string[]> {
    return (await this.store.getUser(username))?.publicKeys ?? [];
  }

  async openSession(username: string, info: SessionInfo): Promise<VfsSession> {
    const user = await requireUser(this.store, username);
    // nothing runs as a disabled user: no door's login, no share link of theirs, no trigger rule they own
    if (user.disabled) throw new AtrestError("PERMISSION_DENIED", `account ${username} is disabled`);
    const rootId = await this.vfs.tree.ensureDirs(user.home);
    return new Session(this.vfs, user, rootId, info);
  }

  async close(): Promise<void> {
    // records still waiting for their group commit reach the trigger intake before it stops
    this.audit.flush();
    await this.triggers.close();
    await this.vfs.close();
    await this.vfs.blobs.close();
    // sign what is in the log now, so the high-water mark reaches the store before it closes
    try {
      this.audit.checkpoint();
    } catch (err) {
      this.logger.warn({ err }, "audit checkpoint at close failed");
    }
    await this.#highWater;
    await this.store.close();
    this.dekCache.close();
    await this.keys.close();
    await this.audit.close();
  }
}
