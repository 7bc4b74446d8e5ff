// Which metadata store a data directory uses: the embedded SQLite file (<data>/meta.db, the default) or a PostgreSQL
// database shared by several server processes (`--meta postgres://…`, ATREST_META, config `meta`). The server records
// a PostgreSQL choice in the data directory (meta-store.json, without any password: that comes from PGPASSWORD or the
// server's own authentication), so every command run against the directory (`user add`, `keys rewrap`, `backup`)
// opens the same store without repeating the flag.
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { AtrestError } from "../errors.ts";
import { writeFileDurable } from "../fsutil/durable.ts";
import {
  installPostgresSnapshot,
  openPostgresStore,
  parsePostgresUrl,
  redactPostgresUrl,
} from "../store/postgres/index.ts";
import { installSqliteSnapshot, openSqliteStore } from "../store/sqlite/index.ts";
import type { MetaStore } from "../store/types.ts";
import { testHooks } from "../test-hooks.ts";

export const META_STORE_FILE = "meta-store.json";

export interface MetaStoreChoice {
  /** `sqlite` (the data directory's meta.db) or a postgres:// URL; default: ATREST_META, the recorded one, sqlite. */
  url?: string | undefined;
  /** This process's id among the nodes sharing a PostgreSQL store (audit records, leases); default random. */
  nodeId?: string;
}

function isPostgres(url: string): boolean {
  return /^postgres(ql)?:\/\//.test(url);
}

/** Checks a `--meta` value: `sqlite` or a postgres:// URL. */
export function checkMetaUrl(url: string): string {
  if (url === "sqlite") return url;
  parsePostgresUrl(url);
  return url;
}

function recorded(root: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(join(root, META_STORE_FILE), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  const url = (JSON.parse(text) as { url?: unknown }).url;
  if (typeof url !== "string" || !isPostgres(url)) {
    throw new AtrestError("INVALID_INPUT", `${join(root, META_STORE_FILE)} must hold {"url": "postgres://…"}`);
  }
  return url;
}

/** The store URL in force for `root`: the explicit one, else ATREST_META, else the recorded one, else sqlite. */
export function metaStoreUrl(root: string, explicit?: string): string {
  const url = explicit || process.env.ATREST_META || recorded(root) || testHooks().metaStore?.(root) || "sqlite";
  return checkMetaUrl(url);
}

/** Opens the data directory's metadata store (server and commands alike). */
export function openMetaStore(root: string, metaPath: string, choice?: MetaStoreChoice): MetaStore {
  const url = metaStoreUrl(root, choice?.url);
  if (!isPostgres(url)) return openSqliteStore(metaPath);
  return openPostgresStore(url, choice?.nodeId ? { nodeId: choice.nodeId } : {});
}

/** Records a PostgreSQL store in the data directory (password removed); `sqlite` leaves the directory as it is. */
export async function recordMetaStore(root: string, url: string): Promise<void> {
  if (!isPostgres(url)) return;
  const redacted = redactPostgresUrl(url);
  if (recorded(root) === redacted) return;
  await writeFileDurable(join(root, META_STORE_FILE), `${JSON.stringify({ url: redacted }, null, 2)}\n`);
}

/** Restoring a backup: whether the data directory has a store, and how a `snapshot()` file becomes its store. */
export function metaStoreRestore(
  root: string,
  metaPath: string,
): { exists(): Promise<boolean>; install(snapshot: string): Promise<void> } {
  const url = metaStoreUrl(root);
  if (!isPostgres(url)) {
    return {
      exists: async () => (await stat(metaPath).catch(() => undefined)) !== undefined,
      install: (snapshot) => installSqliteSnapshot(snapshot, metaPath),
    };
  }
  return {
    async exists() {
      const store = openPostgresStore(url);
      try {
        return (await store.getNode("root")) !== undefined || (await store.listUsers()).length > 0;
      } finally {
        await store.close();
      }
    },
    install: (snapshot) => installPostgresSnapshot(snapshot, url),
  };
}

/** The data directory's server node id (node.json), written by the server's first start on a shared store. */
export const NODE_FILE = "node.json";
const NODE_ID = /^[a-z0-9][a-z0-9._-]{0,47}$/;

export function recordedNodeId(root: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(join(root, NODE_FILE), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  const id = (JSON.parse(text) as { id?: unknown }).id;
  if (typeof id !== "string" || !NODE_ID.test(id)) {
    throw new AtrestError("INVALID_INPUT", `${join(root, NODE_FILE)} must hold {"id": "<node id>"}`);
  }
  return id;
}

/**
 * The server's node id: `configured` (--node-id), else the one this data directory has, else — on a store shared by
 * several nodes (PostgreSQL) — a new one, recorded so that it stays the same across restarts (its audit log's
 * high-water marks and its leases are under it). A single node on SQLite has none unless configured.
 */
export async function serverNodeId(root: string, configured?: string, metaUrl?: string): Promise<string | undefined> {
  const have = recordedNodeId(root);
  const id =
    configured ??
    have ??
    (isPostgres(metaStoreUrl(root, metaUrl)) ? `node-${randomBytes(4).toString("hex")}` : undefined);
  if (id !== undefined && id !== have) {
    await writeFileDurable(join(root, NODE_FILE), `${JSON.stringify({ id }, null, 2)}\n`);
  }
  return id;
}

/** For reports: `sqlite <path>` or the PostgreSQL URL without its password. */
export function describeMetaStore(root: string, explicit?: string): string {
  const url = metaStoreUrl(root, explicit);
  return isPostgres(url) ? `postgres ${redactPostgresUrl(url)}` : `sqlite ${join(root, "meta.db")}`;
}
