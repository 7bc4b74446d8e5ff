// Routes of the encryption API for applications (KmsService → app-ops.ts): encrypt/decrypt with an encryption
// context, re-encryption under the current version, HMAC, signatures, public keys, and the batch form of each.
// Ciphertexts, MACs and signatures travel as `atrest:<key>:v<N>:<base64>` tokens; inputs and plaintexts as base64.

import * as z from "zod";
import { AtrestError } from "../../errors.ts";
import { bytes, contextSchema, MAX_BATCH, mapItems, parse } from "./codec.ts";
import type { Route, RouteContext } from "./route.ts";

/** Largest plaintext or input of one item: the API is for values and fields; larger data takes a data key. */
export const MAX_APP_BYTES = 64 * 1024;
const MAX_TOKEN = Math.ceil((MAX_APP_BYTES + 28) / 3) * 4 + 100;

const plaintext = bytes("plaintext", MAX_APP_BYTES);
const input = bytes("input", MAX_APP_BYTES);
const token = (what: string) =>
  z
    .string({ error: `${what} must be an atrest:<key>:v<version>:<base64> string` })
    .max(MAX_TOKEN, { error: `${what} is too long` });
const version = z.number().int().min(1).optional();
const batch = <T extends z.ZodType>(item: T) => z.strictObject({ items: z.array(item).min(1).max(MAX_BATCH) });

const encryptItem = z.strictObject({ plaintext, context: contextSchema });
const decryptItem = z.strictObject({ ciphertext: token("ciphertext"), context: contextSchema });
const inputItem = z.strictObject({ input });
const hmacCheckItem = z.strictObject({ input, hmac: token("hmac") });
const signatureCheckItem = z.strictObject({ input, signature: token("signature") });

export const appSchemas = {
  encrypt: z.strictObject({ plaintext, context: contextSchema, version }),
  decrypt: decryptItem,
  hmac: z.strictObject({ input, version }),
  verifyHmac: hmacCheckItem,
  sign: z.strictObject({ input, version }),
  verify: signatureCheckItem,
  encryptBatch: batch(encryptItem),
  decryptBatch: batch(decryptItem),
  inputBatch: batch(inputItem),
  verifyHmacBatch: batch(hmacCheckItem),
  verifyBatch: batch(signatureCheckItem),
};

const ciphertextOut = z.object({ ciphertext: z.string(), keyRef: z.string() });
const plaintextOut = z.object({ plaintext: z.string().describe("base64"), keyRef: z.string() });
const verifyOut = z.object({ valid: z.boolean(), keyRef: z.string() });
const itemsOf = <T extends z.ZodType>(item: T) =>
  z.object({
    items: z.array(z.union([item, z.object({ error: z.object({ code: z.string(), message: z.string() }) })])),
  });

function plaintextJson(r: { plaintext: Buffer; keyRef: string }): { plaintext: string; keyRef: string } {
  const out = { plaintext: r.plaintext.toString("base64"), keyRef: r.keyRef };
  r.plaintext.fill(0);
  return out;
}

function zeroAll(items: readonly { plaintext?: Buffer; input?: Buffer }[]): void {
  for (const it of items) {
    it.plaintext?.fill(0);
    it.input?.fill(0);
  }
}

/** `POST /v1/keys/:name/batch/<what>`: the body parsed with `body`, `run` on its items, answered as `{items}`. */
function batchRoute<S extends z.ZodType<{ items: unknown[] }>>(
  what: string,
  op: string,
  summary: string,
  body: S,
  item: z.ZodType,
  run: (c: RouteContext, items: z.infer<S>["items"]) => unknown[],
): Route {
  return {
    method: "POST",
    path: `/v1/keys/:name/batch/${what}`,
    op,
    summary,
    body,
    response: itemsOf(item),
    handler: (c) => ({ items: run(c, parse(body, c.body).items) }),
  };
}

export const APP_ROUTES: readonly Route[] = [
  {
    method: "POST",
    path: "/v1/keys/:name/encrypt",
    op: "encrypt",
    summary: "Encrypt up to 64 KiB under the key's current (or a given) version, bound to an encryption context",
    body: appSchemas.encrypt,
    response: ciphertextOut,
    handler: (c) => {
      const b = parse(appSchemas.encrypt, c.body);
      try {
        return c.service().encrypt(c.caller, c.params.name, b.plaintext, b.context, b.version);
      } finally {
        b.plaintext.fill(0);
      }
    },
  },
  {
    method: "POST",
    path: "/v1/keys/:name/decrypt",
    op: "decrypt",
    summary: "Decrypt a ciphertext of this key with the encryption context it was made with",
    body: appSchemas.decrypt,
    response: plaintextOut,
    handler: (c) => {
      const b = parse(appSchemas.decrypt, c.body);
      return plaintextJson(c.service().decrypt(c.caller, c.params.name, b.ciphertext, b.context));
    },
  },
  {
    method: "POST",
    path: "/v1/keys/:name/rewrap",
    op: "rewrap-ciphertext",
    summary: "Re-encrypt a ciphertext under the key's current version; the plaintext never leaves the KMS",
    body: appSchemas.decrypt,
    response: ciphertextOut,
    handler: (c) => {
      const b = parse(appSchemas.decrypt, c.body);
      return c.service().rewrapCiphertext(c.caller, c.params.name, b.ciphertext, b.context);
    },
  },
  {
    method: "POST",
    path: "/v1/keys/:name/hmac",
    op: "hmac",
    summary: "HMAC-SHA256 of the input under an hmac-sha256 key",
    body: appSchemas.hmac,
    response: z.object({ hmac: z.string(), keyRef: z.string() }),
    handler: (c) => {
      const b = parse(appSchemas.hmac, c.body);
      return c.service().hmac(c.caller, c.params.name, b.input, b.version);
    },
  },
  {
    method: "POST",
    path: "/v1/keys/:name/verify-hmac",
    op: "verify-hmac",
    summary: "Check an HMAC (constant-time); valid false for a wrong MAC",
    body: appSchemas.verifyHmac,
    response: verifyOut,
    handler: (c) => {
      const b = parse(appSchemas.verifyHmac, c.body);
      return c.service().verifyHmac(c.caller, c.params.name, b.input, b.hmac);
    },
  },
  {
    method: "POST",
    path: "/v1/keys/:name/sign",
    op: "sign",
    summary: "Sign the input with an ed25519 or ecdsa-p256 key (ECDSA: SHA-256, DER signature)",
    body: appSchemas.sign,
    response: z.object({ signature: z.string(), keyRef: z.string() }),
    handler: (c) => {
      const b = parse(appSchemas.sign, c.body);
      return c.service().sign(c.caller, c.params.name, b.input, b.version);
    },
  },
  {
    method: "POST",
    path: "/v1/keys/:name/verify",
    op: "verify",
    summary: "Check a signature; valid false for a wrong one",
    body: appSchemas.verify,
    response: verifyOut,
    handler: (c) => {
      const b = parse(appSchemas.verify, c.body);
      return c.service().verify(c.caller, c.params.name, b.input, b.signature);
    },
  },
  {
    method: "GET",
    path: "/v1/keys/:name/public-key",
    op: "public-key",
    summary: "The SPKI PEM public key of a signing key's version (?version=N, default current)",
    response: z.object({ keyRef: z.string(), type: z.string(), publicKeyPem: z.string() }),
    handler: (c) => {
      const v = c.query.get("version");
      const n = v === null ? undefined : Number(v);
      if (n !== undefined && (!Number.isInteger(n) || n < 1)) {
        throw new AtrestError("INVALID_INPUT", `invalid key version ${JSON.stringify(v)}`);
      }
      return c.service().publicKey(c.caller, c.params.name, n);
    },
  },

  // ---- batch forms: one result or {error} per item, in order; a failed item does not fail the others ----
  batchRoute(
    "encrypt",
    "batch-encrypt",
    "Encrypt up to 1000 items",
    appSchemas.encryptBatch,
    ciphertextOut,
    (c, items) => {
      try {
        return c.service().batch.encryptBatch(c.caller, c.params.name, items);
      } finally {
        zeroAll(items);
      }
    },
  ),
  batchRoute(
    "decrypt",
    "batch-decrypt",
    "Decrypt up to 1000 items",
    appSchemas.decryptBatch,
    plaintextOut,
    (c, items) => mapItems(c.service().batch.decryptBatch(c.caller, c.params.name, items), plaintextJson),
  ),
  batchRoute(
    "rewrap",
    "batch-rewrap-ciphertext",
    "Re-encrypt up to 1000 ciphertexts under the current version",
    appSchemas.decryptBatch,
    ciphertextOut,
    (c, items) => c.service().batch.rewrapBatch(c.caller, c.params.name, items),
  ),
  batchRoute(
    "hmac",
    "batch-hmac",
    "HMAC up to 1000 inputs",
    appSchemas.inputBatch,
    z.object({ hmac: z.string(), keyRef: z.string() }),
    (c, items) => c.service().batch.hmacBatch(c.caller, c.params.name, items),
  ),
  batchRoute(
    "verify-hmac",
    "batch-verify-hmac",
    "Check up to 1000 HMACs",
    appSchemas.verifyHmacBatch,
    verifyOut,
    (c, items) => c.service().batch.verifyHmacBatch(c.caller, c.params.name, items),
  ),
  batchRoute(
    "sign",
    "batch-sign",
    "Sign up to 1000 inputs",
    appSchemas.inputBatch,
    z.object({ signature: z.string(), keyRef: z.string() }),
    (c, items) => c.service().batch.signBatch(c.caller, c.params.name, items),
  ),
  batchRoute("verify", "batch-verify", "Check up to 1000 signatures", appSchemas.verifyBatch, verifyOut, (c, items) =>
    c.service().batch.verifyBatch(c.caller, c.params.name, items),
  ),
];
