// The one interface every protocol adapter uses. Paths are absolute, '/'-separated, in the user's view
// (their home is '/'). All methods throw AtrestError subclasses from src/errors.ts.

import type { Permission } from "../store/types.ts";

export type { Permission };

export interface FileStat {
  kind: "file" | "dir";
  size: number;
  /** Milliseconds since the epoch. */
  mtime: number;
  /** POSIX permission bits as shown to clients (0o644 files, 0o755 dirs unless set). */
  mode: number;
  /** S3 metadata of the version, when an S3 write set it (sealed with its attributes: never in clear in meta.db). */
  object?: ObjectMeta;
  /** The version id of a file written in a versioned folder (S3 bucket versioning); absent: "null". */
  versionId?: string;
}

/** A noncurrent version or a delete marker kept in a versioned folder (VfsSession.listVersions). */
export interface VersionEntry {
  /** The file's path below the versioned folder. */
  key: string;
  versionId: string;
  deleteMarker: boolean;
  /** Newer versions have higher numbers (a key's current file is newer than all). */
  seq: number;
  stat: FileStat;
}

/** What a delete did in a versioned folder: the delete marker it left, or the version it removed. */
export interface RemovedVersion {
  versionId?: string;
  deleteMarker: boolean;
}

/**
 * What the S3 door keeps with an object version: its ETag and the headers it answers GET/HEAD with. Stored sealed with
 * the version's attributes (meta-crypto.ts), like names; a new version (any door) starts without, a resumed upload
 * keeps the headers but not the ETag, setAttrs keeps both.
 */
export interface ObjectMeta {
  /** S3 ETag without quotes: hex MD5 of the plaintext, or the multipart form `<hex>-<parts>`. */
  etag?: string;
  /**
   * content-type, content-disposition, content-encoding, content-language, cache-control, expires and x-amz-meta-*,
   * names lowercase.
   */
  headers?: Record<string, string>;
  /** An object completed from a multipart upload: its part sizes, run-length encoded as [size, count] pairs. */
  parts?: [number, number][];
  /**
   * S3's additional checksum of the version, as the client asked for it (x-amz-checksum-*): the algorithm (crc32,
   * crc32c, crc64nvme, sha1, sha256), the base64 value (COMPOSITE: of the parts' checksums, with "-N") and the type.
   */
  checksum?: { algorithm: string; value: string; type: "FULL_OBJECT" | "COMPOSITE" };
  /** A multipart object uploaded with a checksum algorithm: each part's checksum (base64), in order. */
  partChecksums?: string[];
  /** S3 object tags (key, value), at most 10, as PutObjectTagging or x-amz-tagging set them. */
  tags?: [string, string][];
  /**
   * S3 ACL grants of an object version or a bucket folder (grantee `id:<user>` or `group:AllUsers` /
   * `group:AuthenticatedUsers`, permission); absent = private to the owner.
   */
  acl?: [string, string][];
  /** A bucket folder's S3 bucket policy, the JSON document as set. */
  policy?: string;
}

/**
 * A directory's default encryption for new objects (S3 bucket encryption): SSE-S3 (`AES256`: the rule's key) or
 * SSE-KMS with a named KEK (none = the rule's key).
 */
export interface DirEncryption {
  algorithm: "AES256" | "aws:kms";
  key?: string;
}

/** The key behind one file (VfsSession.keyOf). */
export interface FileKey {
  /** KEK name the file's DEK is wrapped under. */
  kek: string;
  /** True when it is not the key the folder > user > group > default rule gives the file's owner there now. */
  requested: boolean;
  /** True for an SSE-C version (its customer key was checked by keyOf). */
  customerKey: boolean;
}

export interface DirEntry {
  name: string;
  stat: FileStat;
}

/** One page of a directory in store order; `next` (opaque) asks for the following page, undefined on the last. */
export interface DirPage {
  entries: DirEntry[];
  next: Buffer | undefined;
}

export interface QuotaInfo {
  usedBytes: number;
  usedFiles: number;
  /** 0 = unlimited. */
  maxBytes: number;
  maxFiles: number;
}

export interface ReadHandle {
  readonly size: number;
  /** Up to `length` bytes at `offset`; an empty buffer at or past the end. Random access. */
  read(offset: number, length: number): Promise<Buffer>;
  /**
   * Optional: up to `length` bytes at `offset` without a copy, as a view of the handle's own buffer (it may be
   * shorter than asked: it stops at a buffer's end). The caller must not change it, and calls release() once it no
   * longer needs the bytes (after the socket took them): the buffer is reused after that, never before.
   */
  readView?(offset: number, length: number): Promise<{ data: Buffer; release(): void }>;
  /**
   * Optional: readView's result at once when the bytes are already decrypted in memory (a sequential reader's
   * read-ahead), undefined otherwise (then use readView or read). Saves a door the promises of each small request.
   */
  readViewNow?(offset: number, length: number): { data: Buffer; release(): void } | undefined;
  close(): Promise<void>;
}

export interface WriteHandle {
  /** Current length: 0 after truncate, the existing length when resuming. */
  readonly size: number;
  /**
   * Sequential writes only (offset must equal the current length; encrypted storage is append-only per version).
   * May buffer; errors of buffered data surface on a later write or on close.
   */
  write(offset: number, data: Buffer): Promise<void>;
  /**
   * Optional: `write(offset, Buffer.concat(parts))` without joining the parts first (each byte is copied once, into
   * the container's batch). A door whose client data arrives in slices (SFTP WRITEs straddle SSH channel messages)
   * uses it when present. The caller may reuse the parts once the promise settles.
   */
  writeParts?(offset: number, parts: readonly Buffer[]): Promise<void>;
  /**
   * Optional: writeParts, but undefined instead of a promise when the parts were taken without waiting (copied: the
   * caller may reuse them at once); a promise when the handle applies backpressure. May throw what writeParts would
   * reject with.
   */
  writeNow?(offset: number, parts: readonly Buffer[]): Promise<void> | undefined;
  /**
   * Flush, fsync and commit the new version atomically, with `attrs` (e.g. the client's mtime) and the S3 `object`
   * metadata set in the same commit.
   */
  close(attrs?: SetAttrs, object?: ObjectMeta): Promise<FileStat>;
  /**
   * Connection lost before close: keep what arrived (committed as a shorter file) so the client can resume,
   * or discard it for a new file when `keepPartial` is false.
   */
  abort(keepPartial: boolean): Promise<void>;
}

/** Attributes a client may set (SFTP SETSTAT): the mtime, and the permission bits as shown to clients. */
export interface SetAttrs {
  /** Milliseconds since the epoch. */
  mtime?: number;
  /** POSIX permission bits (0o7777 at most); presentation only, atrest's permissions decide access. */
  mode?: number;
}

export interface OpenReadOptions {
  /** S3 SSE-C: the object's customer key (KEY_REQUIRED without it, PERMISSION_DENIED for another); caller zeroes it. */
  customerKey?: Buffer;
  /** The reader will not read at or past this offset (a Range's end): read-ahead stops there. */
  end?: number;
  /** A version of the file (versioned folders): the current one or a noncurrent one; a delete marker is NOT_FOUND. */
  versionId?: string;
}

export interface OpenWriteOptions {
  /** true: start empty (O_TRUNC / new file). false: keep existing content and append (resume). */
  truncate: boolean;
  /** Fail with EXISTS when the file exists (O_EXCL). */
  exclusive?: boolean;
  /**
   * The KMS key (KEK name) a new version's DEK is wrapped under, instead of the folder > user > group > default rule
   * (S3 SSE-KMS). Allowed when the rule could reach it for this user and path, or the folder lists it in allowKeys;
   * otherwise PERMISSION_DENIED. Ignored when resuming (a version keeps its key).
   */
  key?: string;
  /**
   * S3 SSE-C: the customer's 256-bit key, which takes part in the new version's DEK (src/vfs/sse-c.ts); used while
   * opening only, never stored. The caller owns the buffer and zeroes it.
   */
  customerKey?: Buffer;
  /** Short non-secret note on how the client asked for encryption (e.g. "sse aws:kms"), recorded in the upload audit. */
  /**
   * The version id a write in a folder whose versioning is Enabled gets (S3 CompleteMultipartUpload names it in the
   * header it sends before the commit); a fresh one when absent. Ignored elsewhere.
   */
  versionId?: string;
  encryptionNote?: string;
  /**
   * A condition on the file the write replaces (undefined: there is none), e.g. S3's If-Match / If-None-Match: it
   * throws to refuse. Checked at open and again inside the commit's transaction, so of two conditional writes racing
   * on one name only those whose condition holds on what the other committed succeed.
   */
  precondition?: Precondition;
  /**
   * S3: the folders on the way are part of the key, made by the door before the write: when one was removed before
   * the commit (the last object under it deleted meanwhile, through this node or another), the commit makes it again
   * instead of failing. Needs `mkdir` there, as making it did.
   */
  parents?: boolean;
}

/** OpenWriteOptions.precondition: throws (PreconditionFailedError, NotFoundError) to refuse the write. */
export type Precondition = (current: FileStat | undefined) => void;

/** A staged S3 multipart upload (multipart.ts). */
export interface MultipartUploadInfo {
  id: string;
  /** The object's path in the owner's view. */
  path: string;
  /** Milliseconds since the epoch. */
  initiated: number;
  /** SSE-C: every part and the Complete need the customer key. */
  customerKey: boolean;
  /** The KMS key the client named at Create (S3 SSE-KMS), if any. */
  requestedKey?: string;
  /** The additional checksum every part gets (S3 x-amz-checksum-algorithm / -type at Create), if any. */
  checksum?: MultipartChecksum;
  /** Who created it when not the owner (the session's job user: another user or `anonymous` over S3). */
  initiator?: string;
}

/** What a repeated CompleteMultipartUpload answers: the object's ETag and checksum. */
export interface CompletedMultipart {
  etag: string;
  checksum?: ObjectMeta["checksum"];
}

/** A multipart upload's checksum choice: the algorithm and how the object's checksum is formed from the parts'. */
export interface MultipartChecksum {
  algorithm: string;
  type: "FULL_OBJECT" | "COMPOSITE";
}

export interface MultipartPart {
  partNumber: number;
  size: number;
  /** The part's ETag as the door gave it at close (unquoted MD5 hex). */
  etag: string;
  mtime: number;
  /** The part's checksum of the upload's algorithm (base64), as the door gave it at close. */
  checksum?: string;
}

export interface MultipartOptions {
  /** As OpenWriteOptions.key: the KEK the parts and the object are wrapped under (S3 SSE-KMS). */
  key?: string;
  /** SSE-C: the upload's customer key (checked again on every part and at Complete); the caller zeroes it. */
  customerKey?: Buffer;
  encryptionNote?: string;
  /** S3 headers the object gets at Complete (ObjectMeta.headers). */
  headers?: Record<string, string>;
  /** S3 object tags the object gets at Complete (ObjectMeta.tags; x-amz-tagging at Create). */
  tags?: [string, string][];
  /** The S3 ACL the object gets at Complete (ObjectMeta.acl; x-amz-acl / x-amz-grant-* at Create). */
  acl?: [string, string][];
  checksum?: MultipartChecksum;
}

/** One part being written: sequential writes, then close with its ETag, or abort. Never visible as a file. */
export interface PartHandle {
  readonly size: number;
  /** The upload the part belongs to. */
  readonly upload: MultipartUploadInfo;
  write(data: Buffer): Promise<void>;
  /** Commits the part with its ETag and, for an upload with a checksum algorithm, its checksum (base64). */
  close(etag: string, checksum?: string): Promise<MultipartPart>;
  abort(): Promise<void>;
}

export interface SessionInfo {
  protocol: "sftp" | "http" | "s3" | "cli" | "trigger";
  sessionId: string;
  sourceIp?: string;
  /**
   * Job user recorded in the audit when it differs from the session's user, e.g. `trigger:<rule>` for a trigger
   * acting as its rule owner (the session's user is then the effective user).
   */
  jobUser?: string;
}

export interface VfsSession {
  readonly username: string;
  stat(path: string): Promise<FileStat>;
  /**
   * The KEK of a file (S3 SSE headers); undefined for a directory. Needs the same permission as stat. For an SSE-C
   * version the customer key must come along (KEY_REQUIRED / PERMISSION_DENIED as for openRead); one given for a
   * version without is INVALID_INPUT.
   */
  keyOf?(path: string, customerKey?: Buffer, versionId?: string): Promise<FileKey | undefined>;
  /** A directory's default encryption (S3 bucket encryption), undefined when none is set. Needs `list` on it. */
  getEncryption?(path: string): Promise<DirEncryption | undefined>;
  /**
   * Replaces the S3 tags of a file's current version, or of its version `versionId` (a noncurrent one too), none:
   * removes them, keeping its content and other metadata; needs `overwrite` there, as any change of the file.
   * Audited as `attrs.change` (the count, never a tag). NOT_FOUND for no such version or a delete marker.
   */
  setObjectTags?(path: string, tags: [string, string][], versionId?: string): Promise<void>;
  /**
   * Replaces the S3 ACL of a file's current version or of a directory (a bucket), none = private; needs `overwrite`
   * on a file, `mkdir` on a directory. Audited as `attrs.change` (the grant count, no grantee).
   */
  setObjectAcl?(path: string, grants: [string, string][] | undefined): Promise<void>;
  /** Sets (undefined: removes) a directory's S3 bucket policy; needs `mkdir` there. Audited as `attrs.change`. */
  setBucketPolicy?(path: string, policy: string | undefined): Promise<void>;
  /**
   * Sets (or with undefined removes) a directory's default encryption; needs `mkdir` there, and a named key must be
   * one this user may name there (KekSelector.chooseRequested). Audited as `attrs.change`.
   */
  setEncryption?(path: string, value: DirEncryption | undefined): Promise<void>;
  list(path: string): Promise<DirEntry[]>;
  /** A page of `list` in store order, reading and decrypting only that page (a large folder's cost stays per page). */
  listPage?(path: string, after: Buffer | undefined, limit: number): Promise<DirPage>;
  /**
   * A page of `list` sorted by name, after the name `after`: every name is decrypted (to sort), but only the page's
   * attributes. `more` tells whether entries follow the page.
   */
  listSorted?(path: string, after: string | undefined, limit: number): Promise<{ entries: DirEntry[]; more: boolean }>;
  /** The immutable id of the entry at `path` (share links bind to it). Needs the same permission as stat. */
  nodeId?(path: string): Promise<string>;
  /** Where node `id` is now in this user's view, or undefined when it is gone or outside the home. */
  pathOf?(id: string): Promise<string | undefined>;
  mkdir(path: string): Promise<void>;
  rmdir(path: string): Promise<void>;
  remove(path: string): Promise<void>;
  /** Replaces an existing file at `to` only if `overwrite` (posix-rename); otherwise EXISTS. */
  rename(from: string, to: string, overwrite: boolean): Promise<void>;
  setMtime(path: string, mtime: number): Promise<void>;
  /** Sets mtime and/or mode; needs `overwrite` on a file (`mkdir` on a directory); audited as `attrs.change`. */
  setAttrs(path: string, attrs: SetAttrs): Promise<void>;
  /** Symbolic links are not supported: always refused (UNSUPPORTED), and the attempt is audited. */
  symlink(target: string, link: string): Promise<void>;
  openRead(path: string, options?: OpenReadOptions): Promise<ReadHandle>;
  openWrite(path: string, options: OpenWriteOptions): Promise<WriteHandle>;
  quota(): Promise<QuotaInfo>;
  /**
   * S3 multipart uploads (multipart.ts): parts staged as encrypted blobs, Complete streams them into one normal new
   * version of `path` (permissions, quota and audit as openWrite; atomic). An upload is its creator's: another user's
   * id, or another path, is NOT_FOUND.
   */
  createMultipart?(path: string, options: MultipartOptions): Promise<MultipartUploadInfo>;
  uploadPart?(path: string, uploadId: string, partNumber: number, customerKey?: Buffer): Promise<PartHandle>;
  /** A customer key given is checked against the upload's (KEY_REQUIRED for another, INVALID_INPUT without SSE-C). */
  listParts?(
    path: string,
    uploadId: string,
    customerKey?: Buffer,
  ): Promise<{ upload: MultipartUploadInfo; parts: MultipartPart[] }>;
  /** This user's uploads of objects under directory `dir`, oldest first. */
  listMultipart?(dir: string): Promise<MultipartUploadInfo[]>;
  abortMultipart?(path: string, uploadId: string): Promise<void>;
  /** The ETag of upload `uploadId` if this user completed it at `path` lately (a repeated Complete answers it). */
  completedMultipart?(path: string, uploadId: string): Promise<CompletedMultipart | undefined>;
  /**
   * Writes parts `partNumbers` (ascending, each uploaded) in order as the new version of `path`, with `etag` as its
   * ObjectMeta ETag, then drops the upload. SSE-C uploads need their key again.
   */
  completeMultipart?(
    path: string,
    uploadId: string,
    partNumbers: number[],
    options: {
      customerKey?: Buffer;
      etag: string;
      partSizes?: number[];
      precondition?: Precondition;
      checksum?: ObjectMeta["checksum"];
      /** OpenWriteOptions.versionId */
      versionId?: string;
    },
  ): Promise<FileStat>;
  /**
   * A directory's sealed record (S3 bucket CORS rules, bucket tags): undefined when none; needs `list`. Setting it
   * (undefined: removing) needs `mkdir` there and is audited as `attrs.change` with `detail` (never the values).
   */
  getDirRecord?<T>(path: string, kind: "cors" | "tags"): Promise<T | undefined>;
  setDirRecord?(path: string, kind: "cors" | "tags", value: unknown, detail: string): Promise<void>;
  /**
   * Versioned folders (S3 bucket versioning, vfs/versions.ts): the state of directory `path` (undefined: never
   * enabled; needs `list`), and setting it (needs `mkdir`; audited as `attrs.change`).
   */
  getVersioning?(path: string): Promise<"Enabled" | "Suspended" | undefined>;
  setVersioning?(path: string, state: "Enabled" | "Suspended"): Promise<void>;
  /** The noncurrent versions and delete markers kept in versioned directory `path` whose key starts with `prefix`. */
  listVersions?(path: string, prefix: string): Promise<VersionEntry[]>;
  /** Stat of one version of a file; a delete marker answers `{ deleteMarker: true }`. NOT_FOUND: no such version. */
  statVersion?(path: string, versionId: string): Promise<{ stat: FileStat; deleteMarker: boolean }>;
  /**
   * Deletes a file in a versioned folder (the current version kept as noncurrent, a delete marker put in its place), also
   * when there is no current file (one more marker). Undefined when `path` is not in a versioned folder.
   */
  deleteVersioned?(path: string): Promise<RemovedVersion | undefined>;
  /** The version id of the delete marker that is the newest version of `path`, when there is no current file. */
  deleteMarkerOf?(path: string): Promise<string | undefined>;
  /** Deletes one version (its blob too; the newest one left becomes current). NOT_FOUND: no such version. */
  removeVersion?(path: string, versionId: string): Promise<RemovedVersion>;
  /** Ends the session; aborts (keeping partials) any handle still open. */
  close(): Promise<void>;
}
