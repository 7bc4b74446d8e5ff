// SSH user authentication against Accounts. Every rejection looks the same to the client (same methods offered,
// same timing path through Accounts), so a probe cannot tell an unknown user from a wrong credential.
import type { AuthContext } from "ssh2";
import ssh2 from "ssh2";
import type { AuditSink } from "../../audit/types.ts";
import { constantTimeEqual } from "../../crypto/bytes.ts";
import type { Logger } from "../../logger.ts";
import type { Accounts } from "../../service/accounts.ts";

const METHODS: AuthContext["method"][] = ["publickey", "password"];
/** Failed attempts per connection before we disconnect (OpenSSH's MaxAuthTries default is 6). */
export const MAX_AUTH_FAILURES = 6;

export interface AuthDeps {
  accounts: Accounts;
  logger: Logger;
  audit?: AuditSink;
  sessionId: string;
  sourceIp?: string;
}

async function keyMatches(accounts: Accounts, ctx: AuthContext & { method: "publickey" }): Promise<boolean> {
  const lines = await accounts.authorizedKeys(ctx.username);
  for (const line of lines) {
    const parsed = ssh2.utils.parseKey(line.trim());
    if (parsed instanceof Error) continue;
    const key = Array.isArray(parsed) ? parsed[0] : parsed;
    // The blob starts with the key type, so equal blobs also mean equal types.
    if (!constantTimeEqual(key.getPublicSSH(), ctx.key.data)) continue;
    // No signature: the client only asks whether this key would be accepted (OpenSSH probes before signing).
    if (!ctx.signature || !ctx.blob) return true;
    return key.verify(ctx.blob, ctx.signature, ctx.hashAlgo) === true;
  }
  return false;
}

/**
 * Decides one authentication request. `user` is set on success; `refused` when the attempt was rejected (a key
 * probe that would be accepted is neither).
 */
export async function authenticate(ctx: AuthContext, deps: AuthDeps): Promise<{ user?: string; refused: boolean }> {
  const record = (outcome: "success" | "failure", reason?: string) =>
    deps.audit?.record({
      action: "login",
      outcome,
      user: ctx.username,
      protocol: "sftp",
      method: ctx.method,
      reason,
      sourceIp: deps.sourceIp,
      sessionId: deps.sessionId,
    });
  try {
    if (ctx.method === "password") {
      const user = await deps.accounts.verifyPassword(ctx.username, ctx.password);
      if (user) {
        record("success");
        await deps.audit?.admit?.();
        ctx.accept();
        return { user: user.username, refused: false };
      }
      record("failure", "bad credentials");
    } else if (ctx.method === "publickey") {
      const ok = await keyMatches(deps.accounts, ctx);
      if (ok && !ctx.signature) {
        ctx.accept();
        return { refused: false };
      }
      if (ok) {
        record("success");
        await deps.audit?.admit?.();
        ctx.accept();
        return { user: ctx.username, refused: false };
      }
      record("failure", ctx.signature ? "bad signature" : "key not authorized");
    }
  } catch (err) {
    deps.logger.error({ err, sessionId: deps.sessionId }, "sftp: authentication backend failed");
    record("failure", "internal error");
  }
  ctx.reject(METHODS);
  return { refused: true };
}
