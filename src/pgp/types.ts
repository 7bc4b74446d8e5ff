// OpenPGP shapes shared by the key store, the folder hook, the CLI and the metadata store.

/** Who a stored public key belongs to: a user, or a group (a shared team key; `@group` also means its members). */
export type PgpOwnerKind = "user" | "group";

/** One stored OpenPGP public key (the server never stores a recipient's private key). */
export interface PgpKeyRow {
  /** Primary key fingerprint, lowercase hex (40 digits for v4, 64 for v6). */
  fingerprint: string;
  ownerKind: PgpOwnerKind;
  ownerName: string;
  /** The public key as imported (merged with later imports of the same key), ASCII-armored. */
  armored: string;
  userIds: string[];
  /** e.g. `rsa3072`, `ed25519+cv25519`. */
  algorithm: string;
  /** Key creation time (ISO 8601). */
  createdAt: string;
  /** Expiry at import time (ISO 8601), null = never. Rechecked from the key itself at every use. */
  expiresAt: string | null;
  /** Revoked at import time. Rechecked at every use. */
  revoked: boolean;
  /** Fingerprints of trusted organisation keys whose certification verified at the last import or certify. */
  certifiedBy: string[];
  /** `import` (admin imported it) or `generated` (on-demand key: the private half was handed out once). */
  source: "import" | "generated";
  importedAt: string;
}

/** `pgp` options of a folder (FolderOptions.pgp, stored with the folder in the metadata database). */
export interface PgpFolderOptions {
  /**
   * Encrypt every file written under the folder to these recipients: user names, `@group` (the group's own keys and
   * every member's keys) or key fingerprints. Empty or absent: files are stored as written (inbound checks only).
   */
  recipients?: string[];
  /** Sign encrypted files with the server's organisation key (one-pass signature inside the message). */
  sign?: boolean;
  /** Every recipient key must carry a certification by a trusted organisation key. */
  requireCertified?: boolean;
  /**
   * Inbound: uploads must already be OpenPGP messages. `encrypted`: PKESK/SKESK packets then SEIPD/SED (binary or
   * armored). `signed`: a signed (not encrypted) message whose signature verifies with a stored public key.
   */
  inbound?: "encrypted" | "signed";
}
