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
}
