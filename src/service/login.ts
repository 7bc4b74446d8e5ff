// Login for every door: the brute-force defender first (a banned source is refused before any credential check),
// then the credential, then the login audit. Every refusal looks the same to the caller (`refused`, nothing else),
// and an unknown user takes the same path as a wrong credential (argon2 runs either way, the defender scores both
// alike), so neither the answer nor its timing tells who exists.
import { type AuditEvent, type AuditProtocol, type AuditSink, commitEvent } from "../audit/types.ts";
import { zero } from "../crypto/bytes.ts";
import { AtrestError } from "../errors.ts";
import type { Logger } from "../logger.ts";
import type { SessionInfo, VfsSession } from "../vfs/types.ts";
import type { Accounts } from "./accounts.ts";
import type { Defender } from "./defender.ts";

/** What a door hands over; the protocol specifics (an SSH signature) stay in the door, behind `check`. */
export type Credential =
  | {
      method: "password";
      password: string;
      /** A TOTP or recovery code, for users with a second factor (doors that can ask for one: HTTPS). */
      otp?: string;
    }
  | {
      method: "publickey";
      /**
       * Given the user's authorized keys (OpenSSH one-line format): `accepted` (a key matched and its proof holds),
       * `would-accept` (a key matched, no proof yet: a probe), `bad-signature` or `not-authorized`.
       */
      check(authorizedKeys: string[]): "accepted" | "would-accept" | "bad-signature" | "not-authorized";
    }
  | {
      /**
       * An OIDC login the door has carried out (authorization code + PKCE, state and nonce checked, ID token verified
       * against the configured issuer): `LoginRequest.user` is the user the claims name. `refused` is why the door
       * refused it before a user was known (bad state, provider error, missing claim): audited and scored like a wrong
       * password. The user must exist (the door provisions first when configured to).
       */
      method: "oidc";
      issuer: string;
      refused?: string;
    }
  | {
      /**
       * An S3 request signed with AWS Signature V4 (s3-sigv4), or a POST Object form whose policy document is signed
       * (s3-post-policy): the door parsed the request; `verify` recomputes the signature with the access key's secret
       * (constant-time compare). `LoginRequest.user` is the access key id; the user is the key's owner.
       */
      method: "s3-sigv4";
      verify(secret: Buffer): boolean;
    }
  | { method: "s3-post-policy"; verify(secret: Buffer): boolean };

/** The job user of unsigned S3 requests (docs/s3.md "Anonymous access"). */
export const ANONYMOUS = "anonymous";

export type LoginProtocol = SessionInfo["protocol"] & AuditProtocol;

export interface LoginRequest {
  user: string;
  protocol: LoginProtocol;
  sessionId: string;
  sourceIp?: string;
  credential: Credential;
  /**
   * Called once the credential holds, before the login counts: a refusal reason (a door's limit, such as connections
   * per user) refuses it, audited with that reason and not scored by the defender (the credential was right).
   */
  admit?: (user: string) => string | undefined;
  /**
   * The door can ask for a code and let a user set one up (HTTPS): a user whose policy requires TOTP but who has none
   * yet logs in with `enrolSecondFactor` (the door limits the session to enrolment). Other doors refuse that login.
   */
  canEnrol?: boolean;
}

/**
 * `probe`: a public key that would be accepted once signed; neither a login nor a refusal. `secondFactor` on a
 * refusal: the password was right but a TOTP code is needed (or was wrong); only someone with the password learns it.
 */
export type LoginResult =
  | { outcome: "success"; user: string; enrolSecondFactor?: true }
  | { outcome: "probe" }
  | { outcome: "refused"; secondFactor?: true };

/** A second factor for password logins (service/totp.ts). */
export interface SecondFactor {
  /** none; enrolled (a code is needed); enrol (policy requires one, none set up yet). */
  state(user: string): Promise<"none" | "enrolled" | "enrol">;
  verify(user: string, code: string): Promise<boolean>;
}

export interface LiveSession {
  sessionId: string;
  user: string;
  /** The user's id at login: a user removed (or removed and added again under the same name) no longer matches. */
  userId?: string;
  protocol: LoginProtocol;
  sourceIp?: string;
  /** Epoch ms. */
  since: number;
}

export interface LoginServiceDeps {
  accounts: Accounts;
  logger: Logger;
  audit?: AuditSink;
  defender?: Defender;
  secondFactor?: SecondFactor;
}

export class LoginService {
  readonly #deps: LoginServiceDeps;
  readonly #live = new Map<string, LiveSession>();
  /** How the door ends each live connection (registered with `onEnd`). */
  readonly #ends = new Map<string, () => void>();
  /** Sessions ended before their door registered how to end them (see `onEnd`). */
  readonly #endedEarly = new Set<string>();

  constructor(deps: LoginServiceDeps) {
    this.#deps = deps;
  }

  get defender(): Defender | undefined {
    return this.#deps.defender;
  }

  async login(req: LoginRequest): Promise<LoginResult> {
    const { accounts, audit, defender, logger } = this.#deps;
    // who the attempt is for: the name given, or for an S3 key the key's owner once known (the key id before)
    let who = req.user;
    const src = { ip: req.sourceIp, user: req.user };
    const event = (outcome: "success" | "failure", reason?: string): AuditEvent => ({
      action: "login",
      outcome,
      user: who,
      protocol: req.protocol,
      method: req.credential.method,
      reason,
      sourceIp: req.sourceIp,
      sessionId: req.sessionId,
    });
    const record = (outcome: "success" | "failure", reason?: string) => audit?.record(event(outcome, reason));
    const fail = async (reason: string, score?: number): Promise<LoginResult> => {
      record("failure", reason);
      await defender?.failure(src, score);
      return { outcome: "refused" };
    };
    const succeed = async (user: string): Promise<LoginResult> => {
      // A ban that landed while this credential was being checked (parallel guesses) refuses it too.
      if (await defender?.banned(src)) {
        record("failure", "banned");
        return { outcome: "refused" };
      }
      // the credential holds but the account is disabled (or was removed meanwhile): refused like any other refusal,
      // not scored (the credential was right), audited with the reason
      const userId = await accounts.userId?.(user);
      if (accounts.userId && userId === undefined) {
        record("failure", "account disabled");
        return { outcome: "refused" };
      }
      const refusal = req.admit?.(user);
      if (refusal !== undefined) {
        record("failure", refusal);
        return { outcome: "refused" };
      }
      try {
        // fail-closed: the login is accepted only once its record is durable; a record that cannot be made is
        // withdrawn (retract), so the log never says "success" for a login that was refused
        // the effective user is the account the session runs as (the name as stored, whatever the client typed)
        await commitEvent(audit, { ...event("success"), effectiveUser: user }, { retract: true });
      } catch (err) {
        logger.warn({ err, sessionId: req.sessionId }, `${req.protocol}: login refused: audit log cannot be written`);
        record("failure", "audit unavailable");
        return { outcome: "refused" };
      }
      this.#live.set(req.sessionId, {
        sessionId: req.sessionId,
        user,
        userId,
        protocol: req.protocol,
        sourceIp: req.sourceIp,
        since: Date.now(),
      });
      return { outcome: "success", user };
    };
    try {
      // fail-closed: refused before any credential is checked when the log cannot take the record
      await audit?.admit?.();
    } catch (err) {
      logger.warn({ err, sessionId: req.sessionId }, `${req.protocol}: login refused: audit log cannot be written`);
      record("failure", "audit unavailable");
      return { outcome: "refused" };
    }
    try {
      if (await defender?.banned(src)) {
        record("failure", "banned");
        return { outcome: "refused" };
      }
      const cred = req.credential;
      if (cred.method === "s3-sigv4" || cred.method === "s3-post-policy") {
        const key = await accounts.s3Secret?.(req.user);
        if (!key) return await fail("bad credentials");
        who = key.username;
        src.user = key.username;
        if (await defender?.banned(src)) {
          zero(key.secret);
          record("failure", "banned");
          return { outcome: "refused" };
        }
        let ok: boolean;
        try {
          ok = cred.verify(key.secret);
        } finally {
          zero(key.secret);
        }
        return ok ? await succeed(key.username) : await fail("bad signature");
      }
      if (cred.method === "oidc") {
        if (cred.refused !== undefined) return await fail(cred.refused);
        const id = await accounts.userId?.(req.user);
        if (!id) return await fail("unknown user"); // or disabled: userId tells neither apart
        return await succeed(req.user);
      }
      if (cred.method === "password") {
        const user = await accounts.verifyPassword(req.user, cred.password);
        if (!user) return await fail("bad credentials");
        const second = this.#deps.secondFactor;
        const state = second ? await second.state(user.username) : "none";
        if (second && state === "enrolled") {
          const ok = cred.otp !== undefined && (await second.verify(user.username, cred.otp));
          if (!ok) {
            await fail(
              cred.otp !== undefined
                ? "bad second factor"
                : req.canEnrol
                  ? "second factor required"
                  : `second factor required: ${req.protocol} cannot ask for a TOTP code (log in with a public key)`,
            );
            return { outcome: "refused", secondFactor: true };
          }
        }
        if (state === "enrol") {
          if (!req.canEnrol) {
            await fail(
              `second factor required but not set up: enrol TOTP over HTTPS first; ${req.protocol} cannot ask for a code (log in with a public key)`,
            );
            return { outcome: "refused" };
          }
          const ok = await succeed(user.username);
          return ok.outcome === "success" ? { ...ok, enrolSecondFactor: true } : ok;
        }
        return await succeed(user.username);
      }
      const verdict = cred.check(await accounts.authorizedKeys(req.user));
      if (verdict === "would-accept") return { outcome: "probe" };
      if (verdict === "accepted") return await succeed(req.user);
      if (verdict === "bad-signature") return await fail("bad signature");
      return await fail("key not authorized", defender?.settings.scoreKeyRejected);
    } catch (err) {
      logger.error({ err, sessionId: req.sessionId }, `${req.protocol}: authentication backend failed`);
      record("failure", "internal error");
      return { outcome: "refused" };
    }
  }

  /** Opens a file session for a logged-in connection (the door closes it: it knows what is still in flight). */
  async openSession(sessionId: string): Promise<VfsSession> {
    const live = this.#live.get(sessionId);
    if (!live) throw new AtrestError("PERMISSION_DENIED", "not logged in");
    const { user, protocol, sourceIp } = live;
    return this.#deps.accounts.openSession(user, { protocol, sessionId, sourceIp });
  }

  /**
   * A file session as `owner` on behalf of the logged-in connection `sessionId` (an S3 request into another user's
   * bucket that its ACL lets in): the owner's permissions apply, the audit names the logged-in user as job user and
   * the owner as effective user.
   */
  async openSessionAs(sessionId: string, owner: string): Promise<VfsSession> {
    const live = this.#live.get(sessionId);
    if (!live) throw new AtrestError("PERMISSION_DENIED", "not logged in");
    const { user, protocol, sourceIp } = live;
    return this.#deps.accounts.openSession(owner, { protocol, sessionId, sourceIp, jobUser: user });
  }

  /**
   * An unsigned S3 request (what a public ACL lets in): no credential, so no login event and nothing to score; a
   * banned address is refused all the same. The session runs as `owner` with job user `anonymous` in the audit.
   */
  async openAnonymous(owner: string, sessionId: string, sourceIp: string | undefined): Promise<VfsSession> {
    if (await this.#deps.defender?.banned({ ip: sourceIp })) {
      throw new AtrestError("PERMISSION_DENIED", "banned");
    }
    return this.#deps.accounts.openSession(owner, { protocol: "s3", sessionId, sourceIp, jobUser: ANONYMOUS });
  }

  /** The door's way to end connection `sessionId` (e.g. close the SSH connection); used by `endUser` and `sweep`. */
  onEnd(sessionId: string, end: () => void): void {
    if (this.#live.has(sessionId)) this.#ends.set(sessionId, end);
    // ended between the login and the door's registration (an admin ending the user's sessions right then): end it now
    else if (this.#endedEarly.delete(sessionId)) end();
  }

  /**
   * Ends the live connections of `username` through every door (those `which` picks, default all), saying `why` in
   * the server log; returns how many.
   */
  endUser(username: string, why = "user removed", which: (live: LiveSession) => boolean = () => true): number {
    let n = 0;
    for (const live of [...this.#live.values()]) {
      if (live.user !== username || !which(live)) continue;
      n++;
      this.#end(live, why);
    }
    return n;
  }

  /**
   * Ends the connections of users that no longer exist, are disabled or are another user now (removed, maybe added
   * again under the same name): `user rm` runs in another process, so the server calls this every few seconds.
   */
  async sweep(): Promise<number> {
    const userId = this.#deps.accounts.userId?.bind(this.#deps.accounts);
    if (!userId) return 0;
    const ids = new Map<string, string | undefined>();
    let n = 0;
    for (const live of [...this.#live.values()]) {
      if (!ids.has(live.user)) ids.set(live.user, await userId(live.user));
      if (ids.get(live.user) === live.userId) continue;
      n++;
      this.#end(live, "user removed or disabled");
    }
    return n;
  }

  #end(live: LiveSession, why: string): void {
    this.#deps.logger.info({ sessionId: live.sessionId, user: live.user }, `${live.protocol}: ending session: ${why}`);
    const end = this.#ends.get(live.sessionId);
    if (end) end();
    else {
      this.logout(live.sessionId);
      this.#endedEarly.add(live.sessionId);
      // a door that never registers leaves its ids here: keep the newest few
      for (const id of this.#endedEarly) {
        if (this.#endedEarly.size <= 1000) break;
        this.#endedEarly.delete(id);
      }
    }
  }

  /** Ends a logged-in connection and audits the logout. No-op for an id that never logged in. */
  logout(sessionId: string): void {
    const live = this.#live.get(sessionId);
    if (!live) return;
    this.#live.delete(sessionId);
    this.#ends.delete(sessionId);
    const { user, protocol, sourceIp } = live;
    this.#deps.audit?.record({
      action: "logout",
      outcome: "success",
      user,
      effectiveUser: user,
      protocol,
      sessionId,
      sourceIp,
    });
  }

  /** Connections logged in right now. */
  sessions(): LiveSession[] {
    return [...this.#live.values()].map((l) => ({ ...l }));
  }
}
