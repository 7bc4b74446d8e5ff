// Which blob store a data directory uses: its own `blobs/` directory (the default) or an S3-compatible bucket shared
// by several server nodes (`--blobs s3://bucket/prefix`, ATREST_BLOBS, config `blobs`; endpoint and region beside it;
// credentials from the AWS SDK's chain: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profiles, instance roles — never
// recorded). The server records an S3 choice in the data directory (blob-store.json), so every command on the
// directory (`keys reencrypt`, `backup`) reaches the same bucket.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { AtrestError } from "../errors.ts";
import { writeFileDurable } from "../fsutil/durable.ts";
import type { BlobStore } from "../store/blobs.ts";
import { LocalBlobStore } from "../store/local-blobs.ts";

export const BLOB_STORE_FILE = "blob-store.json";

export interface BlobStoreChoice {
  /** `local` or `s3://bucket/prefix`. */
  url?: string | undefined;
  /** S3 endpoint (http(s)://host:port) for S3-compatible servers; default AWS. */
  endpoint?: string | undefined;
  region?: string | undefined;
}

function recorded(root: string): BlobStoreChoice | undefined {
  let text: string;
  try {
    text = readFileSync(join(root, BLOB_STORE_FILE), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  const v = JSON.parse(text) as BlobStoreChoice;
  if (typeof v.url !== "string" || !v.url.startsWith("s3://")) {
    throw new AtrestError("INVALID_INPUT", `${join(root, BLOB_STORE_FILE)} must hold {"url": "s3://…"}`);
  }
  return v;
}

/** The choice in force: explicit settings, else ATREST_BLOBS*, else the recorded ones, else local. */
export function blobStoreChoice(root: string, explicit: BlobStoreChoice = {}): BlobStoreChoice {
  const env = process.env;
  const url = explicit.url || env.ATREST_BLOBS || undefined;
  if (url && url !== "local") {
    return {
      url,
      endpoint: explicit.endpoint || env.ATREST_BLOBS_ENDPOINT || undefined,
      region: explicit.region || env.ATREST_BLOBS_REGION || undefined,
    };
  }
  if (url === "local") return { url };
  return recorded(root) ?? { url: "local" };
}

/** Opens (and checks) the data directory's blob store. */
export async function openBlobStore(root: string, explicit?: BlobStoreChoice): Promise<BlobStore> {
  const choice = blobStoreChoice(root, explicit);
  if (!choice.url?.startsWith("s3://")) {
    const local = new LocalBlobStore(root);
    await local.init();
    return local;
  }
  // loaded only when used: a deployment on local disk never loads the AWS SDK
  const { S3BlobStore } = await import("../store/s3-blobs.ts");
  const s3 = new S3BlobStore({ url: choice.url, endpoint: choice.endpoint, region: choice.region });
  await s3.init();
  return s3;
}

/** Records an S3 choice in the data directory (never credentials); `local` leaves it as it is. */
export async function recordBlobStore(root: string, explicit: BlobStoreChoice): Promise<void> {
  const choice = blobStoreChoice(root, explicit);
  if (!choice.url?.startsWith("s3://")) return;
  const now = recorded(root);
  if (now?.url === choice.url && now.endpoint === choice.endpoint && now.region === choice.region) return;
  await writeFileDurable(join(root, BLOB_STORE_FILE), `${JSON.stringify(choice, null, 2)}\n`);
}
