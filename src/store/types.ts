// Metadata store contract and the rows it persists (the store owns them; features above import them from here).
// The SQLite driver (src/store/sqlite/) implements it; a PostgreSQL driver implements the same contract for
// scale-out. Names, sizes and times of files are stored only as ciphertext (see src/vfs/meta-crypto.ts); the store never
// sees them in the clear. Users, groups and folders are given to the store in the clear and persisted sealed, with a
// blind index for lookups (sealing.ts, sealed-rows.ts: every driver uses those codecs).

import type { RowSealer } from "./sealing.ts";

/** What a user may do under a path prefix (UserRow.permissions). */
export type Permission = "list" | "download" | "upload" | "overwrite" | "delete" | "rename" | "mkdir";

/** DESIGN §2 separation of duties. `admin` and `custodian` are privileged: audit filters never hide them. */
export type Role = "admin" | "custodian" | "auditor" | "user";
export const ROLES: readonly Role[] = ["admin", "custodian", "auditor", "user"];
export const PRIVILEGED_ROLES: readonly Role[] = ["admin", "custodian"];

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

/** `pgp` options of a folder (FolderOptions.pgp, stored with the folder). */
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

/** Options of a virtual folder (a subtree of the global tree). Each field is owned by the feature that reads it. */
export interface FolderOptions {
  /** KEK for files written under the folder (overrides user and group keys). */
  key?: string;
  /**
   * Further KMS keys a client may name for one object under the folder (S3 SSE-KMS,
   * `x-amz-server-side-encryption-aws-kms-key-id`), beside the keys the folder > user > group > default rule reaches.
   */
  allowKeys?: string[];
  /** OpenPGP folder settings (src/pgp). */
  pgp?: PgpFolderOptions;
}

export interface FolderRow {
  /** Normalised absolute path in the global tree, never `/`. */
  path: string;
  options: FolderOptions;
  createdAt: string;
}

export interface GroupOptions {
  /** KEK for files written by members (when no folder rule or user key applies). */
  key?: string;
  /** Members' password logins need a TOTP code (service/totp.ts); a member without one enrols at the next login. */
  requireTotp?: boolean;
}

export interface GroupRow {
  name: string;
  options: GroupOptions;
  createdAt: string;
}

export interface UserRow {
  id: string;
  name: string;
  /** argon2id PHC string, or null for key-only users. */
  passwordHash: string | null;
  /** OpenSSH authorized_keys lines. */
  publicKeys: string[];
  /** Home in the global tree, e.g. `/alice`; the user sees it as `/`. */
  home: string;
  /** User-view path prefix → permissions; the longest matching prefix wins. */
  permissions: Record<string, Permission[]>;
  groups: string[];
  role: Role;
  /** KEK for the user's files when no folder rule applies; null = group key or server default. */
  kek: string | null;
  /** Password logins need a TOTP code (also when a group of the user requires it); absent = not by this user. */
  requireTotp?: boolean;
  /** Disabled by an admin: no login by any door, nothing runs as the user (shares, triggers); absent = enabled. */
  disabled?: boolean;
  /** 0 = unlimited. */
  quotaBytes: number;
  quotaFiles: number;
  usedBytes: number;
  usedFiles: number;
  createdAt: string;
}

export interface NodeRow {
  id: string;
  parentId: string | null;
  /** HMAC of (parent id, name) under the metadata name key: the lookup index. */
  nameMac: Buffer;
  /** AEAD(name), AAD = node id. */
  nameCt: Buffer;
  kind: "file" | "dir";
  /** AEAD({size, mtime, mode}), AAD = node id ‖ blob id ‖ content id: a row cannot point at another blob. */
  attrsCt: Buffer;
  /** On-disk blob name (random). Null for directories. */
  blobId: string | null;
  /** Container id bound into the file's encryption (stays the same across resumed uploads). */
  contentId: string | null;
  /** `kek:<name>:v<N>` of the KEK wrapping this file's DEK, for rewrap and shred reports. */
  keyRef: string | null;
  /** User charged for this file in quotas. */
  ownerId: string | null;
}

/**
 * One container of a pieced file version (a file whose content is a sequence of containers, each with its own DEK,
 * content id and blob: an S3 multipart object kept as its staged parts).
 */
export interface FilePiece {
  blobId: string;
  /** The piece's own content id: its container's file id and its DEK's encryption context. */
  contentId: string;
}

/**
 * A noncurrent version or a delete marker of a file under a versioned folder (S3 bucket versioning, vfs/versions.ts).
 * `keyMac`/`keyCt`: the blind index and the sealed path of the file below the folder; `attrsCt` sealed with this row's
 * id, blob and content ids (as a node's). A marker has no blob.
 */
export interface VersionRow {
  id: string;
  dirId: string;
  keyMac: Buffer;
  keyCt: Buffer;
  /** The S3 version id: random, or "null" (written while versioning was off or suspended). */
  versionId: string;
  /** Order among the versions of one key: higher is newer. */
  seq: number;
  marker: boolean;
  attrsCt: Buffer;
  blobId: string | null;
  contentId: string | null;
  keyRef: string | null;
  ownerId: string | null;
}

export type VersioningState = "Enabled" | "Suspended";

export type NodePatch = Partial<Omit<NodeRow, "id">>;

/** key_ref range: `from <= key_ref < to`, `key_ref != exclude`. */
export interface KeyRefRange {
  from: string;
  to: string;
  exclude?: string;
}

/**
 * Position in the walk of files by key_ref (`filesByKeyRef`). Opaque: only the driver that returned it reads it. It is
 * persisted in key jobs, so a driver keeps reading the cursors it wrote in earlier versions.
 */
export type KeyCursor = string & { readonly __brand: "KeyCursor" };

/** Before the first file. */
export const KEY_CURSOR_START = "" as KeyCursor;

/** Progress of a rewrap or reencrypt run; `cursor` is the last file handled, so a rerun resumes after it. */
export interface KeyJobRow {
  id: string;
  kind: "rewrap" | "reencrypt";
  /** What the job covers, e.g. `key=finance` or `key=*` (a rerun with the same scope resumes it). */
  scope: string;
  state: "running" | "done";
  cursor: KeyCursor;
  total: number;
  done: number;
  skipped: number;
  failed: number;
  bytes: number;
  startedAt: string;
  updatedAt: string;
}

// The contract is composed per aggregate (one SQL file each in a driver), reads apart from writes.

export interface SettingsReads {
  getSetting(key: string): Promise<Buffer | undefined>;
  /** Every setting whose key starts with `prefix`, in key order (the rows several nodes share, e.g. browser sessions). */
  listSettings(prefix: string): Promise<{ key: string; value: Buffer }[]>;
}
export interface SettingsWrites {
  setSetting(key: string, value: Buffer): Promise<void>;
  /** false when there was no such setting. */
  deleteSetting(key: string): Promise<boolean>;
}

export interface UserReads {
  getUser(name: string): Promise<UserRow | undefined>;
  getUserById(id: string): Promise<UserRow | undefined>;
  listUsers(): Promise<UserRow[]>;
}
export interface UserWrites {
  insertUser(user: UserRow): Promise<void>;
  updateUser(user: UserRow): Promise<void>;
  deleteUser(name: string): Promise<boolean>;
  /** Adds deltas to a user's usage counters (never below zero). */
  addUsage(userId: string, bytes: number, files: number): Promise<void>;
}

export interface GroupReads {
  listGroups(): Promise<GroupRow[]>;
  getGroup(name: string): Promise<GroupRow | undefined>;
}
export interface GroupWrites {
  /** Inserts or replaces. */
  putGroup(group: GroupRow): Promise<void>;
  deleteGroup(name: string): Promise<boolean>;
}

export interface FolderReads {
  listFolders(): Promise<FolderRow[]>;
  getFolder(path: string): Promise<FolderRow | undefined>;
}
export interface FolderWrites {
  /** Inserts or replaces. */
  putFolder(folder: FolderRow): Promise<void>;
  deleteFolder(path: string): Promise<boolean>;
}

/** OpenPGP public keys (src/pgp/keystore.ts). */
export interface PgpKeyReads {
  /** Ordered by owner then fingerprint. */
  listPgpKeys(): Promise<PgpKeyRow[]>;
  getPgpKey(fingerprint: string): Promise<PgpKeyRow | undefined>;
}
export interface PgpKeyWrites {
  /** Inserts or replaces (a re-import merges new signatures into the stored key). */
  putPgpKey(key: PgpKeyRow): Promise<void>;
  deletePgpKey(fingerprint: string): Promise<boolean>;
}

export interface NodeReads {
  getNode(id: string): Promise<NodeRow | undefined>;
  findChild(parentId: string, nameMac: Buffer): Promise<NodeRow | undefined>;
  listChildren(parentId: string): Promise<NodeRow[]>;
  /**
   * Up to `limit` children in name-MAC order after `afterMac` (undefined = from the start), read through the
   * (parent_id, name_mac) index: a page of a large folder without reading the rest of it.
   */
  listChildrenAfter(parentId: string, afterMac: Buffer | undefined, limit: number): Promise<NodeRow[]>;
  /** Only the id and sealed name of each child: what sorting a folder by name needs (see VfsTree.name's cache). */
  listChildNames(parentId: string): Promise<{ id: string; nameCt: Buffer }[]>;
  /**
   * A digest of the set of the folder's children's name MACs (their count and a sum or XOR of each MAC's first 48
   * bits, read from the (parent_id, name_mac) index alone): it changes when a child is added, removed or renamed, so a
   * folder's names sorted once can be reused while it stays the same. A child replaced by another of the same name
   * keeps it: whoever caches by it checks the ids it gets back.
   */
  childNamesDigest(parentId: string): Promise<string>;
  /** The children of `parentId` among `ids` (at most 1,000; missing ones, removed meanwhile, are left out). */
  getChildren(parentId: string, ids: string[]): Promise<NodeRow[]>;
  hasChildren(parentId: string): Promise<boolean>;
  /** Every node in id order, `limit` at a time after `afterId` ("" = from the start): whole-tree passes. */
  nodesAfter(afterId: string, limit: number): Promise<NodeRow[]>;
  /**
   * Every blob id referenced by a node, a piece of a pieced file or pending in a key job: the startup sweep deletes
   * blobs not in this set.
   */
  blobIds(): Promise<Set<string>>;
  /** The pieces of the pieced file version `contentId`, in order; empty for an ordinary one-container file. */
  filePieces(contentId: string): Promise<FilePiece[]>;
  /** Every versioned folder and its state. */
  listVersionedDirs(): Promise<{ dirId: string; state: VersioningState }[]>;
  getVersioning(dirId: string): Promise<VersioningState | undefined>;
  /** The versions of one key under `dirId`, newest first (`keyMac` undefined: of every key, in no set order). */
  listVersions(dirId: string, keyMac?: Buffer): Promise<VersionRow[]>;
  getVersion(dirId: string, keyMac: Buffer, versionId: string): Promise<VersionRow | undefined>;
  /** Whether any version or marker is kept under `dirId`. */
  hasVersions(dirId: string): Promise<boolean>;
}
export interface NodeWrites {
  /** Records the pieces of file version `contentId` (seq = their index). */
  insertFilePieces(contentId: string, pieces: FilePiece[]): Promise<void>;
  /** Forgets the pieces of file version `contentId` (their blobs become orphans, removed by the caller or the sweep). */
  deleteFilePieces(contentId: string): Promise<void>;
  insertNode(node: NodeRow): Promise<void>;
  /** Sets (undefined: removes) a folder's versioning state. */
  setVersioning(dirId: string, state: VersioningState | undefined): Promise<void>;
  insertVersion(row: VersionRow): Promise<void>;
  deleteVersion(id: string): Promise<void>;
  /** Replaces a kept version's sealed attributes (its tags changed; nothing else of the row does). */
  updateVersionAttrs(id: string, attrsCt: Buffer): Promise<void>;
  updateNode(id: string, patch: NodePatch): Promise<void>;
  deleteNode(id: string): Promise<void>;
}

/** Key jobs (src/keys: rewrap, reencrypt, shred-report). */
export interface KeyJobReads {
  /**
   * Files whose key_ref is in the range, after `after`, in key_ref order (one stable order within a key_ref): the file
   * nodes, then the kept S3 versions (`version`: a file_versions row seen as a node, its attributes sealed with the
   * row's id, its parent the versioned folder, its name the key below it).
   */
  filesByKeyRef(
    range: KeyRefRange,
    after: KeyCursor,
    limit: number,
  ): Promise<{ cursor: KeyCursor; node: NodeRow; version?: true }[]>;
  /** Number of files per key_ref, kept versions included (null for files written before key refs were recorded). */
  keyRefCounts(): Promise<{ keyRef: string | null; files: number }[]>;
  getKeyJob(id: string): Promise<KeyJobRow | undefined>;
  /** The unfinished job of this kind and scope, if any (resume). */
  openKeyJob(kind: KeyJobRow["kind"], scope: string): Promise<KeyJobRow | undefined>;
  pendingBlobs(jobId: string): Promise<string[]>;
}
export interface KeyJobWrites {
  /**
   * Sets a file's key_ref (and optionally more columns) only if it still points at `blobId`; false if it moved on. `id`
   * may name a kept version (filesByKeyRef's `version` rows): then only blobId, contentId, keyRef and attrsCt change.
   */
  updateNodeIfBlob(id: string, blobId: string, patch: NodePatch): Promise<boolean>;
  putKeyJob(job: KeyJobRow): Promise<void>;
  addPendingBlob(blobId: string, jobId: string): Promise<void>;
  removePendingBlob(blobId: string): Promise<void>;
}

/** A temporary login ban of the brute-force defender (src/service/defender.ts), by source IP or by user name. */
export interface BanRow {
  kind: "ip" | "user";
  subject: string;
  /** Epoch ms. */
  since: number;
  until: number;
  /** How many times this subject was banned (the ban time grows with it). */
  count: number;
  /** Its expiry has been audited (a ban row outlives its expiry so a repeat offender's next ban is longer). */
  expiryAudited: boolean;
}

/** An S3 access key of a user; the secret only sealed (`secretCt`, opened by service/s3-keys.ts). */
export interface S3KeyRow {
  accessKeyId: string;
  userId: string;
  userName: string;
  secretCt: Buffer;
  createdAt: string;
}

export interface S3KeyReads {
  getS3Key(accessKeyId: string): Promise<S3KeyRow | undefined>;
  /** The user's keys (all users' when `userName` is undefined), oldest first. */
  listS3Keys(userName?: string): Promise<S3KeyRow[]>;
}

export interface S3KeyWrites {
  insertS3Key(row: S3KeyRow): Promise<void>;
  deleteS3Key(accessKeyId: string): Promise<boolean>;
}

/**
 * An S3 bucket name and the user it belongs to (the global bucket namespace, as AWS has it: one owner per name
 * server-wide). The bucket itself is the folder of that name in the owner's home.
 */
export interface S3BucketRow {
  name: string;
  owner: string;
  /** Epoch ms. */
  createdAt: number;
}

export interface S3BucketReads {
  getS3Bucket(name: string): Promise<S3BucketRow | undefined>;
}

export interface S3BucketWrites {
  /** False (and nothing written) when the name is registered already. */
  insertS3Bucket(row: S3BucketRow): Promise<boolean>;
  /** Removes the name's row when `owner` holds it; false otherwise. */
  deleteS3Bucket(name: string, owner: string): Promise<boolean>;
}

export interface BanReads {
  getBan(kind: BanRow["kind"], subject: string): Promise<BanRow | undefined>;
  /** Ordered by `until`. */
  listBans(): Promise<BanRow[]>;
}
export interface BanWrites {
  /** Inserts or replaces. */
  putBan(ban: BanRow): Promise<void>;
  deleteBan(kind: BanRow["kind"], subject: string): Promise<boolean>;
  /** Forgets bans that ended before `before` (epoch ms); returns how many. */
  deleteBansBefore(before: number): Promise<number>;
}

/** An API token (src/service/tokens.ts): the secret itself is never stored, only its SHA-256. */
export interface ApiTokenRow {
  id: string;
  user: string;
  /** The owner's label ("backup script"). */
  name: string;
  secretHash: Buffer;
  /** Route scopes it may use (src/protocols/http/routes.ts SCOPES). */
  scopes: string[];
  /** Path prefixes (in the user's view) it may reach; ["/"] for all. */
  paths: string[];
  /** Epoch ms. */
  createdAt: number;
  expiresAt: number;
  lastUsedAt: number | null;
}

export interface ApiTokenReads {
  getApiToken(id: string): Promise<ApiTokenRow | undefined>;
  /** A user's tokens (or everyone's), newest first. */
  listApiTokens(user?: string): Promise<ApiTokenRow[]>;
}
export interface ApiTokenWrites {
  /** Inserts or replaces. */
  putApiToken(token: ApiTokenRow): Promise<void>;
  deleteApiToken(id: string): Promise<boolean>;
  /** Forgets tokens that expired before `before` (epoch ms); returns how many. */
  deleteApiTokensBefore(before: number): Promise<number>;
}

/**
 * A share link (src/service/shares.ts): a file or directory of its owner reachable by link without an account. The
 * link's secret is never stored, only its SHA-256; the shared entry is named by node id (no path in the clear), so the
 * share follows a rename and dies with its file, and by the owner's user id, so it dies with its owner.
 */
export interface ShareRow {
  id: string;
  secretHash: Buffer;
  /** The owner's user id (user names are sealed: no name here). */
  ownerId: string;
  nodeId: string;
  kind: "file" | "dir";
  /** argon2id PHC string, or null for a link without a password. */
  passwordHash: string | null;
  /** Epoch ms; null = never. */
  expiresAt: number | null;
  allowDownload: boolean;
  /** Uploads into a shared directory (new files only). */
  allowUpload: boolean;
  /** 0 = unlimited. */
  maxDownloads: number;
  downloads: number;
  maxUploads: number;
  uploads: number;
  /** Source IPs / CIDR ranges that may use the link; empty = any. */
  allowFrom: string[];
  /** Epoch ms. */
  createdAt: number;
  lastUsedAt: number | null;
}

export interface ShareReads {
  getShare(id: string): Promise<ShareRow | undefined>;
  /** A user's shares by user id (everyone's when undefined), newest first. */
  listShares(ownerId?: string): Promise<ShareRow[]>;
}
export interface ShareWrites {
  insertShare(share: ShareRow): Promise<void>;
  deleteShare(id: string): Promise<boolean>;
  /**
   * Counts one use (`delta` 1) only while under the limit, atomically: false when the limit is reached. `delta` -1
   * gives back a use that did not happen (never below zero). Also sets lastUsedAt.
   */
  countShareUse(id: string, kind: "download" | "upload", delta: 1 | -1, now: number): Promise<boolean>;
  /** Removes every share of an owner (by user id); returns how many. */
  deleteSharesOf(ownerId: string): Promise<number>;
}

/** A trigger rule (src/events): the spec is configuration (JSON, readable); its secrets are sealed by events. */
export interface TriggerRuleRow {
  name: string;
  /** The rule as JSON, without its secrets. */
  spec: string;
  /** Sealed secrets (webhook keys, SMTP passwords), or null. */
  secrets: Buffer | null;
  enabled: boolean;
  /** Last schedule firing (ms since the epoch); reset when the rule is replaced. */
  lastFiredAt: number | null;
  createdAt: string;
  updatedAt: string;
}

export type ExecutionState = "pending" | "running" | "done" | "dead";

/**
 * One queued run of a rule. `data` is sealed by events (event, current path, step log). Times are ms since the
 * epoch. A driver serving several nodes adds its lease (owner, expiry) to its own rows behind `claimExecutions` and
 * `resetRunningExecutions`: the contract names the queue operations, not how a claim is held.
 */
export interface ExecutionRow {
  /** Queue order. */
  seq: number;
  id: string;
  rule: string;
  state: ExecutionState;
  step: number;
  attempts: number;
  dueAt: number;
  errorCode: string | null;
  data: Buffer;
  createdAt: number;
  updatedAt: number;
}

/** What a save changes: everything but the identity, the rule and the creation time. */
export type ExecutionUpdate = Pick<
  ExecutionRow,
  "id" | "state" | "step" | "attempts" | "dueAt" | "errorCode" | "data" | "updatedAt"
>;

export interface TriggerReads {
  getTriggerRule(name: string): Promise<TriggerRuleRow | undefined>;
  /** Ordered by name. */
  listTriggerRules(): Promise<TriggerRuleRow[]>;
  getExecution(id: string): Promise<ExecutionRow | undefined>;
  /** Latest executions of a rule, newest first. */
  executionHistory(rule: string, limit: number): Promise<ExecutionRow[]>;
  /** Executions in state `dead`, newest first. */
  deadExecutions(limit: number): Promise<ExecutionRow[]>;
  executionCounts(): Promise<Record<ExecutionState, number>>;
}
export interface TriggerWrites {
  /** Inserts, or replaces spec, secrets and enabled of an existing rule (keeping createdAt); clears lastFiredAt. */
  putTriggerRule(rule: Omit<TriggerRuleRow, "lastFiredAt">): Promise<void>;
  deleteTriggerRule(name: string): Promise<boolean>;
  setTriggerRuleEnabled(name: string, enabled: boolean, updatedAt: string): Promise<boolean>;
  setTriggerRuleFired(name: string, at: number): Promise<void>;
  /** Queues a pending execution at step 0, due at `createdAt`. */
  insertExecution(e: { id: string; rule: string; data: Buffer; createdAt: number }): Promise<void>;
  /** Marks up to `limit` pending executions due by `now` as running and returns them (as running), oldest first. */
  claimExecutions(now: number, limit: number): Promise<ExecutionRow[]>;
  /** Running executions whose runner died go back to pending; returns how many. */
  resetRunningExecutions(): Promise<number>;
  updateExecution(e: ExecutionUpdate): Promise<void>;
  /** A dead execution back to pending, due `now`, attempts reset; false when `id` is not a dead execution. */
  retryDeadExecution(id: string, now: number): Promise<boolean>;
  /** Deletes done executions last updated before `before`; returns how many. */
  pruneExecutions(before: number): Promise<number>;
}

/** A device of E2EE sync (src/sync/server): its public certificate (JSON, docs/sync-protocol.md §3), bound to the API
 * token it registered with; `active` once a signed chain link added it, `revoked` once one revoked it. */
export interface SyncDeviceRow {
  id: string;
  user: string;
  /** The self-signed device certificate, canonical JSON. */
  cert: string;
  state: "pending" | "active" | "revoked";
  /** The API token this device talks with (one device per token). */
  tokenId: string;
  /** Epoch ms. */
  createdAt: number;
}

/** One link of a user's device chain, canonical JSON, in seq order. */
export interface SyncChainRow {
  user: string;
  seq: number;
  link: string;
}

/** A sync region: owner, current manifest version, retention, bytes of its blobs (charged to the owner). */
export interface SyncRegionRow {
  id: string;
  owner: string;
  version: number;
  /** Manifests (and the blobs only they reference) kept; older ones are dropped unless on legal hold. */
  keepVersions: number;
  /** Manifests younger than this many days are kept too (0: versions only). */
  keepDays: number;
  legalHold: boolean;
  usedBytes: number;
  createdAt: number;
}

/** One accepted manifest version (opaque to the store: canonical JSON, signed by a member device). */
export interface SyncManifestRow {
  regionId: string;
  version: number;
  /** hex SHA-256 of `body`. */
  hash: string;
  body: string;
  /** Device id that signed it. */
  author: string;
  createdAt: number;
}

/** A region key envelope for one device and epoch (canonical JSON). */
export interface SyncEnvelopeRow {
  regionId: string;
  epoch: number;
  recipient: string;
  body: string;
  createdAt: number;
}

/** An opaque blob of a region, addressed by the SHA-256 of its bytes; `blobId` names it in the sync BlobStore. */
export interface SyncBlobRow {
  regionId: string;
  hash: string;
  blobId: string;
  size: number;
  createdAt: number;
}

/** A share link of one file version (src/sync/core/links.ts): the payload is sealed under a key the server never has. */
export interface SyncLinkRow {
  id: string;
  regionId: string;
  blobHash: string;
  /** base64url AES-GCM of the link payload under the link key (only in the URL fragment). */
  payload: string;
  /** Epoch ms. */
  expiresAt: number;
  revoked: boolean;
  /** Device that made it. */
  createdBy: string;
  createdAt: number;
  /** Downloads so far. */
  uses: number;
}

export interface SyncReads {
  getSyncLink(id: string): Promise<SyncLinkRow | undefined>;
  listSyncLinks(regionId: string): Promise<SyncLinkRow[]>;
  getSyncDevice(id: string): Promise<SyncDeviceRow | undefined>;
  getSyncDeviceByToken(tokenId: string): Promise<SyncDeviceRow | undefined>;
  /** A user's devices, oldest first. */
  listSyncDevices(user: string): Promise<SyncDeviceRow[]>;
  /** A user's chain links in seq order. */
  listSyncChain(user: string): Promise<SyncChainRow[]>;
  getSyncRegion(id: string): Promise<SyncRegionRow | undefined>;
  /** Regions `user` owns or is a member of, by id. */
  listSyncRegions(user: string): Promise<SyncRegionRow[]>;
  /** Member users of a region (the owner not included), sorted. */
  listSyncMembers(regionId: string): Promise<string[]>;
  getSyncManifest(regionId: string, version: number): Promise<SyncManifestRow | undefined>;
  /** Kept manifest versions, ascending. */
  listSyncManifestVersions(regionId: string): Promise<number[]>;
  /** Envelopes addressed to a device, by epoch. */
  listSyncEnvelopes(regionId: string, recipient: string): Promise<SyncEnvelopeRow[]>;
  getSyncBlob(regionId: string, hash: string): Promise<SyncBlobRow | undefined>;
  /** Every blob of a region (the sweep's candidates). */
  listSyncBlobs(regionId: string): Promise<SyncBlobRow[]>;
  /** Bytes of all regions owned by `user` (their quota use). */
  syncBytesOwnedBy(user: string): Promise<number>;
}

export interface SyncWrites {
  /** Inserts or replaces. */
  putSyncDevice(row: SyncDeviceRow): Promise<void>;
  insertSyncChainLink(row: SyncChainRow): Promise<void>;
  /** Inserts or replaces. */
  putSyncRegion(row: SyncRegionRow): Promise<void>;
  setSyncMembers(regionId: string, users: string[]): Promise<void>;
  insertSyncManifest(row: SyncManifestRow): Promise<void>;
  deleteSyncManifest(regionId: string, version: number): Promise<void>;
  /** Inserts or replaces (region, epoch, recipient). */
  putSyncEnvelope(row: SyncEnvelopeRow): Promise<void>;
  insertSyncBlob(row: SyncBlobRow): Promise<void>;
  /** Sets a blob's createdAt (an upload of a blob that is there already restarts its grace period). */
  touchSyncBlob(regionId: string, hash: string, at: number): Promise<void>;
  deleteSyncBlob(regionId: string, hash: string): Promise<void>;
  /** Inserts or replaces. */
  putSyncLink(row: SyncLinkRow): Promise<void>;
}

export interface MetaReads
  extends SettingsReads,
    UserReads,
    GroupReads,
    FolderReads,
    PgpKeyReads,
    NodeReads,
    KeyJobReads,
    BanReads,
    ApiTokenReads,
    S3KeyReads,
    S3BucketReads,
    TriggerReads,
    ShareReads,
    SyncReads {}

export interface MetaWrites
  extends SettingsWrites,
    UserWrites,
    GroupWrites,
    FolderWrites,
    PgpKeyWrites,
    NodeWrites,
    KeyJobWrites,
    BanWrites,
    ApiTokenWrites,
    S3KeyWrites,
    S3BucketWrites,
    TriggerWrites,
    ShareWrites,
    SyncWrites {}

/** The store's operations bound to one transaction: every query runs on that transaction's connection. */
export interface MetaTx extends MetaReads, MetaWrites {}

/**
 * Reads outside a transaction may run on any connection; every write goes through `transaction(tx => …)`. The handle
 * has no `transaction()` (no nesting) and refuses use after its transaction ended.
 */
export interface MetaStore extends MetaReads {
  /**
   * Installs the row keys (derived from the metadata key): until then users, groups and folders, which are stored
   * sealed (sealing.ts), throw KEY_UNAVAILABLE; settings and every other aggregate work (a locked store is enough to
   * unwrap the service keys, rewrap, back up). The first unlock after an upgrade seals the rows an older version kept
   * in clear (migration 9) and scrubs them from the file.
   */
  unlock(sealer: RowSealer): Promise<void>;
  /** Runs `fn` atomically on one connection; commits when it resolves, rolls back when it throws. Serialised. */
  transaction<T>(fn: (tx: MetaTx) => Promise<T>): Promise<T>;
  /**
   * Resolves once every transaction committed so far survives a power loss (not only a process crash). Concurrent
   * callers share one sync. Absent: every commit is durable when it returns.
   */
  durable?(): Promise<void>;
  /**
   * Writes a consistent point-in-time copy of the whole store to `dest` (a new file), e.g. for a backup; safe while
   * other processes use the store. The driver puts such a file back (SQLite: installSqliteSnapshot, via app.ts
   * storeRestore).
   */
  snapshot(dest: string): Promise<void>;
  /**
   * A store shared by several processes (PostgreSQL) hands out named leases: at most one process holds a name at a
   * time, and a holder that dies loses it at once (no timeout to wait out). Absent: one process per store (SQLite),
   * so the caller's local lock is enough.
   */
  holdLease?(name: string): Promise<LeaseResult>;
  close(): Promise<void>;
}

export type LeaseResult =
  | {
      held: true;
      /** True once the lease can no longer be trusted (its connection to the store broke): stop the guarded work. */
      lost(): boolean;
      release(): Promise<void>;
    }
  | { held: false /** Who holds it, when the store can tell (a node id). */; holder?: string };
