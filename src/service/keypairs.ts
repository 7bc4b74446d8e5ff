// User key pairs (seed 002): the server generates a key pair for the user and hands the private half over once,
// passphrase-protected, keeping only the public half on the account. SSH: Ed25519 in the OpenSSH private key format,
// encrypted with aes256-ctr under a bcrypt-pbkdf key (ssh2's key generator; `ssh-keygen -y` and OpenSSH read it); the
// public key joins the user's authorized keys. OpenPGP: Ed25519 + Cv25519 (or RSA 3072) v4, armored, the secret key
// encrypted with the passphrase (openpgp, src/pgp/generate.ts); the public key joins the key store as the user's
// (PGP folders encrypt to it). Neither private key is written anywhere on the server, nor in any log or audit record.
import { createHash } from "node:crypto";
import ssh2 from "ssh2";
import type { AuditSink } from "../audit/types.ts";
import { AtrestError } from "../errors.ts";
import { type GenerateOptions, generateUserKey, MIN_PASSPHRASE } from "../pgp/generate.ts";
import type { PgpKeyStore } from "../pgp/keystore.ts";
import type { MetaStore, PgpKeyRow } from "../store/types.ts";
import { type Actor, actorFields, requireRole } from "./actor.ts";

/** bcrypt-pbkdf rounds of the OpenSSH private key (ssh-keygen's default is 16). */
export const SSH_KDF_ROUNDS = 16;
const ROLES = ["admin", "user"] as const;

export interface KeyPairDeps {
  store: MetaStore;
  pgp: PgpKeyStore;
  audit: AuditSink;
}

/** `SHA256:<base64>` of an OpenSSH public key line, as ssh-keygen -l prints it. */
export function sshFingerprint(line: string): string {
  const blob = Buffer.from(line.trim().split(/\s+/)[1] ?? "", "base64");
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

function checkPassphrase(passphrase: string): void {
  if (passphrase.length < MIN_PASSPHRASE) {
    throw new AtrestError("INVALID_INPUT", `the passphrase must have at least ${MIN_PASSPHRASE} characters`);
  }
}

export class KeyPairs {
  readonly #d: KeyPairDeps;

  constructor(deps: KeyPairDeps) {
    this.#d = deps;
  }

  /** A new SSH key pair for the actor; its public key is added to their account. */
  async generateSsh(
    actor: Actor,
    passphrase: string,
    comment?: string,
  ): Promise<{ privateKey: string; publicKey: string; fingerprint: string }> {
    requireRole(actor, ROLES, "generating a key pair");
    checkPassphrase(passphrase);
    const label = comment?.trim() || `${actor.user}@atrest`;
    if (!/^[\x21-\x7e][\x20-\x7e]{0,99}$/.test(label))
      throw new AtrestError("INVALID_INPUT", "comment: 1-100 printable ASCII");
    const pair = ssh2.utils.generateKeyPairSync("ed25519", {
      passphrase,
      cipher: "aes256-ctr",
      rounds: SSH_KDF_ROUNDS,
      comment: label,
    });
    const publicKey = pair.public.trim();
    const fingerprint = sshFingerprint(publicKey);
    await this.#d.store.transaction(async (tx) => {
      const u = await tx.getUser(actor.user);
      if (!u) throw new AtrestError("NOT_FOUND", `no such user: ${actor.user}`);
      await tx.updateUser({ ...u, publicKeys: [...u.publicKeys, publicKey] });
    });
    this.#d.audit.record({
      action: "user.change",
      outcome: "success",
      ...actorFields(actor),
      effectiveUser: actor.user,
      target: fingerprint,
      detail: "ssh key generated (ed25519); private key handed out once, not kept",
    });
    return { privateKey: pair.private, publicKey, fingerprint };
  }

  /** Removes one of the actor's SSH public keys by fingerprint. */
  async removeSsh(actor: Actor, fingerprint: string): Promise<void> {
    requireRole(actor, ROLES, "removing a key");
    await this.#d.store.transaction(async (tx) => {
      const u = await tx.getUser(actor.user);
      if (!u) throw new AtrestError("NOT_FOUND", `no such user: ${actor.user}`);
      const keep = u.publicKeys.filter((k) => sshFingerprint(k) !== fingerprint);
      if (keep.length === u.publicKeys.length) throw new AtrestError("NOT_FOUND", `no such key: ${fingerprint}`);
      if (keep.length === 0 && !u.passwordHash) {
        throw new AtrestError("CONFLICT", "that is your only way to log in: add another key or a password first");
      }
      await tx.updateUser({ ...u, publicKeys: keep });
    });
    this.#d.audit.record({
      action: "user.change",
      outcome: "success",
      ...actorFields(actor),
      effectiveUser: actor.user,
      target: fingerprint,
      detail: "ssh key removed",
    });
  }

  /** A new OpenPGP key pair for the actor; its public key is stored as theirs (audited pgp.key.generate). */
  async generatePgp(
    actor: Actor,
    passphrase: string,
    opts: GenerateOptions = {},
  ): Promise<{ privateKey: string; row: PgpKeyRow }> {
    requireRole(actor, ROLES, "generating a key pair");
    checkPassphrase(passphrase);
    return generateUserKey(this.#d.pgp.actingAs(actorFields(actor)), actor.user, passphrase, opts);
  }

  /** The actor's public keys: SSH (authorized keys) and OpenPGP. */
  async list(actor: Actor): Promise<{ ssh: { publicKey: string; fingerprint: string }[]; pgp: PgpKeyRow[] }> {
    const u = await this.#d.store.getUser(actor.user);
    if (!u) throw new AtrestError("NOT_FOUND", `no such user: ${actor.user}`);
    return {
      ssh: u.publicKeys.map((publicKey) => ({ publicKey, fingerprint: sshFingerprint(publicKey) })),
      pgp: await this.#d.pgp.keysOf({ kind: "user", name: actor.user }),
    };
  }
}
