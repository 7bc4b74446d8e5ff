// What a protocol adapter needs to log users in and open their file sessions.
import type { SessionInfo, VfsSession } from "../vfs/types.ts";

export interface UserAuth {
  username: string;
}

export interface Accounts {
  /** Constant-time-ish: always runs argon2 even for unknown users, so timing does not reveal who exists. */
  verifyPassword(username: string, password: string): Promise<UserAuth | undefined>;
  /** Authorized public keys in OpenSSH one-line format; empty for unknown users. */
  authorizedKeys(username: string): Promise<string[]>;
  openSession(username: string, info: SessionInfo): Promise<VfsSession>;
  /** An S3 access key's owner and secret (the caller zeroes it); undefined for an unknown key. */
  s3Secret?(accessKeyId: string): Promise<{ username: string; secret: Buffer } | undefined>;
  /**
   * The user's stable id, undefined when there is no such user (removed) or the account is disabled: live sessions
   * are tied to the id of an enabled account (a login needs one; the sweep ends the others).
   */
  userId?(username: string): Promise<string | undefined>;
}
