import type { EncryptionContext } from "../kms/api/types.ts";

/**
 * Encryption context of a file's DEK: bound as AAD by the key manager and written into its audit record. The content
 * id is the container's immutable id, so one file's wrapped DEK never unwraps under another file's context. Changing
 * this shape makes every stored file unreadable: it is part of the storage format.
 */
export function fileContext(contentId: string): EncryptionContext {
  return { purpose: "file", content: contentId };
}
