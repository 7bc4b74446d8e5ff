// OpenPGP shapes of the key store, the folder hook and the CLI. The rows and folder options are persisted by the
// metadata store, which owns their definition (src/store/types.ts); they are part of this feature's API too.

export type { PgpFolderOptions, PgpKeyRow, PgpOwnerKind } from "../store/types.ts";
