// `atrest keys who-can-decrypt <path>`: the key behind one file, where that key lives and what the key manager says
// about it, plus the rule that picks the key for new files at that path.
import type { App } from "../app.ts";
import { readHeader } from "../container-io/encrypted-reader.ts";
import { AtrestError } from "../errors.ts";
import { parseKeyRef } from "../kms/api/key-ref.ts";
import { listClients } from "../kms/clients.ts";
import { EMBEDDED_CALLER } from "../kms/embedded.ts";
import { normalize } from "../vfs/paths.ts";
import { ROOT_ID } from "../vfs/tree.ts";

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
    const clients = unwrapClients(app, ref.name);
    if (clients) out.unwrapClients = clients;
  }
  return out;
}

/**
 * Which callers the key manager's role and policy checks would let unwrap under `key`. Only the embedded key manager
 * is asked here; a key manager service keeps its policies to itself (`atrest kms policy show` as an auditor).
 */
function unwrapClients(app: App, key: string): string[] | undefined {
  const service = app.embedded?.service;
  if (!service) return undefined;
  const callers = [
    EMBEDDED_CALLER,
    ...listClients(service.keyring.db)
      .filter((c) => c.revokedAt === null)
      .map((c) => ({ name: c.name, role: c.role })),
  ];
  return callers
    .filter((caller) => {
      try {
        service.policies.authorize(caller, "unwrap", key, -2);
        return true;
      } catch {
        return false;
      }
    })
    .map((c) => `${c.name} (${c.role})`);
}
