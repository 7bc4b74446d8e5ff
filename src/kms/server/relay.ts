// `POST /v1/relay`: a call a person signed (src/kms/api/relayed.ts), carried by a file server. The relaying
// connection must be a `server`-role client; the signer must hold a certificate this KMS's CA issued, registered and
// not revoked, of a role other than `server`; the statement must name this KMS, be fresh (±2 min) and carry a nonce
// not seen before. The call then runs as the signer (their name and role; the relay is recorded in the audit), so
// dual control counts people, not the file server that carried their decisions.

import { verify, X509Certificate } from "node:crypto";
import { AtrestError } from "../../errors.ts";
import type { KmsCaller } from "../api/caller.ts";
import {
  audienceOf,
  checkSignedCall,
  type KmsStatement,
  parseStatement,
  STATEMENT_MAX_AGE_MS,
} from "../api/relayed.ts";
import type { Identity } from "../clients.ts";

/** What a signed call may do: read and decide requests, ask for a destruction, set a key's policy. */
export const RELAYABLE_OPS: ReadonlySet<string> = new Set([
  "list-keys",
  "get-key",
  "list-requests",
  "get-request",
  "approve",
  "reject",
  "request-destroy",
  "cancel-destroy",
  "set-key-policy",
]);

const MAX_NONCES = 100_000;

export class RelayVerifier {
  readonly #ca: X509Certificate;
  readonly #aud: string;
  readonly #identify: (fingerprint: string, ip: string | undefined) => Identity;
  /** nonce → time it may be forgotten (its statement is then too old anyway). */
  readonly #seen = new Map<string, number>();

  constructor(caPem: string, identify: (fingerprint: string, ip: string | undefined) => Identity) {
    this.#ca = new X509Certificate(caPem);
    this.#aud = audienceOf(caPem);
    this.#identify = identify;
  }

  /** Checks the envelope; returns the signer as the caller and the statement to run. */
  verify(relayer: KmsCaller, envelope: unknown, now = Date.now()): { caller: KmsCaller; statement: KmsStatement } {
    if (relayer.role !== "server") {
      throw new AtrestError(
        "PERMISSION_DENIED",
        `permission denied: client ${relayer.name} (role ${relayer.role}) may not relay signed calls (needs server)`,
      );
    }
    const call = checkSignedCall(envelope);
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(call.certificate);
    } catch {
      throw new AtrestError("AUTH_FAILED", "the signer's certificate cannot be read");
    }
    if (!cert.checkIssued(this.#ca) || !cert.verify(this.#ca.publicKey)) {
      throw new AtrestError("AUTH_FAILED", "the signer's certificate was not issued by this key manager");
    }
    if (Date.parse(cert.validFrom) > now || Date.parse(cert.validTo) <= now) {
      throw new AtrestError("AUTH_FAILED", "the signer's certificate is not valid now");
    }
    const fp = cert.fingerprint256.replace(/:/g, "").toLowerCase();
    const id = this.#identify(fp, relayer.sourceIp);
    if ("refused" in id) throw new AtrestError("PERMISSION_DENIED", id.refused);
    if (id.caller.role === "server") {
      throw new AtrestError("PERMISSION_DENIED", `a server certificate (${id.caller.name}) cannot sign for a person`);
    }
    const ok = verify(
      "sha256",
      Buffer.from(call.statement, "utf8"),
      { key: cert.publicKey, dsaEncoding: "ieee-p1363" },
      Buffer.from(call.signature, "base64url"),
    );
    if (!ok) throw new AtrestError("AUTH_FAILED", `the signature of ${id.caller.name} does not verify`);
    const statement = parseStatement(call.statement);
    if (statement.aud !== this.#aud) throw new AtrestError("AUTH_FAILED", "the statement names another key manager");
    if (Math.abs(now - statement.created) > STATEMENT_MAX_AGE_MS) {
      throw new AtrestError("AUTH_FAILED", "the statement is too old (or from the future): sign it again");
    }
    this.#remember(statement.nonce, now);
    return {
      caller: { ...id.caller, ...(relayer.sourceIp ? { sourceIp: relayer.sourceIp } : {}), via: relayer.name },
      statement,
    };
  }

  // In memory: after a restart a nonce could be replayed within its two minutes; every relayable call is either
  // read-only or refused the second time by the request state (the same custodian approving twice).
  #remember(nonce: string, now: number): void {
    for (const [n, until] of this.#seen) {
      if (until > now) break;
      this.#seen.delete(n);
    }
    if (this.#seen.has(nonce)) throw new AtrestError("AUTH_FAILED", "the statement was already used (replay)");
    if (this.#seen.size >= MAX_NONCES) throw new AtrestError("LIMIT_EXCEEDED", "too many signed calls: retry later");
    this.#seen.set(nonce, now + 2 * STATEMENT_MAX_AGE_MS);
  }
}
