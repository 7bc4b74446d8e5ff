// SSH user authentication: the SSH mechanics (methods offered, the client's key blob and signature) over the
// service's login, which decides, applies the brute-force defender and audits. Every rejection looks the same to the
// client (same methods offered), so a probe cannot tell an unknown user, a wrong credential or a ban apart.
import type { AuthContext } from "ssh2";
import ssh2 from "ssh2";
import { constantTimeEqual } from "../../crypto/bytes.ts";
import type { Credential, LoginService } from "../../service/login.ts";

const METHODS: AuthContext["method"][] = ["publickey", "password"];
/** Failed attempts per connection before we disconnect (OpenSSH's MaxAuthTries default is 6). */
export const MAX_AUTH_FAILURES = 6;

export interface AuthDeps {
  login: LoginService;
  sessionId: string;
  sourceIp?: string;
  /** The door's last word on a verified login (connections per user): a refusal reason, or undefined to admit. */
  admit?: (user: string) => string | undefined;
}

function keyCheck(ctx: AuthContext & { method: "publickey" }): Credential {
  return {
    method: "publickey",
    check(lines) {
      for (const line of lines) {
        const parsed = ssh2.utils.parseKey(line.trim());
        if (parsed instanceof Error) continue;
        const key = Array.isArray(parsed) ? parsed[0] : parsed;
        // The blob starts with the key type, so equal blobs also mean equal types.
        if (!constantTimeEqual(key.getPublicSSH(), ctx.key.data)) continue;
        // No signature: the client only asks whether this key would be accepted (OpenSSH probes before signing).
        if (!ctx.signature || !ctx.blob) return "would-accept";
        return key.verify(ctx.blob, ctx.signature, ctx.hashAlgo) === true ? "accepted" : "bad-signature";
      }
      return "not-authorized";
    },
  };
}

/**
 * Decides one authentication request. `user` is set on success; `refused` when the attempt was rejected (a key
 * probe that would be accepted is neither).
 */
export async function authenticate(ctx: AuthContext, deps: AuthDeps): Promise<{ user?: string; refused: boolean }> {
  const credential: Credential | undefined =
    ctx.method === "password"
      ? { method: "password", password: ctx.password }
      : ctx.method === "publickey"
        ? keyCheck(ctx)
        : undefined;
  if (credential) {
    const result = await deps.login.login({
      user: ctx.username,
      protocol: "sftp",
      sessionId: deps.sessionId,
      sourceIp: deps.sourceIp,
      credential,
      admit: deps.admit,
    });
    if (result.outcome !== "refused") {
      ctx.accept();
      return { user: result.outcome === "success" ? result.user : undefined, refused: false };
    }
  }
  ctx.reject(METHODS);
  return { refused: true };
}
