// `atrest keys who-can-decrypt <path>`: the key behind one file, where that key lives and what the key manager says
// about it, plus the rule that picks the key for new files at that path.
import { readHeader } from "../container-io/encrypted-reader.ts";
import { AtrestError } from "../errors.ts";
import { parseKeyRef } from "../kms/api/key-ref.ts";
import type { KeyProvider } from "../kms/api/types.ts";
import type { BlobStore } from "../store/blobs.ts";
import type { MetaStore } from "../store/types.ts";
import type { KekSelector } from "../vfs/kek-select.ts";
import { normalize } from "../vfs/paths.ts";
import { ROOT_ID, type Tree } from "../vfs/tree.ts";

/** What the report reads, named so the keys layer never walks the App (src/wiring/who-can-decrypt.ts builds it). */
export interface WhoCanDecryptDeps {
  store: Pick<MetaStore, "getUserById">;
  tree: Pick<Tree, "resolve">;
  blobs: Pick<BlobStore, "open">;
  kek: Pick<KekSelector, "choose">;
  keys: Pick<KeyProvider, "keyRefOf" | "listKeys">;
  /** Where the keys live: the embedded key manager's directory or the remote one's URL. */
  keyManagerLocation: string;
  /**
   * The callers the key manager's role and policy checks would let unwrap under a key, as "name (role)"; absent when
   * the key manager does not tell (a key manager service keeps its policies to itself).
   */
  unwrapClients?: (key: string) => string[];
  /** The noncurrent S3 versions kept for the file at a global path (each has a DEK and key ref of its own). */
  keptVersions?: (path: string) => Promise<{ versionId: string; keyRef: string }[]>;
}

export interface WhoCanDecrypt {
  path: string;
  kind: "file" | "dir";
  /** key ref recorded in the metadata. */
  keyRef?: string;
  /** key ref named by the file's container header (the one that matters). */
  headerKeyRef?: string;
  owner?: string;
  keyManager: string;
  keyState?: string;
  currentVersion?: number;
  minDecryptionVersion?: number;
  /** The rule new files at this path get their key from. */
  newFilesKey: string;
  newFilesRule: string;
  /** Clients allowed to unwrap under this key (embedded key manager: its recorded clients and this server). */
  unwrapClients?: string[];
  /** Noncurrent S3 versions of the file and the key ref each is under (destroying that version loses them). */
  noncurrentVersions?: { versionId: string; keyRef: string }[];
}

export async function whoCanDecrypt(deps: WhoCanDecryptDeps, path: string): Promise<WhoCanDecrypt> {
  if (!path.startsWith("/")) throw new AtrestError("INVALID_INPUT", `give a global path (starting with /): ${path}`);
  const p = normalize(path);
  const node = await deps.tree.resolve(ROOT_ID, p);
  const ownerRow = node.ownerId ? await deps.store.getUserById(node.ownerId) : undefined;
  const rule = await deps.kek.choose(ownerRow, node.kind === "dir" ? `${p}/x` : p);
  const out: WhoCanDecrypt = {
    path: p,
    kind: node.kind,
    keyManager: deps.keyManagerLocation,
    newFilesKey: `kek:${rule.key}`,
    newFilesRule: rule.rule ? `${rule.source} ${rule.rule}` : rule.source,
  };
  if (node.kind === "dir") return out;
  out.keyRef = node.keyRef ?? undefined;
  out.owner = ownerRow?.name;
  const kept = await deps.keptVersions?.(p);
  if (kept && kept.length > 0) out.noncurrentVersions = kept;
  if (node.blobId) {
    const blob = await deps.blobs.open(node.blobId);
    try {
      out.headerKeyRef = deps.keys.keyRefOf((await readHeader(blob)).header.wrappedDek);
    } finally {
      await blob.close();
    }
  }
  const ref = parseKeyRef(out.headerKeyRef ?? out.keyRef ?? "");
  if (ref) {
    const info = (await deps.keys.listKeys()).find((k) => k.name === ref.name);
    if (info) {
      out.keyState = info.versions.find((v) => v.version === ref.version)?.state ?? "unknown version";
      out.currentVersion = info.currentVersion;
      const min = (info as { minDecryptionVersion?: number }).minDecryptionVersion;
      if (min !== undefined) out.minDecryptionVersion = min;
      if (min !== undefined && ref.version < min) out.keyState += ` (below the minimum decryption version v${min})`;
    } else {
      out.keyState = "unknown key";
    }
    const clients = deps.unwrapClients?.(ref.name);
    if (clients) out.unwrapClients = clients;
  }
  return out;
}
