// The who-can-decrypt report's dependencies from an opened App, and the embedded key manager's answer to "who may
// unwrap under this key": wiring, because it reads the key manager service's own tables.
import type { KeyManager } from "../keys/provider.ts";
import type { WhoCanDecryptDeps } from "../keys/who-can-decrypt.ts";
import { listClients } from "../kms/clients.ts";
import { EMBEDDED_CALLER, type EmbeddedKms } from "../kms/embedded.ts";
import type { MetaStore } from "../store/types.ts";
import { ROOT_ID } from "../vfs/tree.ts";
import type { Vfs } from "../vfs/vfs.ts";

/** The parts of an opened App the report needs (an App passes as it is; wiring/ does not import app.ts). */
export interface AppParts {
  store: MetaStore;
  vfs: Vfs;
  keys: KeyManager;
  keyManagerLocation: string;
  embedded: EmbeddedKms | undefined;
}

export function whoCanDecryptDeps(app: AppParts): WhoCanDecryptDeps {
  const embedded = app.embedded;
  return {
    store: app.store,
    tree: app.vfs.tree,
    blobs: app.vfs.blobs,
    kek: app.vfs.kek,
    keys: app.keys,
    keyManagerLocation: app.keyManagerLocation,
    keptVersions: async (path: string) => {
      const { scope } = await app.vfs.versions.scopeOfPath(ROOT_ID, path);
      if (!scope) return [];
      return (await app.store.listVersions(scope.dirId, scope.keyMac)).flatMap((v) =>
        v.marker || !v.keyRef ? [] : [{ versionId: v.versionId, keyRef: v.keyRef }],
      );
    },
    ...(embedded ? { unwrapClients: (key: string) => embeddedUnwrapClients(embedded, key) } : {}),
  };
}

/** The embedded key manager's recorded clients and this server, filtered by its role and policy checks. */
function embeddedUnwrapClients(embedded: EmbeddedKms, key: string): string[] {
  const service = embedded.service;
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
