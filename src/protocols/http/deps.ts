// What the route files share: the server's options and its session table (types only, so route files and the server
// import each other in one direction).

import type { Match, QueryOptions } from "../../audit/query.ts";
import type { AuditRecord, AuditSink } from "../../audit/types.ts";
import type { KeyProvider } from "../../kms/api/types.ts";
import type { Logger } from "../../logger.ts";
import type { Registry } from "../../metrics/registry.ts";
import type { Accounts } from "../../service/accounts.ts";
import type { Admin } from "../../service/admin.ts";
import type { KeyPairs } from "../../service/keypairs.ts";
import type { NodeSession } from "../../service/live-sessions.ts";
import type { LoginService } from "../../service/login.ts";
import type { ShareService } from "../../service/shares.ts";
import type { TokenService } from "../../service/tokens.ts";
import type { TotpService } from "../../service/totp.ts";
import type { UserRow } from "../../store/types.ts";
import type { SyncServer } from "../../sync/server/service.ts";
import type { KeyCustody } from "./custody.ts";
import type { HealthCheck } from "./health.ts";
import type { OidcSettings } from "./oidc-settings.ts";
import type { SealedCookies } from "./sealed-cookie.ts";
import type { SessionRows, SessionSettings, SessionTable } from "./sessions.ts";

export interface HttpServerOptions {
  host: string;
  /** 0 = any free port. */
  port: number;
  tls: { key: string; cert: string };
  login: LoginService;
  /**
   * Several nodes on one store (service/live-sessions.ts): every node's SFTP/S3 connections, and ending a user's on
   * every node; without it, this node's.
   */
  liveSessions?: { list(): Promise<NodeSession[]>; endEverywhere(user: string): Promise<void> };
  tokens: TokenService;
  totp: TotpService;
  /** The caller's own key pairs (service/keypairs.ts). */
  keyPairs: KeyPairs;
  /** OIDC login (absent = off). */
  oidc?: OidcSettings;
  /** Share links (service/shares.ts). */
  shares: ShareService;
  /** Admin use-cases (service/admin.ts): users, groups, folders, bans. */
  admin: Admin;
  /** The key manager client (custodian routes). */
  keys: Pick<KeyProvider, "listKeys" | "createKey" | "rotateKey">;
  /** Files per key version, who-can-decrypt, dual-control requests, key jobs (custodian routes). */
  custody?: KeyCustody;
  /** Reads the audit log (decrypted) for auditors. */
  auditQuery(pick: (r: AuditRecord) => boolean, o: QueryOptions): Match[];
  /** Where refused token attempts are audited (the app's audit log). */
  audit: AuditSink;
  accounts: Accounts;
  /** The user's row (role, home) at each request: a role change or removal takes effect at once. */
  user(name: string): Promise<UserRow | undefined>;
  logger: Logger;
  registry?: Registry;
  checks?: HealthCheck[];
  sessions?: Partial<SessionSettings>;
  /**
   * The store's settings: browser sessions are kept there too, sealed, so every node on the store accepts them
   * (sessions.ts); without it they live in this process only.
   */
  sessionRows?: SessionRows;
  /** Largest JSON body, bytes (default 1 MiB). Uploads are streamed and bounded by quotas instead. */
  bodyLimit?: number;
  /** The built web app served at / (default web/dist of this checkout); false: the API only. */
  webRoot?: string | false;
  /** E2EE sync (src/sync/server); absent: the /api/v1/sync routes answer 501. */
  sync?: SyncServer;
  /**
   * 32 bytes for the sealed cookies (sealed-cookie.ts: share unlocks, OIDC login state), the same on every node of
   * a cluster (a key-manager-wrapped setting); the server derives its keys from it and zeroes them at close.
   */
  cookieKey: Buffer;
  /** Unfinished tus uploads are dropped after this long without a PATCH (default 1 h). */
  uploadIdleMs?: number;
  /** At close, requests still running after this long have their connections cut (default 5 s). */
  closeGraceMs?: number;
}

export interface HttpDeps {
  options: HttpServerOptions;
  sessions: SessionTable;
  cookies: SealedCookies;
}
