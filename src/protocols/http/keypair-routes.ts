// The caller's own key pairs (seed 002): the server generates an SSH or OpenPGP key pair, answers the private key once
// (passphrase-protected) and keeps only the public key on the account (service/keypairs.ts). From a browser session
// only: a token that leaked must not mint login keys.
import { z } from "zod";
import type { PgpKeyRow } from "../../store/types.ts";
import { actorOf } from "./actor.ts";
import type { HttpDeps } from "./deps.ts";
import { FILE_ROLES } from "./files.ts";
import { HttpProblem } from "./problem.ts";
import { errors, type Principal, type Route, route } from "./routes.ts";

const KEYS = { roles: FILE_ROLES, scope: "account" } as const;
const Passphrase = z.string().min(8).max(1024).describe("protects the private key; at least 8 characters");

const PgpKey = z
  .object({
    fingerprint: z.string(),
    algorithm: z.string(),
    userIds: z.array(z.string()),
    createdAt: z.string(),
    expiresAt: z.string().nullable(),
    source: z.enum(["import", "generated"]),
  })
  .meta({ id: "PgpKey" });

const pgpJson = (r: PgpKeyRow) => ({
  fingerprint: r.fingerprint,
  algorithm: r.algorithm,
  userIds: r.userIds,
  createdAt: r.createdAt,
  expiresAt: r.expiresAt,
  source: r.source,
});

function sessionOnly(p: Principal): void {
  if (p.via !== "session") {
    throw new HttpProblem(403, "FORBIDDEN", "key pairs are made from a logged-in session, not with a token", {
      code: "PERMISSION_DENIED",
    });
  }
}

export function keyPairRoutes(deps: HttpDeps): Route[] {
  const pairs = () => deps.options.keyPairs;
  return [
    route(
      {
        method: "GET",
        url: "/api/v1/account/keys",
        operationId: "listOwnKeys",
        summary: "Your public keys: SSH (authorized keys) and OpenPGP",
        tags: ["account"],
        auth: KEYS,
        responses: {
          200: {
            description: "your public keys",
            schema: z.object({
              ssh: z.array(z.object({ publicKey: z.string(), fingerprint: z.string() })),
              pgp: z.array(PgpKey),
            }),
          },
          ...errors(401, 403),
        },
      },
      async ({ principal }) => {
        const k = await pairs().list(actorOf(principal));
        return { ssh: k.ssh, pgp: k.pgp.map(pgpJson) };
      },
    ),
    route(
      {
        method: "POST",
        url: "/api/v1/account/keys/ssh",
        operationId: "generateSshKey",
        summary: "Generate an Ed25519 SSH key pair: the private key (OpenSSH format, encrypted) is in this answer only",
        tags: ["account"],
        auth: KEYS,
        body: z.strictObject({ passphrase: Passphrase, comment: z.string().max(100).optional() }),
        responses: {
          201: {
            description: "the public key is now one of your authorized keys; save the private key (0600)",
            schema: z.object({
              privateKey: z.string().describe("OpenSSH private key, aes256-ctr + bcrypt-pbkdf under the passphrase"),
              publicKey: z.string(),
              fingerprint: z.string(),
            }),
          },
          ...errors(400, 401, 403, 415),
        },
      },
      async ({ principal, body, reply }) => {
        sessionOnly(principal);
        const r = await pairs().generateSsh(actorOf(principal), body.passphrase, body.comment);
        reply.code(201);
        return r;
      },
    ),
    route(
      {
        method: "DELETE",
        url: "/api/v1/account/keys/ssh/:fingerprint",
        operationId: "removeSshKey",
        summary: "Remove one of your SSH public keys (by its SHA256: fingerprint, URL-encoded)",
        tags: ["account"],
        auth: KEYS,
        params: z.strictObject({ fingerprint: z.string().min(8).max(128) }),
        responses: { 204: { description: "removed" }, ...errors(401, 403, 404, 409) },
      },
      async ({ principal, params, reply }) => {
        sessionOnly(principal);
        await pairs().removeSsh(actorOf(principal), params.fingerprint);
        reply.code(204);
      },
    ),
    route(
      {
        method: "POST",
        url: "/api/v1/account/keys/pgp",
        operationId: "generatePgpKey",
        summary: "Generate an OpenPGP key pair: the private key (armored, passphrase-protected) is in this answer only",
        tags: ["account"],
        auth: KEYS,
        body: z.strictObject({
          passphrase: Passphrase,
          email: z.email().optional(),
          type: z.enum(["ecc", "rsa"]).default("ecc").describe("ecc: Ed25519 + Cv25519; rsa: RSA 3072"),
          expireDays: z.number().int().min(0).max(3650).default(0).describe("0 = no expiry"),
        }),
        responses: {
          201: {
            description: "the public key is now yours in the key store (PGP folders can encrypt to it)",
            schema: z.object({ privateKey: z.string(), publicKey: z.string(), key: PgpKey }),
          },
          ...errors(400, 401, 403, 409, 415),
        },
      },
      async ({ principal, body, reply }) => {
        sessionOnly(principal);
        const { privateKey, row } = await pairs().generatePgp(actorOf(principal), body.passphrase, {
          type: body.type,
          email: body.email,
          expireDays: body.expireDays,
        });
        reply.code(201);
        return { privateKey, publicKey: row.armored, key: pgpJson(row) };
      },
    ),
  ];
}
