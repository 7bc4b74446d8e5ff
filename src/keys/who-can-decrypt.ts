// `atrest keys who-can-decrypt <path>`: the key behind one file, where that key lives and what the key manager says
// about it, plus the rule that picks the key for new files at that path.
import type { App } from "../app.ts";
import { AtrestError } from "../errors.ts";
import { readHeader } from "../vfs/files.ts";
import { normalize } from "../vfs/paths.ts";
import { ROOT_ID } from "../vfs/tree.ts";
import { parseKeyRef } from "./jobs.ts";

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
  /** Clients allowed to unwrap, when the key manager reports its policies. */
  unwrapClients?: string[];
}

export async function whoCanDecrypt(app: App, path: string): Promise<WhoCanDecrypt> {
  if (!path.startsWith("/")) throw new AtrestError("INVALID_INPUT", `give a global path (starting with /): ${path}`);
  const p = normalize(path);
  const node = await app.vfs.tree.resolve(ROOT_ID, p);
  const ownerRow = node.ownerId ? await app.store.getUserById(node.ownerId) : undefined;
  const rule = await app.vfs.kek.choose(ownerRow, node.kind === "dir" ? `${p}/x` : p);
  const out: WhoCanDecrypt = {
    path: p,
    kind: node.kind,
    keyManager: app.keyManagerLocation,
    newFilesKey: `kek:${rule.key}`,
    newFilesRule: rule.rule ? `${rule.source} ${rule.rule}` : rule.source,
  };
  if (node.kind === "dir") return out;
  out.keyRef = node.keyRef ?? undefined;
  out.owner = ownerRow?.name;
  if (node.blobId) {
    const blob = await app.vfs.blobs.open(node.blobId);
    try {
      out.headerKeyRef = app.keys.keyRefOf((await readHeader(blob)).header.wrappedDek);
    } finally {
      await blob.close();
    }
  }
  const ref = parseKeyRef(out.headerKeyRef ?? out.keyRef ?? "");
  if (ref) {
    const info = (await app.keys.listKeys()).find((k) => k.name === ref.name);
    if (info) {
      out.keyState = info.versions.find((v) => v.version === ref.version)?.state ?? "unknown version";
      out.currentVersion = info.currentVersion;
      const min = (info as { minDecryptionVersion?: number }).minDecryptionVersion;
      if (min !== undefined) out.minDecryptionVersion = min;
      if (min !== undefined && ref.version < min) out.keyState += ` (below the minimum decryption version v${min})`;
    } else {
      out.keyState = "unknown key";
    }
  }
  return out;
}
